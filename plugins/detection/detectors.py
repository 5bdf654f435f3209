r"""Classical MIMO detectors on the real-valued model :math:`y = Hx + n` (:mod:`edgejoule.tasks.detection`).

With :math:`H \in \mathbb{R}^{n \times m}` (n = 2N_R, m = 2N_U), unit symbol energy (1/2 per real dimension)
and complex noise variance :math:`\sigma^2` (:math:`\sigma^2/2` per real dimension):

- ZF:    :math:`\hat x = (H^T H)^{-1} H^T y`
- LMMSE: :math:`\hat x = (H^T H + \sigma^2 I)^{-1} H^T y`  (the ratio of the real noise and symbol variances)
- ML:    :math:`\hat x = \arg\min_{x \in \mathcal{C}^{N_U}} \|y - Hx\|^2`, by exhaustive search (small sizes:
  at most ``ML_MAX_CANDIDATES`` candidate vectors), or exactly by the sphere decoder of :mod:`edgejoule.plugins.detection.sphere`
  (``sphere-detector``, any size; its operation count is measured per detection).

ZF and LMMSE return soft estimates that are sliced to the nearest PAM level when scored.

Operation counts (real multiplications, the convention of eq. 14 of the precoder-compression paper; a
Cholesky solve of an m x m system counted as m^3/3 + m^2):

- ZF:    :math:`N_c = n m^2 + n m + m^3/3 + m^2` (Gram matrix, matched filter, solve);
- LMMSE: ZF's count plus m (the diagonal loading);
- ML:    :math:`N_c = |\mathcal{C}|^{N_U} (n m + n)` (every candidate's :math:`Hx` and distance).
"""

from __future__ import annotations

import numpy as np

from edgejoule.errors import EdgejouleError
from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult
from edgejoule.plugins.detection.sphere import SphereDetector
from edgejoule.tasks.detection import Constellation

ML_MAX_CANDIDATES = 4096


def linear_op_count(n: int, m: int, regularized: bool) -> float:
    return n * m * m + n * m + m**3 / 3 + m * m + (m if regularized else 0)


def ml_op_count(n: int, m: int, order: int) -> float:
    return float(order) ** (m // 2) * (n * m + n)


def linear_detect(H: np.ndarray, y: np.ndarray, noise_var: np.ndarray | float | None) -> np.ndarray:
    """Batched ZF (``noise_var`` None) or LMMSE: ``H`` [B, n, m], ``y`` [B, n] -> [B, m]."""
    H64 = np.asarray(H, np.float64)
    Ht = np.swapaxes(H64, -1, -2)
    gram = Ht @ H64
    if noise_var is not None:
        gram = gram + np.asarray(noise_var, np.float64).reshape(-1, 1, 1) * np.eye(H.shape[-1])
    return np.linalg.solve(gram, (Ht @ np.asarray(y, np.float64)[..., None]))[..., 0].astype(np.float32)


def ml_candidates(const: Constellation, n_u: int) -> np.ndarray:
    """All real symbol vectors [M^N_U, 2N_U] of the constellation (real parts first, then imaginary)."""
    if const.order**n_u > ML_MAX_CANDIDATES:
        raise EdgejouleError(
            f"exhaustive ML over {const.order}^{n_u} = {const.order**n_u} candidates is too large "
            f"(limit {ML_MAX_CANDIDATES}); use fewer users or QPSK"
        )
    grids = np.meshgrid(*([const.levels] * (2 * n_u)), indexing="ij")
    return np.stack([g.ravel() for g in grids], -1).astype(np.float32)


def ml_detect(H: np.ndarray, y: np.ndarray, const: Constellation, chunk: int = 256) -> np.ndarray:
    """Exhaustive ML, in chunks of ``chunk`` samples to bound memory ([chunk, candidates, n])."""
    cand = ml_candidates(const, H.shape[-1] // 2)
    out = np.empty((len(H), H.shape[-1]), np.float32)
    for s in range(0, len(H), chunk):
        Hc, yc = H[s : s + chunk], y[s : s + chunk]
        dist = np.sum((yc[:, None, :] - np.einsum("bij,cj->bci", Hc, cand)) ** 2, -1)
        out[s : s + chunk] = cand[np.argmin(dist, -1)]
    return out


class LinearDetector:
    task = "detection"

    def __init__(self, name: str, regularized: bool) -> None:
        self.name = name
        self.regularized = regularized

    def run(self, H: np.ndarray, y: np.ndarray, noise_var: np.ndarray | float, **_: object) -> BaselineResult:
        x = linear_detect(H, y, noise_var if self.regularized else None)
        n, m = H.shape[-2:]
        return BaselineResult(output=x, iterations=None, macs_per_sample=np.full(len(x), self.op_count(n=n, m=m)))

    def op_count(self, n: int, m: int, **_: object) -> float:
        return linear_op_count(n, m, self.regularized)


class MlDetector:
    name = "ml-detector"
    task = "detection"

    def run(self, H: np.ndarray, y: np.ndarray, noise_var: np.ndarray | float, const: Constellation) -> BaselineResult:
        x = ml_detect(H, y, const)
        n, m = H.shape[-2:]
        return BaselineResult(
            output=x, iterations=None, macs_per_sample=np.full(len(x), self.op_count(n=n, m=m, order=const.order))
        )

    def op_count(self, n: int, m: int, order: int = 4, **_: object) -> float:
        return ml_op_count(n, m, order)


@hookimpl
def register_baselines(register) -> None:
    register("zf-detector", LinearDetector("zf-detector", regularized=False))
    register("lmmse-detector", LinearDetector("lmmse-detector", regularized=True))
    register("ml-detector", MlDetector())
    register("sphere-detector", SphereDetector())
