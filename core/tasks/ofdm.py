r"""OFDM reception: one uplink slot on a resource grid, as in DeepRx (Honkala et al., IEEE TWC 2021).

A user sends one slot of ``n_sym`` = 14 OFDM symbols on ``n_sc`` subcarriers. Pilot resource elements
(REs) sit on the pilot symbols (default 2 and 11, like a 5G DMRS with one additional position) on every
``pilot_step``-th subcarrier; every other RE carries a Gray-labelled QAM symbol (unit energy). Per RE

.. math::

    Y[t, f] = H[t, f]\, X[t, f] + \underbrace{H_I[t, f]\, X_I[t, f]}_{\text{interference}} + N[t, f],
    \qquad \mathrm{SINR} = \frac{E|H|^2}{\rho/\mathrm{SINR} + (1-\rho)/\mathrm{SINR}}

with unit mean channel power; the impairment power :math:`1/\mathrm{SINR}` is split into a co-channel
interferer (share :math:`\rho` = ``interference_share``, its own channel and QPSK data) and white Gaussian
noise (share :math:`1-\rho`).

**Channel: tapped delay line with Doppler** (Clarke's model per tap, :mod:`edgejoule.tasks.tdl`):

.. math::

    H[t, f] = \sum_{l=1}^{L} \sqrt{p_l / K} \sum_{k=1}^{K} e^{j(\phi_{lk} + 2\pi f_D T_s t \cos\theta_{lk})}
              \, e^{-j 2\pi f \Delta f \tau_l}

with K = 8 rays per tap, symbol time :math:`T_s = (1 + 1/14)/\Delta f` (cyclic prefix included) and maximum
Doppler :math:`f_D` = ``doppler_hz`` (0: a static slot). ``channel`` picks the power-delay profile:
``exponential`` (default): ``n_taps`` delays :math:`\tau_l` uniform in :math:`[0, 3\tau_{\mathrm{rms}}]` per slot
(the first at 0), :math:`p_l \propto e^{-\tau_l / \tau_{\mathrm{rms}}}`, :math:`\sum_l p_l = 1`; or
``tdl-a``/``tdl-b``/``tdl-c``: the fixed profiles of 3GPP TR 38.901 Tables 7.7.2-1..3 scaled to
:math:`\tau_{\mathrm{rms}}` = ``delay_spread_ns``.

**Site channels** (``site_gains``): the site datasets of :mod:`edgejoule.sites` are narrowband (one complex
coefficient per BS antenna and user, no delays), so they cannot give the frequency selectivity; they fit as
each slot's large-scale complex gain: the channel of a site user to BS antenna 0, divided by the RMS over
the dataset, multiplies the unit-power TDL grid. The slot's SINR then varies with the site's own gain
spread around the nominal SINR.

**Least-squares estimate** at pilots: :math:`\hat H_{LS}[t,f] = Y[t,f] / P[t,f]` on pilot REs, 0 elsewhere;
``interpolate`` fills the grid: linear interpolation across subcarriers on each pilot symbol (flat beyond the
edge pilots), then linear inter-/extrapolation in time between pilot symbols (held constant with one pilot
symbol, as a receiver with a single DMRS symbol does). Both are linear maps, applied as two small real matrices.
Metric: uncoded BER over data REs. Bit logits follow the convention "positive means bit 1".
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgejoule.errors import EdgejouleError
from edgejoule.tasks.detection import Constellation, constellation
from edgejoule.tasks.tdl import TDL_PROFILES, doppler_taps, frequency_response, tdl_profile

__all__ = [
    "OfdmConfig",
    "OfdmSlot",
    "bit_errors",
    "interpolate",
    "ls_estimate",
    "site_gains",
    "simulate",
    "slot_bit_errors",
    "tdl_channel",
]

CHANNELS = ("exponential", *TDL_PROFILES)
PILOT_SEED = 7  # the pilot sequence is known to the receiver: one fixed QPSK sequence per grid size


class OfdmConfig(BaseModel):
    """The resource grid, modulation and channel model of the task."""

    model_config = ConfigDict(frozen=True)

    n_sc: int = Field(24, ge=2, description="subcarriers")
    n_sym: int = Field(14, ge=2, description="OFDM symbols per slot")
    pilot_symbols: tuple[int, ...] = Field((2, 11), description="OFDM symbols that carry pilots")
    pilot_step: int = Field(2, ge=1, description="every pilot_step-th subcarrier of a pilot symbol is a pilot")
    modulation: str = Field("qpsk", description="qpsk or 16qam")
    channel: str = Field("exponential", description="power-delay profile: exponential, tdl-a, tdl-b or tdl-c")
    n_taps: int = Field(6, ge=1, description="taps of the exponential profile (the TDL profiles have their own)")
    delay_spread_ns: float = Field(300.0, ge=0.0, le=1000.0, description="RMS delay spread of the profile, up to "
                                   "1000 ns (TR 38.901 Table 7.7.3-1's 'very long')")
    subcarrier_hz: float = Field(30e3, gt=0.0, allow_inf_nan=False, description="subcarrier spacing")
    doppler_hz: float = Field(300.0, ge=0.0, allow_inf_nan=False, description="maximum Doppler shift (0: no time "
                              "variation), up to a tenth of the subcarrier spacing")
    interference_share: float = Field(0.5, ge=0.0, le=1.0, description="share of the impairment that is interference")

    def model_post_init(self, _: object) -> None:
        if any(not 0 <= s < self.n_sym for s in self.pilot_symbols) or not self.pilot_symbols:
            raise EdgejouleError(f"pilot_symbols must be in 0..{self.n_sym - 1}; got {self.pilot_symbols}")
        if self.channel not in CHANNELS:
            raise EdgejouleError(f"unknown channel '{self.channel}'; use one of {', '.join(CHANNELS)}")
        constellation(self.modulation)
        # The channel is sampled once per OFDM symbol, without inter-carrier interference: a fair model only while
        # the Doppler shift is small against the subcarrier spacing.
        if self.doppler_hz > self.subcarrier_hz / 10:
            raise EdgejouleError(f"doppler_hz must be at most a tenth of the subcarrier spacing "
                                 f"({self.subcarrier_hz / 10:g} Hz; beyond, inter-carrier interference, which this "
                                 f"model leaves out, dominates); got {self.doppler_hz:g}")

    @property
    def const(self) -> Constellation:
        return constellation(self.modulation)

    @property
    def bits_per_symbol(self) -> int:
        return 2 * self.const.bits_per_dim

    @property
    def pilot_mask(self) -> np.ndarray:
        """bool [n_sym, n_sc]: True on pilot REs."""
        mask = np.zeros((self.n_sym, self.n_sc), bool)
        mask[list(self.pilot_symbols), :: self.pilot_step] = True
        return mask

    @property
    def data_mask(self) -> np.ndarray:
        return ~self.pilot_mask

    @property
    def pilots(self) -> np.ndarray:
        """complex64 [n_sym, n_sc]: the known QPSK pilot grid (0 on data REs)."""
        rng = np.random.default_rng(PILOT_SEED)
        qpsk = (rng.choice([-1.0, 1.0], self.pilot_mask.shape) + 1j * rng.choice([-1.0, 1.0], self.pilot_mask.shape))
        return (qpsk / np.sqrt(2) * self.pilot_mask).astype(np.complex64)


class OfdmSlot(BaseModel):
    """A batch of received slots with what the receiver knows and the truth to score against."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    y: np.ndarray = Field(description="complex64 [B, n_sym, n_sc] received grid")
    h_ls: np.ndarray = Field(description="complex64 [B, n_sym, n_sc] LS estimate at pilots, 0 elsewhere")
    h: np.ndarray = Field(description="complex64 [B, n_sym, n_sc] true channel (for genie baselines and checks)")
    bits: np.ndarray = Field(description="int8 [B, n_sym, n_sc, bits_per_symbol]; pilot REs hold zeros")
    impairment_var: np.ndarray = Field(description="float [B] noise + interference power 1/SINR")


