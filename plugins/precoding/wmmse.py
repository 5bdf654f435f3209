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

Batched implementation, in the span of the channels. Every :math:`v_k` lies in the column space of
:math:`H^H`, and by the push-through identity :math:`(H^H D H + \mu I)^{-1} H^H = H^H (D K + \mu I)^{-1}`
(:math:`K = H H^H`) the N_T x N_T inverse is exactly an N_U x N_U one:

.. math::

    V = H^H X, \quad X = (D K + \mu I)^{-1} \mathrm{diag}(c), \quad d_j = \alpha_j w_j |u_j|^2,
    \; c_k = \alpha_k w_k u_k, \quad \sum_k \|v_k\|^2 = \mathrm{tr}(X^H K X),

and the receivers follow from :math:`H V = K X`. So one iteration is N_U x N_U arithmetic only: the
receivers, the system, a Gauss-Jordan inverse at :math:`\mu = 0`, and, when that overspends, a bracketing search
for the smallest :math:`\mu` that meets the budget in :math:`[0, \sqrt{\sum_k |c_k|^2 K_{kk} / P_{max}}]` (the
upper end always meets it). With :math:`D^{1/2} K D^{1/2} = E \Lambda E^H` the power is the secular function

.. math::

    P(\mu) = \sum_i \frac{a_i}{(\lambda_i + \mu)^2}, \quad a_i \ge 0, \qquad
    P'(\mu) = -2\,\mathrm{Re}\,\mathrm{tr}\big(X^H K (DK + \mu I)^{-1} X\big),

so :math:`\psi = P^{-1/2}` is concave and nearly linear in :math:`\mu` (Moré and Sorensen's trust-region
argument, 1983). Each step evaluates two points in one batched Gauss-Jordan inverse: Newton's point on
:math:`\psi` from the lower end (it stays over budget and converges quadratically) and the secant point of
:math:`\psi` through both ends (it stays within budget); before the upper end has been evaluated, the previous
iteration's :math:`\mu` and then the doubled Newton step stand in for the secant, and a point outside the bracket
falls back to the midpoint, so the bracket never grows. The search stops when the bracket is narrower than
:data:`BISECTION_RTOL` of its upper end, exactly as plain bisection did, and one solve at that end gives X:
the result is plain bisection's to that tolerance, in about 3.5 steps instead of 33 (urban-nlos, test split).
:math:`V = H^H X` is formed once, at the end. All samples, from every start, iterate together in one batch;
converged ones leave the active set. :func:`wmmse_per_sample` is the straightforward N_T x N_T transcription,
kept as the reference the batched code is tested and benchmarked against.

Initialization (``init="best"``, the default): WMMSE converges to a local optimum that depends on its start,
so it runs from **both** zero forcing and equal-power regularized ZF (``rzf-equal``,
``edgejoule.plugins.precoding.zf``) and keeps, per sample, the precoder with the higher sum rate; it therefore
never ends below the ZF-started run, and its operations are those of both runs. Equal-power RZF is the start
that matters: at high SNR textbook RZF is nearly ZF and leads to the same point (campus-los, 200 test
channels: 27.84 bit/s/Hz from ZF or textbook RZF after ~415 iterations, 28.11 from equal-power RZF after 21).
``init="zf"``, ``"rzf"`` or ``"rzf-equal"`` runs one.

Operations. ``implemented`` (:meth:`WMMSE.run`): each phase's operations are read from the code by running
it once on one sample under :mod:`edgejoule.energy.counting`, then multiplied by what every sample really
took: the start (K, both initial precoders, their receivers), I iterations, J searches for mu entered (bound
and final solve) and B search steps (reported as ``bisection_steps``), and the final :math:`H^H X`.
``paper``: eq. 12 per iteration, the textbook N_T x N_T algorithm,
:math:`8/3\,N_T^3 N_U + 4 N_T^2 N_U + 4 N_T (4 N_U^2 + 2 N_U) + 4 N_U^2 + 56/3\,N_U`, times the iterations,
plus eq. 13 for each initial precoder.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np

from edgejoule.energy.counting import OperationCount, count_call
from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult
from edgejoule.plugins.precoding.zf import (
    at_equal_powers,
    at_total_power,
    gauss_jordan_solve,
    gram,
    precode,
    probe_channel,
    regularized_inverse,
    zf_coefficients,
    zf_op_count,
)

