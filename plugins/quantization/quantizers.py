r"""Weight quantizer plugins: ``lsq`` (learned step size, trained by QAT) and ``ptq`` (plain post-training).

- ``lsq``: Esser et al., ICLR 2020; the fake-quantizer and its gradients are in :mod:`edgejoule.plugins.quantization.lsq`.
- ``ptq``: symmetric, per tensor, no training: :math:`s = \max|w| / Q_P`,
  :math:`\hat w = s\,\lfloor \mathrm{clip}(w/s, -Q_N, Q_P) \rceil`; the paper found it degrades badly at
  4 bits and below, which is why compression uses LSQ.

Both take a model with ``layers()`` (its weight layers in bit-list order) and one bit width per layer.
torch is imported only when a quantizer is used, so this entry point loads on an edge device.
"""

from __future__ import annotations

from typing import Any, Sequence

from edgejoule.hookspecs import hookimpl


def _targets(model: Any, bits: Sequence[int], layers: Any) -> list:
    targets = list(layers if layers is not None else model.layers())
    if len(targets) != len(bits):
        raise ValueError(f"{len(bits)} bit widths for {len(targets)} weight layers; give one per layer")
    return targets


class LsqQuantizer:
    name = "lsq"

    def quantize(self, model: Any, bits: Sequence[int], layers: Any = None, activation_bits: int | None = None) -> Any:
        from edgejoule.plugins.quantization.lsq import attach

        return attach(model, list(bits), _targets(model, bits, layers), activation_bits)


class PtqQuantizer:
    name = "ptq"

    def quantize(self, model: Any, bits: Sequence[int], layers: Any = None) -> Any:
        import torch

        from edgejoule.plugins.quantization.lsq import quant_range

        with torch.no_grad():
            for layer, b in zip(_targets(model, bits, layers), bits):
                q_n, q_p = quant_range(int(b))
                step = layer.weight.abs().max().clamp_min(1e-12) / max(q_p, 1)
                layer.weight.copy_(torch.clamp(torch.round(layer.weight / step), -q_n, q_p) * step)
        model.weight_bits = [int(b) for b in bits]
        return model


@hookimpl
def register_quantizers(register) -> None:
    register("lsq", LsqQuantizer())
    register("ptq", PtqQuantizer())
