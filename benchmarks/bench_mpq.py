"""Time of an MPQ + NAS search on this machine: FP pre-training per epoch and LSQ fine-tuning + evaluation
per candidate, for every architecture of the paper's space, and the full 2048-candidate search they imply.

Usage: .venv/bin/python benchmarks/bench_mpq.py [--budget default] [--workers 2]
Times one candidate per architecture (weights untrained: the cost does not depend on them) and one FP
epoch, then extrapolates: full = sum over architectures of (FP epochs x epoch time + 256 x candidate time),
divided by the workers. The FP epochs actually run depend on early stopping; the budget's maximum is used.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from core.sites import get_site, load_dataset
from plugins.mpq import worker
from plugins.mpq.space import BUDGETS, Candidate, SearchSpace
from plugins.precoder_cnn import PrecoderCNNFamily
from plugins.precoder_training import TrainConfig, train, unit_noise_channels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--site", default="urban-nlos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    budget = BUDGETS[args.budget]
    site = get_site(args.site).with_overrides(n_samples=budget.n_samples)
    ds = load_dataset(site)
    H_train, H_val = unit_noise_channels(ds, "train"), unit_noise_channels(ds, "val")
    space = SearchSpace()
    total = 0.0
    print(f"budget {budget.name}: {budget.n_samples} samples, FP <= {budget.fp_epochs} epochs (batch {budget.fp_batch}), "
          f"QAT {budget.qat_steps} steps (batch {budget.qat_batch})")
    with tempfile.TemporaryDirectory() as tmp:
        for c_out, d_fcl in space.archs():
            arch = {"c_out": c_out, "d_fcl": d_fcl, "n_t": site.n_antennas, "n_u": site.n_users}
            model = PrecoderCNNFamily().build(arch)
            t0 = time.perf_counter()
            train(model, H_train, H_val, ds.p_max, TrainConfig(epochs=1, batch_size=budget.fp_batch, patience=1))
            epoch = time.perf_counter() - t0
            checkpoint = Path(tmp) / f"{c_out}-{d_fcl}.pt"
            torch.save(model.state_dict(), checkpoint)
            candidate = Candidate(c_out=c_out, d_fcl=d_fcl, bits=(8, 4, 4, 2), seed=0)
            t0 = time.perf_counter()
            worker.fine_tune(site, candidate, budget, checkpoint)
            per_candidate = time.perf_counter() - t0
            arch_total = budget.fp_epochs * epoch + len(space.bit_configs()) * per_candidate
            total += arch_total
            print(f"C_out={c_out:>2} D_FCL={d_fcl:>4}: FP epoch {epoch:6.2f} s, candidate {per_candidate:5.2f} s, "
                  f"architecture total {arch_total / 60:5.1f} min (1 worker)")
    print(f"full search, {space.size()} candidates: {total / 60:.1f} min on 1 worker, "
          f"{total / 60 / args.workers:.1f} min on {args.workers} workers (if the cores are free)")


if __name__ == "__main__":
    main()
