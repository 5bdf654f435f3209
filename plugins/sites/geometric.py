r"""Built-in geometric multipath channel generator (the default, fast and deterministic for a seed).

A site owns a fixed set of scattering clusters (buildings, walls), drawn once from the site's seed; every
user position sees the same scatterers, so channels are site-specific and spatially consistent. The
channel of a user at position :math:`p` is a sum of a line-of-sight path and single-bounce paths via each
scatterer :math:`s`:

.. math::

    h^H(p) = \sqrt{L_{sys} L_{exc}} \Big[ b(p)\, g(d_{0}(p))\, e^{-j k d_0(p)}\, a^H(u_p)
             + \sum_s \Gamma_s\, g(d_{1,s} + d_{2,s}(p))\, e^{-j k (d_{1,s} + d_{2,s}(p))}\, a^H(u_s) \Big]

with :math:`k = 2\pi/\lambda`, :math:`g(d) = \frac{\lambda}{4\pi} d^{-n/2}` the amplitude of a path of length
:math:`d` (free space for :math:`n = 2`, a log-distance model otherwise), :math:`b(p)` the LOS blockage
factor (1, or the blockage loss for positions inside a blocked cell), :math:`\Gamma_s` a complex reflection
coefficient (loss drawn around ``reflection_loss_db``, uniform phase), :math:`u` the departure direction
from the BS and

.. math::

    a(u)_{m,n} = e^{j k (y_{m} u_y + z_{n} u_z)}

the response of the uniform planar array in the BS's y-z plane (isotropic elements). Phases follow from
path lengths, so nearby positions have correlated channels as in a real site. This is a stand-in for ray
tracing that runs in milliseconds; ``edgejoule.plugins.sites.raytrace`` does the real thing with Sionna RT.
"""

from __future__ import annotations

import numpy as np

from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import GeneratedChannels, Progress
from edgejoule.sites.config import SiteConfig

BLOCKAGE_CELL_M = 20.0
CHUNK = 4096


def array_response(site: SiteConfig, directions: np.ndarray) -> np.ndarray:
    """UPA response a(u) for unit direction vectors ``directions`` [K, 3] -> [K, N_T] complex."""
    spacing = site.array.spacing_wavelengths * site.wavelength_m
    ys = (np.arange(site.array.cols) - (site.array.cols - 1) / 2) * spacing
    zs = (np.arange(site.array.rows) - (site.array.rows - 1) / 2) * spacing
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    k = 2 * np.pi / site.wavelength_m
    phase = k * (directions[:, 1:2] * yy.reshape(1, -1) + directions[:, 2:3] * zz.reshape(1, -1))
    return np.exp(1j * phase)


def path_amplitude(site: SiteConfig, length_m: np.ndarray) -> np.ndarray:
    """g(d) = lambda / (4 pi) * d^(-n/2): free space at n = 2."""
    return site.wavelength_m / (4 * np.pi) * np.maximum(length_m, 1.0) ** (-site.geometric.pathloss_exponent / 2)


def scatterers(site: SiteConfig) -> tuple[np.ndarray, np.ndarray]:
    """The site's fixed scatter points [S, 3] and complex reflection coefficients [S]."""
    params = site.geometric
    rng = np.random.default_rng([site.seed, 3])
    n_clusters, n_rays = params.n_clusters, params.rays_per_cluster
    r = rng.uniform(30.0, 1.15 * max(site.radii_m), n_clusters)
    phi = rng.uniform(0, 2 * np.pi, n_clusters)
    h = rng.uniform(3.0, 25.0, n_clusters)
    centers = np.stack([r * np.cos(phi), r * np.sin(phi), h], -1) + np.asarray(site.bs_position_m) * [1, 1, 0]
    points = np.repeat(centers, n_rays, axis=0) + rng.normal(0, params.cluster_spread_m, (n_clusters * n_rays, 3))
    points[:, 2] = np.clip(points[:, 2], 0.5, None)
    loss_db = params.reflection_loss_db + rng.normal(0, 3.0, len(points))
    gamma = 10 ** (-loss_db / 20) * np.exp(1j * rng.uniform(0, 2 * np.pi, len(points))) / np.sqrt(n_rays)
    return points, gamma


def los_blockage(site: SiteConfig, positions: np.ndarray) -> np.ndarray:
    """Amplitude factor of the LOS path: blocked cells (a fixed share of the site's area) attenuate it."""
    params = site.geometric
    if params.los_blocked_fraction == 0:
        return np.ones(len(positions))
    cells = np.floor(positions[:, :2] / BLOCKAGE_CELL_M).astype(np.int64)
    # a hash of the cell and the site seed: the same cell is always blocked or clear
    keys = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (site.seed * 83492791)
    u = (keys % 1_000_003) / 1_000_003
    blocked = u < params.los_blocked_fraction
    return np.where(blocked, 10 ** (-params.blockage_loss_db / 20), 1.0)


class GeometricGenerator:
    name = "geometric"

    def generate(self, site: SiteConfig, positions: np.ndarray, progress: Progress | None = None) -> GeneratedChannels:
        k = 2 * np.pi / site.wavelength_m
        bs = np.asarray(site.bs_position_m, dtype=float)
        points, gamma = scatterers(site)
        d1 = np.linalg.norm(points - bs, axis=1)
        a_scatter = np.conj(array_response(site, (points - bs) / d1[:, None]))  # [S, N_T]
        system = 10 ** (-(site.system_loss_db + site.excess_loss_db) / 20)
        out = np.empty((len(positions), site.n_antennas), dtype=np.complex64)
        for start in range(0, len(positions), CHUNK):
            pos = positions[start : start + CHUNK]
            los_vec = pos - bs
            d0 = np.linalg.norm(los_vec, axis=1)
            los_gain = los_blockage(site, pos) * path_amplitude(site, d0) * np.exp(-1j * k * d0)
            h = los_gain[:, None] * np.conj(array_response(site, los_vec / d0[:, None]))
            if len(points):
                total = d1[None, :] + np.linalg.norm(pos[:, None, :] - points[None, :, :], axis=2)  # [P, S]
                coeff = gamma[None, :] * path_amplitude(site, total) * np.exp(-1j * k * total)
                h = h + coeff @ a_scatter
            out[start : start + len(pos)] = system * h
            if progress:
                progress(len(pos))
        return GeneratedChannels(channels=out, valid=np.ones(len(positions), dtype=bool))


@hookimpl
def register_channel_generators(register) -> None:
    register("geometric", GeometricGenerator())
