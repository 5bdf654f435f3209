"""KAQ: the MMD estimator, the KDE bandwidth, the step-size policy, the quantizer and the detect command."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgejoule import plugin_manager
from edgejoule.plugins.detection.kaq_core import (
    KaqActQuant,
    KaqLoss,
    LearnedPolicy,
    LsqActQuant,
    NoiseEnhancementPolicy,
    NoiseLevelPolicy,
    StaticPolicy,
    kde_loo_nll,
    mmd2,
    quantize_activations,
    zf_error_std,
)
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.plugins.detection.unfolded_net import BatchCondition, Identity, TrainConfig, detector, tensors, train
from edgejoule.tasks.detection import (
    ChannelSource,
    constellation,
    error_rates,
    rayleigh_channels,
    real_channel,
    simulate,
)
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


def _calibrated(policy, spread_with_noise: bool):
    """Calibrate on synthetic activations: QPSK symbols plus (or without) a ZF-like error of the batch."""
    conds = [_condition(snr, seed=i) for i, snr in enumerate(np.linspace(0, 20, 8))]
    g = torch.Generator().manual_seed(3)
    acts = []
    for c in conds:
        x = torch.sign(torch.randn(256, 8, generator=g)) / np.sqrt(2)
        e_std = float(zf_error_std(c)) if spread_with_noise else 0.1
        acts.append(x + e_std * torch.randn(256, 8, generator=g))
    policy.calibrate(conds, acts)
    return policy


@pytest.mark.parametrize("modulation", ["qpsk", "16qam"])
def test_step_policy_shrinks_monotonically_with_snr_and_grows_with_ill_conditioning(modulation):
    policy = _calibrated(NoiseEnhancementPolicy(constellation(modulation)), spread_with_noise=True)
    factors = [float(policy.factor(_condition(snr))) for snr in (-5, 0, 5, 10, 15, 20, 30)]
    assert all(x > y for x, y in zip(factors, factors[1:]))
    assert factors[0] > 1 > factors[-1]  # the calibration conditions' geometric mean sits inside the range
    # a square channel (8x8 real blocks of a 4x4) is worse conditioned than a tall 8x4 one
    assert float(policy.factor(_condition(5.0, n_r=4))) > float(policy.factor(_condition(5.0, n_r=8)))
    assert float(StaticPolicy(constellation(modulation)).factor(_condition(0.0))) == 1.0


def test_step_policy_is_flat_for_a_layer_whose_range_does_not_depend_on_the_noise():
    """The fitted range model only moves the step where the FP activations' range moves (the fix for the
    early PGD layers, which the old fixed model clipped at high SNR)."""
    policy = _calibrated(NoiseEnhancementPolicy(constellation("qpsk")), spread_with_noise=False)
    for snr in (0.0, 10.0, 20.0):
        assert float(policy.factor(_condition(snr))) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("policy_class", [LearnedPolicy, NoiseLevelPolicy])
def test_learned_policy_starts_as_lsq_and_its_exponent_sets_a_monotone_response(policy_class):
    """``learned`` and ``noise-level`` (its power law in the noise std alone) alike."""
    policy = _calibrated(policy_class(constellation("qpsk")), spread_with_noise=True)
    assert [float(policy.factor(_condition(snr))) for snr in (0.0, 20.0)] == [1.0, 1.0]
    with torch.no_grad():
        policy.exponent.fill_(0.5)
    factors = [float(policy.factor(_condition(snr))) for snr in (0, 5, 10, 15, 20)]
    assert all(x > y for x, y in zip(factors, factors[1:]))
    q = KaqActQuant(4, policy)  # the exponent is a parameter of the quantizer: QAT trains it
    assert any(p is policy.exponent for p in q.parameters())


def test_noise_level_policy_ignores_the_channel_and_costs_a_few_scalars():
    """The cheap policy: blind to the conditioning of H (a square channel gets the step of a tall one), and a
    handful of scalars per frame where reading the channel costs an inverse per detection."""
    from edgejoule.plugins.detection.kaq_core import policy_operations

    policy = _calibrated(NoiseLevelPolicy(constellation("qpsk")), spread_with_noise=True)
    with torch.no_grad():
        policy.exponent.fill_(0.5)
    assert float(policy.factor(_condition(5.0, n_r=4))) == pytest.approx(float(policy.factor(_condition(5.0))))
    cheap, reading = (policy_operations(UnfoldedArch(layers=5), p) for p in ("noise-level", "learned"))
    assert cheap.multiplications + cheap.divisions + cheap.roots <= 30 < reading.multiplications / 50


def test_kaq_fake_quantizer_uses_at_most_2_to_the_b_levels_per_batch():
    q = KaqActQuant(3, _calibrated(NoiseEnhancementPolicy(constellation("qpsk")), spread_with_noise=True))
    v = torch.randn(256, 8)
    for snr in (0.0, 20.0):
        out = q(v, _condition(snr))
        assert len(torch.unique(out)) <= 8
    with torch.no_grad():  # the grid (smallest nonzero level) is coarser at low SNR
        low, high = (q(v, _condition(snr)).abs() for snr in (0.0, 20.0))
        assert float(low[low > 0].min()) > float(high[high > 0].min())


def test_kaq_qat_is_registered_and_recovers_what_ptq_loses_at_2_bits():
    const = constellation("qpsk")
    src = ChannelSource(8, 4)
    fp = plugin_manager.get("models", "unfolded").build(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    train(fp, src, const, TrainConfig(samples=2560, epochs=6, seed=1))
    cfg = TrainConfig(samples=1280, epochs=4, seed=2)
    kaq = plugin_manager.get("quantizers", "kaq").quantize(fp, [2], source=src, cfg=cfg)
    ptq = quantize_activations(fp, "ptq", 2, src, cfg)

    def ber(net):
        return error_rates(detector(net), src, const, [8.0], 3000, seed=9)[0].ber

    assert ber(kaq) < ber(ptq)
    assert all(p.requires_grad for p in fp.parameters())  # the FP teacher given to KAQ is left untouched


def test_a_kaq_run_does_not_depend_on_what_drew_from_torchs_generator_before_it():
    src = ChannelSource(8, 4)
    fp = plugin_manager.get("models", "unfolded").build(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    cfg = TrainConfig(samples=256, epochs=2, seed=2)
    runs = []
    for draws in (0, 1000):
        torch.rand(draws)  # another run's use of the global generator
        runs.append(quantize_activations(fp, "kaq", 2, src, cfg).state_dict())
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


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
    assert names["pgd-ptq4"]["energy_uj"] < names["pgd-fp"]["energy_uj"]
    # KAQ pays for reading the channel (an inverse per detection): more than the FP net, implemented; the
    # paper's counting has no such term
    assert names["pgd-kaq4"]["energy_uj"] > names["pgd-fp"]["energy_uj"]
    paper = {k: names[k]["energy_uj_by_counting"]["paper"] for k in ("pgd-kaq4", "pgd-ptq4", "pgd-fp")}
    assert paper["pgd-kaq4"] == paper["pgd-ptq4"] < paper["pgd-fp"]
    assert (out / "ber-pgd.png").read_bytes()[:4] == b"\x89PNG"
    assert "pgd-kaq4" in (out / "table.md").read_text()
    bad = run_cli("detect", "--model", "cnn")
    assert bad.returncode == 2 and "--model must be one of" in bad.stderr
    bad = run_cli("detect", "--mmd-target", "weights")
    assert bad.returncode == 2 and "--mmd-target must be one of output, decisions, activations" in bad.stderr
    bad = run_cli("detect", "--mmd-teacher", "moving")
    assert bad.returncode == 2 and "--mmd-teacher must be one of frozen, along" in bad.stderr
    bad = run_cli("detect", "--coded", "turbo")
    assert bad.returncode == 2 and "unknown code 'turbo'" in bad.stderr


def test_mmd_weight_anneals_linearly_to_zero_and_targets_come_from_the_frozen_teacher():
    fp = plugin_manager.get("models", "unfolded").build(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    loss = KaqLoss(fp, weight=2.0, anneal_steps=4)
    rng = np.random.default_rng(0)
    batch = tensors(simulate(ChannelSource(8, 4).draw(64, rng), constellation("qpsk"), 5.0, rng))
    weights = []
    for _ in range(5):
        weights.append(loss.current_weight())
        _, acts = fp(*batch[:3], keep=True)
        loss(batch, acts).backward()
    assert weights == [2.0, 1.5, 1.0, 0.5, 0.0]
    assert not any(p.requires_grad for p in loss.teacher.parameters())
    assert all(p.grad is None for p in loss.teacher.parameters())
    assert KaqLoss(fp, weight=2.0).current_weight() == 2.0  # constant schedule


def _mmd_part(loss_for, batch, acts) -> float:
    """The MMD term of a KaqLoss: its value at weight 1 minus its value at weight 0 (same sample positions)."""
    values = []
    for weight in (1.0, 0.0):
        torch.manual_seed(3)
        values.append(float(loss_for(weight)(batch, acts).detach()))
    return values[0] - values[1]


def test_mmd_on_decisions_ignores_clipping_in_the_slicers_saturation_and_output_sees_only_the_last_layer():
    fp = plugin_manager.get("models", "unfolded").build(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    rng = np.random.default_rng(0)
    batch = tensors(simulate(ChannelSource(8, 4).draw(128, rng), constellation("qpsk"), 0.0, rng))
    with torch.no_grad():
        _, acts = fp(*batch[:3], keep=True)
    # clip each layer's activations at 4 temperatures from the QPSK slicer's threshold (0), where its tanh is
    # within 7e-4 of saturation: the soft decisions hardly move, the activations' tails do
    limits = [4 * float(p.log_t.detach().exp()) for p in fp.proj]
    clipped = [v.clamp(-c, c) for v, c in zip(acts, limits)]
    assert any(bool((v != c).any()) for v, c in zip(acts, clipped))  # the clip does remove tails
    on = {
        t: _mmd_part(lambda w, t=t: KaqLoss(fp, weight=w, target=t), batch, clipped) for t in ("activations", "decisions")
    }
    assert on["decisions"] < 1e-3 * on["activations"]
    assert on["activations"] > 0
    # output: one bandwidth, and the gradient reaches only the last layer's activations
    loss = KaqLoss(fp, target="output")
    assert loss.log_h.numel() == 1
    shifted = [(v + 0.3).requires_grad_(True) for v in acts]
    loss(batch, shifted).backward()
    assert all(v.grad is None for v in shifted[:-1]) and float(shifted[-1].grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="unknown MMD target"):
        KaqLoss(fp, target="weights")


def test_mmd_teacher_along_is_the_quantized_net_itself_in_fp_arithmetic():
    fp = plugin_manager.get("models", "unfolded").build(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    net = copy.deepcopy(fp)
    net.quant = nn.ModuleList(LsqActQuant(2) for _ in range(fp.arch.layers))
    rng = np.random.default_rng(0)
    batch = tensors(simulate(ChannelSource(8, 4).draw(64, rng), constellation("qpsk"), 5.0, rng))
    _, acts = net(*batch[:3], keep=True)
    with torch.no_grad():  # as if QAT had moved the quantized net's weights away from the FP net's
        net.eta.mul_(1.5)
        net.proj[-1].log_t.add_(0.2)
    plain = copy.deepcopy(net)  # the same weights, quantizers bypassed
    plain.quant = nn.ModuleList(Identity() for _ in range(fp.arch.layers))
    with torch.no_grad():
        expected = plain(*batch[:3], keep=True)[1]
        frozen_acts = fp(*batch[:3], keep=True)[1]
    for target in ("activations", "output"):
        along = KaqLoss(fp, target=target, follow=net.state_dict)
        frozen = KaqLoss(fp, target=target)
        for loss, reference, teacher_net in ((along, expected, plain), (frozen, frozen_acts, fp)):
            got, _ = loss.compared(batch, acts)
            # the positions of a fresh loss's first draw: its own generator, seed 0
            idx = torch.randperm(acts[0].numel(), generator=torch.Generator().manual_seed(0))[: loss.samples]
            for j, k in enumerate(loss.layers):
                want = reference[k].flatten()[idx]
                want = want if target == "activations" else teacher_net.proj[k](want)
                assert torch.allclose(got[j], want.detach())
        assert not any(p.requires_grad for p in along.teacher.parameters())
    assert torch.equal(fp.eta.detach(), torch.full((5,), 0.1))  # the FP net is not touched by the sync
