"""Time of an MPQ + NAS search on this machine: FP pre-training per epoch and LSQ fine-tuning + evaluation
per candidate, for every architecture of the paper's space, and the full 2048-candidate search they imply.

Usage: .venv/bin/python benchmarks/bench_mpq.py [--budget default] [--workers 2] [--per-arch 3] [--family precoder_cnn]
       .venv/bin/python benchmarks/bench_mpq.py --dask [--budget smoke] [--c-out 8] [--d-fcl 512] [--bits 2,4,16]
       .venv/bin/python benchmarks/bench_mpq.py --fp-phase [--budget default] [--workers 2]

The work runs as the search runs it: the search's own work units (``edgejoule.plugins.search.worker``) in a local pool
of ``--workers`` processes, all busy at once. Per architecture, ``--workers`` one-epoch FP pre-trainings
(weights untrained: the cost does not depend on them) and then ``--per-arch`` bit configurations per worker
(mixed and uniform; ``fine_tune`` from that checkpoint) are timed as wall clock over the batch, divided by
the units in it, so the times include whatever the workers cost each other (memory bandwidth, caches).
Extrapolation: full = sum over architectures of (FP epochs x epoch time + 256 x candidate time), at the
budget's maximum of FP epochs (early stopping usually ends sooner). The load average is printed before and after: other jobs on
the machine slow everything down.

``--fp-phase``: the FP pre-training of the full search run for real, as the search runs it (every architecture
in the pool, early stopping included): wall time and the epochs each architecture trained.

``--dask``: the candidates of one search on a Dask LocalCluster with one worker process, then two (the FP
checkpoint made beforehand, so the timed part is the candidates, which are the parallel work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from edgejoule.plugins.search import worker
from edgejoule.plugins.search.executors import local_pool
from edgejoule.plugins.search.space import BUDGETS, Budget, Candidate, SearchSpace
from edgejoule.sites import SiteConfig, get_site, load_dataset

MIXES = [(16, 16, 16, 16), (2, 2, 2, 2), (8, 4, 4, 2), (4, 16, 2, 8), (2, 8, 16, 4), (16, 2, 8, 16)]


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _site_data(site_name: str, budget_name: str) -> tuple[SiteConfig, Budget]:
    """The site sized by the budget, its dataset generated and cached before any worker reads it (as the search)."""
    budget = BUDGETS[budget_name]
    site = get_site(site_name).with_overrides(n_samples=budget.n_samples)
    load_dataset(site)
    return site, budget


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def dask_speedup(site_name: str, budget_name: str, space: SearchSpace, family: str) -> None:
    """The candidates of the same search on a LocalCluster with one worker process, then two."""
    from distributed import LocalCluster

    from edgejoule.plugins.search.search import SearchRequest, checkpoint, run_search

    site, budget = _site_data(site_name, budget_name)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp = [Candidate(c_out=c, d_fcl=d, bits=(16,) * 4, seed=0) for c, d in space.archs()]
        (Path(tmp) / "fp").mkdir()
        with local_pool(1) as run:  # FP pre-training, outside the timed part
            list(run(worker.pretrain, [(site, c, budget, checkpoint(Path(tmp), c), family) for c in fp]))
        print(f"{space.size()} candidates (C_out {space.c_out}, D_FCL {space.d_fcl}, bits {space.bits}), "
              f"budget {budget_name}; {load()}")
        for workers in (1, 2):
            out = Path(tmp) / str(workers)
            shutil.copytree(Path(tmp) / "fp", out / "fp")
            with LocalCluster(host="127.0.0.1", n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                t0 = time.perf_counter()
                rows = run_search(SearchRequest(site=site_name, family=family, space=space, budget=budget_name, executor="dask",
                                                scheduler=cluster.scheduler_address, out_dir=out))
                times[workers] = time.perf_counter() - t0
            print(f"dask, {workers} worker(s): {len(rows)} candidates in {times[workers]:.1f} s "
                  f"({times[workers] / len(rows):.3f} s per candidate); {load()}")
    print(f"speed-up, 2 workers over 1: {times[1] / times[2]:.2f}x")


def full_search(site_name: str, budget_name: str, workers: int, per_arch: int, family: str) -> None:
    site, budget = _site_data(site_name, budget_name)
    one_epoch = budget.model_copy(update={"fp_epochs": 1, "fp_patience": 1})
    space = SearchSpace()
    mixes = MIXES[:per_arch]
    print(f"{family}, budget {budget.name}: {budget.n_samples} samples, FP <= {budget.fp_epochs} epochs (batch {budget.fp_batch}), "
          f"QAT {budget.qat_steps} steps (batch {budget.qat_batch}); {workers} worker process(es), "
          f"{per_arch} candidates per worker and architecture; {load()}")
    print("| C_out | D_FCL | FP epoch | candidate | candidate latency (mean, min-max) | architecture |")
    print("|---|---|---|---|---|---|")
    total = 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, local_pool(workers) as run:
        def fp_epoch(c_out: int, d_fcl: int) -> float:
            """Wall time of one FP epoch per worker, every worker training its own seed; checkpoint of seed 0."""
            fp = [Candidate(c_out=c_out, d_fcl=d_fcl, bits=(16,) * 4, seed=s) for s in range(workers)]
            t0 = time.perf_counter()
            list(run(worker.pretrain, [(site, c, one_epoch, Path(tmp) / f"{c.arch_key}.pt", family) for c in fp]))
            return (time.perf_counter() - t0) / workers

        fp_epoch(*space.archs()[0])  # warm-up: worker processes started, torch imported, data cached
        for c_out, d_fcl in space.archs():
            epoch = fp_epoch(c_out, d_fcl)
            checkpoint = Path(tmp) / f"c{c_out}-d{d_fcl}-s0.pt"
            calls = [(site, Candidate(c_out=c_out, d_fcl=d_fcl, bits=bits, seed=0), budget, checkpoint, family)
                     for _ in range(workers) for bits in mixes]
            t0 = time.perf_counter()
            latency = [r["seconds"] for r in run(worker.fine_tune, calls)]
            per_candidate = (time.perf_counter() - t0) / len(calls)
            arch_total = budget.fp_epochs * epoch + len(space.bit_configs()) * per_candidate
            total += arch_total
            print(f"| {c_out} | {d_fcl} | {epoch:.2f} s | {per_candidate:.2f} s | {statistics.mean(latency):.2f} s "
                  f"({min(latency):.2f}-{max(latency):.2f}) | {arch_total / 60:.1f} min |", flush=True)
    print(f"full search, {space.size()} candidates: {total / 60:.1f} min on {workers} worker(s); "
          f"measured in {time.perf_counter() - started:.0f} s; {load()}")
    print(f"(FP epoch and candidate: wall time per unit with {workers} worker(s) busy; latency: one candidate's own "
          f"time inside its worker; architecture: {budget.fp_epochs} FP epochs + {len(space.bit_configs())} candidates)")


def fp_phase(site_name: str, budget_name: str, workers: int, family: str) -> None:
    site, budget = _site_data(site_name, budget_name)
    fp = [Candidate(c_out=c, d_fcl=d, bits=(16,) * 4, seed=0) for c, d in SearchSpace().archs()]
    print(f"FP phase of the full search, budget {budget.name} (<= {budget.fp_epochs} epochs, patience "
          f"{budget.fp_patience}), {workers} worker(s); {load()}")
    print("| architecture | epochs | seconds | FP sum rate |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, local_pool(workers) as run:
        t0 = time.perf_counter()
        for r in run(worker.pretrain, [(site, c, budget, Path(tmp) / f"{c.arch_key}.pt", family) for c in fp]):
            print(f"| {r['arch_key']} | {r['epochs']} | {r['seconds']:.0f} | {r['fp_sum_rate']:.2f} |", flush=True)
        wall = time.perf_counter() - t0
    print(f"FP phase: {wall / 60:.1f} min wall on {workers} worker(s); {load()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-arch", type=int, default=3, choices=range(1, len(MIXES) + 1))
    parser.add_argument("--site", default="urban-nlos")
    parser.add_argument("--family", default="precoder_cnn", help="model family searched")
    parser.add_argument("--dask", action="store_true", help="time a Dask LocalCluster with 1 and 2 workers")
    parser.add_argument("--fp-phase", action="store_true", help="run the full search's FP pre-training for real")
    parser.add_argument("--c-out", default="8", help="--dask: C_out values")
    parser.add_argument("--d-fcl", default="512", help="--dask: D_FCL values")
    parser.add_argument("--bits", default="2,4,16", help="--dask: bit widths")
    args = parser.parse_args()
    if args.dask:
        dask_speedup(args.site, args.budget,
                     SearchSpace(c_out=_ints(args.c_out), d_fcl=_ints(args.d_fcl), bits=_ints(args.bits)), args.family)
    elif args.fp_phase:
        fp_phase(args.site, args.budget, args.workers, args.family)
    else:
        full_search(args.site, args.budget, args.workers, args.per_arch, args.family)


if __name__ == "__main__":
    main()
