"""The contracts plugins implement, one small protocol each.

A plugin registers objects that satisfy these protocols through the hooks of :mod:`edgejoule.hookspecs`.
Training-side protocols (model family, quantizer, compressor) deal in torch modules, but nothing here
imports torch: the objects are typed ``Any`` at this boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence, get_args, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgejoule.energy.accelerator import EnergyBreakdown, LayerSpec

if TYPE_CHECKING:  # the plugin manager checks objects against these protocols, and sites loads plugins
    from edgejoule.sites.config import SiteConfig

Progress = Callable[[int], None]
"""Called with the number of items just finished, to drive a progress bar."""

Task = Literal["precoding", "detection", "ofdm"]
"""The system models of :mod:`edgejoule.tasks` that a model family or a baseline serves (its ``task``)."""
TASKS: tuple[str, ...] = get_args(Task)


@runtime_checkable
class ModelFamily(Protocol):
    """Builds networks from an architecture config and describes their layers to the energy model."""

    name: str
    task: str

    def build(self, arch: Mapping[str, Any]) -> Any:
        """A torch ``nn.Module`` for ``arch`` (imports torch lazily)."""

    def describe(self, arch: Mapping[str, Any]) -> list[LayerSpec]:
        """Per-layer MACs, weights and activations, computed without building the network."""


@runtime_checkable
class Quantizer(Protocol):
    """Turns a model into one with per-layer weight bit widths."""

    name: str

    def quantize(self, model: Any, bits: Sequence[int], **options: Any) -> Any: ...


@runtime_checkable
class Compressor(Protocol):
    """A strategy that produces compressed candidates (a search, a distillation, ...)."""

    name: str

    def run(self, request: Any, progress: Progress | None = None) -> Any: ...


class BaselineResult(BaseModel):
    """What a classical baseline returns for a batch."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    output: Any = Field(description="the algorithm's output, e.g. precoders [batch, N_T, N_U]")
    iterations: np.ndarray | None = Field(None, description="iterations used per sample, if iterative")
    macs_per_sample: np.ndarray = Field(description="operation count N_c per sample for the energy model "
                                        "(the `paper` counting)")
    bisection_steps: np.ndarray | None = Field(None, description="inner bisection steps per sample, if any (WMMSE)")
    operations: np.ndarray | None = Field(None, description="the `implemented` counting per sample, [batch, 4]: "
                                          "multiplications, divisions, roots, memory (edgejoule.energy.counting)")


@runtime_checkable
class Baseline(Protocol):
    """A classical algorithm for a task, with its operation count."""

    name: str
    task: str

    def run(self, *args: Any, **options: Any) -> BaselineResult: ...

    def op_count(self, **dims: Any) -> float:
        """MACs N_c of one run for the given dimensions (and iterations, if iterative)."""


@runtime_checkable
class EnergyEstimator(Protocol):
    """Energy per inference from a layer description and bit widths."""

    name: str

    def estimate(
        self, layers: Sequence[LayerSpec], bits: Sequence[int], activation_bits: int | Sequence[int] = 16
    ) -> EnergyBreakdown:
        """Weight bits per layer; activation bits per layer or for all (16: weights-only quantization)."""

    def estimate_ops(self, macs: float, bits: int = 16) -> EnergyBreakdown: ...


@runtime_checkable
class EnergyMeter(Protocol):
    """Reads real energy on an edge device, or estimates it and says so."""

    name: str
    kind: Literal["measured", "estimated"]

    def available(self) -> bool:
        """Whether this meter can read on this device now."""

    def read_uj(self) -> float:
        """A cumulative energy reading in microjoules (differences between readings are what count)."""


class GeneratedChannels(BaseModel):
    """Channels of one site at a list of user positions."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    channels: np.ndarray = Field(description="complex64 [positions, N_T]: row p is h^H of a user at p")
    valid: np.ndarray = Field(description="bool [positions]: False where the generator found no path")


@runtime_checkable
class ChannelGenerator(Protocol):
    """Turns a site and user positions into channels (geometric model, ray tracing, ...)."""

    name: str

    def generate(self, site: SiteConfig, positions: np.ndarray, progress: Progress | None = None) -> GeneratedChannels:
        """Channels for ``positions`` (float [P, 3], metres, BS frame), amplitude incl. path and system loss."""
