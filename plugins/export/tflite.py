r"""Export a precoder to a model package and check it against the torch model it came from.

The exported graph is the whole serving map: the raw real and imaginary planes of a channel H in, the
precoder's planes at the power budget out. Around the real-valued core of the network
(:meth:`PrecoderCNN.forward_real`) it scales the input by one constant and the output to ``P_max``
(:meth:`PrecoderCNN.served`, which the ``implemented`` energy counting runs too):

.. math::

    x = \mathrm{stack}(\Re, \Im)(H) \cdot \frac{s_{in}}{\sigma}, \qquad
    W = \sqrt{P_{max}}\, \frac{\mathrm{out}}{\sqrt{\max(\|\mathrm{out}\|_F^2,\ \epsilon)}}

(eq. 5 met with equality; :math:`\epsilon`, the smallest normal float32, keeps an all-zero output zero).
These few float ops stay float whatever the layers' storage: the quantization recipe names only the conv
and fully connected layers.
The manifest's ``normalization`` records the constants with ``in_graph: true``, so the edge runtime feeds
the planes and returns the output as it is (packages exported before this did both in numpy on the edge,
and the runtime still serves them that way).

Parity check (issue 4): float packages must reproduce torch within 1e-4 of the output scale; quantized
ones must keep the sum rate within 0.5 % of the fake-quantized torch model on the site's test inputs.
A package that fails is not written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, BinaryIO, Iterator, TextIO

import numpy as np

from edgejoule.energy import EnergyBreakdown
from edgejoule.errors import EdgejouleError
from edgejoule.files import write_atomic
from edgejoule.plugins.export.recipe import Compute, mixed_recipe, stored_type
from edgejoule.runtime import PrecoderRuntime
from edgejoule.schemas.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    EnergyEstimate,
    LayerQuantization,
    ModelManifest,
    PrecoderNormalization,
    TensorSpec,
)
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.precoding import sum_rate

LAYER_SCOPES = {"CONV": "Conv2d_conv", "FCL1": "Linear_fc1", "FCL2": "Linear_fc2", "FCL3": "Linear_fc3"}
FLOAT_TOLERANCE = 1e-4
SUM_RATE_TOLERANCE = 0.005
PARITY_SAMPLES = 200


class ExportError(EdgejouleError):
    """The exported file does not behave like the model it came from."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def implemented_estimate(energy: EnergyBreakdown) -> EnergyEstimate:
    """A package's energy per inference: the ``implemented`` counting, the one every method is compared by (the
    registry's "model est." beside the classical methods' counts)."""
    return EnergyEstimate(counting="implemented", total_uj=energy.total_uj, compute_uj=energy.compute_uj,
                          weights_uj=energy.weights_uj, activations_uj=energy.activations_uj)


def write_package(model: Path, manifest: ModelManifest, out_dir: Path) -> None:
    """Write a package to ``out_dir``: the model file, then its manifest, each replaced whole. The manifest goes last
    because it names the file by its sha256: a kill between the two leaves a pair the registry refuses to publish
    (sha256 mismatch), never a manifest whose file is missing or cut short."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def copy(out: BinaryIO) -> None:
        with model.open("rb") as source:
            shutil.copyfileobj(source, out)

    write_atomic(out_dir / MODEL_FILE, copy, mode=0o644)
    write_atomic(out_dir / MANIFEST_FILE, manifest.to_json(), mode=0o644)


@contextmanager
def converter_output_to_stderr() -> Iterator[None]:
    """The converter logs to stdout (Python and C++, so file descriptor 1 too); keep it off ``--json`` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextmanager
