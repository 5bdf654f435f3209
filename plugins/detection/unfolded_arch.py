"""The torch-free half of the ``unfolded`` family: the architecture and its layer description (equations in
:mod:`edgejoule.plugins.detection.unfolded`), shared by the family, its torch module and the export."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgejoule.energy.accelerator import LayerSpec

Kind = Literal["pgd", "admm"]
PARAMS_PER_LAYER = {"pgd": 2, "admm": 5}
SCALINGS_PER_LAYER = {"pgd": 1, "admm": 5}  # PGD: eta; ADMM: lambda, alpha, gamma, 1 - gamma, beta
STATES_PER_LAYER = {"pgd": 1, "admm": 3}


class UnfoldedArch(BaseModel):
    """Architecture of one unfolded detector."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind = "pgd"
    layers: int = Field(5, ge=1, description="K unfolded iterations")
    n_r: int = Field(8, ge=1, description="receive antennas N_R")
    n_u: int = Field(4, ge=1, description="single-antenna users N_U")
    modulation: Literal["qpsk", "16qam"] = "qpsk"
    step_init: float = Field(0.1, gt=0, description="eta_k (PGD) / alpha_k (ADMM) at initialization")
    penalty_init: float = Field(0.05, ge=0, description="lambda_k (ADMM) at initialization")


def describe(a: UnfoldedArch) -> list[LayerSpec]:
    """The layers of one unfolded detector for the energy model (conventions in the family's docstring)."""
    n, m = 2 * a.n_r, 2 * a.n_u
    layers = []
    for k in range(a.layers):
        inputs = n * m + n if k == 0 else 0
        layers.append(
            LayerSpec(
                name=f"L{k + 1}",
                kind=a.kind,
                macs=2 * n * m + SCALINGS_PER_LAYER[a.kind] * m,
                weights=PARAMS_PER_LAYER[a.kind],
                activations=inputs + n + m + STATES_PER_LAYER[a.kind] * m,
            )
        )
    return layers
