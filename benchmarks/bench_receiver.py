"""OFDM receivers: training time per epoch and inference latency (torch, 1 thread) of deeprx sizes; LS+LMMSE.

An epoch here is 100 optimizer steps of 32 fresh slots (3,200 slots), the unit ``edgejoule distill`` trains in.
Run: .venv/bin/python benchmarks/bench_receiver.py [--n-sc 12]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_detection import median_ms  # benchmarks/ is on sys.path when run as a script

from core.tasks.ofdm import OfdmConfig, simulate
from plugins.deeprx import DeepRxArch, describe
from plugins.deeprx_net import DeepRx, inputs
from plugins.distill_experiment import DistillRequest, batches
from plugins.kd import KdOptions, train_logit_model
from plugins.ofdm_receiver import receive

SIZES = [(24, 5), (16, 3), (8, 2)]
EPOCH_STEPS = 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-sc", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = OfdmConfig(n_sc=args.n_sc)
    req = DistillRequest(n_sc=args.n_sc)
    one = simulate(cfg, 20.0, np.random.default_rng(0), n=1)
    many = simulate(cfg, 20.0, np.random.default_rng(1), n=32)
    print(f"grid 14 x {args.n_sc}, 1 thread; epoch = {EPOCH_STEPS} steps x 32 slots")
    print(f"{'receiver':<12}{'MACs':>12}{'s/epoch':>10}{'ms b=1':>10}{'ms/slot b=32':>14}")
    for width, blocks in SIZES:
        arch = DeepRxArch(width=width, blocks=blocks, n_sc=args.n_sc)
        model = DeepRx(arch)
        t0 = time.perf_counter()
        train_logit_model(model, batches(req), KdOptions(steps=EPOCH_STEPS // 5))
        epoch_s = (time.perf_counter() - t0) * 5
        with torch.no_grad():
            x1, x32 = inputs(cfg, one), inputs(cfg, many)
            b1 = median_ms(lambda: model(x1), 50)
            b32 = median_ms(lambda: model(x32), 10) / 32
        macs = sum(layer.macs for layer in describe(arch))
        print(f"{f'deeprx {width}x{blocks}':<12}{macs:>12,}{epoch_s:>10.1f}{b1:>10.2f}{b32:>14.3f}")
    b1 = median_ms(lambda: receive(cfg, one), 50)
    b32 = median_ms(lambda: receive(cfg, many), 10) / 32
    print(f"{'LS+LMMSE':<12}{'':>12}{'-':>10}{b1:>10.2f}{b32:>14.3f}")


if __name__ == "__main__":
    main()
