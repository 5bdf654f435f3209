r"""KAQ and its baselines as activation quantizers of the unfolded detectors (torch side of :mod:`edgejoule.plugins.detection.kaq`).

- :class:`KaqActQuant`: LSQ fake quantization (:func:`edgejoule.plugins.quantization.lsq.lsq_fake_quant`) whose step is the learned
  step times the step-size policy's factor for the batch's channel condition.
- :class:`LsqActQuant`: plain LSQ (:class:`edgejoule.plugins.quantization.lsq.LsqFakeQuant`), the QAT baseline.
- :class:`PtqActQuant`: uniform symmetric quantizer, step :math:`\max|v|/Q_P` calibrated on full-precision
  activations, no training.
- :class:`KaqLoss`: the per-layer MMD^2 term with KDE bandwidths (equations in :mod:`edgejoule.plugins.detection.kaq`).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Callable, Mapping, Protocol

import numpy as np
import torch
from torch import nn

from edgejoule.energy.counting import OperationCount
from edgejoule.plugins.detection.kaq_options import MMD_SCHEDULES, MMD_TARGETS, MMD_TEACHERS
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.plugins.detection.unfolded_net import BatchCondition, TrainConfig, Unfolded, tensors, train
from edgejoule.plugins.quantization.lsq import LsqFakeQuant, init_step, lsq_fake_quant, quant_range
from edgejoule.tasks.detection import ChannelSource, Constellation, constellation, simulate


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
    """Maps a batch's channel condition to a factor on one layer's learned step.

    ``calibrate`` sees the full-precision net's activations of that layer on calibration batches at several
    conditions (one SNR per batch, as in training); the factor's geometric mean over them is 1, so the
    learned step is the LSQ step at the typical training condition and a flat policy is plain LSQ."""

    name: str

    def calibrate(self, conds: list[BatchCondition], acts: list[torch.Tensor]) -> None: ...

    def factor(self, cond: BatchCondition) -> torch.Tensor: ...


def zf_error_std(cond: BatchCondition) -> torch.Tensor:
    r""":math:`\sqrt{\bar e}`, :math:`\bar e = \mathrm{mean}_{batch}\,\frac{\sigma^2}{2}\,
    \overline{\mathrm{diag}}(H^T H)^{-1}`: the ZF error std per real dimension of the batch."""
    return (cond.noise_var / 2 * cond.noise_enhancement).mean().sqrt()


class NoiseEnhancementPolicy:
    r"""A range-model policy (this project's design; the paper gives no formula; not the default).

    A layer's activation range is modelled as affine in the batch's ZF error std
    :math:`\sqrt{\bar e}` (:func:`zf_error_std`: grows as the SNR falls and as the channel gets
    ill-conditioned), :math:`r_k(\bar e) = a_k + c_k\sqrt{\bar e}`, and the step follows the range:

    .. math::  s_k(\text{batch}) = s_{k,learned}\;\frac{r_k(\bar e_{batch})}{\big(\prod_j r_k(\bar e_j)\big)^{1/J}}

    :math:`a_k, c_k \ge 0` are fitted (least squares) to the ``quantile`` of :math:`|v_k|` of the FP net on
    J calibration batches, one SNR each, spanning the training SNRs; the denominator (geometric mean over
    them) makes the learned step the LSQ step of the typical training batch. A layer whose range does not
    depend on the noise gets :math:`c_k = 0`, factor 1: plain LSQ. Monotone: the step shrinks as the SNR
    rises (non-increasing; strictly where :math:`c_k > 0`).

    Why fitted and not assumed: an earlier version used :math:`a = (L-1)a_{PAM}, c = 3` for every layer (the
    range of a ZF symbol estimate). The unfolded nets' early iterates are not symbol estimates: the 99.9 %
    quantile of PGD-Net's layer-1 activation moves by 5 % from 0 to 20 dB, the assumed model by 2.2x, so
    high-SNR batches clipped them (docs/DETECTION.md, "Why KAQ lost to LSQ").
    """

    name = "noise-enhancement"

    def __init__(self, const: Constellation, quantile: float = 0.99) -> None:
        self.quantile = quantile
        self.coef: tuple[float, float] | None = None  # (a_k, c_k)
        self.reference: float | None = None

    def _range(self, e_std: torch.Tensor) -> torch.Tensor:
        assert self.coef is not None, "calibrate() the policy first"
        return self.coef[0] + self.coef[1] * e_std

    def calibrate(self, conds: list[BatchCondition], acts: list[torch.Tensor]) -> None:
        x = torch.stack([zf_error_std(c) for c in conds]).double()
        r = torch.stack([a.detach().abs().flatten().quantile(self.quantile) for a in acts]).double()
        c = float(((x - x.mean()) * (r - r.mean())).sum() / ((x - x.mean()) ** 2).sum().clamp_min(1e-12))
        c = max(c, 0.0)  # a range that grows with SNR is not this model; such a layer stays static
        a = max(float(r.mean() - c * x.mean()), 1e-6)
        self.coef = (a, c)
        self.reference = float(self._range(x).log().mean().exp())

    def factor(self, cond: BatchCondition) -> torch.Tensor:
        assert self.reference is not None, "calibrate() the policy first"
        return (self._range(zf_error_std(cond)) / self.reference).detach().float()


class LearnedPolicy(nn.Module):
    r"""Power law in the batch's ZF error std with a learned exponent :math:`g_k` per layer:

    .. math::  s_k(\text{batch}) = s_{k,learned}\,\big(\sqrt{\bar e_{batch}}/\sqrt{\bar e_{ref}}\big)^{g_k},
               \qquad g_k = 0 \text{ at the start}

    :math:`\sqrt{\bar e_{ref}}`: geometric mean of :func:`zf_error_std` over the calibration batches. It
    starts as plain LSQ, and the task loss (through LSQ's step gradient) decides per layer how far, and in
    which direction, the step follows the channel condition; for any :math:`g_k` the step is monotone in the
    SNR and in the conditioning. Why learned: the BER-optimal step of a trained 4-bit PGD-Net is not the one
    that keeps the activation range; its last layers want a *smaller* step at low SNR, where a range model
    widens it (docs/DETECTION.md, "Why KAQ lost to LSQ")."""

    name = "learned"
    condition = staticmethod(zf_error_std)

    def __init__(self, const: Constellation) -> None:
        super().__init__()
        self.exponent = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("log_reference", torch.tensor(float("nan")))

    def calibrate(self, conds: list[BatchCondition], acts: list[torch.Tensor]) -> None:
        self.log_reference.fill_(float(torch.stack([self.condition(c) for c in conds]).log().mean()))

    def factor(self, cond: BatchCondition) -> torch.Tensor:
        assert not bool(self.log_reference.isnan()), "calibrate() the policy first"
        return torch.exp(self.exponent * (self.condition(cond).float().log() - self.log_reference))


def noise_std(cond: BatchCondition) -> torch.Tensor:
    r""":math:`\sqrt{\mathrm{mean}_{batch}\,\sigma^2/2}`: the frame's noise std per real dimension, without
    reading the channel."""
    return (cond.noise_var / 2).mean().sqrt()


class NoiseLevelPolicy(LearnedPolicy):
    r"""``learned``'s power law in the frame's noise std alone (:func:`noise_std`; the KAQ summary's "SNR /
    noise level"): :math:`s_k = s_{k,learned}\,(\sigma/\sigma_{ref})^{g_k}`. Why: reading the channel
    (:func:`zf_error_std`) costs a Gram matrix and an inverse per detection, more than the quantized net it
    adapts (:func:`policy_operations`); the noise level costs a mean and a root per frame. What it gives up:
    the step no longer follows the conditioning of H."""

    name = "noise-level"
    condition = staticmethod(noise_std)


class StaticPolicy:
    """No adaptation (factor 1): KAQ's MMD loss alone, for ablation."""

    name = "static"

    def __init__(self, const: Constellation) -> None:
        pass

    def calibrate(self, conds: list[BatchCondition], acts: list[torch.Tensor]) -> None:
        pass

    def factor(self, cond: BatchCondition) -> torch.Tensor:
        return torch.tensor(1.0)


POLICIES = {p.name: p for p in (NoiseEnhancementPolicy, LearnedPolicy, NoiseLevelPolicy, StaticPolicy)}


@functools.lru_cache(maxsize=64)
def policy_operations(arch: UnfoldedArch, policy: str) -> OperationCount:
    """KAQ's own work per detection at inference, under the ``implemented`` counting: the channel condition its
    policy reads (:func:`zf_error_std`: per detection the Gram matrix and the diagonal of its inverse; the
    frame's mean and root) and each layer's factor, run under the op counter on a frame of one detection (so the
    frame-level scalars, a few per layer, are counted whole). The fake quantization itself is not counted:
    eqs. 7-11 price b-bit activations. LSQ and PTQ have a fixed step: nothing to count."""
    from edgejoule.plugins.energy.op_counter import OperationCounter

    n, m = 2 * arch.n_r, 2 * arch.n_u
    const = constellation(arch.modulation)
    policies = [POLICIES[policy](const) for _ in range(arch.layers)]
    # calibrated on placeholder conditions and activations: a count depends on shapes only
    generator = torch.Generator().manual_seed(0)
    conds = [BatchCondition(torch.randn(4, n, m, generator=generator), torch.full((4,), nv)) for nv in (0.1, 1.0)]
    acts = [torch.randn(4, m, generator=generator) * scale for scale in (1.0, 2.0)]
    for p in policies:
        p.calibrate(conds, acts)
    cond = BatchCondition(torch.randn(1, n, m, generator=generator), torch.ones(1))
    with torch.no_grad(), OperationCounter([]) as counter:
        for p in policies:
            p.factor(cond)
    return counter.count


class KaqActQuant(nn.Module):
    """Signed LSQ fake quantization with step ``step * policy.factor(cond)``; step initialized on first use
    (the policy must be calibrated before: :func:`calibrate_policies`)."""

    def __init__(self, bits: int, policy: StepPolicy) -> None:
        super().__init__()
        self.bits = bits
        self.policy = policy
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, v: torch.Tensor, cond: BatchCondition) -> torch.Tensor:
        if not bool(self.initialized):
            with torch.no_grad():
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
    r""":math:`w \sum_{k \in S} \mathrm{MMD}^2_{h_k}(\phi_k(v_k^{FP}), \phi_k(\hat v_k))
    + \sum_{k \in S} \mathrm{NLL}_{LOO}(\phi_k(v_k^{FP}); h_k)`.

    The FP teacher runs on the same batch. Each layer's samples are flattened to 1-D (at most ``samples``
    random elements, the same positions in both nets). The bandwidth :math:`h_k` is fitted to the FP samples
    by leave-one-out KDE likelihood (its only gradient), and enters the MMD detached: a bandwidth trained on
    the MMD itself would grow until the MMD vanished.

    ``target`` (one of :data:`edgejoule.plugins.detection.kaq_options.MMD_TARGETS`) sets what is compared, :math:`\phi_k` and the layer
    set S:

    - ``output`` (default): :math:`\phi_K = \psi^{FP}_K`, the last layer only: the distribution of the soft
      symbol estimate, the quantity the MSE is computed on.
    - ``decisions``: :math:`\phi_k = \psi^{FP}_k`, the FP teacher's soft projection of layer k (fixed,
      not trained), every layer. For PGD-Net :math:`\psi_k(v_k) = x_{k+1}`, the iterate the layer hands on;
      for ADMM-Net the soft decision of the unprojected iterate. Why: the detector only passes on
      :math:`\psi_k(v_k)`, so a distance measured there ignores the tails that the slicer saturates (where
      clipping costs the task nothing) and weights errors near the decision thresholds by the slicer's slope.
    - ``activations``: :math:`\phi_k(v) = v`, every layer (the paper's reading: the quantized tensors).

    ``anneal_steps``: the weight falls linearly, :math:`w_t = w\,\max(0, 1 - t/T)` over T training steps
    (None: constant). Why: the MMD rewards a quantizer that keeps the FP distribution's tails (clipping shows
    as mass piled at the range ends), the detection MSE one that clips them for resolution near the symbols;
    matching distributions guides the start of QAT, the task alone should set where it ends.

    ``follow``: where the teacher's weights come from on each step (the quantized net's ``state_dict``; its
    quantizers are skipped, the teacher keeps identity ones), so the teacher is the quantized net itself in FP
    arithmetic and trains along; None (default) keeps the frozen copy of ``teacher``.

    ``seed``: the sample positions come from the loss's own generator, so a QAT run draws the same positions
    whatever ran before it in the process (with torch's global generator, a row of a ``detect`` table
    depended on which other bit widths the same command had trained first)."""

    def __init__(
        self, teacher: Unfolded, weight: float = 1.0, samples: int = 256, anneal_steps: int | None = None,
        target: str = MMD_TARGETS[0], follow: Callable[[], Mapping[str, torch.Tensor]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        if target not in MMD_TARGETS:
            raise ValueError(f"unknown MMD target '{target}' ({', '.join(MMD_TARGETS)})")
        self.target = target
        self.follow = follow
        self.anneal_steps = anneal_steps
        self.register_buffer("steps_done", torch.tensor(0))
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight = weight
        self.samples = samples
        k = teacher.arch.layers
        self.layers = [k - 1] if target == "output" else list(range(k))
        self.log_h = nn.Parameter(torch.zeros(len(self.layers)))
        self.register_buffer("initialized", torch.tensor(False))

    def _phi(self, k: int, v: torch.Tensor) -> torch.Tensor:
        return v if self.target == "activations" else self.teacher.proj[k](v)

    def compared(
        self, batch: tuple[torch.Tensor, ...], acts: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        r"""The compared 1-D samples :math:`\phi_k(v_k^{FP})` (no gradient) and :math:`\phi_k(\hat v_k)`, k in S;
        sets the starting bandwidths (Silverman's rule) on the first call."""
        with torch.no_grad():
            if self.follow is not None:
                self.teacher.load_state_dict({k: v for k, v in self.follow().items() if not k.startswith("quant.")})
            _, fp = self.teacher(*batch[:3], keep=True)
            idx = torch.randperm(fp[0].numel(), generator=self.generator)[: self.samples]
            fp_s = [self._phi(k, fp[k].flatten()[idx]) for k in self.layers]
        if not bool(self.initialized):
            with torch.no_grad():
                self.log_h.copy_(torch.stack([(1.06 * a.std() * len(idx) ** -0.2).log() for a in fp_s]))
                self.initialized.fill_(True)
        return fp_s, [self._phi(k, acts[k].flatten()[idx]) for k in self.layers]

    def forward(self, batch: tuple[torch.Tensor, ...], acts: list[torch.Tensor]) -> torch.Tensor:
        fp_s, q_s = self.compared(batch, acts)
        h = self.log_h.exp()
        weight = self.current_weight()
        self.steps_done += 1
        total = torch.zeros(())
        for j, (a, q) in enumerate(zip(fp_s, q_s)):
            total = total + weight * mmd2(a, q, h[j].detach()) + kde_loo_nll(a, h[j])
        return total

    def current_weight(self) -> float:
        if self.anneal_steps is None:
            return self.weight
        return self.weight * max(0.0, 1.0 - int(self.steps_done) / self.anneal_steps)


def _calibration_batch(source: ChannelSource, const: Constellation, cfg: TrainConfig, size: int = 1024):
    rng = np.random.default_rng(cfg.seed + 7)
    return tensors(simulate(source.draw(size, rng), const, rng.uniform(*cfg.snr_db, size=size), rng))


def calibrate_policies(
    fp: Unfolded, quants: list[KaqActQuant], source: ChannelSource, const: Constellation, cfg: TrainConfig,
    conditions: int = 8,
) -> None:
    """Calibrate each layer's step policy on the FP net's activations: ``conditions`` batches of
    ``cfg.batch_size``, one SNR each, evenly spaced over the training SNRs (a training batch is one SNR)."""
    rng = np.random.default_rng(cfg.seed + 13)
    conds, acts = [], []
    with torch.no_grad():
        for snr in np.linspace(*cfg.snr_db, conditions):
            H, y, nv, _ = tensors(simulate(source.draw(cfg.batch_size, rng), const, float(snr), rng))
            conds.append(BatchCondition(H, nv))
            acts.append(fp(H, y, nv, keep=True)[1])
    for k, q in enumerate(quants):
        q.policy.calibrate(conds, [a[k] for a in acts])


def quantize_activations(
    fp: Unfolded,
    method: str,
    bits: int,
    source: ChannelSource,
    cfg: TrainConfig,
    policy: str = "learned",
    mmd_weight: float = 1.0,
    mmd_schedule: str = "linear",
    mmd_target: str = MMD_TARGETS[0],
    mmd_teacher: str = MMD_TEACHERS[0],
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
        if mmd_schedule not in MMD_SCHEDULES:
            raise ValueError(f"unknown MMD weight schedule '{mmd_schedule}' ({' or '.join(MMD_SCHEDULES)})")
        if mmd_teacher not in MMD_TEACHERS:
            raise ValueError(f"unknown MMD teacher '{mmd_teacher}' ({' or '.join(MMD_TEACHERS)})")
        anneal = cfg.epochs * cfg.steps_per_epoch if mmd_schedule == "linear" else None
        # before the policies' calibration: KaqLoss refuses an unknown target before that work is done
        follow = net.state_dict if mmd_teacher == "along" else None
        extra = KaqLoss(fp, weight=mmd_weight, anneal_steps=anneal, target=mmd_target, follow=follow, seed=cfg.seed)
        net.quant = nn.ModuleList(KaqActQuant(bits, POLICIES[policy](const)) for _ in range(fp.arch.layers))
        calibrate_policies(fp, list(net.quant), source, const, cfg)
    else:
        raise ValueError(f"unknown activation quantizer '{method}'")
    with torch.no_grad():  # initialize the steps on the same calibration batch as LSQ
        net(*_calibration_batch(source, const, cfg)[:3])
    train(net, source, const, cfg, extra_loss=extra, progress=progress)
    return net