Init = Literal["best", "zf", "rzf", "rzf-equal"]
STARTS: dict[str, tuple[str, ...]] = {"best": ("zf", "rzf-equal"), "zf": ("zf",), "rzf": ("rzf",),
                                      "rzf-equal": ("rzf-equal",)}
# mu to 8 significant digits: the budget is then met within ~1e-8 of P_max, far below any sum-rate difference
BISECTION_RTOL = 1e-8
BISECTION_MAX_STEPS = 64
# the default of a count made without a run: the search's mean steps per bisecting iteration, measured on the
# demo sites' test splits (urban-nlos 3.5, campus-los 3.2), rounded up
TYPICAL_BISECTION_STEPS = 4


def wmmse_op_count(n_t: int, n_u: int, iterations: float = 1.0) -> float:
    """Eq. 12."""
    per_iteration = (
        8 / 3 * n_t**3 * n_u + 4 * n_t**2 * n_u + 4 * n_t * (4 * n_u**2 + 2 * n_u) + 4 * n_u**2 + 56 / 3 * n_u
    )
    return iterations * per_iteration


class WmmseResult(NamedTuple):
    precoders: np.ndarray  # [B, N_T, N_U]
    iterations: np.ndarray  # per sample, over every start
    history: list[np.ndarray]  # with trace: the sum rate (bit/s/Hz) after each iteration, kept start
    bisections: np.ndarray  # iterations that bisected mu, per sample
    bisection_steps: np.ndarray  # bisection steps, per sample


def _start(H: np.ndarray, noise: np.ndarray, p: np.ndarray, init: Init) -> tuple[np.ndarray, list[np.ndarray]]:
    """K at unit noise (scaling H by 1/sigma leaves every SINR unchanged) and the starting coefficients."""
    K = gram(H) / noise[:, None, None]
    starts = {"zf": lambda: zf_coefficients(K, p),
              "rzf": lambda: at_total_power(K, regularized_inverse(K, np.ones(len(p)), p), p),
              "rzf-equal": lambda: at_equal_powers(K, regularized_inverse(K, np.ones(len(p)), p), p)}
    return K, [starts[name]() for name in STARTS[init]]


