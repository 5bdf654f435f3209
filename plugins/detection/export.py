r"""Export an unfolded detector (PGD-Net / ADMM-Net, :mod:`edgejoule.plugins.detection.unfolded`) to a model package.

The exported graph is the whole detector on the real-valued model of :mod:`edgejoule.tasks.detection`, one
detection per invocation:

.. math::  (H \in \mathbb{R}^{1 \times 2N_R \times 2N_U},\; y \in \mathbb{R}^{1 \times 2N_R},\;
           \sigma^2 \in \mathbb{R}^{1}) \;\mapsto\; \hat x \in \mathbb{R}^{1 \times 2N_U}

and the edge slices :math:`\hat x` to the nearest PAM level (``slice_symbols``). What the package stores:
the full-precision net as float32 weights and float32 compute (the unfolded nets have 4-5 K scalars, so
weight quantization saves nothing; KAQ/LSQ/PTQ quantize *activations*, with a step that KAQ adapts per frame
from the channel, which LiteRT's static integer activation quantization cannot express). So only float
detectors are exported; a quantized detector is rejected with that reason.

Parity check (on ``PARITY_SAMPLES`` test detections at each of ``PARITY_SNR_DB``): LiteRT and torch must give
the same hard decisions on all but ``DECISION_TOLERANCE`` of the symbols and differ by at most
``FLOAT_TOLERANCE`` (absolute, on unit-energy symbols); the BER of both is stored in the manifest.
A package that fails is not written.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgejoule import plugin_manager
from edgejoule.plugins.detection.unfolded_arch import describe
from edgejoule.plugins.export.tflite import ExportError, convert, implemented_estimate, sha256_file, write_package
from edgejoule.runtime import load_interpreter
from edgejoule.schemas.manifest import (
    MODEL_FILE,
    LayerQuantization,
    ModelManifest,
    TensorSpec,
)
from edgejoule.tasks.detection import (
    ChannelSource,
    DetectionBatch,
    constellation,
    error_counts,
    simulate,
    slice_symbols,
)

FLOAT_TOLERANCE = 1e-4
DECISION_TOLERANCE = 1e-3
PARITY_SAMPLES = 200
PARITY_SNR_DB = (0.0, 8.0, 16.0)
FP_BITS = 16


class DetectorRuntime:
    """One LiteRT detection per :meth:`invoke`; inputs are found by rank (H 3-D, y 2-D, sigma^2 1-D)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.interpreter = load_interpreter(path, threads)
        by_rank = {len(d["shape"]): d["index"] for d in self.interpreter.get_input_details()}
        self._H, self._y, self._nv = by_rank[3], by_rank[2], by_rank[1]
        self._out = self.interpreter.get_output_details()[0]["index"]

    def invoke(self, H: np.ndarray, y: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._H, H)
        self.interpreter.set_tensor(self._y, y)
        self.interpreter.set_tensor(self._nv, noise_var)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def detect(self, b: DetectionBatch) -> np.ndarray:
        return np.concatenate([
            self.invoke(b.H[i : i + 1], b.y[i : i + 1], b.noise_var[i : i + 1].astype(np.float32)) for i in range(len(b.H))
        ])


def convert_detector(net: Any, n_r: int, n_u: int, path: Path) -> None:
    import torch

    convert(net, (torch.zeros(1, 2 * n_r, 2 * n_u), torch.zeros(1, 2 * n_r), torch.ones(1)), path)


def parity(net: Any, runtime: DetectorRuntime, source: ChannelSource, modulation: str, seed: int = 0) -> dict[str, float]:
    """Torch vs LiteRT on fresh test detections: max abs error, decision mismatch rate, BER of each."""
    import torch

    const = constellation(modulation)
    rng = np.random.default_rng(seed)
    err, mismatch, symbols, bits = 0.0, 0, 0, 0
    bit_err = {"torch": 0, "litert": 0}
    for snr in PARITY_SNR_DB:
        b = simulate(source.draw(PARITY_SAMPLES, rng), const, snr, rng)
        with torch.no_grad():
            x_torch = net.eval()(torch.from_numpy(b.H), torch.from_numpy(b.y), torch.from_numpy(b.noise_var)).numpy()
        x_lite = runtime.detect(b)
        err = max(err, float(np.abs(x_lite - x_torch).max()))
        mismatch += int(np.sum(slice_symbols(x_lite, const) != slice_symbols(x_torch, const)))
        symbols += x_torch.size
        for name, x in (("torch", x_torch), ("litert", x_lite)):
            e, n, _, _ = error_counts(x, b, const)
            bit_err[name] += e
        bits += n
    return {"max_abs_error": err, "decision_mismatch": mismatch / symbols,
            "ber_torch": bit_err["torch"] / bits, "ber_litert": bit_err["litert"] / bits}


def export_detector(net: Any, arch: Any, site: str, source: ChannelSource, out_dir: Path, model_id: str | None = None,
                    seed: int = 0) -> ModelManifest:
    """Convert, check parity against ``net`` on ``source``'s channels, and write ``out_dir`` (model + manifest)."""
    from edgejoule.plugins.detection.unfolded_net import Identity

    if not all(isinstance(q, Identity) for q in net.quant):
        raise ExportError("only full-precision unfolded detectors export: their quantizers act on activations with "
                          "a per-frame step LiteRT cannot express; export the FP net (see edgejoule.plugins.detection.export)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        convert_detector(net, arch.n_r, arch.n_u, path)
        check = parity(net, DetectorRuntime(path), source, arch.modulation, seed)
        if check["max_abs_error"] > FLOAT_TOLERANCE or check["decision_mismatch"] > DECISION_TOLERANCE:
            raise ExportError(f"LiteRT differs from torch: max abs error {check['max_abs_error']:.2e} (limit "
                              f"{FLOAT_TOLERANCE}), decisions differ on {100 * check['decision_mismatch']:.3f} % "
                              f"(limit {100 * DECISION_TOLERANCE:.1f} %)")
        layers = describe(arch)
        energy = plugin_manager.get("models", "unfolded").energy(arch, [FP_BITS] * len(layers), FP_BITS)
        digest = sha256_file(path)
        n, m = 2 * arch.n_r, 2 * arch.n_u
        manifest = ModelManifest(
            id=model_id or f"{site}-{arch.kind}-net-{digest[:12]}", site=site, task="detection", family="unfolded",
            arch=arch.model_dump(),
            layers=[LayerQuantization(name=spec.name, trained_bits=32, stored_type="float32") for spec in layers],
            inputs=[TensorSpec(name="H", shape=[1, n, m], layout="batch, real rows [Re; Im] of y, real columns [Re; Im] of x"),
                    TensorSpec(name="y", shape=[1, n], layout="batch, [Re y; Im y]"),
                    TensorSpec(name="noise_var", shape=[1], layout="batch: complex noise variance sigma^2")],
            outputs=[TensorSpec(name="x_hat", shape=[1, m], layout="batch, [Re x; Im x], soft; slice to the PAM levels")],
            normalization={"modulation": arch.modulation, "symbol_energy": 1.0,
                           "channel": "unit average entry power; y = H x + n with sigma^2/2 per real dimension"},
            metrics={f"parity_{k}": v for k, v in check.items()},
            energy=implemented_estimate(energy),
            sha256=digest, size_bytes=path.stat().st_size, plugins=["unfolded"],
            runtime="ai-edge-litert>=2.3 (float compute)",
        )
        write_package(path, manifest, out_dir)
    return manifest
