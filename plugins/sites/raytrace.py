r"""Ray-traced channels with Sionna RT (extra ``raytrace``: sionna-rt 2.x on Mitsuba 3 / Dr.Jit).

For each user position the path solver traces the paths from the BS's 8x8 array to a single isotropic
receive antenna in one of Sionna's built-in scenes (shooting and bouncing rays, up to ``max_depth``
specular reflections, no diffraction, as the paper's dataset), and the narrowband channel at the carrier
is the sum over paths :math:`l` of their complex gains and array responses:

.. math::

    h^H(p) = \sqrt{L_{sys} L_{exc}} \sum_l a_l(p)\, e^{-j 2\pi f_c \tau_l(p)}\, \mathbf{a}^T_{tx}(\theta_l, \varphi_l)

(``Paths.cfr`` at zero baseband frequency; the path gains :math:`a_l` include free-space spreading and
the materials' reflection losses). Conventions as the geometric generator: row p is :math:`h^H` of a
user at p, complex64 ``[P, N_T]``.

What REFERENCE.md section 7 taught: Dr.Jit's LLVM backend needs Debian's libLLVM 19
(``DRJIT_LIBLLVM_PATH``, set here when unset); users are kept on the ground (a downward ray from above
each position must hit the ground, not a roof; positions inside buildings are dropped); positions with no
path are dropped (``valid``); receivers are traced in batches of at most 250 (larger batches silently
lose paths). The default solver is not bit-reproducible, so ray-traced datasets are cached and reused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgejoule.errors import EdgejouleError
from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import GeneratedChannels, Progress
from edgejoule.sites.config import SiteConfig

LLVM = Path("/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1")
BATCH = 250
MAX_DEPTH = 3
GROUND_TOLERANCE_M = 0.5
SKY_M = 1000.0


def _sionna():
    if "DRJIT_LIBLLVM_PATH" not in os.environ and LLVM.exists():
        os.environ["DRJIT_LIBLLVM_PATH"] = str(LLVM)
    try:
        import sionna.rt as rt
    except ImportError as exc:
        raise EdgejouleError(f"ray tracing needs the 'raytrace' extra (sionna-rt) and libLLVM 19: {exc}") from None
    return rt


def ground_mask(scene, positions: np.ndarray) -> np.ndarray:
    """True where a ray cast down from the sky first meets the ground (z ~ 0), not a roof."""
    import mitsuba as mi

    n = len(positions)
    origins = mi.Point3f(positions[:, 0].astype(np.float32), positions[:, 1].astype(np.float32), np.full(n, SKY_M, np.float32))
    rays = mi.Ray3f(origins, mi.Vector3f(np.zeros(n, np.float32), np.zeros(n, np.float32), -np.ones(n, np.float32)))
    hit = scene.mi_scene.ray_intersect(rays)
    height = SKY_M - np.asarray(hit.t, dtype=np.float64)
    return np.asarray(hit.is_valid(), dtype=bool) & (height < GROUND_TOLERANCE_M)


class RayTracer:
    name = "raytrace"

    def __init__(self, max_depth: int = MAX_DEPTH, samples_per_src: int = 10**6) -> None:
        self.max_depth = max_depth
        self.samples_per_src = samples_per_src

    def generate(self, site: SiteConfig, positions: np.ndarray, progress: Progress | None = None) -> GeneratedChannels:
        rt = _sionna()
        if not site.scene or not hasattr(rt.scene, site.scene):
            raise EdgejouleError(f"site '{site.name}' needs a Sionna scene name (scene: munich, etoile, florence, ...)")
        scene = rt.load_scene(getattr(rt.scene, site.scene), merge_shapes=True)
        scene.frequency = site.carrier_hz
        spacing = site.array.spacing_wavelengths
        scene.tx_array = rt.PlanarArray(num_rows=site.array.rows, num_cols=site.array.cols, vertical_spacing=spacing,
                                        horizontal_spacing=spacing, pattern="iso", polarization="V")
        scene.rx_array = rt.PlanarArray(num_rows=1, num_cols=1, pattern="iso", polarization="V")
        scene.add(rt.Transmitter("bs", position=list(site.bs_position_m)))
        on_ground = ground_mask(scene, positions)
        channels = np.zeros((len(positions), site.n_antennas), dtype=np.complex64)
        solver = rt.PathSolver()
        amplitude = 10 ** (-(site.system_loss_db + site.excess_loss_db) / 20)
        ground_idx = np.flatnonzero(on_ground)
        for start in range(0, len(ground_idx), BATCH):
            batch = ground_idx[start : start + BATCH]
            names = [f"ue{i}" for i in batch]
            for name, i in zip(names, batch):
                scene.add(rt.Receiver(name, position=[float(positions[i, 0]), float(positions[i, 1]),
                                                      float(site.user_height_m)]))
            paths = solver(scene, max_depth=self.max_depth, samples_per_src=self.samples_per_src)
            cfr = paths.cfr(frequencies=np.array([0.0]), out_type="numpy", normalize_delays=False)
            channels[batch] = amplitude * cfr[:, 0, 0, :, 0, 0]
            for name in names:
                scene.remove(name)
            if progress:
                progress(len(batch))
        if progress:
            progress(len(positions) - len(ground_idx))
        valid = on_ground & (np.abs(channels).max(axis=1) > 0)
        return GeneratedChannels(channels=channels, valid=valid)


@hookimpl
def register_channel_generators(register) -> None:
    register("raytrace", RayTracer())
