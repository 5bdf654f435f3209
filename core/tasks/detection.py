r"""Uplink MIMO detection: system model, QAM, channels and BER/SER.

N_U single-antenna users send one QAM symbol each to a receiver with N_R antennas:

.. math::

    y = G x + n, \qquad G \in \mathbb{C}^{N_R \times N_U},\; x \in \mathcal{C}^{N_U},\;
    n \sim \mathcal{CN}(0, \sigma^2 I)

Everything downstream (baselines, unfolded networks) works on the **real-valued equivalent model**

.. math::

    \begin{bmatrix}\Re y\\ \Im y\end{bmatrix} =
    \begin{bmatrix}\Re G & -\Im G\\ \Im G & \Re G\end{bmatrix}
    \begin{bmatrix}\Re x\\ \Im x\end{bmatrix} + \begin{bmatrix}\Re n\\ \Im n\end{bmatrix}
    \quad (y_r = H x_r + n_r,\; H \in \mathbb{R}^{2N_R \times 2N_U})

in which square M-QAM is a sqrt(M)-PAM per real dimension with Gray labels, unit average symbol
energy :math:`E|x_u|^2 = 1` and noise variance :math:`\sigma^2/2` per real dimension.

Conventions (used by every detector in edgejoule):

- channels have unit average entry power (:math:`E\|G\|_F^2 = N_R N_U`; site channels per user, below), and
  ``snr_db`` is the SNR per user and receive antenna, :math:`E_s/\sigma^2 = 1/\sigma^2` (the total SNR per
  receive antenna is N_U times that);
- **site channels** (``site_channels``): the site's N_U users are the transmitters of a MIMO *uplink* to the
  site's base station, which receives on its first N_R antennas (a sub-array of its UPA, row-major); by
  reciprocity :math:`G = H^H` of the downlink channel of :mod:`edgejoule.sites` (row u of H is :math:`h_u^H`).
  Each user's column is scaled to :math:`\|g_u\|^2 = N_R` (per-user uplink power control, which also gives
  unit entry power above); what stays site-specific is the spatial structure: correlation
  between antennas and the users' angular separation on the array;
- **i.i.d. Rayleigh** (``rayleigh_channels``): entries :math:`\mathcal{CN}(0, 1)`.

Functions take an array namespace ``xp`` (numpy by default, or ``torch``) where the training code uses them.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgejoule.errors import EdgejouleError
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.coded import block_errors, ldpc_code
from edgejoule.tasks.error_rate import MIN_ERRORS, count_errors

Array = Any
Modulation = Literal["qpsk", "16qam"]
_ORDER = {"qpsk": 4, "16qam": 16}


class Constellation(BaseModel):
    """Square M-QAM as sqrt(M)-PAM per real dimension, Gray-labelled, unit average complex symbol energy."""

    model_config = ConfigDict(frozen=True)

    name: Modulation = "qpsk"

    @property
    def order(self) -> int:
        return _ORDER[self.name]

    @property
    def levels_per_dim(self) -> int:
        return int(round(np.sqrt(self.order)))

    @property
    def bits_per_dim(self) -> int:
        return int(np.log2(self.levels_per_dim))

    @property
    def scale(self) -> float:
        """Half the distance between neighbouring PAM levels: levels are (2i - L + 1) * scale."""
        levels = self.levels_per_dim
        return float(np.sqrt(3.0 / (2.0 * (levels**2 - 1))))

    @property
    def levels(self) -> np.ndarray:
        levels = self.levels_per_dim
        return (2 * np.arange(levels) - levels + 1) * self.scale

    @property
    def gray(self) -> np.ndarray:
        """Gray label of PAM level i, as bits [L, bits_per_dim] (MSB first)."""
        idx = np.arange(self.levels_per_dim)
        code = idx ^ (idx >> 1)
        return ((code[:, None] >> np.arange(self.bits_per_dim)[::-1]) & 1).astype(np.int8)


def constellation(name: str) -> Constellation:
    if name not in _ORDER:
        raise EdgejouleError(f"unknown modulation '{name}'; use one of {', '.join(_ORDER)}")
    return Constellation(name=name)  # type: ignore[arg-type]


def real_channel(G: np.ndarray) -> np.ndarray:
    """Complex ``[B, N_R, N_U]`` -> real ``[B, 2N_R, 2N_U]`` (the block matrix above)."""
    top = np.concatenate([G.real, -G.imag], -1)
    bottom = np.concatenate([G.imag, G.real], -1)
    return np.concatenate([top, bottom], -2).astype(np.float32)


def rayleigh_channels(n: int, n_r: int, n_u: int, rng: np.random.Generator) -> np.ndarray:
    """i.i.d. :math:`\\mathcal{CN}(0,1)` channels ``[n, N_R, N_U]`` (not normalized per sample)."""
    return ((rng.standard_normal((n, n_r, n_u)) + 1j * rng.standard_normal((n, n_r, n_u))) / np.sqrt(2)).astype(
        np.complex64
    )


def site_channels(H_downlink: np.ndarray, n_r: int, n_u: int) -> np.ndarray:
    """Uplink channels ``[S, n_r, n_u]`` from a site's downlink ``[S, N_U, N_T]``: :math:`G = H^H` on the first
    ``n_r`` BS antennas and the first ``n_u`` users, each user's column scaled to :math:`\\|g_u\\|^2 = N_R`."""
    s, users, antennas = H_downlink.shape
    if n_r > antennas or n_u > users:
        raise EdgejouleError(
            f"the site has {antennas} BS antennas and {users} users; ask for at most that many (got {n_r}x{n_u})"
        )
    G = np.conj(np.swapaxes(H_downlink[:, :n_u, :n_r], -1, -2))
    # per-user power control: each user arrives with unit mean gain per antenna (a far user is not drowned out)
    gain = np.sqrt(np.sum(np.abs(G) ** 2, axis=-2, keepdims=True) / n_r)
    return (G / np.maximum(gain, 1e-30)).astype(np.complex64)


