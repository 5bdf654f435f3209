"""What the ``implemented`` counting adds to a baseline's run (issue 17's target: at most 10 %).

Each precoding baseline is timed on the site's test split twice over, alternately: ``run`` (the precoders and
their operation count, what ``baseline run`` calls) and ``precode`` (the same precoders alone, what the edge
agent serves). A linear precoder counts its operations once per shape (its first run, shown apart). The Gauss-Jordan elimination both share is not counting overhead: it is the algorithm the
counting reads. CPU time (``time.process_time``), the best of ``--rounds`` alternations, so that another
process's load slows both sides alike.

Usage: .venv/bin/python benchmarks/bench_counting.py [--site urban-nlos] [--rounds 3] [--methods zf,rzf,...]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from edgejoule import plugin_manager
from edgejoule.sites import get_site, load_dataset


def cpu_seconds(call, repeat: int = 1) -> float:
    """CPU seconds per call of ``repeat`` calls (repeated: one linear precoder call on 600 channels takes a few ms,
    near the clock's resolution)."""
    t0 = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - t0) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", default="urban-nlos")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="zf,rzf,rzf-equal,mrt,wmmse")
    args = parser.parse_args()
    ds = load_dataset(get_site(args.site))
    H = ds.H("test")
    print(f"{args.site}: {len(H)} test channels, best of {args.rounds} alternations, CPU seconds; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| method | first run (counts) | run (counted) | precode (not counted) | counting adds |")
    print("|---|---|---|---|---|")
    for name in args.methods.split(","):
        baseline = plugin_manager.get("baselines", name, task="precoding")
        first = cpu_seconds(lambda: baseline.run(H, ds.noise_power, ds.p_max))  # counts the operations, if ever
        repeat = max(1, int(0.3 / max(first, 1e-4)))
        counted, plain = [], []
        for _ in range(args.rounds):
            counted.append(cpu_seconds(lambda: baseline.run(H, ds.noise_power, ds.p_max), repeat))
            plain.append(cpu_seconds(lambda: baseline.precode(H, ds.noise_power, ds.p_max), repeat))
        c, p = min(counted), min(plain)
        print(f"| {name} | {1e3 * first:.1f} ms | {1e3 * c:.2f} ms | {1e3 * p:.2f} ms | {100 * (c / p - 1):+.1f} % |")
    W_run = plugin_manager.get("baselines", "wmmse").run(H[:50], ds.noise_power, ds.p_max).output
    W_precode = plugin_manager.get("baselines", "wmmse").precode(H[:50], ds.noise_power, ds.p_max)
    assert np.array_equal(W_run, W_precode), "run and precode must compute the same precoders"


if __name__ == "__main__":
    main()
