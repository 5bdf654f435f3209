r"""Export a ``deeprx`` receiver (a distilled or scratch student, or a teacher) to a model package.

The exported graph is the network on its input planes, one slot per invocation:

.. math::  x \in \mathbb{R}^{1 \times 9 \times n_{sym} \times n_{sc}} \;\mapsto\;
           z \in \mathbb{R}^{1 \times n_{sym} \times n_{sc} \times b}

with the nine planes of :func:`edgejoule.plugins.reception.deeprx_arch.features` (Y, P, interpolated LS estimate, Z, G), computed in
numpy on the edge from the received grid (their operations are the first layer of the energy estimate), and
b bit logits per resource element (positive means 1; pilot REs carry no bits). What the package stores:
float32 weights and float32 compute; batch norm is folded into the convolutions by the converter.

Parity check on ``PARITY_SLOTS`` fresh slots at each of ``PARITY_SINR_DB``: the largest logit difference
between LiteRT and torch must be below ``FLOAT_TOLERANCE`` of the largest torch logit, and the hard bit
decisions on data REs may differ on at most ``DECISION_TOLERANCE`` of the bits (logits within float error of
0 may flip); the BER of both goes into the manifest. A package that fails is not written.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgejoule import plugin_manager
from edgejoule.plugins.export.tflite import ExportError, convert, implemented_estimate, sha256_file, write_package
from edgejoule.plugins.reception.deeprx_arch import IN_CHANNELS, ZF_EPS, DeepRxArch, describe, features
from edgejoule.runtime import load_interpreter
from edgejoule.schemas.manifest import (
    MODEL_FILE,
    LayerQuantization,
    ModelManifest,
    TensorSpec,
)
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, simulate

FLOAT_TOLERANCE = 1e-4
DECISION_TOLERANCE = 1e-3
PARITY_SLOTS = 100
PARITY_SINR_DB = (5.0, 20.0, 35.0)
FP_BITS = 16


class ReceiverRuntime:
    """LiteRT bit logits of a receiver package, one slot per ``invoke``."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.interpreter = load_interpreter(path, threads)
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """[1, 9, n_sym, n_sc] planes -> [1, n_sym, n_sc, bits] logits."""
        self.interpreter.set_tensor(self._in, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.invoke(x[i : i + 1]) for i in range(len(x))])


def convert_receiver(model: Any, cfg: OfdmConfig, path: Path) -> None:
    import torch

    convert(model, (torch.zeros(1, IN_CHANNELS, cfg.n_sym, cfg.n_sc),), path)


def parity(model: Any, runtime: ReceiverRuntime, cfg: OfdmConfig, seed: int = 0) -> dict[str, float]:
    """Torch vs LiteRT on fresh slots: relative max logit error, decision mismatch rate, BER of each."""
    import torch

    rng = np.random.default_rng(seed)
    err = scale = 0.0
    mismatch = bits = 0
    bit_err = {"torch": 0, "litert": 0}
    data = cfg.data_mask
    for sinr in PARITY_SINR_DB:
        slot = simulate(cfg, sinr, rng, n=PARITY_SLOTS)
        x = features(cfg, slot)
        with torch.no_grad():
            z_torch = model.eval()(torch.from_numpy(x)).numpy()
        z_lite = runtime.logits(x)
        err, scale = max(err, float(np.abs(z_lite - z_torch).max())), max(scale, float(np.abs(z_torch).max()))
        mismatch += int(np.sum((z_lite[:, data] > 0) != (z_torch[:, data] > 0)))
        for name, z in (("torch", z_torch), ("litert", z_lite)):
            e, n = bit_errors(cfg, z, slot.bits)
            bit_err[name] += e
        bits += n
    return {"max_rel_error": err / scale, "decision_mismatch": mismatch / bits,
            "ber_torch": bit_err["torch"] / bits, "ber_litert": bit_err["litert"] / bits}


def export_receiver(model: Any, arch: DeepRxArch, cfg: OfdmConfig, out_dir: Path, model_id: str | None = None,
                    site: str = "tdl", metrics: dict[str, float] | None = None, seed: int = 0) -> ModelManifest:
    """Convert ``model`` (a :class:`edgejoule.plugins.reception.deeprx_net.DeepRx` for ``cfg``'s grid), check parity, write ``out_dir``."""
    if (arch.n_sym, arch.n_sc, arch.bits_per_symbol) != (cfg.n_sym, cfg.n_sc, cfg.bits_per_symbol):
        raise ExportError(f"the receiver is for a {arch.n_sym} x {arch.n_sc} grid with {arch.bits_per_symbol} bits per "
                          f"symbol, the task is {cfg.n_sym} x {cfg.n_sc} with {cfg.bits_per_symbol}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        convert_receiver(model, cfg, path)
        check = parity(model, ReceiverRuntime(path), cfg, seed)
        if check["max_rel_error"] > FLOAT_TOLERANCE or check["decision_mismatch"] > DECISION_TOLERANCE:
            raise ExportError(f"LiteRT differs from torch: max logit error {check['max_rel_error']:.2e} of the logit "
                              f"scale (limit {FLOAT_TOLERANCE}), bit decisions differ on "
                              f"{100 * check['decision_mismatch']:.3f} % (limit {100 * DECISION_TOLERANCE:.1f} %)")
        layers = describe(arch)  # the input features first, then the layers with weights
        energy = plugin_manager.get("models", "deeprx").energy(arch, [FP_BITS] * (len(layers) - 1), FP_BITS)
        digest = sha256_file(path)
        manifest = ModelManifest(
            id=model_id or f"{site}-deeprx-{arch.width}x{arch.blocks}-{digest[:12]}", site=site, task="ofdm",
            family="deeprx", arch=arch.model_dump(mode="json"),
            layers=[LayerQuantization(name=spec.name, trained_bits=32, stored_type="float32")
                    for spec in layers if spec.weights],
            inputs=[TensorSpec(name="planes", shape=[1, IN_CHANNELS, cfg.n_sym, cfg.n_sc],
                               layout="batch, plane (Re Y, Im Y, Re P, Im P, Re H, Im H, Re Z, Im Z, G), symbol, subcarrier")],
            outputs=[TensorSpec(name="logits", shape=[1, cfg.n_sym, cfg.n_sc, cfg.bits_per_symbol],
                                layout="batch, symbol, subcarrier, bit (Gray, real-part bits first); positive means 1")],
            normalization={"features": "edgejoule.plugins.reception.deeprx_arch.features", "zf_eps": ZF_EPS, "ofdm": cfg.model_dump(mode="json"),
                           "data_res": "bits only on REs that are not pilots (OfdmConfig.data_mask)"},
            metrics={**(metrics or {}), **{f"parity_{k}": v for k, v in check.items()}},
            energy=implemented_estimate(energy),
            sha256=digest, size_bytes=path.stat().st_size, plugins=["deeprx"],
            runtime="ai-edge-litert>=2.3 (float compute)",
        )
        write_package(path, manifest, out_dir)
    return manifest
