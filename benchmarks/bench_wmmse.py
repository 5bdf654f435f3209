"""Batched WMMSE vs the straightforward per-sample loop of the same algorithm (issue 2's target: >= 20x).

Usage: .venv/bin/python benchmarks/bench_wmmse.py [--samples 1000] [--naive-samples 20]
The per-sample loop costs ~20 ms per iteration per channel, so it runs on the first --naive-samples
channels and its time is scaled to --samples (stated in the output); both are checked to agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgejoule.plugins.precoding.wmmse import wmmse, wmmse_per_sample
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.precoding import sum_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", default="urban-nlos")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--naive-samples", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--init", default="zf", help="zf: the per-sample loop's start (results compared); best: ZF and RZF-equal")
    args = parser.parse_args()
    ds = load_dataset(get_site(args.site))
    H = ds.H(None, args.samples)
    t0 = time.perf_counter()
    V, iterations, _ = wmmse(H, ds.noise_power, ds.p_max, tol=args.tol, init=args.init)[:3]
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_rates, naive_its = [], []
    for h in H[: args.naive_samples]:
        v, its = wmmse_per_sample(h, ds.noise_power, ds.p_max, tol=args.tol, init="zf")
        naive_rates.append(sum_rate(h[None], v[None], ds.noise_power)[0])
        naive_its.append(its)
    naive_subset = time.perf_counter() - t0
    naive = naive_subset * args.samples / args.naive_samples
    rates = sum_rate(H[: args.naive_samples], V[: args.naive_samples], ds.noise_power)
    agree = np.allclose(rates, naive_rates, rtol=1e-6) and list(iterations[: args.naive_samples]) == naive_its
    print(f"site {args.site}, {args.samples} channels of {H.shape[2]}x{H.shape[1]}, tol {args.tol:g}, "
          f"mean iterations {iterations.mean():.1f}")
    print(f"batched WMMSE: {batched:.2f} s ({1e3 * batched / args.samples:.2f} ms per channel)")
    print(f"per-sample loop: {naive_subset:.2f} s for {args.naive_samples} channels -> {naive:.1f} s for {args.samples} (scaled)")
    print(f"speed-up: {naive / batched:.1f}x; results agree: {agree}")


if __name__ == "__main__":
    main()
