r"""eCAL: the energy cost of an AI model's lifecycle, per bit of data it handles.

Reference: Chou, Hribar, Hanzel, Mohorcic, Fortuna, "The Energy Cost of Artificial Intelligence Lifecycle
in Communication Networks", arXiv 2408.00540 (IEEE JSAC 2026); shared/seeds/ecal-summary.txt.

.. math::

    E_{total} &= (1 + \gamma)\,[E_{collect} + E_{pre} + E_{train} + E_{eval}
                 + N_{inf}\,(E_{inf,tx} + E_{inf,pre} + E_{inf})] \\
    \mathrm{eCAL} &= \frac{E_{total}}{b\,S\,N_{train} + b\,S\,N_{inf}} \quad [\mathrm{J/bit}]

where b is bits per value, S values per sample, N_train training samples and N_inf inferences; a compute
stage's energy is FLOPs / (FLOP/s) x power (:func:`compute_energy_j`). The one-off stages amortize over the
inferences, so eCAL falls as N_inf grows.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LifecycleStages(BaseModel):
    """The energies of each lifecycle stage, joules; one-off stages first, then per-inference ones."""

    model_config = ConfigDict(frozen=True)

    data_collection_j: float = Field(0.0, ge=0)
    preprocessing_j: float = Field(0.0, ge=0)
    training_j: float = Field(0.0, ge=0)
    evaluation_j: float = Field(0.0, ge=0)
    inference_j: float = Field(ge=0, description="energy of one inference's computation")
    inference_transmission_j: float = Field(0.0, ge=0, description="per inference")
    inference_preprocessing_j: float = Field(0.0, ge=0, description="per inference")
    virtualization_overhead: float = Field(0.0, ge=0, description="gamma, a fraction")
    bits_per_value: int = Field(32, gt=0, description="b")
    values_per_sample: int = Field(gt=0, description="S")
    n_train: int = Field(ge=0, description="training samples N_train")

    def total_j(self, n_inferences: int) -> float:
        one_off = self.data_collection_j + self.preprocessing_j + self.training_j + self.evaluation_j
        per_inference = self.inference_j + self.inference_transmission_j + self.inference_preprocessing_j
        return (1.0 + self.virtualization_overhead) * (one_off + n_inferences * per_inference)


def ecal_j_per_bit(stages: LifecycleStages, n_inferences: int) -> float:
    """eCAL in joules per bit after ``n_inferences`` inferences."""
    if n_inferences < 0:
        raise ValueError("the number of inferences cannot be negative")
    bits = stages.bits_per_value * stages.values_per_sample * (stages.n_train + n_inferences)
    if bits == 0:
        raise ValueError("eCAL is undefined with no training samples and no inferences")
    return stages.total_j(n_inferences) / bits


def compute_energy_j(flops: float, flops_per_second: float, power_w: float) -> float:
    """Energy of a compute stage: its duration at the device's throughput times the device's power."""
    if flops_per_second <= 0:
        raise ValueError("device throughput must be positive")
    return flops / flops_per_second * power_w
