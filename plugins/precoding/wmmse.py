r"""WMMSE precoding for the MISO downlink (Shi, Razaviyayn, Luo, He, IEEE TSP 2011, Algorithm 1).

With user weights :math:`\alpha_k` (1 here: sum rate), noise :math:`\sigma^2` and budget :math:`P_{max}`,
each iteration updates, for every user k,

.. math::

    u_k &= \frac{h_k^H v_k}{\sum_j |h_k^H v_j|^2 + \sigma^2}, \qquad
    w_k = \frac{1}{1 - u_k^* h_k^H v_k} \\
    v_k &= \alpha_k w_k u_k \Big(\sum_j \alpha_j w_j |u_j|^2 h_j h_j^H + \mu I\Big)^{-1} h_k

with :math:`\mu \ge 0` the smallest value (found by bisection) for which :math:`\sum_k \|v_k\|^2 \le P_{max}`.
At the current precoder :math:`w_k = 1 + \mathrm{SINR}_k`, so :math:`\sum_k \log w_k` is the sum rate in nats;
it never decreases, and the loop stops when it changes by less than ``tol`` (per sample).

Batched implementation. Every :math:`h_k` lies in the N_U-dimensional column space of :math:`H^H`; with the
thin QR :math:`H^H = Q R` the N_T x N_T inverse reduces exactly to an N_U x N_U one,

.. math::

    V = Q (\tilde A + \mu I)^{-1} R\, \mathrm{diag}(c), \quad \tilde A = R\, \mathrm{diag}(d)\, R^H,
    \quad d_j = \alpha_j w_j |u_j|^2, \; c_k = \alpha_k w_k u_k,

and with :math:`\tilde A = E \Lambda E^H` the power is :math:`\sum_i \phi_i / (\lambda_i + \mu)^2`,
:math:`\phi_i = \|[E^H R\,\mathrm{diag}(c)]_{i,:}\|^2`, so the bisection costs N_U numbers per sample. All
samples iterate together; converged ones leave the active set. :func:`wmmse_per_sample` is the
straightforward N_T x N_T transcription, kept as the reference the batched code is tested and benchmarked
against.

Initialization: zero forcing at full power (``init="zf"``, the default), so that WMMSE's monotone ascent
starts from, and never ends below, the ZF sum rate; ``init="mrt"`` starts from maximum-ratio transmission.
From MRT, WMMSE at high SNR needs hundreds of iterations and may stop below ZF. Operation count per
iteration (paper eq. 12), plus the ZF initialization's eq. 13 when used:
:math:`8/3\,N_T^3 N_U + 4 N_T^2 N_U + 4 N_T (4 N_U^2 + 2 N_U) + 4 N_U^2 + 56/3\,N_U`, times the iterations
used; it counts the textbook N_T x N_T algorithm, not our reduced one, to stay comparable with the paper.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult
from edgejoule.plugins.precoding.zf import zf_op_count, zf_precoder
from edgejoule.tasks.precoding import scale_to_power

Init = Literal["zf", "mrt"]

BISECTION_STEPS = 64


def wmmse_op_count(n_t: int, n_u: int, iterations: float = 1.0) -> float:
    """Eq. 12."""
    per_iteration = (
        8 / 3 * n_t**3 * n_u + 4 * n_t**2 * n_u + 4 * n_t * (4 * n_u**2 + 2 * n_u) + 4 * n_u**2 + 56 / 3 * n_u
    )
    return iterations * per_iteration


def initial_precoder(H: np.ndarray, p_max: np.ndarray, init: Init) -> np.ndarray:
    """Zero forcing (default) or maximum-ratio transmission, at full power."""
    if init == "zf":
        return zf_precoder(H, p_max)
    return scale_to_power(np.conj(np.swapaxes(H, -1, -2)), p_max)


def _receivers(H: np.ndarray, V: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u_k and w_k for every user of every sample: shapes [B, N_U]."""
    G = H @ V
    direct = np.einsum("bkk->bk", G)
    denom = np.sum(np.abs(G) ** 2, -1) + noise[:, None]
    u = direct / denom
    w = denom / (denom - np.abs(direct) ** 2)  # = 1 / (1 - u* h^H v) = 1 + SINR
    return u, w


def _bisect_mu(lam: np.ndarray, phi: np.ndarray, p_max: np.ndarray) -> np.ndarray:
    """Smallest mu >= 0 with sum_i phi_i / (lam_i + mu)^2 <= p_max, per sample."""
    with np.errstate(divide="ignore", invalid="ignore"):  # lam = 0 (a silent user) means mu > 0 is needed
        power0 = np.nan_to_num(np.sum(phi / lam**2, -1), nan=np.inf)
    lo = np.zeros(len(lam))
    hi = np.sqrt(np.sum(phi, -1) / p_max)  # power(hi) <= sum(phi) / hi^2 = p_max
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        over = np.sum(phi / (lam + mid[:, None]) ** 2, -1) > p_max
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    return np.where(power0 <= p_max, 0.0, hi)


