"""The work units of a search, run in worker processes (local pool or Dask): FP pre-training of one
architecture and seed, and LSQ fine-tuning + evaluation of one candidate. Everything a unit needs travels
in its arguments; the site's dataset comes from the on-disk cache (or is regenerated, deterministically).

What a worker process keeps between units, and why that is sound (none of it depends on a candidate's bits):

- the site's data (training positions, validation and test tensors) per site and budget: read-only inputs;
- the FP checkpoint's tensors per file (keyed by its path, size and modification time, so a rewritten
  checkpoint is read again): ``load_state_dict`` copies them into each candidate's own model, which is
  what gets trained.

A candidate's test evaluation runs on the model frozen once (``edgejoule.plugins.quantization.lsq.freeze``: the fake-quantized
weights computed a single time, the values the parametrization gives) under ``torch.inference_mode``.
Nothing else is shared across candidates: every layer, 16-bit ones included, is LSQ fine-tuned (a 16-bit
grid is not the FP weight, and the weights move during QAT), so neither the QAT of a bit configuration's
prefix nor the forward of any layer at test time is the same for two candidates.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgejoule import plugin_manager
from edgejoule.energy.counting import COUNTINGS
from edgejoule.files import write_atomic
from edgejoule.plugins.precoding.precoder_arch import PrecoderArch
from edgejoule.plugins.search.space import Budget, Candidate
from edgejoule.sites import load_dataset
from edgejoule.sites.config import SiteConfig


def _huge_pages() -> None:
    """Let torch back its large CPU tensors with transparent huge pages (``THP_MEM_ALLOC_ENABLE``, read at the
    first CPU allocation of a process, so every unit sets it before it imports torch; where torch already
    allocated, nothing changes). QAT of a large architecture allocates dozens of full-size tensors per step
    (FC1 of 64x1024: 67 MB each); with 4 KiB pages the page faults of each cost more than the arithmetic on
    it (``benchmarks/bench_mpq.py``). Values are unchanged."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def candidate_arch(c: Candidate, site: SiteConfig) -> PrecoderArch:
    return PrecoderArch(c_out=c.c_out, d_fcl=c.d_fcl, n_t=site.n_antennas, n_u=site.n_users)


def energies_by_counting(family: str, arch: PrecoderArch, bits: Any) -> dict[str, float]:
    """Energy per inference of one candidate under each counting (a search row's ``energy_uj_by_counting``)."""
    models = plugin_manager.get("models", family)
    return {c: models.energy(arch, list(bits), counting=c).total_uj for c in COUNTINGS}


def with_both_countings(rows: list[dict[str, Any]], family: str, site: SiteConfig) -> list[dict[str, Any]]:
    """``rows``, those stored by an edgejoule that priced DNNs by eqs. 7-11 alone given their energy under each
    counting, so that a search directory of an earlier version still reports."""
    for row in rows:
        if "energy_uj_by_counting" not in row:
            arch = PrecoderArch(c_out=row["c_out"], d_fcl=row["d_fcl"], n_t=site.n_antennas, n_u=site.n_users)
            row["energy_uj_by_counting"] = energies_by_counting(family, arch, row["bits"])
    return rows


@functools.lru_cache(maxsize=1)
def _data(site: SiteConfig, budget: Budget):
    from edgejoule.plugins.precoding.precoder_training import training_combinations, unit_noise_channels

    ds = load_dataset(site)
    # training draws fresh combinations of the training positions each epoch (edgejoule.plugins.precoding.precoder_training)
    data = {"train": training_combinations(ds), "val": unit_noise_channels(ds, "val")}
    return ds, data, unit_noise_channels(ds, "test", budget.eval_samples)


