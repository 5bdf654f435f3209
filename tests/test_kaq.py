"""KAQ: the MMD estimator, the KDE bandwidth, the step-size policy, the quantizer and the detect command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import plugins
from core.tasks.detection import ChannelSource, constellation, error_rates, rayleigh_channels, real_channel
from plugins.kaq_core import (
    KaqActQuant,
    NoiseEnhancementPolicy,
    StaticPolicy,
    kde_loo_nll,
    mmd2,
    quantize_activations,
)
from plugins.unfolded import UnfoldedArch
from plugins.unfolded_net import BatchCondition, TrainConfig, detector, train
from tests.conftest import run_cli

torch.set_num_threads(1)


def test_mmd_is_zero_for_identical_samples_and_decreases_as_distributions_align():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, generator=g)
    h = torch.tensor(0.5)
    assert float(mmd2(a, a.clone(), h)) == pytest.approx(0.0, abs=1e-7)
    b = torch.randn(400, generator=g)
    values = [float(mmd2(a, b + shift, h)) for shift in (2.0, 1.0, 0.5, 0.25)]
    assert all(v > 0 for v in values)
    assert values == sorted(values, reverse=True)


def test_kde_bandwidth_has_an_interior_likelihood_optimum():
    a = torch.randn(300, generator=torch.Generator().manual_seed(1))
    nll = [float(kde_loo_nll(a, torch.tensor(h))) for h in (0.01, 0.3, 5.0)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def _condition(snr_db: float, n_r: int = 8, seed: int = 0) -> BatchCondition:
    rng = np.random.default_rng(seed)
    H = torch.from_numpy(real_channel(rayleigh_channels(256, n_r, 4, rng)))
    return BatchCondition(H, torch.full((256,), 10 ** (-snr_db / 10)))


@pytest.mark.parametrize("modulation", ["qpsk", "16qam"])
def test_step_policy_shrinks_monotonically_with_snr_and_grows_with_ill_conditioning(modulation):
    policy = NoiseEnhancementPolicy(constellation(modulation))
    policy.calibrate(_condition(10.0))
    factors = [float(policy.factor(_condition(snr))) for snr in (-5, 0, 5, 10, 15, 20, 30)]
    assert all(x > y for x, y in zip(factors, factors[1:]))
    assert factors[3] == pytest.approx(1.0)
    # a square channel (8x8 real blocks of a 4x4) is worse conditioned than a tall 8x4 one
    assert float(policy.factor(_condition(5.0, n_r=4))) > float(policy.factor(_condition(5.0, n_r=8)))
    assert float(StaticPolicy(constellation(modulation)).factor(_condition(0.0))) == 1.0


def test_kaq_fake_quantizer_uses_at_most_2_to_the_b_levels_per_batch():
    q = KaqActQuant(3, NoiseEnhancementPolicy(constellation("qpsk")))
    v = torch.randn(256, 8)
    for snr in (0.0, 20.0):
        out = q(v, _condition(snr))
        assert len(torch.unique(out)) <= 8
    with torch.no_grad():
        assert float(q(v, _condition(0.0)).abs().max()) > float(q(v, _condition(20.0)).abs().max())


def test_kaq_qat_is_registered_and_recovers_what_ptq_loses_at_2_bits():
    const = constellation("qpsk")
    src = ChannelSource(8, 4)
    fp = plugins.get("models", "unfolded").build(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    train(fp, src, const, TrainConfig(samples=2560, epochs=6, seed=1))
    cfg = TrainConfig(samples=1280, epochs=4, seed=2)
    kaq = plugins.get("quantizers", "kaq").quantize(fp, [2], source=src, cfg=cfg)
    ptq = quantize_activations(fp, "ptq", 2, src, cfg)

    def ber(net):
        return error_rates(detector(net), src, const, [8.0], 3000, seed=9)[0].ber

    assert ber(kaq) < ber(ptq)
    assert all(p.requires_grad for p in fp.parameters())  # the FP teacher given to KAQ is left untouched


def test_detect_command_writes_table_plot_and_energy(tmp_path):
    out = tmp_path / "detect"
    result = run_cli(
        "detect", "--site", "rayleigh", "--model", "pgd", "--quantizer", "kaq", "--quantizer", "ptq", "--bits", "4",
        "--samples", "512", "--epochs", "2", "--qat-epochs", "1", "--snr", "0,6", "--eval-samples", "500",
        "--out", str(out), "--export", str(tmp_path / "packages"), "--json",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "packages" / "rayleigh-pgd-fp" / "manifest.json").read_text())
    assert manifest["task"] == "detection" and manifest["family"] == "unfolded"
    assert manifest["metrics"]["parity_ber_litert"] == manifest["metrics"]["parity_ber_torch"]
    data = json.loads(result.stdout)
    names = {c["name"]: c for c in data["curves"]}
    assert {"zf-detector", "lmmse-detector", "ml-detector", "pgd-fp", "pgd-kaq4", "pgd-ptq4"} <= set(names)
    assert names["pgd-kaq4"]["energy_uj"] < names["pgd-fp"]["energy_uj"]
    assert (out / "ber-pgd.png").read_bytes()[:4] == b"\x89PNG"
    assert "pgd-kaq4" in (out / "table.md").read_text()
    bad = run_cli("detect", "--model", "cnn")
    assert bad.returncode == 2 and "--model must be one of" in bad.stderr
