r"""Tapped-delay-line channels with Doppler: the 3GPP TDL power-delay profiles and Clarke/Jakes fading taps.

**Profiles** (3GPP TR 38.901 V16.1, Sec. 7.7.2, Tables 7.7.2-1 TDL-A, 7.7.2-2 TDL-B, 7.7.2-3 TDL-C; all NLOS,
Rayleigh taps): normalized delays :math:`\bar\tau_l` and powers :math:`P_l` (dB). A profile is scaled to an RMS
delay spread DS (Sec. 7.7.3, eq. 7.7-1) and normalized to unit total power:

.. math::

    \tau_l = \bar\tau_l\,\mathrm{DS}, \qquad p_l = 10^{P_l/10} \Big/ \sum_k 10^{P_k/10}

(TR 38.901 Table 7.7.3-1 names DS = 10, 30, 100, 300, 1000 ns "very short" to "very long"). The table values
below were checked against the JSON files of Sionna 2.2 (``sionna/phy/channel/tr38901/models/v16_1``).

**Fading** (Clarke's model as a sum of sinusoids, Jakes' Doppler spectrum): tap l of slot n at OFDM symbol t is

.. math::

    a_l[t] = \sqrt{p_l / K} \sum_{k=1}^{K} e^{j(\phi_{lk} + 2\pi f_D T_s t \cos\theta_{lk})},
    \qquad \phi_{lk}, \theta_{lk} \sim \mathcal U[0, 2\pi)

drawn afresh per slot, so over slots :math:`E|a_l|^2 = p_l` and
:math:`E[a_l[t+m]\,a_l^*[t]] = p_l J_0(2\pi f_D T_s m)` (Clarke, Bell Syst. Tech. J. 1968; Jakes, Microwave Mobile
Communications 1974, ch. 1), the autocorrelation TR 38.901 Sec. 7.7.2 specifies for its Rayleigh taps
("classical Doppler spectrum").

**Frequency response** on subcarrier f (spacing :math:`\Delta f`), sampled once per OFDM symbol (no
inter-carrier interference):

.. math::

    H[t, f] = \sum_l a_l[t]\, e^{-j 2\pi f \Delta f \tau_l}
"""

from __future__ import annotations

import numpy as np

from edgejoule.errors import EdgejouleError

RAYS_PER_TAP = 8

# (normalized delays, powers in dB), in the order of the tables
TDL_PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tdl-a": (  # TR 38.901 Table 7.7.2-1
        (0.0, 0.3819, 0.4025, 0.5868, 0.4610, 0.5375, 0.6708, 0.5750, 0.7618, 1.5375, 1.8978, 2.2242, 2.1718,
         2.4942, 2.5119, 3.0582, 4.0810, 4.4579, 4.5695, 4.7966, 5.0066, 5.3043, 9.6586),
        (-13.4, 0.0, -2.2, -4.0, -6.0, -8.2, -9.9, -10.5, -7.5, -15.9, -6.6, -16.7, -12.4, -15.2, -10.8, -11.3,
         -12.7, -16.2, -18.3, -18.9, -16.6, -19.9, -29.7),
    ),
    "tdl-b": (  # TR 38.901 Table 7.7.2-2
        (0.0, 0.1072, 0.2155, 0.2095, 0.2870, 0.2986, 0.3752, 0.5055, 0.3681, 0.3697, 0.5700, 0.5283, 1.1021,
         1.2756, 1.5474, 1.7842, 2.0169, 2.8294, 3.0219, 3.6187, 4.1067, 4.2790, 4.7834),
        (0.0, -2.2, -4.0, -3.2, -9.8, -1.2, -3.4, -5.2, -7.6, -3.0, -8.9, -9.0, -4.8, -5.7, -7.5, -1.9, -7.6,
         -12.2, -9.8, -11.4, -14.9, -9.2, -11.3),
    ),
    "tdl-c": (  # TR 38.901 Table 7.7.2-3
        (0.0, 0.2099, 0.2219, 0.2329, 0.2176, 0.6366, 0.6448, 0.6560, 0.6584, 0.7935, 0.8213, 0.9336, 1.2285,
         1.3083, 2.1704, 2.7105, 4.2589, 4.6003, 5.4902, 5.6077, 6.3065, 6.6374, 7.0427, 8.6523),
        (-4.4, -1.2, -3.5, -5.2, -2.5, 0.0, -2.2, -3.9, -7.4, -7.1, -10.7, -11.1, -5.1, -6.8, -8.7, -13.2, -13.9,
         -13.9, -15.8, -17.1, -16.0, -15.7, -21.6, -22.8),
    ),
}


def tdl_profile(name: str, delay_spread_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(delays in s [L], unit-sum powers [L]) of a TR 38.901 profile scaled to ``delay_spread_s`` (eq. 7.7-1)."""
    if name not in TDL_PROFILES:
        raise EdgejouleError(f"unknown TDL profile '{name}'; use one of {', '.join(TDL_PROFILES)}")
    delays, powers_db = (np.asarray(v, float) for v in TDL_PROFILES[name])
    power = 10.0 ** (powers_db / 10.0)
    return delays * delay_spread_s, power / power.sum()


def doppler_taps(power: np.ndarray, n_sym: int, symbol_s: float, doppler_hz: float,
                 rng: np.random.Generator) -> np.ndarray:
    """complex [n, L, n_sym] Clarke/Jakes fading taps of mean powers ``power`` [n, L] (module docstring)."""
    n, n_taps = power.shape
    phase = rng.uniform(0, 2 * np.pi, (n, n_taps, RAYS_PER_TAP))
    cos_theta = np.cos(rng.uniform(0, 2 * np.pi, (n, n_taps, RAYS_PER_TAP)))
    t = np.arange(n_sym)
    rays = np.exp(1j * (phase[..., None] + 2 * np.pi * doppler_hz * symbol_s * cos_theta[..., None] * t))
    return np.sqrt(power / RAYS_PER_TAP)[..., None] * rays.sum(2)


def frequency_response(taps: np.ndarray, delays: np.ndarray, n_sc: int, subcarrier_hz: float) -> np.ndarray:
    """complex64 [n, n_sym, n_sc] grid of taps [n, L, n_sym] at delays [n, L] (module docstring)."""
    f = np.arange(n_sc)
    steer = np.exp(-2j * np.pi * subcarrier_hz * delays[..., None] * f)  # [n, L, n_sc]
    return np.einsum("nlt,nlf->ntf", taps, steer).astype(np.complex64)