def _receivers(K: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u_k, w_k = 1 + SINR_k [B, N_U] and the objective sum_k log w_k at V = H^H X (H V = K X)."""
    G = K @ X
    direct = np.diagonal(G, axis1=-2, axis2=-1)
    denom = np.sum(G.real**2 + G.imag**2, -1) + 1.0
    u = direct / denom
    w = denom / (denom - (direct.real**2 + direct.imag**2))
    return u, w, np.sum(np.log(w), -1)


def _system(K: np.ndarray, u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D K and c of the precoder update."""
    c = w * u
    d = w * (u.real**2 + u.imag**2)
    return d[:, :, None] * K, c


def _inverse_at(M: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(D K + mu I)^-1 by Gauss-Jordan on [D K + mu I | I]."""
    eye = np.eye(M.shape[-1])
    return gauss_jordan_solve(M + mu[:, None, None] * eye, np.broadcast_to(eye + 0j, M.shape))


def _coefficients_at(M: np.ndarray, c: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """X = (D K + mu I)^-1 diag(c)."""
    return _inverse_at(M, mu) * c[:, None, :]


def _solve_at(M: np.ndarray, c: np.ndarray, K: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X = (D K + mu I)^-1 diag(c), its power P = tr(X^H K X) and dP/dmu = -2 Re tr(X^H K (D K + mu I)^-1 X)."""
    inverse = _inverse_at(M, mu)
    X = inverse * c[:, None, :]
    KX = K @ X
    Y = inverse @ X  # -dX/dmu
    power = np.sum(np.sum(X.real * KX.real + X.imag * KX.imag, -1), -1)
    slope = -2.0 * np.sum(np.sum(Y.real * KX.real + Y.imag * KX.imag, -1), -1)
    return X, power, slope


def _bisection_bound(K: np.ndarray, c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A mu that meets the budget: power(mu) <= sum_k |c_k|^2 K_kk / mu^2."""
    return np.sqrt(np.sum((c.real**2 + c.imag**2) * np.diagonal(K, axis1=-2, axis2=-1).real, -1) / p)


class Bracket(NamedTuple):
    """[lo, hi] around the smallest mu that meets the budget: P(lo) > P_max >= P(hi); P and dP/dmu at lo,
    P at hi (P_max while hi is the unevaluated bound); and a guess, the previous iteration's mu."""

    lo: np.ndarray
    hi: np.ndarray
    power_lo: np.ndarray
    slope_lo: np.ndarray
    power_hi: np.ndarray
    guess: np.ndarray


def _candidates(b: Bracket, p: np.ndarray) -> np.ndarray:
    """The Newton point from lo and the secant point of lo and hi on psi = P^(-1/2), [2, b]. While hi is the
    unevaluated bound there is no secant: the second point is the guess while that is inside and unevaluated,
    then the Newton step taken twice from lo, which lands just past the root once Newton is accurate. A point
    at or below lo (Newton has converged to rounding) moves up to lo + BISECTION_RTOL/2 of hi, which then
    closes the bracket; one at or beyond hi, or none (no slope at a singular lo), gives way to the midpoint.

    psi is concave in mu (P = sum_i a_i / (lambda_i + mu)^2 in the eigenbasis of D^(1/2) K D^(1/2), the
    trust-region secular function of More and Sorensen, 1983), so in exact arithmetic the Newton point stays
    over budget and the secant point within it: both ends move, the lower one quadratically."""
    newton = b.lo + 2.0 * b.power_lo * (np.sqrt(b.power_lo / p) - 1.0) / -b.slope_lo
    psi_lo, psi_hi, target = 1.0 / np.sqrt(b.power_lo), 1.0 / np.sqrt(b.power_hi), 1.0 / np.sqrt(p)
    secant = b.lo + (b.hi - b.lo) * (target - psi_lo) / (psi_hi - psi_lo)
    beyond = np.where(np.logical_and(b.guess > b.lo, b.guess < b.hi), b.guess, 2.0 * newton - b.lo)
    points = np.stack([newton, np.where(b.power_hi == p, beyond, secant)])
    above_lo = np.maximum(points, b.lo + 0.5 * BISECTION_RTOL * b.hi)
    return np.where(points < b.hi, above_lo, 0.5 * (b.lo + b.hi))  # false for nan


def _bisection_step(M: np.ndarray, c: np.ndarray, K: np.ndarray, *bracket: np.ndarray,
                    p: np.ndarray) -> tuple[Bracket, np.ndarray]:
    """Evaluate both candidates of ``bracket`` (:class:`Bracket`'s fields) in one batched solve and keep the
    tightest bracket; also whether it is still wider than BISECTION_RTOL of its upper end."""
    b = Bracket(*bracket)
    points = _candidates(b, p)
    n = len(M)
    _, power, slope = _solve_at(np.concatenate([M, M]), np.concatenate([c, c]), np.concatenate([K, K]),
                                np.concatenate([points[0], points[1]]))
    lo, hi, power_lo, slope_lo, power_hi, guess = b
    for i in range(2):
        mu, power_mu, slope_mu = points[i], power[i * n:(i + 1) * n], slope[i * n:(i + 1) * n]
        over = np.logical_not(power_mu <= p)
        raise_lo = np.logical_and(over, mu > lo)
        lower_hi = np.logical_and(np.logical_not(over), mu < hi)
        lo, power_lo, slope_lo = (np.where(raise_lo, new, old) for new, old in
                                  ((mu, lo), (power_mu, power_lo), (slope_mu, slope_lo)))
        hi, power_hi = np.where(lower_hi, mu, hi), np.where(lower_hi, power_mu, power_hi)
    return Bracket(lo, hi, power_lo, slope_lo, power_hi, guess), (hi - lo) > BISECTION_RTOL * hi


def _finish(H: np.ndarray, X: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """V = Hn^H X with Hn = H / sigma."""
    return precode(H, X / np.sqrt(noise)[:, None, None])


def _bisect(M: np.ndarray, c: np.ndarray, K: np.ndarray, p: np.ndarray, power0: np.ndarray, slope0: np.ndarray,
            guess: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The upper end mu of the final bracket, X there and the steps each sample took; lo = 0 is over budget."""
    b = Bracket(np.zeros(len(M)), _bisection_bound(K, c, p), power0, slope0, p.copy(), guess)
    hi, steps = b.hi.copy(), np.zeros(len(M), dtype=np.int64)
    open_ = np.arange(len(M))
    # the open samples' arrays, compacted only when some close: indexing every step costs as much as a step
    Mo, co, Ko, po = M, c, K, p
    for _ in range(BISECTION_MAX_STEPS):
        if len(open_) == 0:
            break
        b, still = _bisection_step(Mo, co, Ko, *b, p=po)
        steps[open_] += 1
        if not still.all():
            hi[open_] = b.hi
            open_, b = open_[still], Bracket(*(x[still] for x in b))
            Mo, co, Ko, po = Mo[still], co[still], Ko[still], po[still]
    hi[open_] = b.hi  # any still open after BISECTION_MAX_STEPS: their upper end meets the budget
    return hi, _coefficients_at(M, c, hi), steps


def _iterate(K: np.ndarray, X: np.ndarray, p: np.ndarray, tol: float, max_iterations: int,
             trace: bool) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """WMMSE from coefficients X: final X, objective, history and per-sample iterations, bisections, steps."""
    B = len(K)
    X = X.copy()
    u, w, objective = _receivers(K, X)
    iterations, bisections, steps = (np.zeros(B, dtype=np.int64) for _ in range(3))
    mu = np.zeros(B)  # the last iteration's, the next one's first guess: mu settles as WMMSE converges
    history = [objective / np.log(2)] if trace else []
    active = np.arange(B)
    for _ in range(max_iterations):
        if len(active) == 0:
            break
        Ka, pa = K[active], p[active]
        M, c = _system(Ka, u[active], w[active])
        # a silent user makes D K singular (and a tiny mu nearly so): its power is then inf or nan, over budget
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            Xa, power, slope = _solve_at(M, c, Ka, np.zeros(len(active)))
            over = np.flatnonzero(~(power <= pa))
            mu_a = np.zeros(len(active))
            if len(over):
                mu_a[over], Xa[over], taken = _bisect(M[over], c[over], Ka[over], pa[over], power[over], slope[over],
                                                      mu[active[over]])
                bisections[active[over]] += 1
                steps[active[over]] += taken
        X[active], mu[active] = Xa, mu_a
        iterations[active] += 1
        u_new, w_new, new_objective = _receivers(Ka, Xa)
        done = np.abs(new_objective - objective[active]) < tol
        u[active], w[active], objective[active] = u_new, w_new, new_objective
        if trace:
            history.append(objective / np.log(2))
        active = active[~done]
    return X, objective, history, iterations, bisections, steps


def wmmse(
    H: np.ndarray,
    noise_power: np.ndarray | float,
    p_max: np.ndarray | float,
    tol: float = 1e-5,
    max_iterations: int = 500,
    init: Init = "best",
    trace: bool = False,
) -> WmmseResult:
    """Batched WMMSE from each start of ``init``, keeping per sample the one with the higher sum rate."""
    H = np.asarray(H, dtype=np.complex128)
    B = len(H)
    noise = np.broadcast_to(np.asarray(noise_power, dtype=float), (B,))
    p = np.broadcast_to(np.asarray(p_max, dtype=float), (B,)).copy()
    K, starts = _start(H, noise, p, init)
    S = len(starts)
    # every start of every sample iterates in one batch: S times the rows, the loop's overhead paid once
    X, objective, history, iterations, bisections, steps = (
        np.asarray(x) for x in _iterate(np.concatenate([K] * S), np.concatenate(starts), np.tile(p, S), tol,
                                        max_iterations, trace))
    objective = objective.reshape(S, B)
    kept = np.argmax(objective, 0)  # the first start wins a tie
    X = X.reshape(S, B, *X.shape[1:])[kept, np.arange(B)]
    # the kept run's sum rate after each iteration; a converged run repeats its last value
    history = [h.reshape(S, B)[kept, np.arange(B)] for h in history] if trace else []
    return WmmseResult(_finish(H, X, noise), iterations.reshape(S, B).sum(0), history,
                       bisections.reshape(S, B).sum(0), steps.reshape(S, B).sum(0))


@lru_cache(maxsize=32)
def phase_operations(n_t: int, n_u: int, init: Init) -> dict[str, OperationCount]:
    """The ``implemented`` operations of each phase of :func:`wmmse`, read from its code on one probe channel."""
    H, one, zero = probe_channel(n_t, n_u), np.ones(1), np.zeros(1)
    K, starts = _start(H, one, one, init)
    u, w, _ = _receivers(K, starts[0])
    M, c = _system(K, u, w)
    bracket = Bracket(zero, one, 2 * one, -one, one, 0.5 * one)
    return {
        "start": count_call(_start, H, noise=one, p=one, init=init) + count_call(_receivers, K, starts[0]) * len(starts),
        "iteration": count_call(_system, K, u, w) + count_call(_solve_at, M, c, K, zero) + count_call(_receivers, K, starts[0]),
        "bisection": count_call(_bisection_bound, K, c, p=one) + count_call(_coefficients_at, M, c, one),
        "bisection_step": count_call(_bisection_step, M, c, K, *bracket, p=one),
        "finish": count_call(_finish, H, starts[0], noise=one),
    }


def wmmse_operations(n_t: int, n_u: int, iterations: np.ndarray, bisections: np.ndarray, steps: np.ndarray,
                     init: Init = "best") -> np.ndarray:
    """Per-sample ``implemented`` counts [B, 4] from what each sample took (see the module's docstring)."""
    phase = {name: ops.as_row() for name, ops in phase_operations(n_t, n_u, init).items()}
    return (phase["start"] + phase["finish"] + np.outer(iterations, phase["iteration"])
            + np.outer(bisections, phase["bisection"]) + np.outer(steps, phase["bisection_step"]))


def paper_operations(n_t: int, n_u: int, iterations: np.ndarray | float, init: Init = "best") -> np.ndarray | float:
    """Eq. 12 per iteration plus eq. 13 (and RZF's 4 N_T N_U scaling) per start."""
    rzf = zf_op_count(n_t, n_u) + 4 * n_t * n_u
    start = {"zf": zf_op_count(n_t, n_u), "rzf": rzf, "rzf-equal": rzf}
    return wmmse_op_count(n_t, n_u, iterations) + sum(start[name] for name in STARTS[init])


def wmmse_per_sample(
    h: np.ndarray, noise_power: float, p_max: float, tol: float = 1e-5, max_iterations: int = 500,
    init: Literal["zf", "rzf"] = "zf",
) -> tuple[np.ndarray, int]:
    """Reference: Shi et al.'s algorithm for one channel ``h`` [N_U, N_T], N_T x N_T linear algebra, from ZF
    or textbook RZF."""
    h = np.asarray(h, dtype=np.complex128) / np.sqrt(noise_power)
    n_u, n_t = h.shape
    regularization = n_u / p_max if init == "rzf" else 0.0
    v = np.conj(h.T) @ np.linalg.inv(h @ np.conj(h.T) + regularization * np.eye(n_u))
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
            for _ in range(BISECTION_MAX_STEPS):
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
        init: Init = "best",
    ) -> BaselineResult:
        result = wmmse(H, noise_power, p_max, tol=tol, max_iterations=max_iterations, init=init)
        n_u, n_t = H.shape[-2:]
        return BaselineResult(
            output=result.precoders, iterations=result.iterations,
            macs_per_sample=np.asarray(paper_operations(n_t, n_u, result.iterations, init), dtype=float),
            operations=wmmse_operations(n_t, n_u, result.iterations, result.bisections, result.bisection_steps, init),
            bisection_steps=result.bisection_steps)

    def precode(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float, tol: float = 1e-5,
                max_iterations: int = 500, init: Init = "best") -> np.ndarray:
        """The precoders alone, as the edge agent serves the method: :meth:`run` without its operation count."""
        return wmmse(H, noise_power, p_max, tol=tol, max_iterations=max_iterations, init=init).precoders

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        """The ``paper`` counting: eq. 12 alone, as Table I prices WMMSE."""
        if iterations is None:
            raise ValueError("WMMSE's operation count needs the number of iterations")
        return wmmse_op_count(n_t, n_u, iterations)

    def operations(self, n_t: int, n_u: int, iterations: float | None = None,
                   bisection_steps: float | None = None) -> OperationCount:
        """The ``implemented`` counting of one best-of-both-starts run with ``iterations`` (over both starts)
        that all bisect, with ``bisection_steps`` per iteration (default: :data:`TYPICAL_BISECTION_STEPS`)."""
        if iterations is None:
            raise ValueError("WMMSE's operation count needs the number of iterations")
        steps = TYPICAL_BISECTION_STEPS if bisection_steps is None else bisection_steps
        row = wmmse_operations(n_t, n_u, np.array([iterations]), np.array([iterations]), np.array([iterations * steps]))
        return OperationCount.mean_of(row)


@hookimpl
def register_baselines(register) -> None:
    register("wmmse", WMMSE())
