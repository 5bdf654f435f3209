"""torch modules of PGD-Net and ADMM-Net (equations in :mod:`edgejoule.plugins.detection.unfolded`) and their training loop.

Each layer passes its activation :math:`v_k` through ``net.quant[k]`` (identity at full precision; an
activation quantizer from :mod:`edgejoule.plugins.detection.kaq_core` for QAT/PTQ), called as ``quant(v, cond)`` with the batch's
:class:`BatchCondition` so a quantizer may adapt to the channel. ``forward(..., keep=True)`` also returns the
list of (quantized) activations, which the KAQ loss compares with the full-precision net's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.tasks.detection import ChannelSource, Constellation, DetectionBatch, constellation, simulate


@dataclass
class BatchCondition:
    """The channel condition of one batch: what a step-size policy may look at."""

    H: torch.Tensor  # [B, n, m]
    noise_var: torch.Tensor  # [B], complex sigma^2

    @cached_property
    def snr_db(self) -> torch.Tensor:
        return -10 * torch.log10(self.noise_var)

    @cached_property
    def noise_enhancement(self) -> torch.Tensor:
        """[B]: mean diagonal of :math:`(H^T H)^{-1}` (ZF noise amplification; grows with ill-conditioning)."""
        gram = self.H.transpose(-1, -2) @ self.H
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        return torch.linalg.inv(gram + 1e-6 * eye).diagonal(dim1=-2, dim2=-1).mean(-1)


class SoftProjection(nn.Module):
    """:math:`\\psi_t` onto the PAM levels of a constellation, learnable temperature (stored as log t)."""

    def __init__(self, const: Constellation) -> None:
        super().__init__()
        a, levels = const.scale, const.levels_per_dim
        self.a = a
        self.offset = -(levels - 1) * a
        self.register_buffer("thresholds", torch.tensor((2 * np.arange(1, levels) - levels) * a, dtype=torch.float32))
        self.log_t = nn.Parameter(torch.tensor(math.log(0.5 * a)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        t = self.log_t.exp()
        return self.offset + self.a * (1 + torch.tanh((v[..., None] - self.thresholds) / t)).sum(-1)


class Unfolded(nn.Module):
    """Shared plumbing: K projections, K activation quantizer slots, the activation record."""

    def __init__(self, arch: UnfoldedArch) -> None:
        super().__init__()
        self.arch = arch
        const = constellation(arch.modulation)
        self.proj = nn.ModuleList(SoftProjection(const) for _ in range(arch.layers))
        self.quant = nn.ModuleList(Identity() for _ in range(arch.layers))


class Identity(nn.Module):
    def forward(self, v: torch.Tensor, cond: BatchCondition) -> torch.Tensor:
        return v


def _mv(H: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (H @ x[..., None])[..., 0]


def _mtv(H: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (H.transpose(-1, -2) @ r[..., None])[..., 0]


class PGDNet(Unfolded):
    def __init__(self, arch: UnfoldedArch) -> None:
        super().__init__(arch)
        self.eta = nn.Parameter(torch.full((arch.layers,), arch.step_init))

    def forward(self, H: torch.Tensor, y: torch.Tensor, noise_var: torch.Tensor, keep: bool = False):
        cond = BatchCondition(H, noise_var)
        x = torch.zeros(H.shape[0], H.shape[-1])
        acts = []
        for k in range(self.arch.layers):
            v = self.quant[k](x + self.eta[k] * _mtv(H, y - _mv(H, x)), cond)
            acts.append(v)
            x = self.proj[k](v)
        return (x, acts) if keep else x


class ADMMNet(Unfolded):
    def __init__(self, arch: UnfoldedArch) -> None:
        super().__init__(arch)
        k = arch.layers
        self.alpha = nn.Parameter(torch.full((k,), arch.step_init))
        self.lam = nn.Parameter(torch.full((k,), arch.penalty_init))
        self.gamma = nn.Parameter(torch.ones(k))
        self.beta = nn.Parameter(torch.ones(k))

    def forward(self, H: torch.Tensor, y: torch.Tensor, noise_var: torch.Tensor, keep: bool = False):
        cond = BatchCondition(H, noise_var)
        x = torch.zeros(H.shape[0], H.shape[-1])
        z, u = x, x
        acts = []
        for k in range(self.arch.layers):
            grad = _mtv(H, _mv(H, x) - y) + self.lam[k] * (x - z + u)
            v = self.quant[k](x - self.alpha[k] * grad, cond)
            acts.append(v)
            x = v
            r = self.gamma[k] * v + (1 - self.gamma[k]) * z
            z = self.proj[k](r + u)
            u = u + self.beta[k] * (r - z)
        return (z, acts) if keep else z


def build_net(arch: UnfoldedArch) -> Unfolded:
    return PGDNet(arch) if arch.kind == "pgd" else ADMMNet(arch)


def tensors(b: DetectionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(b.H), torch.from_numpy(b.y), torch.from_numpy(b.noise_var), torch.from_numpy(b.x)


def detector(net: nn.Module) -> Callable[[DetectionBatch], np.ndarray]:
    """A numpy ``detect(batch) -> x_hat`` for :func:`edgejoule.tasks.detection.error_rates`."""

    def detect(b: DetectionBatch) -> np.ndarray:
        H, y, nv, _ = tensors(b)
        with torch.no_grad():
            return net.eval()(H, y, nv).numpy()

    return detect


@dataclass(frozen=True)
class TrainConfig:
    """Defaults sized for a shared 2-core CPU (the paper: 5e4 samples, 50 epochs, batch 128)."""

    samples: int = 10_000  # fresh channel/symbol/noise draws per epoch
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    snr_db: tuple[float, float] = (0.0, 20.0)  # training SNR, drawn uniformly per batch
    seed: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.samples // self.batch_size)


def train(
    net: nn.Module,
    source: ChannelSource,
    const: Constellation,
    cfg: TrainConfig,
    extra_loss: nn.Module | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Adam on :math:`\\frac{1}{B}\\|\\hat x - x\\|^2` (+ ``extra_loss(batch tensors, activations)``); returns the
    mean loss per epoch. ``extra_loss``'s own trainable parameters (e.g. KDE bandwidths) are optimized too."""
    rng = np.random.default_rng(cfg.seed)
    params = list(net.parameters()) + (list(extra_loss.parameters()) if extra_loss is not None else [])
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=cfg.lr)
    history = []
    steps = cfg.steps_per_epoch
    net.train()
    for _ in range(cfg.epochs):
        total = 0.0
        for _ in range(steps):
            snr = rng.uniform(*cfg.snr_db)  # one SNR per batch: a frame, the unit a step-size policy adapts to
            batch = tensors(simulate(source.draw(cfg.batch_size, rng), const, snr, rng))
            x_hat, acts = net(*batch[:3], keep=True)
            loss = ((x_hat - batch[3]) ** 2).sum(-1).mean()
            if extra_loss is not None:
                loss = loss + extra_loss(batch, acts)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append(total / steps)
        if progress:
            progress(1)
    net.eval()
    return history