def tdl_channel(cfg: OfdmConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """complex64 [n, n_sym, n_sc] unit-mean-power TDL channel grids with Doppler (module docstring)."""
    tau_rms = cfg.delay_spread_ns * 1e-9
    if cfg.channel == "exponential":
        tau = rng.uniform(0.0, 3.0 * tau_rms, (n, cfg.n_taps))
        tau[:, 0] = 0.0
        power = np.exp(-tau / tau_rms) if tau_rms > 0 else np.ones_like(tau)
        power /= power.sum(1, keepdims=True)
    else:
        delays, profile = tdl_profile(cfg.channel, tau_rms)
        tau, power = np.broadcast_to(delays, (n, len(delays))), np.broadcast_to(profile, (n, len(profile)))
    t_sym = (1.0 + 1.0 / 14.0) / cfg.subcarrier_hz
    taps = doppler_taps(power, cfg.n_sym, t_sym, cfg.doppler_hz, rng)
    return frequency_response(taps, tau, cfg.n_sc, cfg.subcarrier_hz)


def site_gains(site: str, n: int, rng: np.random.Generator, split: str = "train") -> np.ndarray:
    """complex64 [n] slot gains from a site's narrowband channels (module docstring), unit mean power."""
    from edgejoule.sites import get_site, load_dataset

    H = load_dataset(get_site(site)).H(split)  # [S, N_U, N_T]
    g = H[:, :, 0].reshape(-1)
    g = g / np.sqrt(np.mean(np.abs(g) ** 2))
    return g[rng.integers(0, len(g), n)].astype(np.complex64)


def _qam(cfg: OfdmConfig, bits: np.ndarray) -> np.ndarray:
    """Gray-mapped QAM symbols from bits [..., bits_per_symbol] (real-part bits first)."""
    const = cfg.const
    k = const.bits_per_dim
    weights = 1 << np.arange(k)[::-1]
    gray_to_level = np.argsort((const.gray * weights).sum(1))  # gray code value -> PAM level index
    re = const.levels[gray_to_level[(bits[..., :k] * weights).sum(-1)]]
    im = const.levels[gray_to_level[(bits[..., k:] * weights).sum(-1)]]
    return (re + 1j * im).astype(np.complex64)


def ls_estimate(cfg: OfdmConfig, y: np.ndarray) -> np.ndarray:
    """Raw LS channel estimate Y/P on pilot REs, 0 on data REs (only the pilot REs are divided: a receiver's
    operations are counted from this code, edgejoule.energy.counting)."""
    mask = cfg.pilot_mask
    h = np.zeros_like(y, dtype=np.complex64)
    h[:, mask] = y[:, mask] / cfg.pilots[mask]
    return h


def interpolation_weights(cfg: OfdmConfig) -> tuple[np.ndarray, np.ndarray]:
    """(W_f [P, n_sc], W_t [S, n_sym]): the frequency and time interpolation weights of ``interpolate``."""
    sym = np.array(sorted(cfg.pilot_symbols))
    sc_p = np.nonzero(cfg.pilot_mask[sym[0]])[0]
    f = np.arange(cfg.n_sc)
    w_f = np.stack([np.interp(f, sc_p, unit) for unit in np.eye(len(sc_p))])
    if len(sym) == 1:
        return w_f, np.ones((1, cfg.n_sym))
    t = np.arange(cfg.n_sym)
    right = np.clip(np.searchsorted(sym, t), 1, len(sym) - 1)  # the two nearest pilot symbols, extrapolated beyond
    left = right - 1
    w = (t - sym[left]) / (sym[right] - sym[left])
    w_t = np.zeros((len(sym), cfg.n_sym))
    w_t[left, t] += 1 - w
    w_t[right, t] += w
    return w_f, w_t


def _two_taps(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x`` [..., P] times the linear interpolation weights ``w`` [P, N] -> [..., N]: each output of a linear
    interpolation has at most two nonzero weights, so it is two products and a sum, not a row of P."""
    taps = np.argsort(-np.abs(w), 0, kind="stable")[: min(2, len(w))]  # [taps, N]
    weights = np.take_along_axis(w, taps, 0)
    out = x[..., taps[0]] * weights[0]
    for j in range(1, len(taps)):
        out = out + x[..., taps[j]] * weights[j]
    return out


def interpolate(cfg: OfdmConfig, h_ls: np.ndarray) -> np.ndarray:
    """complex64 [B, n_sym, n_sc]: the LS estimate interpolated over frequency, then time (module docstring)."""
    w_f, w_t = interpolation_weights(cfg)
    sym = sorted(cfg.pilot_symbols)
    rows = h_ls[:, sym][:, :, np.nonzero(cfg.pilot_mask[sym[0]])[0]]  # [B, S, P]
    along_f = _two_taps(rows, w_f)  # [B, S, n_sc]
    return np.swapaxes(_two_taps(np.swapaxes(along_f, -1, -2), w_t), -1, -2).astype(np.complex64)


def simulate(
    cfg: OfdmConfig,
    sinr_db: np.ndarray | float,
    rng: np.random.Generator,
    n: int | None = None,
    gains: np.ndarray | None = None,
) -> OfdmSlot:
    """``n`` slots (default: one per entry of ``sinr_db``) through TDL channels, optionally scaled by ``gains``."""
    sinr_db = np.atleast_1d(np.asarray(sinr_db, float))
    n = len(sinr_db) if n is None else n
    sinr_db = np.broadcast_to(sinr_db, (n,))
    bits = rng.integers(0, 2, (n, cfg.n_sym, cfg.n_sc, cfg.bits_per_symbol)).astype(np.int8)
    bits[:, cfg.pilot_mask] = 0
    x = np.where(cfg.pilot_mask, cfg.pilots, _qam(cfg, bits))
    h = tdl_channel(cfg, n, rng)
    if gains is not None:
        h = h * np.asarray(gains, np.complex64).reshape(n, 1, 1)
    imp = 10.0 ** (-sinr_db / 10.0)
    shape = (n, cfg.n_sym, cfg.n_sc)
    x_i = (rng.choice([-1.0, 1.0], shape) + 1j * rng.choice([-1.0, 1.0], shape)) / np.sqrt(2)
    interference = np.sqrt(cfg.interference_share * imp)[:, None, None] * tdl_channel(cfg, n, rng) * x_i
    noise = np.sqrt((1 - cfg.interference_share) * imp / 2)[:, None, None] * (
        rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    )
    y = (h * x + interference + noise).astype(np.complex64)
    return OfdmSlot(y=y, h_ls=ls_estimate(cfg, y), h=h, bits=bits, impairment_var=imp.astype(np.float32))


def bit_errors(cfg: OfdmConfig, logits: np.ndarray, bits: np.ndarray) -> tuple[int, int]:
    """(bit errors, bits) over data REs; ``logits`` [B, n_sym, n_sc, bits_per_symbol], positive means 1."""
    per_slot, n = slot_bit_errors(cfg, logits, bits)
    return int(per_slot.sum()), n


def slot_bit_errors(cfg: OfdmConfig, logits: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, int]:
    """(bit errors per slot [B], bits in all) over data REs, as :func:`bit_errors`."""
    mask = cfg.data_mask
    wrong = (np.asarray(logits) > 0) != (np.asarray(bits) > 0)
    return wrong[:, mask].reshape(len(wrong), -1).sum(1), int(mask.sum() * bits.shape[0] * bits.shape[-1])
