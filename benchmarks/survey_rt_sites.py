"""Survey BS positions for a ray-traced site: open ground around them, anchors reached, LOS share, SNR.

Usage:
  .venv/bin/python benchmarks/survey_rt_sites.py munich --scan            # rank BS spots by open ground
  .venv/bin/python benchmarks/survey_rt_sites.py munich --bs=-476,261,20 --bs=...  # trace the 252 anchors

The scan puts a BS on a 20 m grid of open-ground points and scores the share of its 252 anchor points
that are open ground too (no tracing); it lists the best spots at least 150 m apart. Tracing reports the
anchors with a path (depth 3), those with a LOS path (depth 0) and their average SNR without excess loss,
from which a site's excess loss is chosen (docs/SITES.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgejoule.plugins.sites.raytrace import RayTracer, _sionna, ground_mask
from edgejoule.sites.config import SiteConfig
from edgejoule.tasks.precoding import average_snr_db


def _site(scene: str, bs: tuple[float, float, float]) -> SiteConfig:
    return SiteConfig(name="survey", generator="raytrace", scene=scene, bs_position_m=bs, positions_per_anchor=1)


def scan(scene_name: str, top: int) -> None:
    rt = _sionna()
    scene = rt.load_scene(getattr(rt.scene, scene_name), merge_shapes=True)
    bbox = scene.mi_scene.bbox()
    spots = []
    for x in np.arange(float(bbox.min[0]) + 50, float(bbox.max[0]) - 50, 20.0):
        for y in np.arange(float(bbox.min[1]) + 50, float(bbox.max[1]) - 50, 20.0):
            if ground_mask(scene, np.array([[x, y, 0.0]]))[0]:
                spots.append((ground_mask(scene, _site(scene_name, (x, y, 20.0)).anchor_points()).mean(), x, y))
    picked: list[tuple[float, float, float]] = []
    for share, x, y in sorted(spots, reverse=True):
        if all((x - a) ** 2 + (y - b) ** 2 > 150**2 for _, a, b in picked):
            picked.append((share, x, y))
    for share, x, y in picked[:top]:
        print(f"{x:.0f},{y:.0f},20  open ground {share:.0%}")


def trace(scene_name: str, bs: tuple[float, float, float]) -> None:
    site = _site(scene_name, bs)
    anchors = site.anchor_points()
    t0 = time.perf_counter()
    paths = RayTracer(max_depth=3).generate(site, anchors)
    elapsed = time.perf_counter() - t0
    los = RayTracer(max_depth=0).generate(site, anchors).valid & paths.valid
    snr = average_snr_db(paths.channels[paths.valid][:, None, :], site.tx_power_w, site.noise_power_w)
    print(f"{scene_name} BS {bs}: {paths.valid.sum()}/{len(anchors)} anchors with a path, "
          f"{los.sum() / max(paths.valid.sum(), 1):.0%} of them LOS, average SNR {snr:.1f} dB without excess loss "
          f"({elapsed:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scene")
    parser.add_argument("--bs", action="append", default=[], help="BS position x,y,z in the scene's frame, metres")
    parser.add_argument("--scan", action="store_true")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    if args.scan:
        scan(args.scene, args.top)
    for spec in args.bs:
        x, y, z = (float(v) for v in spec.split(","))
        trace(args.scene, (x, y, z))


if __name__ == "__main__":
    main()
