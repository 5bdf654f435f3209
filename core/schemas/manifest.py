"""The model package manifest: what travels with a ``.tflite`` file from compression to the edge.

A model package is a directory (or an upload) holding ``model.tflite`` and ``manifest.json``. The manifest
records what the file is for (site, task, family, architecture), how it was compressed (trained bits and
stored type per layer), how to feed it (input/output layout and normalization), what it achieved on the
site's held-out data, what it is estimated to cost per inference (with the E_C/E_W/E_A breakdown), what
its training cost (for eCAL), and the sha256 of the file.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_FILE = "manifest.json"
# 2: a precoder package's graph may do its own normalization (PrecoderNormalization.in_graph). Readers accept
# the versions they know and refuse newer ones, so an agent that predates a change to what a package means
# refuses the package (and is rolled back) instead of serving it wrongly; agents before 2 know only 1.
MANIFEST_SCHEMA = 2
MODEL_FILE = "model.tflite"
SHA256_PATTERN = r"^[0-9a-f]{64}$"

StoredType = Literal["float32", "float16", "int8", "int4"]


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(description="-1 for the batch dimension")
    dtype: str = "float32"
    layout: str = Field("", description="what the axes mean, e.g. 'batch, re/im, N_U, N_T'")


class LayerQuantization(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    trained_bits: int = Field(ge=1, le=32)
    stored_type: StoredType


class EnergyEstimate(BaseModel):
    """Estimated energy per inference (microjoules) and which estimator produced it."""

    model_config = ConfigDict(extra="forbid")

    estimator: str = "accelerator"
    counting: Literal["implemented", "paper"] = Field(
        "paper", description="the counting rule of edgejoule.energy.counting (packages exported before it: paper)")
    total_uj: float = Field(ge=0, allow_inf_nan=False)
    compute_uj: float = Field(0.0, ge=0)
    weights_uj: float = Field(0.0, ge=0)
    activations_uj: float = Field(0.0, ge=0)


class PrecoderNormalization(BaseModel):
    r"""How a channel becomes the precoder's input and its output a precoder (what a precoding
    package's ``normalization`` holds; ``core/runtime.py`` reads it, ``plugins/export/tflite.py`` writes it):

    .. math::

        x = \mathrm{stack}(\Re, \Im)(H) \cdot \frac{s_{in}}{\sigma}, \qquad
        W = \sqrt{P_{max}}\, \mathrm{out} / \|\mathrm{out}\|_F \quad \text{(eq. 5)}

    ``in_graph`` says who does them. True: the ``.tflite`` graph itself, which maps the raw real and
    imaginary planes of H to W's planes at ``p_max_w``; the constants below are recorded for reference and
    for checks. False (packages exported before the graph did; the default, so their manifests read as
    before): the runtime, in numpy around each invoke. Unknown fields are refused rather than ignored: a
    runtime that skipped a field like ``in_graph`` would normalize twice and serve wrong precoders without
    an error.
    """

    model_config = ConfigDict(extra="forbid")

    noise_power_w: float = Field(gt=0, description="sigma^2, the site's noise power")
    input_scale: float = Field(gt=0, description="s_in, the input scale the network was trained with")
    p_max_w: float = Field(gt=0, description="P_max, the total transmit power W spends")
    in_graph: bool = Field(False, description="the .tflite does the input scaling and the power scaling itself")
    input: str = ""
    output: str = ""


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    schema_version: Literal[1, 2] = Field(MANIFEST_SCHEMA, alias="schema",
                                          description="1: the runtime normalizes; 2: the graph may (in_graph)")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    site: str
    task: str = Field(description="precoding, detection, ofdm, ...")
    family: str = Field(description="model family plugin that built it")
    arch: dict[str, Any] = Field(default_factory=dict)
    layers: list[LayerQuantization] = Field(default_factory=list)
    inputs: list[TensorSpec] = Field(min_length=1, description="an agent cannot feed a model without one")
    outputs: list[TensorSpec] = Field(min_length=1)
    normalization: dict[str, Any] = Field(
        default_factory=dict, description="how raw inputs become model inputs and outputs become results "
        "(precoding: PrecoderNormalization)"
    )
    metrics: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, description="on the site's test split (numbers: NaN is not JSON for the readers)")
    energy: EnergyEstimate
    training_energy_j: float = Field(0.0, ge=0, description="energy spent training and compressing, for eCAL")
    file: str = MODEL_FILE
    sha256: str = Field(pattern=SHA256_PATTERN)
    size_bytes: int = Field(gt=0)
    runtime: str = Field("ai-edge-litert>=2.3", description="the runtime the file needs")
    plugins: list[str] = Field(default_factory=list, description="plugins needed to use the outputs")
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _in_graph_needs_schema_2(self) -> "ModelManifest":
        if self.normalization.get("in_graph") and self.schema_version < 2:
            raise ValueError("a normalization done in the graph (in_graph) needs manifest schema 2: agents that "
                             "read only schema 1 would normalize a second time")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
