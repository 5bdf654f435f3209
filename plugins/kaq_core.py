r"""KAQ and its baselines as activation quantizers of the unfolded detectors (torch side of :mod:`plugins.kaq`).

- :class:`KaqActQuant`: LSQ fake quantization (:func:`plugins.lsq.lsq_fake_quant`) whose step is the learned
  step times the step-size policy's factor for the batch's channel condition.
- :class:`LsqActQuant`: plain LSQ (:class:`plugins.lsq.LsqFakeQuant`), the QAT baseline.
- :class:`PtqActQuant`: uniform symmetric quantizer, step :math:`\max|v|/Q_P` calibrated on full-precision
  activations, no training.
- :class:`KaqLoss`: the per-layer MMD^2 term with KDE bandwidths (equations in :mod:`plugins.kaq`).
"""

from __future__ import annotations

import copy
import math
from typing import Protocol

import numpy as np
import torch
from torch import nn

from core.tasks.detection import ChannelSource, Constellation, constellation, simulate
from plugins.lsq import LsqFakeQuant, init_step, lsq_fake_quant, quant_range
from plugins.unfolded_net import BatchCondition, TrainConfig, Unfolded, tensors, train


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.exp(-((a[:, None] - b[None, :]) ** 2) / (2 * h**2))


def mmd2(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Biased (V-statistic) MMD^2 of 1-D samples ``a``, ``b`` with a Gaussian kernel of bandwidth ``h``:
    exactly 0 when the samples are identical, >= 0 always."""
    return gaussian_kernel(a, a, h).mean() + gaussian_kernel(b, b, h).mean() - 2 * gaussian_kernel(a, b, h).mean()


def kde_loo_nll(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Negative leave-one-out log-likelihood of ``a`` under its own Gaussian KDE of bandwidth ``h``."""
    n = a.numel()
    k = gaussian_kernel(a, a, h) * (1 - torch.eye(n))
    density = k.sum(1) / ((n - 1) * h * math.sqrt(2 * math.pi))
    return -torch.log(density + 1e-12).mean()


class StepPolicy(Protocol):
    """Maps a batch's channel condition to a factor on the learned step (1 at the calibration condition)."""

    name: str

    def calibrate(self, cond: BatchCondition) -> None: ...

    def factor(self, cond: BatchCondition) -> torch.Tensor: ...


class NoiseEnhancementPolicy:
    r"""The default policy (this project's design; the paper gives no formula).

    The activation :math:`v_k` is a symbol estimate: a constellation point plus an error whose variance, for a
    linear estimate, is the ZF error :math:`e = \frac{\sigma^2}{2}\,\overline{\mathrm{diag}}(H^T H)^{-1}`
    per real dimension: it grows as the SNR falls and as the channel gets ill-conditioned. A uniform quantizer
    needs the range :math:`(L-1)a + c\sqrt{e}` (the outer level plus c = 3 standard deviations), so

    .. math::  s(\text{batch}) = s_{learned}\;
               \frac{(L-1)a + c\sqrt{\bar e_{batch}}}{(L-1)a + c\sqrt{\bar e_{cal}}}

    with :math:`\bar e_{cal}` measured on the calibration batch. Monotone: the step shrinks as the SNR rises.
    """

    name = "noise-enhancement"

    def __init__(self, const: Constellation, spread: float = 3.0) -> None:
        self.outer = (const.levels_per_dim - 1) * const.scale
        self.spread = spread
        self.reference: float | None = None

    def _range(self, cond: BatchCondition) -> torch.Tensor:
        e = (cond.noise_var / 2 * cond.noise_enhancement).mean()
        return self.outer + self.spread * e.sqrt()

    def calibrate(self, cond: BatchCondition) -> None:
        self.reference = float(self._range(cond))

    def factor(self, cond: BatchCondition) -> torch.Tensor:
        assert self.reference is not None, "calibrate() the policy first"
        return (self._range(cond) / self.reference).detach()


class StaticPolicy:
    """No adaptation (factor 1): KAQ's MMD loss alone, for ablation."""

    name = "static"

    def __init__(self, const: Constellation) -> None:
        pass

    def calibrate(self, cond: BatchCondition) -> None:
        pass

    def factor(self, cond: BatchCondition) -> torch.Tensor:
        return torch.tensor(1.0)


POLICIES = {p.name: p for p in (NoiseEnhancementPolicy, StaticPolicy)}


class KaqActQuant(nn.Module):
    """Signed LSQ fake quantization with step ``step * policy.factor(cond)``; step initialized on first use."""

    def __init__(self, bits: int, policy: StepPolicy) -> None:
        super().__init__()
        self.bits = bits
        self.policy = policy
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, v: torch.Tensor, cond: BatchCondition) -> torch.Tensor:
        if not bool(self.initialized):
            with torch.no_grad():
                self.policy.calibrate(cond)
                self.step.copy_(init_step(v, self.bits))
                self.initialized.fill_(True)
        return lsq_fake_quant(v, self.step * self.policy.factor(cond), self.bits, signed=True)


