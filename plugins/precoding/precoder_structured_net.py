r"""The torch module of the structured precoder (see :mod:`edgejoule.plugins.precoding.precoder_structured` for the equations).

The structure is written in real arithmetic with an unrolled Gauss-Jordan inversion, so that the one code
path trains, runs in torch and converts to TFLite (which has neither complex tensors nor a matrix inverse).
No pivoting is needed: every leading principal minor of :math:`M = I + \mathrm{diag}(q) G` is
:math:`\det(I + Q_k^{1/2} G_k Q_k^{1/2}) \ge 1` (G Hermitian positive semidefinite, q >= 0), so each pivot is
nonzero and the elimination runs as written.
"""

from __future__ import annotations

import torch

from edgejoule.plugins.precoding.precoder_arch import PrecoderArch
from edgejoule.plugins.precoding.precoder_net import PrecoderCNN


def complex_inverse(
    real: torch.Tensor, imag: torch.Tensor, identity: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of a batch of complex ``[B, n, n]`` matrices given as real and imaginary parts (Gauss-Jordan
    on ``[M | I]`` without pivoting: for matrices whose leading principal minors are nonzero). ``identity``
    is the real n x n identity, passed in: built inside a converted graph it becomes an op LiteRT lacks."""
    n = real.shape[-1]
    eye = identity.expand_as(real)
    er, ei = torch.cat([real, eye], -1), torch.cat([imag, torch.zeros_like(imag)], -1)
    for k in range(n):
        pr, pi = er[:, k, k : k + 1], ei[:, k, k : k + 1]
        norm = pr * pr + pi * pi
        # row k over its pivot
        rr = (er[:, k] * pr + ei[:, k] * pi) / norm
        ri = (ei[:, k] * pr - er[:, k] * pi) / norm
        # row j -= M_jk row_k for j != k; row k becomes row_k (its factor is M_kk - 1)
        cr = (er[:, :, k] - eye[:, :, k])[:, :, None]
        ci = ei[:, :, k : k + 1]
        er = er - (cr * rr[:, None] - ci * ri[:, None])
        ei = ei - (cr * ri[:, None] + ci * rr[:, None])
    return er[..., n:], ei[..., n:]


def optimal_structure(
    h: torch.Tensor, logits: torch.Tensor, q_total: torch.Tensor, identity: torch.Tensor
) -> torch.Tensor:
    r"""Planes of unit-noise H ``[B, 2, N_U, N_T]`` and logits ``[B, 2 N_U]`` -> W's planes ``[B, 2, N_T, N_U]``
    with :math:`w_k = \sqrt{p_k} v_k / \|v_k\|`, :math:`V = H^H (I + \mathrm{diag}(q) H H^H)^{-1}`,
    p = softmax (total power 1), q = ``q_total`` softmax; ``identity`` the real N_U x N_U identity."""
    n_u = h.shape[2]
    hr, hi = h[:, 0], h[:, 1]
    p = torch.softmax(logits[:, :n_u], -1)
    q = (q_total * torch.softmax(logits[:, n_u:], -1))[:, :, None]
    hrt, hit = hr.transpose(1, 2), hi.transpose(1, 2)
    # G = H H^H
    gr = hr @ hrt + hi @ hit
    gi = hi @ hrt - hr @ hit
    xr, xi = complex_inverse(identity + q * gr, q * gi, identity)
    # V = H^H X
    vr = hrt @ xr + hit @ xi
    vi = hrt @ xi - hit @ xr
    scale = torch.sqrt(p / torch.sum(vr * vr + vi * vi, 1))[:, None, :]
    return torch.stack([vr * scale, vi * scale], 1)


class PrecoderStructured(PrecoderCNN):
    r"""H (normalized to unit noise) -> W with total power P_max through (p, q) and the optimal structure.

    ``q_total`` is the site's :math:`P_{max}/\sigma^2`, the virtual uplink's power budget (a buffer saved
    with the weights, set by :meth:`calibrate`)."""

    def __init__(self, arch: PrecoderArch, outputs: int, input_scale: float = 1.0, q_total: float = 1.0) -> None:
        super().__init__(arch, outputs, input_scale)
        self.register_buffer("q_total", torch.tensor(float(q_total)))
        self.register_buffer("identity", torch.eye(arch.n_u), persistent=False)

    def calibrate(self, input_scale: float, p_max: float) -> None:
        """The inputs' scale and the virtual uplink's budget (``p_max`` at unit noise)."""
        super().calibrate(input_scale, p_max)
        self.q_total.fill_(p_max)

    def forward_real(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 2, N_U, N_T]`` scaled by ``input_scale`` -> W's planes ``[B, 2, N_T, N_U]`` at total power 1."""
        return optimal_structure(x / self.input_scale, self.head(x), self.q_total, self.identity)
