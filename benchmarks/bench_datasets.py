"""Dataset generation rate of the channel generators (samples/s and positions/s), uncached.

Usage: .venv/bin/python benchmarks/bench_datasets.py [--repeats 3] [--rt-positions-per-anchor 1]

Geometric sites are generated whole (best of --repeats). A whole ray-traced dataset takes minutes, so each
ray-traced site is traced once with --rt-positions-per-anchor positions per anchor (1: the 252 anchors)
and its full-dataset time and samples/s are extrapolated from the measured positions/s (stated in the
output); pass the site's own value (16 or 24) to trace it whole.
"""

from __future__ import annotations

import argparse
import time

from edgejoule import plugin_manager
from edgejoule.sites import list_sites, load_dataset
from edgejoule.sites.config import SiteConfig
from edgejoule.sites.dataset import user_positions


def _timed(site: SiteConfig, repeats: int) -> float:
    generator = plugin_manager.get("channel_generators", site.generator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        load_dataset(site, generator, use_cache=False)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rt-positions-per-anchor", type=int, default=1)
    args = parser.parse_args()
    print("| site (generator) | samples | positions traced | time | samples/s | positions/s | note |")
    print("|---|---|---|---|---|---|---|")
    for site in list_sites().values():
        if site.generator == "geometric":
            best = _timed(site, args.repeats)
            n_pos = len(user_positions(site))
            print(f"| {site.name} ({site.generator}) | {site.n_samples} | {n_pos} | {best:.3f} s | "
                  f"{site.n_samples / best:,.0f} | {n_pos / best:,.0f} | best of {args.repeats} |")
        elif site.generator == "raytrace" and "raytrace" in plugin_manager.names("channel_generators"):
            traced = site.with_overrides(positions_per_anchor=args.rt_positions_per_anchor)
            elapsed = _timed(traced, 1)
            n_pos, n_full = len(user_positions(traced)), len(user_positions(site))
            rate = n_pos / elapsed
            full = n_full / rate
            note = "whole dataset" if n_pos == n_full else f"{n_full} positions extrapolated: {full / 60:.1f} min"
            print(f"| {site.name} ({site.generator}) | {site.n_samples} | {n_pos} | {elapsed:.1f} s | "
                  f"{site.n_samples / full:,.1f} | {rate:.1f} | {note} |")


if __name__ == "__main__":
    main()