class LsqActQuant(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.fq = LsqFakeQuant(bits, signed=True)

    def forward(self, v: torch.Tensor, cond: BatchCondition) -> torch.Tensor:
        return self.fq(v)


class PtqActQuant(nn.Module):
    """Uniform symmetric quantizer; records max|v| while ``calibrating``, then quantizes with max|v|/Q_P."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.calibrating = True
        self.register_buffer("max_abs", torch.tensor(0.0))

    def forward(self, v: torch.Tensor, cond: BatchCondition) -> torch.Tensor:
        q_n, q_p = quant_range(self.bits)
        if self.calibrating:
            self.max_abs = torch.maximum(self.max_abs, v.detach().abs().max())
            return v
        step = self.max_abs.clamp_min(1e-8) / max(q_p, 1)
        return torch.clamp(torch.round(v / step), -q_n, q_p) * step


class KaqLoss(nn.Module):
    r""":math:`w \sum_k \mathrm{MMD}^2_{h_k}(v_k^{FP}, \hat v_k) + \sum_k \mathrm{NLL}_{LOO}(v_k^{FP}; h_k)`.

    The FP teacher runs on the same batch. Each layer's activations are flattened to 1-D samples (at most
    ``samples`` random elements, the same positions in both nets). The bandwidth :math:`h_k` is fitted to the
    FP activations by leave-one-out KDE likelihood (its only gradient), and enters the MMD detached: a
    bandwidth trained on the MMD itself would grow until the MMD vanished."""

    def __init__(self, teacher: Unfolded, weight: float = 1.0, samples: int = 256) -> None:
        super().__init__()
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight = weight
        self.samples = samples
        self.log_h = nn.Parameter(torch.zeros(teacher.arch.layers))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, batch: tuple[torch.Tensor, ...], acts: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            _, fp = self.teacher(*batch[:3], keep=True)
        n = fp[0].numel()
        idx = torch.randperm(n)[: self.samples]
        fp_s = [a.flatten()[idx] for a in fp]
        if not bool(self.initialized):
            with torch.no_grad():  # Silverman's rule as the starting bandwidth
                self.log_h.copy_(torch.stack([(1.06 * a.std() * len(idx) ** -0.2).log() for a in fp_s]))
                self.initialized.fill_(True)
        h = self.log_h.exp()
        total = torch.zeros(())
        for k, (a, q) in enumerate(zip(fp_s, acts)):
            total = total + self.weight * mmd2(a, q.flatten()[idx], h[k].detach()) + kde_loo_nll(a, h[k])
        return total


def _calibration_batch(source: ChannelSource, const: Constellation, cfg: TrainConfig, size: int = 1024):
    rng = np.random.default_rng(cfg.seed + 7)
    return tensors(simulate(source.draw(size, rng), const, rng.uniform(*cfg.snr_db, size=size), rng))


def quantize_activations(
    fp: Unfolded,
    method: str,
    bits: int,
    source: ChannelSource,
    cfg: TrainConfig,
    policy: str = "noise-enhancement",
    mmd_weight: float = 1.0,
    progress=None,
) -> Unfolded:
    """A copy of ``fp`` with ``bits``-bit activations: ``kaq`` or ``lsq`` (QAT from the FP weights with
    ``cfg``), or ``ptq`` (calibrated on one batch, no training)."""
    const = constellation(fp.arch.modulation)
    net = copy.deepcopy(fp)
    if method == "ptq":
        net.quant = nn.ModuleList(PtqActQuant(bits) for _ in range(fp.arch.layers))
        with torch.no_grad():
            net(*_calibration_batch(source, const, cfg)[:3])
        for q in net.quant:
            q.calibrating = False
        return net.eval()
    if method == "lsq":
        net.quant = nn.ModuleList(LsqActQuant(bits) for _ in range(fp.arch.layers))
        extra = None
    elif method == "kaq":
        net.quant = nn.ModuleList(KaqActQuant(bits, POLICIES[policy](const)) for _ in range(fp.arch.layers))
        extra = KaqLoss(fp, weight=mmd_weight)
    else:
        raise ValueError(f"unknown activation quantizer '{method}'")
    with torch.no_grad():  # initialize steps (and the policy's reference) on the same calibration batch
        net(*_calibration_batch(source, const, cfg)[:3])
    train(net, source, const, cfg, extra_loss=extra, progress=progress)
    return net
