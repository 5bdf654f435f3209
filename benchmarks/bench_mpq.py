"""Time of an MPQ + NAS search on this machine: FP pre-training per epoch and LSQ fine-tuning + evaluation
per candidate, for every architecture of the paper's space, and the full 2048-candidate search they imply.

Usage: .venv/bin/python benchmarks/bench_mpq.py [--budget default] [--workers 2]
       .venv/bin/python benchmarks/bench_mpq.py --dask   (speed-up of a Dask LocalCluster, 2 workers vs 1)
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


def dask_speedup(site: str, budget: str) -> None:
    """The same search (C_out 8, D_FCL 512, bits {2,4,16}: 81 candidates) end to end on a Dask LocalCluster
    with one worker process, then two; FP pre-training included, the dataset cached beforehand."""
    from distributed import LocalCluster

    from plugins.mpq.search import SearchRequest, run_search

    space = SearchSpace(c_out=(8,), d_fcl=(512,), bits=(2, 4, 16))
    load_dataset(get_site(site).with_overrides(n_samples=BUDGETS[budget].n_samples))
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            with LocalCluster(host="127.0.0.1", n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                t0 = time.perf_counter()
                rows = run_search(SearchRequest(site=site, space=space, budget=budget, executor="dask",
                                                scheduler=cluster.scheduler_address,
                                                out_dir=Path(tmp) / str(workers)))
                times[workers] = time.perf_counter() - t0
            print(f"dask, {workers} worker(s): {len(rows)} candidates in {times[workers]:.1f} s "
                  f"({times[workers] / len(rows):.2f} s per candidate)")
    print(f"speed-up, 2 workers over 1: {times[1] / times[2]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--site", default="urban-nlos")
    parser.add_argument("--dask", action="store_true", help="time a Dask LocalCluster with 1 and 2 workers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.dask:
        dask_speedup(args.site, args.budget)
        return
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
