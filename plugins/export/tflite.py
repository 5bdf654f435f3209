r"""Export a precoder to a model package and check it against the torch model it came from.

The exported graph is the real-valued core of the network (:meth:`PrecoderCNN.forward_real`); what
surrounds it is written into the manifest's ``normalization`` and done in numpy on the edge:

.. math::

    x = \mathrm{stack}(\Re, \Im)\big(H / \sigma\big) \cdot s_{in}, \qquad
    W = \sqrt{P_{max}}\, \frac{\mathrm{out}_{re} + j\,\mathrm{out}_{im}}{\|\mathrm{out}\|_F}

Parity check (issue 4): float packages must reproduce torch within 1e-4 of the output scale; quantized
ones must keep the sum rate within 0.5 % of the fake-quantized torch model on the site's test inputs.
A package that fails is not written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.errors import EdgejouleError
from core.schemas.manifest import MANIFEST_FILE, MODEL_FILE, EnergyEstimate, LayerQuantization, ModelManifest, TensorSpec
from core.sites import get_site, load_dataset
from core.tasks.precoding import sum_rate
from plugins.export.recipe import Compute, mixed_recipe, stored_type
from core.runtime import PrecoderRuntime

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


def convert_core(model: Any, example: Any, path: Path) -> None:
    """``model.forward_real`` on inputs shaped like ``example`` -> a float TFLite file."""
    import litert_torch
    import torch

    class Core(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net.forward_real(x)

    with converter_output_to_stderr():
        litert_torch.convert(Core(model).eval(), (example,)).export(str(path))


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
                          f"model trained or frozen with plugins.lsq): {str(exc).splitlines()[0][:300]}") from None


def _parity_problem(bits: list[int], raw_lite: np.ndarray, raw_torch: np.ndarray, rate_lite: float, rate_torch: float) -> str | None:
    if all(b >= 16 for b in bits):
        error = float(np.abs(raw_lite - raw_torch).max() / np.abs(raw_torch).max())
        if error > FLOAT_TOLERANCE:
            return f"float export differs from torch by {error:.2e} of the output scale (limit {FLOAT_TOLERANCE})"
    elif abs(rate_lite - rate_torch) > SUM_RATE_TOLERANCE * abs(rate_torch):
        return (f"sum rate {rate_lite:.4f} differs from the fake-quantized torch model's {rate_torch:.4f} "
                f"by more than {100 * SUM_RATE_TOLERANCE:.1f} %")
    return None


def export_precoder(chosen_json: Path, out_dir: Path, compute: Compute | str = "auto", model_id: str | None = None) -> ModelManifest:
    """Turn a compression result (``chosen.json`` + frozen weights, see ``plugins.mpq.compress``) into a package."""
    import torch

    from plugins.precoder_cnn import PrecoderCNNFamily

    chosen_json = Path(chosen_json)
    try:
        info = json.loads(chosen_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgejouleError(f"cannot read {chosen_json}: {exc}") from None
    family = PrecoderCNNFamily()
    model = family.build(info["arch"])
    model.load_state_dict(torch.load(chosen_json.parent / info["weights"], weights_only=True))
    model.eval()
    bits = list(info["bits"])
    site = get_site(info["site"])
    ds = load_dataset(site)
    H = ds.H("test", PARITY_SAMPLES)

    normalization = {"noise_power_w": ds.noise_power, "input_scale": float(model.input_scale), "p_max_w": ds.p_max,
                     "input": "stack(real, imag) of H / sqrt(noise_power_w), times input_scale",
                     "output": "W = out[:, 0] + 1j out[:, 1], scaled to total power p_max_w"}
    with torch.no_grad():
        H_unit = torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power)))
        W_torch = model(H_unit, ds.p_max).numpy()
        raw_torch = model.forward_real(torch.stack([H_unit.real, H_unit.imag], 1) * model.input_scale).numpy()
    rate_torch = float(sum_rate(H, W_torch, ds.noise_power).mean())

    with tempfile.TemporaryDirectory() as tmp:
        float_path, final = Path(tmp) / "float.tflite", Path(tmp) / MODEL_FILE
        convert_core(model, torch.zeros(1, 2, site.n_users, site.n_antennas), float_path)
        # auto: integer kernels if they keep parity, else the same stored integers computed in float
        failures = []
        for mode in (["integer", "float"] if compute == "auto" else [compute]):
            quantize_file(float_path, bits, mode, final)
            runtime = PrecoderRuntime(final, normalization)
            rate_lite = float(sum_rate(H, runtime.precode(H), ds.noise_power).mean())
            problem = _parity_problem(bits, runtime.raw(H), raw_torch, rate_lite, rate_torch)
            if problem is None:
                break
            failures.append(f"{mode} compute: {problem}")
        else:
            raise ExportError("; ".join(failures))

        if all(b >= 16 for b in bits):
            mode = "float"  # no layer is stored as integers, so no integer kernel runs whatever the recipe said
        digest = sha256_file(final)
        manifest = ModelManifest(
            id=model_id or f"{site.name}-precoder-{digest[:12]}",
            site=site.name, task="precoding", family="precoder_cnn", arch=info["arch"],
            layers=[LayerQuantization(name=name, trained_bits=b, stored_type=stored_type(b)) for name, b in zip(LAYER_SCOPES, bits)],
            inputs=[TensorSpec(name="x", shape=[1, 2, site.n_users, site.n_antennas], layout="batch, re/im, N_U, N_T")],
            outputs=[TensorSpec(name="w", shape=[1, 2, site.n_antennas, site.n_users], layout="batch, re/im, N_T, N_U")],
            normalization=normalization,
            metrics={"sum_rate": info["metrics"]["sum_rate"], "sum_rate_litert": rate_lite, "sum_rate_torch": rate_torch},
            energy=EnergyEstimate(total_uj=info["energy"]["energy_uj"], compute_uj=info["energy"]["compute_uj"],
                                  weights_uj=info["energy"]["weights_uj"], activations_uj=info["energy"]["activations_uj"]),
            training_energy_j=float(info.get("training_energy_j", 0.0)),
            sha256=digest, size_bytes=final.stat().st_size, plugins=["precoder_cnn"],
            runtime=f"ai-edge-litert>=2.3 ({mode} compute)",
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(final, out_dir / MODEL_FILE)
        (out_dir / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest
