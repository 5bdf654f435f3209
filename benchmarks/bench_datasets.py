"""Dataset generation rate of the channel generators (samples/s and positions/s), uncached.

Usage: .venv/bin/python benchmarks/bench_datasets.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from core import plugins
from core.sites import get_site, load_dataset
from core.sites.dataset import user_positions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in ("urban-nlos", "campus-los"):
        site = get_site(name)
        generator = plugins.get("channel_generators", site.generator)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            load_dataset(site, generator, use_cache=False)
            times.append(time.perf_counter() - t0)
        best = min(times)
        print(f"{name} ({site.generator}): {site.n_samples} samples, {len(user_positions(site))} positions in {best:.3f} s: "
              f"{site.n_samples / best:,.0f} samples/s, {len(user_positions(site)) / best:,.0f} positions/s (best of {args.repeats})")
    if "raytrace" not in plugins.names("channel_generators"):
        print("raytrace: no ray-tracing generator is registered in this build")


if __name__ == "__main__":
    main()
