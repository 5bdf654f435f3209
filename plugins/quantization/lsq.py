r"""Learned step size quantization (LSQ; Esser et al., ICLR 2020).

.. math::

    \bar v = \lfloor \mathrm{clip}(v / s, -Q_N, Q_P) \rceil, \qquad \hat v = \bar v\, s

signed: :math:`Q_N = 2^{b-1}, Q_P = 2^{b-1} - 1`; unsigned: :math:`Q_N = 0, Q_P = 2^b - 1`. The rounding
passes gradients straight through (STE); the step's gradient is scaled by :math:`g = 1/\sqrt{N Q_P}`
(N = number of weights, or of features for activations) and the step starts at
:math:`s_0 = 2\,\overline{|v|}/\sqrt{Q_P}` (paper, section 2.1-2.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def quant_range(bits: int, signed: bool = True, narrow: bool = False) -> tuple[int, int]:
    """(Q_N, Q_P) for ``bits`` bits; ``narrow`` drops the most negative level (symmetric signed range)."""
    if bits < 1:
        raise ValueError(f"bit width must be >= 1, got {bits}")
    if signed:
        q_p = 2 ** (bits - 1) - 1 if bits > 1 else 0
        return (q_p if narrow else 2 ** (bits - 1)), q_p
    return 0, 2**bits - 1


CHUNK = 1 << 18
"""Elements per pass of the fake quantizer: 1 MiB of float32, so that its temporaries stay in the cache."""


class _LsqQuant(torch.autograd.Function):
    r"""The fake quantizer and its LSQ gradients as one autograd function (scalar ``step``).

    Written as composite ops (division, clamp, a detach trick each for the STE and the gradient scale) it made
    autograd allocate and walk about ten full-size temporaries per call, which dominated QAT of the large
    layers (FC1 of the 64x1024 precoder holds 16.7M weights). Here each pass runs over chunks of
    :data:`CHUNK` elements in buffers that stay in the cache, so the full-size traffic is one read of ``v``
    and one write of the output (forward), one read each of ``v`` and the incoming gradient and one write of
    ``v``'s gradient (backward, which recomputes the rounding instead of saving two full-size tensors). The
    forward value and ``v``'s gradient are bit-identical to the composite (``clamp(v/s)`` rounded, times
    ``s``); the step's gradient is the same formula (paper, eq. 3 and sec. 2.2) summed chunk by chunk, so it
    agrees to float rounding:

    .. math::

        \frac{\partial \hat v}{\partial v} = 1_{-Q_N \le v/s \le Q_P}, \qquad
        \frac{\partial L}{\partial s} = g \sum_i \frac{\partial L}{\partial \hat v_i}
            \big(\bar v_i - 1_{-Q_N \le v_i/s \le Q_P}\; v_i/s\big)
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int, g: float) -> torch.Tensor:
        out = torch.empty_like(v, memory_format=torch.contiguous_format)
        flat, out_flat = v.reshape(-1), out.view(-1)
        levels = torch.empty(min(CHUNK, flat.numel()), dtype=v.dtype)
        for i in range(0, flat.numel(), CHUNK):
            chunk = flat[i : i + CHUNK]
            x = torch.div(chunk, step, out=levels[: len(chunk)])
            torch.mul(x.clamp_(-q_n, q_p).round_(), step, out=out_flat[i : i + CHUNK])
        ctx.save_for_backward(v, step)
        ctx.q_n, ctx.q_p, ctx.g = q_n, q_p, g
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        v, step = ctx.saved_tensors
        grad_v = torch.empty_like(v, memory_format=torch.contiguous_format)
        flat, grad_flat, grad_v_flat = v.reshape(-1), grad.reshape(-1), grad_v.view(-1)
        size = min(CHUNK, flat.numel())
        x_buf, levels_buf, inside_buf = (torch.empty(size, dtype=v.dtype) for _ in range(3))
        grad_step = torch.zeros((), dtype=torch.float64)
        for i in range(0, flat.numel(), CHUNK):
            chunk, g_chunk = flat[i : i + CHUNK], grad_flat[i : i + CHUNK]
            n = len(chunk)
            x = torch.div(chunk, step, out=x_buf[:n])
            levels = torch.clamp(x, -ctx.q_n, ctx.q_p, out=levels_buf[:n])
            inside = torch.eq(levels, x, out=inside_buf[:n])  # clamp's gradient mask (-Q_N <= x <= Q_P), as 0/1
            # d v_hat / d s per element: v_bar - x inside the range, the clamp level outside
            slope = levels.round_().sub_(x.mul_(inside))
            grad_step += torch.dot(g_chunk, slope)
            torch.mul(g_chunk, inside, out=grad_v_flat[i : i + CHUNK])
        return grad_v, (grad_step * ctx.g).to(step.dtype).reshape(step.shape), None, None, None