def converter_output_logged(log: Path) -> Iterator[TextIO]:
    """Everything the converter and the quantizer print, C++ included (file descriptors 1 and 2), Python's
    warnings and logs too, written to ``log`` instead of the terminal: some forty lines per export, among them
    a failed ``.so`` load that reads like an error and is not one. Yields the terminal's stderr, for what the
    command itself shows meanwhile. An export refused before the converter said anything (a dominated model)
    leaves no log, nor the directory made for it."""
    made = not log.parent.exists()
    log.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[1]), "w")
    with log.open("w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with redirect_stdout(sink), redirect_stderr(sink):
                yield terminal
        finally:
            for stream in (sys.stdout, sys.stderr, sink):
                stream.flush()
            for fd, original in enumerate(saved, start=1):
                os.dup2(original, fd)
                os.close(original)
            terminal.close()
            if log.stat().st_size == 0:
                log.unlink()
                if made and not any(log.parent.iterdir()):
                    log.parent.rmdir()


def precoder_graph(model: Any, normalization: PrecoderNormalization) -> Any:
    """The module that is exported: raw planes of H ``[B, 2, N_U, N_T]`` -> W's planes ``[B, 2, N_T, N_U]``
    at ``p_max_w`` (the equations above), the model's own ``served`` map with the site's constants (the same
    computation ``edgejoule.plugins.energy.op_counter`` counts)."""
    import torch

    factor = normalization.input_scale / math.sqrt(normalization.noise_power_w)
    amplitude = math.sqrt(normalization.p_max_w)

    class PrecoderGraph(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, planes: Any) -> Any:
            return self.net.served(planes, factor, amplitude)

    return PrecoderGraph(model).eval()


def convert(module: Any, examples: tuple, path: Path) -> None:
    """A torch module, in eval mode, on inputs shaped like ``examples`` (one tensor per input) -> a float TFLite
    file; every exporter (precoder, detector, receiver) converts through here."""
    import litert_torch

    with converter_output_to_stderr():
        litert_torch.convert(module.eval(), examples).export(str(path))


def quantize_file(float_path: Path, bits: list[int], compute: Compute, out: Path) -> None:
    """Store each layer of a converted precoder as its trained bits say (a copy if all are float)."""
    from ai_edge_quantizer import quantizer

    recipe = mixed_recipe([LAYER_SCOPES[name] for name in LAYER_SCOPES], bits, compute)
    if not recipe:
        shutil.copy(float_path, out)
        return
    try:
        quantizer.Quantizer(str(float_path), recipe).quantize().export_model(str(out), overwrite=True)
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"the layers' weights are not on the grid of their trained bits {bits} (export a "
                          f"model trained or frozen with edgejoule.plugins.quantization.lsq): {str(exc).splitlines()[0][:300]}") from None


def _parity_problem(bits: list[int], out_lite: np.ndarray, out_torch: np.ndarray, rate_lite: float, rate_torch: float) -> str | None:
    if all(b >= 16 for b in bits):
        error = float(np.abs(out_lite - out_torch).max() / np.abs(out_torch).max())
        if error > FLOAT_TOLERANCE:
            return f"float export differs from torch by {error:.2e} of the output scale (limit {FLOAT_TOLERANCE})"
    elif abs(rate_lite - rate_torch) > SUM_RATE_TOLERANCE * abs(rate_torch):
        return (f"sum rate {rate_lite:.4f} differs from the fake-quantized torch model's {rate_torch:.4f} "
                f"by more than {100 * SUM_RATE_TOLERANCE:.1f} %")
    return None