def _fp_weights(checkpoint: Path) -> dict[str, Any]:
    stat = checkpoint.stat()
    return _read_checkpoint(checkpoint, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_checkpoint(checkpoint: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    import torch

    return torch.load(checkpoint, weights_only=True)


def pretrain(site: SiteConfig, candidate: Candidate, budget: Budget, checkpoint: Path, family: str) -> dict[str, Any]:
    """Train the FP model of ``candidate``'s architecture and seed (a network of the model family named
    ``family``); saved atomically to ``checkpoint``."""
    _huge_pages()
    import torch

    from edgejoule.plugins.precoding.precoder_training import TrainConfig, evaluate, input_scale, train

    torch.set_num_threads(1)
    torch.manual_seed(candidate.seed)
    started = time.perf_counter()
    ds, data, H_test = _data(site, budget)
    model = plugin_manager.get("models", family).build(candidate_arch(candidate, site))
    model.calibrate(input_scale(data["train"]), ds.p_max)
    result = train(model, data["train"], data["val"], ds.p_max,
                   TrainConfig(epochs=budget.fp_epochs, patience=budget.fp_patience, batch_size=budget.fp_batch,
                               seed=candidate.seed))
    write_atomic(checkpoint, lambda out: torch.save(model.state_dict(), out), mode=0o644)
    return {"arch_key": candidate.arch_key, "fp_sum_rate": float(evaluate(model, H_test, ds.p_max).mean()),
            "epochs": result.epochs_run, "seconds": time.perf_counter() - started}


def fine_tune(site: SiteConfig, candidate: Candidate, budget: Budget, checkpoint: Path, family: str,
              save_to: Path | None = None) -> dict[str, Any]:
    """LSQ QAT of one bit configuration from its architecture's FP checkpoint, then test sum rate and energy."""
    _huge_pages()
    import torch

    from edgejoule.plugins.precoding.precoder_training import TrainConfig, evaluate, train
    from edgejoule.plugins.quantization.lsq import attach, freeze

    torch.set_num_threads(1)
    torch.manual_seed(candidate.torch_seed())
    started = time.perf_counter()
    ds, data, H_test = _data(site, budget)
    models = plugin_manager.get("models", family)
    arch = candidate_arch(candidate, site)
    model = models.build(arch)
    model.load_state_dict(_fp_weights(checkpoint))
    attach(model, list(candidate.bits))
    if budget.qat_steps:
        train(model, data["train"], data["val"], ds.p_max,
              TrainConfig(epochs=10**6, patience=10**6, batch_size=budget.qat_batch, max_steps=budget.qat_steps,
                          seed=candidate.torch_seed(), select_best=False))
    frozen, _ = freeze(model)
    with torch.inference_mode():
        rates = evaluate(frozen, H_test, ds.p_max)
    energy = models.energy(arch, candidate.bits)  # the breakdown of the row: eqs. 7-11 on the described layers (paper)
    by_counting = energies_by_counting(family, arch, candidate.bits)
    if save_to is not None:
        torch.save(frozen.state_dict(), save_to)
    return {
        "key": candidate.key, "c_out": candidate.c_out, "d_fcl": candidate.d_fcl, "bits": list(candidate.bits),
        "seed": candidate.seed, "sum_rate": float(np.mean(rates)), "energy_uj": energy.total_uj,
        "compute_uj": energy.compute_uj, "weights_uj": energy.weights_uj, "activations_uj": energy.activations_uj,
        "energy_uj_by_counting": by_counting, "seconds": time.perf_counter() - started,
    }


def ptq_sum_rate(site: SiteConfig, candidate: Candidate, budget: Budget, checkpoint: Path, family: str) -> float:
    """Plain PTQ of the FP checkpoint at ``candidate.bits``: the comparison the paper rejected QAT for."""
    _huge_pages()
    import torch

    from edgejoule.plugins.precoding.precoder_training import evaluate

    torch.set_num_threads(1)
    ds, _, H_test = _data(site, budget)
    model = plugin_manager.get("models", family).build(candidate_arch(candidate, site))
    model.load_state_dict(_fp_weights(checkpoint))
    plugin_manager.get("quantizers", "ptq").quantize(model, list(candidate.bits))
    return float(evaluate(model, H_test, ds.p_max).mean())