def wmmse(
    H: np.ndarray,
    noise_power: np.ndarray | float,
    p_max: np.ndarray | float,
    tol: float = 1e-5,
    max_iterations: int = 500,
    init: Init = "zf",
    trace: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Batched WMMSE. Returns precoders [B, N_T, N_U], iterations per sample and, with ``trace``,
    the sum rate (bit/s/Hz) of every sample after each iteration (converged samples repeat their value)."""
    H = np.asarray(H, dtype=np.complex128)
    B = len(H)
    # Work at unit noise: scaling H by 1/sigma leaves every SINR unchanged and keeps numbers near 1.
    noise = np.broadcast_to(np.asarray(noise_power, dtype=float), (B,))
    p = np.broadcast_to(np.asarray(p_max, dtype=float), (B,)).copy()
    Hn = H / np.sqrt(noise)[:, None, None]
    Q, R = np.linalg.qr(np.conj(np.swapaxes(Hn, -1, -2)))  # Hn^H = Q R
    ones = np.ones(B)

    V = initial_precoder(Hn, p, init)
    iterations = np.zeros(B, dtype=np.int64)
    u, w = _receivers(Hn, V, ones)
    objective = np.sum(np.log(w), -1)
    history = [objective / np.log(2)] if trace else []
    active = np.arange(B)
    for _ in range(max_iterations):
        if len(active) == 0:
            break
        ua, wa, Ra = u[active], w[active], R[active]
        d = wa * np.abs(ua) ** 2
        c = wa * ua
        A = Ra @ (d[:, :, None] * np.conj(np.swapaxes(Ra, -1, -2)))
        lam, E = np.linalg.eigh(A)
        ERc = np.conj(np.swapaxes(E, -1, -2)) @ (Ra * c[:, None, :])
        phi = np.sum(np.abs(ERc) ** 2, -1)
        mu = _bisect_mu(lam, phi, p[active])
        V[active] = Q[active] @ (E @ (ERc / (lam + mu[:, None])[:, :, None]))
        iterations[active] += 1

        u_new, w_new = _receivers(Hn[active], V[active], ones[active])
        new_objective = np.sum(np.log(w_new), -1)
        done = np.abs(new_objective - objective[active]) < tol
        u[active], w[active], objective[active] = u_new, w_new, new_objective
        if trace:
            history.append(objective / np.log(2))
        active = active[~done]
    return V, iterations, history


def wmmse_per_sample(
    h: np.ndarray, noise_power: float, p_max: float, tol: float = 1e-5, max_iterations: int = 500, init: Init = "zf"
) -> tuple[np.ndarray, int]:
    """Reference: Shi et al.'s algorithm for one channel ``h`` [N_U, N_T], N_T x N_T linear algebra."""
    h = np.asarray(h, dtype=np.complex128) / np.sqrt(noise_power)
    n_u, n_t = h.shape
    v = np.conj(h.T) if init == "mrt" else np.conj(h.T) @ np.linalg.inv(h @ np.conj(h.T))
    v = v * np.sqrt(p_max) / np.linalg.norm(v)

    def update_receivers(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.zeros(n_u, dtype=complex)
        w = np.zeros(n_u)
        for k in range(n_u):
            gains = np.abs(h[k] @ v) ** 2
            u[k] = (h[k] @ v[:, k]) / (gains.sum() + 1.0)
            w[k] = 1.0 / np.real(1.0 - np.conj(u[k]) * (h[k] @ v[:, k]))
        return u, w

    u, w = update_receivers(v)
    objective = np.sum(np.log(w))
    for iteration in range(1, max_iterations + 1):
        A = sum(w[j] * abs(u[j]) ** 2 * np.outer(np.conj(h[j]), h[j]) for j in range(n_u))
        rhs = np.stack([w[k] * u[k] * np.conj(h[k]) for k in range(n_u)], axis=1)

        def precoder(mu: float) -> np.ndarray:
            return np.linalg.lstsq(A + mu * np.eye(n_t), rhs, rcond=None)[0]

        v = precoder(0.0)
        if np.linalg.norm(v) ** 2 > p_max:
            lo, hi = 0.0, 1.0
            while np.linalg.norm(precoder(hi)) ** 2 > p_max:
                hi *= 2
            for _ in range(BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if np.linalg.norm(precoder(mid)) ** 2 > p_max else (lo, mid)
            v = precoder(hi)
        u, w = update_receivers(v)
        new_objective = np.sum(np.log(w))
        if abs(new_objective - objective) < tol:
            return v, iteration
        objective = new_objective
    return v, max_iterations


class WMMSE:
    name = "wmmse"
    task = "precoding"

    def run(
        self,
        H: np.ndarray,
        noise_power: np.ndarray | float,
        p_max: np.ndarray | float,
        tol: float = 1e-5,
        max_iterations: int = 500,
        init: Init = "zf",
    ) -> BaselineResult:
        V, iterations, _ = wmmse(H, noise_power, p_max, tol=tol, max_iterations=max_iterations, init=init)
        n_u, n_t = H.shape[-2:]
        macs = wmmse_op_count(n_t, n_u, iterations) + (zf_op_count(n_t, n_u) if init == "zf" else 0.0)
        return BaselineResult(output=V, iterations=iterations, macs_per_sample=macs)

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        if iterations is None:
            raise ValueError("WMMSE's operation count needs the number of iterations")
        return wmmse_op_count(n_t, n_u, iterations)


@hookimpl
def register_baselines(register) -> None:
    register("wmmse", WMMSE())
