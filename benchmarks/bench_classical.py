"""Latency of the classical baselines alone, quick enough to compare two checkouts in one sitting: numpy ZF and
LMMSE detection (8x4, QPSK; the calls and medians of ``bench_detection.py``'s last rows) and the LS+LMMSE OFDM
receiver (14 x 12 QPSK; those of ``bench_receiver.py``'s last row), without training any network.

Usage: .venv/bin/python benchmarks/bench_classical.py [--label NAME] [--rounds 3]
Another checkout's code (docs/BENCHMARKS.md, "Classical baselines before and after"): assemble its package as
installed (``tests/test_architecture.py``'s ``assemble``) and put it first on ``PYTHONPATH``; run both in
alternation so that they share the machine's load. One thread; median ms per call.
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_detection import median_ms  # benchmarks/ is on sys.path when run as a script

from edgejoule.plugins.detection.detectors import linear_detect
from edgejoule.plugins.reception.ofdm_receiver import receive
from edgejoule.tasks.detection import ChannelSource, constellation
from edgejoule.tasks.detection import simulate as simulate_detection
from edgejoule.tasks.ofdm import OfdmConfig, simulate


def timings() -> dict[str, float]:
    rng = np.random.default_rng(0)
    const = constellation("qpsk")
    batches = {n: simulate_detection(ChannelSource(8, 4).draw(n, rng), const, 10.0, rng) for n in (1, 1024)}
    out = {}
    for name, noisy in (("zf", False), ("lmmse", True)):
        for n, b in batches.items():
            out[f"{name} b={n}"] = median_ms(lambda b=b: linear_detect(b.H, b.y, b.noise_var if noisy else None),
                                             100 if n == 1 else 20)
    cfg = OfdmConfig(n_sc=12)
    one = simulate(cfg, 20.0, np.random.default_rng(0), n=1)
    many = simulate(cfg, 20.0, np.random.default_rng(1), n=32)
    out["ls+lmmse b=1"] = median_ms(lambda: receive(cfg, one), 50)
    out["ls+lmmse per slot, b=32"] = median_ms(lambda: receive(cfg, many), 10) / 32
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.rounds):
        print(args.label, "  ".join(f"{k} {v:.4f}" for k, v in timings().items()), flush=True)


if __name__ == "__main__":
    main()
