"""The work units of a search, run in worker processes (local pool or Dask): FP pre-training of one
architecture and seed, and LSQ fine-tuning + evaluation of one candidate. Everything a unit needs travels
in its arguments; the site's dataset comes from the on-disk cache (or is regenerated, deterministically)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.energy.accelerator import dnn_energy
from core.sites import load_dataset
from core.sites.config import SiteConfig
from plugins.mpq.space import Budget, Candidate
from plugins.precoder_cnn import PrecoderArch, PrecoderCNNFamily


def _arch(c: Candidate, site: SiteConfig) -> PrecoderArch:
    return PrecoderArch(c_out=c.c_out, d_fcl=c.d_fcl, n_t=site.n_antennas, n_u=site.n_users)


def _data(site: SiteConfig, budget: Budget):
    from plugins.precoder_training import training_combinations, unit_noise_channels

    ds = load_dataset(site)
    # training draws fresh combinations of the training positions each epoch (plugins.precoder_training)
    data = {"train": training_combinations(ds), "val": unit_noise_channels(ds, "val")}
    return ds, data, unit_noise_channels(ds, "test", budget.eval_samples)


def pretrain(site: SiteConfig, candidate: Candidate, budget: Budget, checkpoint: Path) -> dict[str, Any]:
    """Train the FP model of ``candidate``'s architecture and seed; saved atomically to ``checkpoint``."""
    import torch

    from plugins.precoder_training import TrainConfig, evaluate, input_scale, train

    torch.set_num_threads(1)
    torch.manual_seed(candidate.seed)
    started = time.perf_counter()
    ds, data, H_test = _data(site, budget)
    model = PrecoderCNNFamily().build(_arch(candidate, site))
    model.input_scale.fill_(input_scale(data["train"]))
    result = train(model, data["train"], data["val"], ds.p_max,
                   TrainConfig(epochs=budget.fp_epochs, patience=budget.fp_patience, batch_size=budget.fp_batch,
                               seed=candidate.seed))
    tmp = checkpoint.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, checkpoint)
    return {"arch_key": candidate.arch_key, "fp_sum_rate": float(evaluate(model, H_test, ds.p_max).mean()),
            "epochs": result.epochs_run, "seconds": time.perf_counter() - started}


def fine_tune(site: SiteConfig, candidate: Candidate, budget: Budget, checkpoint: Path, save_to: Path | None = None) -> dict[str, Any]:
    """LSQ QAT of one bit configuration from its architecture's FP checkpoint, then test sum rate and energy."""
    import torch

    from plugins.lsq import attach, freeze
    from plugins.precoder_training import TrainConfig, evaluate, train

    torch.set_num_threads(1)
    torch.manual_seed(candidate.torch_seed())
    started = time.perf_counter()
    ds, data, H_test = _data(site, budget)
    family = PrecoderCNNFamily()
    arch = _arch(candidate, site)
    model = family.build(arch)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    attach(model, list(candidate.bits))
    if budget.qat_steps:
        train(model, data["train"], data["val"], ds.p_max,
              TrainConfig(epochs=10**6, patience=10**6, batch_size=budget.qat_batch, max_steps=budget.qat_steps,
                          seed=candidate.torch_seed()))
    rates = evaluate(model, H_test, ds.p_max)
    energy = dnn_energy(family.describe(arch), list(candidate.bits))
    if save_to is not None:
        frozen, bits = freeze(model)
        torch.save(frozen.state_dict(), save_to)
    return {
        "key": candidate.key, "c_out": candidate.c_out, "d_fcl": candidate.d_fcl, "bits": list(candidate.bits),
        "seed": candidate.seed, "sum_rate": float(np.mean(rates)), "energy_uj": energy.total_uj,
        "compute_uj": energy.compute_uj, "weights_uj": energy.weights_uj, "activations_uj": energy.activations_uj,
        "seconds": time.perf_counter() - started,
    }


def ptq_sum_rate(site: SiteConfig, candidate: Candidate, budget: Budget, checkpoint: Path) -> float:
    """Plain PTQ of the FP checkpoint at ``candidate.bits``: the comparison the paper rejected QAT for."""
    import torch

    from core import plugins
    from plugins.precoder_training import evaluate

    torch.set_num_threads(1)
    ds, _, H_test = _data(site, budget)
    model = PrecoderCNNFamily().build(_arch(candidate, site))
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    plugins.get("quantizers", "ptq").quantize(model, list(candidate.bits))
    return float(evaluate(model, H_test, ds.p_max).mean())