def noise_variance(snr_db: Array, xp: Any = np) -> Array:
    """Complex noise variance :math:`\\sigma^2 = 10^{-\\mathrm{SNR}/10}` (unit symbol energy, unit channel gain)."""
    return 10.0 ** (-xp.asarray(snr_db) / 10.0) if xp is np else 10.0 ** (-snr_db / 10.0)


class DetectionBatch(BaseModel):
    """One batch of the real-valued model, with the transmitted symbol indices for scoring."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    H: np.ndarray = Field(description="float32 [B, 2N_R, 2N_U]")
    y: np.ndarray = Field(description="float32 [B, 2N_R]")
    x: np.ndarray = Field(description="float32 [B, 2N_U]: transmitted real symbols")
    idx: np.ndarray = Field(description="int [B, 2N_U]: PAM level index of each real symbol")
    noise_var: np.ndarray = Field(description="float32 [B]: complex noise variance sigma^2")
    snr_db: np.ndarray = Field(description="float32 [B]")


def simulate(G: np.ndarray, const: Constellation, snr_db: Array, rng: np.random.Generator) -> DetectionBatch:
    """Random symbols and noise through complex channels ``G`` [B, N_R, N_U] at ``snr_db`` (scalar or [B])."""
    b, n_r, n_u = G.shape
    snr = np.broadcast_to(np.asarray(snr_db, dtype=np.float32), (b,)).copy()
    idx = rng.integers(0, const.levels_per_dim, size=(b, 2 * n_u))
    x = const.levels[idx].astype(np.float32)
    H = real_channel(G)
    noise_var = noise_variance(snr).astype(np.float32)
    n = rng.standard_normal((b, 2 * n_r)).astype(np.float32) * np.sqrt(noise_var / 2)[:, None]
    y = np.einsum("bij,bj->bi", H, x) + n
    return DetectionBatch(H=H, y=y.astype(np.float32), x=x, idx=idx, noise_var=noise_var, snr_db=snr)


def slice_symbols(x_hat: Array, const: Constellation, xp: Any = np) -> Array:
    """Nearest PAM level index of each real estimate (hard decision)."""
    levels = const.levels_per_dim
    i = xp.round((x_hat / const.scale + levels - 1) / 2)
    return xp.clip(i, 0, levels - 1) if xp is np else i.clamp(0, levels - 1)


def error_counts(x_hat: np.ndarray, batch: DetectionBatch, const: Constellation) -> tuple[int, int, int, int]:
    """(bit errors, bits, symbol errors, symbols) of real estimates ``x_hat`` [B, 2N_U] against ``batch``.

    A complex symbol is wrong when either of its real or imaginary PAM decisions is."""
    dec = slice_symbols(np.asarray(x_hat), const).astype(int)
    bit_err = int(np.sum(const.gray[dec] != const.gray[batch.idx]))
    n_u = dec.shape[-1] // 2
    wrong = dec != batch.idx
    sym_err = int(np.sum(wrong[:, :n_u] | wrong[:, n_u:]))
    return bit_err, dec.size * const.bits_per_dim, sym_err, dec.shape[0] * n_u


def maxlog_llrs(const: Constellation, x: np.ndarray, v: np.ndarray | float | None = None, *,
                precision: np.ndarray | None = None) -> np.ndarray:
    r"""float32 [..., bits_per_dim] max-log bit LLRs of real PAM estimates ``x`` with noise variance ``v``:
    :math:`\ell_b = (\min_{s: b=0}(x-s)^2 - \min_{s: b=1}(x-s)^2) / v` (positive means bit 1). A caller that has
    the precision :math:`1/v` passes it instead, so that no bit costs a division (a receiver's operations are
    counted from its code, :mod:`edgejoule.energy.counting`)."""
    # asanyarray keeps a Counted array counted (edgejoule.energy.counting)
    d = (np.asanyarray(x)[..., None] - const.levels) ** 2  # [..., L]
    w = np.asanyarray(precision) if precision is not None else 1 / np.asanyarray(v)
    return np.stack([(d[..., const.gray[:, j] == 0].min(-1) - d[..., const.gray[:, j] == 1].min(-1)) * w
                     for j in range(const.bits_per_dim)], -1).astype(np.float32)


class ErrorRates(BaseModel):
    snr_db: float
    ber: float
    ser: float
    bits: int
    ber_point: dict = Field(description="bit errors counted and the 95 % interval (edgejoule.tasks.error_rate)")


class ChannelSource:
    """Where detection channels come from: i.i.d. Rayleigh, or a pool of a site's uplink channels of one split
    (drawn with replacement; symbols and noise are fresh each draw)."""

    def __init__(self, n_r: int, n_u: int, pool: np.ndarray | None = None, name: str = "rayleigh") -> None:
        self.n_r, self.n_u, self.pool, self.name = n_r, n_u, pool, name

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.pool is None:
            return rayleigh_channels(n, self.n_r, self.n_u, rng)
        return self.pool[rng.integers(0, len(self.pool), n)]


def channel_source(site: str, n_r: int, n_u: int, split: str = "train") -> ChannelSource:
    """``rayleigh`` or a site name (its dataset is generated and cached on first use)."""
    if site == "rayleigh":
        return ChannelSource(n_r, n_u)
    ds = load_dataset(get_site(site))
    return ChannelSource(n_r, n_u, site_channels(ds.H(split), n_r, n_u), name=site)  # type: ignore[arg-type]


def _snr_key(snr: float) -> int:
    """A seed word per SNR: centi-dB, negative SNRs wrapped past 2^31 (a seed word must be non-negative)."""
    key = int(round(snr * 100))
    return key if key >= 0 else 2**32 + key


def error_rates(
    detect: Any,
    source: ChannelSource,
    const: Constellation,
    snr_db: list[float],
    n_samples: int,
    seed: int = 1,
    batch: int = 2000,
    min_errors: int | None = None,
) -> list[ErrorRates]:
    """BER and SER of ``detect(batch) -> x_hat [B, 2N_U]`` at each SNR over ``n_samples`` detections, or with
    ``min_errors`` until that many bit errors are counted (at most ``n_samples``: :mod:`edgejoule.tasks.error_rate`).

    The same seed draws the same channels, symbols and noise for every detector, so curves compare paired."""
    out = []
    for snr in snr_db:
        rng = np.random.default_rng([seed, _snr_key(snr)])
        symbols = [0, 0]  # symbol errors and symbols, beside the bit counts that drive the stopping rule

        def draw(n: int, snr: float = snr, rng: np.random.Generator = rng) -> tuple[int, int]:
            b = simulate(source.draw(n, rng), const, snr, rng)
            be, nb, se, ns = error_counts(detect(b), b, const)
            symbols[0], symbols[1] = symbols[0] + se, symbols[1] + ns
            return be, nb

        count = count_errors(draw, n_samples, batch, min_errors)
        out.append(ErrorRates(snr_db=float(snr), ber=count.rate, ser=symbols[0] / symbols[1], bits=count.trials,
                              ber_point=count.report()))
    return out


CODE_BLOCK_BITS = 576  # codeword bits per block: a 5G-like length, here over consecutive detections


def coded_error_rates(
    detect: Any,
    source: ChannelSource,
    const: Constellation,
    snr_db: list[float],
    code_name: str,
    max_blocks: int,
    seed: int = 1,
    min_errors: int = MIN_ERRORS,
    batch: int = 2000,
    llrs: Callable[[DetectionBatch], np.ndarray] | None = None,
) -> list[dict]:
    """Coded BLER per SNR (``report()`` dicts of :mod:`edgejoule.tasks.error_rate`) of ``detect``: one codeword
    of :mod:`edgejoule.tasks.coded` over the bits of ``CODE_BLOCK_BITS // bits per detection`` consecutive
    detections (fresh channels each: interleaved fast fading), decoded from max-log LLRs of the soft estimates
    with the noise variance as every stream's (for detectors that give no per-stream reliability, the learned
    ones; min-sum decoding is blind to the common scale), or from ``llrs(batch)`` [B, 2N_U, bits_per_dim] where
    a detector computes its own (the max-log ML reference; ZF and LMMSE with each stream's post-detection SINR).
    ``batch``: detections per call, as in :func:`error_rates`."""
    per_detection = 2 * source.n_u * const.bits_per_dim
    per_block = max(1, CODE_BLOCK_BITS // per_detection)
    code = ldpc_code(code_name, per_block * per_detection, seed)
    out = []
    for snr in snr_db:
        rng = np.random.default_rng([seed, _snr_key(snr)])
        code_rng = np.random.default_rng([seed, _snr_key(snr), 2])

        def draw(n: int, snr: float = snr, rng: np.random.Generator = rng, code_rng=code_rng) -> tuple[int, int]:
            b = simulate(source.draw(n * per_block, rng), const, snr, rng)
            llr = llrs(b) if llrs else maxlog_llrs(const, detect(b), b.noise_var[:, None])
            return block_errors(code, llr.reshape(n, -1), const.gray[b.idx].reshape(n, -1), code_rng)

        out.append(count_errors(draw, max_blocks, max(1, batch // per_block), min_errors).report())
    return out