def export_precoder(chosen_json: Path, out_dir: Path, compute: Compute | str = "auto", model_id: str | None = None,
                    allow_dominated: bool = False) -> ModelManifest:
    """Turn a compression result (``chosen.json`` + frozen weights, see ``edgejoule.plugins.search.compress``) into a
    package. A model that a classical method dominates (more sum rate at less energy, per ``chosen.json``) is
    refused unless ``allow_dominated``: deploying it would spend more energy for less."""
    import torch

    from edgejoule import plugin_manager

    chosen_json = Path(chosen_json)
    try:
        info = json.loads(chosen_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgejouleError(f"cannot read {chosen_json}: {exc}") from None
    if info.get("dominated") and not allow_dominated:
        raise EdgejouleError(f"{info['dominated']}; not exported (--allow-dominated exports it anyway)")
    family_name = info.get("family", "precoder_cnn")  # a chosen.json from before families: the template
    family = plugin_manager.get("models", family_name)
    model = family.build(info["arch"])
    model.load_state_dict(torch.load(chosen_json.parent / info["weights"], weights_only=True))
    model.eval()
    bits = list(info["bits"])
    site = get_site(info["site"])
    ds = load_dataset(site)
    H = ds.H("test", PARITY_SAMPLES)

    normalization = PrecoderNormalization(
        noise_power_w=ds.noise_power, input_scale=float(model.input_scale), p_max_w=ds.p_max, in_graph=True,
        input="stack(real, imag) of H as it is (the graph divides by sqrt(noise_power_w) and multiplies by input_scale)",
        output="W = out[:, 0] + 1j out[:, 1], already scaled to total power p_max_w by the graph")
    with torch.no_grad():
        # the reference is the torch model as trained (its own input scaling and eq. 5), not the exported wrapper
        W_torch = model(torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power))), ds.p_max).numpy()
    out_torch = np.stack([W_torch.real, W_torch.imag], 1)
    rate_torch = float(sum_rate(H, W_torch, ds.noise_power).mean())

    with tempfile.TemporaryDirectory() as tmp:
        float_path, final = Path(tmp) / "float.tflite", Path(tmp) / MODEL_FILE
        convert(precoder_graph(model, normalization), (torch.zeros(1, 2, site.n_users, site.n_antennas),), float_path)
        # auto: integer kernels if they keep parity, else the same stored integers computed in float
        failures = []
        for mode in (["integer", "float"] if compute == "auto" else [compute]):
            quantize_file(float_path, bits, mode, final)
            runtime = PrecoderRuntime(final, normalization)
            W_lite = runtime.precode(H)  # the agent's serving path
            rate_lite = float(sum_rate(H, W_lite, ds.noise_power).mean())
            problem = _parity_problem(bits, np.stack([W_lite.real, W_lite.imag], 1), out_torch, rate_lite, rate_torch)
            if problem is None:
                break
            failures.append(f"{mode} compute: {problem}")
        else:
            raise ExportError("; ".join(failures))

        if all(b >= 16 for b in bits):
            mode = "float"  # no layer is stored as integers, so no integer kernel runs whatever the recipe said
        digest = sha256_file(final)
        # the manifest's estimate is the one counting every method is compared by (the fleet's "model est.")
        energy = family.energy(info["arch"], bits, counting="implemented")
        manifest = ModelManifest(
            id=model_id or f"{site.name}-precoder-{digest[:12]}",
            site=site.name, task="precoding", family=family_name, arch=info["arch"],
            layers=[LayerQuantization(name=name, trained_bits=b, stored_type=stored_type(b)) for name, b in zip(LAYER_SCOPES, bits)],
            inputs=[TensorSpec(name="h", shape=[1, 2, site.n_users, site.n_antennas], layout="batch, re/im of H, N_U, N_T")],
            outputs=[TensorSpec(name="w", shape=[1, 2, site.n_antennas, site.n_users], layout="batch, re/im of W, N_T, N_U")],
            normalization=normalization.model_dump(),
            metrics={"sum_rate": info["metrics"]["sum_rate"], "sum_rate_litert": rate_lite, "sum_rate_torch": rate_torch},
            energy=implemented_estimate(energy),
            training_energy_j=float(info.get("training_energy_j", 0.0)),
            sha256=digest, size_bytes=final.stat().st_size, plugins=[family_name],
            runtime=f"ai-edge-litert>=2.3 ({mode} compute)",
        )
        write_package(final, manifest, out_dir)
    return manifest