def lsq_fake_quant(
    v: torch.Tensor, step: torch.Tensor, bits: int, signed: bool = True, n: int | None = None, narrow: bool = False
) -> torch.Tensor:
    """:math:`\\hat v` with LSQ gradients for ``v`` and the learnable scalar ``step``; ``n`` defaults to
    ``v.numel()``. Without autograd (evaluation) only the value is computed."""
    if step.numel() != 1:
        raise ValueError(f"LSQ here learns one step per tensor; got a step of shape {tuple(step.shape)}")
    q_n, q_p = quant_range(bits, signed, narrow)
    if not (torch.is_grad_enabled() and (v.requires_grad or step.requires_grad)):
        return torch.clamp(v / step, -q_n, q_p).round_() * step
    return _LsqQuant.apply(v, step, q_n, q_p, 1.0 / math.sqrt((n or v.numel()) * max(q_p, 1)))


def init_step(v: torch.Tensor, bits: int, signed: bool = True) -> torch.Tensor:
    """:math:`s_0 = 2\\,\\mathrm{mean}(|v|)/\\sqrt{Q_P}`."""
    _, q_p = quant_range(bits, signed)
    return (2 * v.detach().abs().mean() / math.sqrt(max(q_p, 1))).clamp_min(1e-8)


class LsqFakeQuant(nn.Module):
    """A learnable-step fake quantizer for one tensor (weights or activations); initialized on first use."""

    def __init__(self, bits: int, signed: bool = True, narrow: bool = False, per_sample: bool = False) -> None:
        super().__init__()
        self.bits = bits
        self.signed = signed
        self.narrow = narrow
        # activations: the gradient scale counts the features of one sample, not the whole batch (LSQ, sec. 2.2)
        self.per_sample = per_sample
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            with torch.no_grad():
                self.step.copy_(init_step(v, self.bits, self.signed))
                self.initialized.fill_(True)
        n = v[0].numel() if self.per_sample else None
        return lsq_fake_quant(v, self.step, self.bits, self.signed, n, narrow=self.narrow)



def _quantize_input(layer: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the layer sees its input through its own ``input_quant``."""
    return (layer.input_quant(args[0]), *args[1:])


def attach(
    model: nn.Module,
    bits: "list[int] | tuple[int, ...]",
    layers: "list[nn.Module] | None" = None,
    activation_bits: int | None = None,
) -> nn.Module:
    """Give each weight layer's ``weight`` an :class:`LsqFakeQuant` parametrization (torch.nn.utils.parametrize):
    the forward pass then sees :math:`\\hat w`, and gradients reach both the weights (STE) and the steps.

    Weights use the symmetric (narrow) signed range :math:`[-(2^{b-1}-1), 2^{b-1}-1]` (ternary at 2 bits),
    the range of the symmetric per-channel int8/INT4 tensors they are stored as, so export keeps the trained
    grid (batch norm folds in as a per-channel factor, which a per-channel scale absorbs).

    ``activation_bits`` (optional; the paper quantizes weights only) also quantizes each weight layer's input
    with its own learned step: signed for the first layer (the channel), unsigned after it (ReLU outputs),
    with the gradient scale of the layer's feature count."""
    from torch.nn.utils import parametrize

    targets = list(layers if layers is not None else model.layers())
    for i, (layer, b) in enumerate(zip(targets, bits)):
        parametrize.register_parametrization(layer, "weight", LsqFakeQuant(int(b), narrow=True))
        if activation_bits is not None:
            layer.input_quant = LsqFakeQuant(int(activation_bits), signed=i == 0, per_sample=True)
            layer.register_forward_pre_hook(_quantize_input)
    model.weight_bits = [int(b) for b in bits]
    model.activation_bits = activation_bits
    return model


def freeze(model: nn.Module) -> tuple[nn.Module, list[int]]:
    """A plain float model whose weights hold their quantized values (on the trained grid), and its bits.

    This is what the exporter takes: the parametrizations are removed, leaving :math:`\\hat w = \\bar w s`.
    """
    from torch.nn.utils import parametrize

    for layer in model.layers():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return model, list(getattr(model, "weight_bits", []))


def weight_steps(model: nn.Module) -> list[float]:
    """The learned step of each quantized weight layer (to check or export the grid)."""
    return [float(layer.parametrizations.weight[0].step.detach()) for layer in model.layers()]
