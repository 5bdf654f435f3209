"""kd compressor: the loss, distillation of a deeprx student, and a second logit family (an MLP)."""

import copy

import numpy as np
import torch
import torch.nn.functional as F

from edgejoule import plugin_manager
from edgejoule.plugins.reception.deeprx_arch import DeepRxArch
from edgejoule.plugins.reception.deeprx_net import DeepRx, inputs
from edgejoule.plugins.reception.kd_core import KdOptions, KdRequest, kd_loss, train_logit_model, train_logit_models
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, simulate

torch.set_num_threads(1)


def test_loss_is_plain_bce_when_weight_is_zero_and_matches_formula() -> None:
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 14, 12, 2, generator=g), torch.randn(4, 14, 12, 2, generator=g)
    bits = torch.randint(0, 2, (4, 14, 12, 2), generator=g)
    mask = torch.from_numpy(OfdmConfig(n_sc=12).data_mask)[None, :, :, None]
    sel = torch.broadcast_to(mask, z_s.shape)
    plain = F.binary_cross_entropy_with_logits(z_s[sel], bits[sel].float())
    assert torch.allclose(kd_loss(z_s, z_t, bits, 0.0, 3.0, mask), plain)
    # the teacher does not enter at all with a = 0
    assert torch.allclose(kd_loss(z_s, 100 * z_t, bits, 0.0, 3.0, mask), plain)
    a, T = 0.3, 2.5
    p_t = torch.sigmoid(z_t[sel] / T)
    q_s = torch.sigmoid(z_s[sel] / T)
    soft = -(p_t * torch.log(q_s) + (1 - p_t) * torch.log(1 - q_s)).mean()
    assert torch.allclose(kd_loss(z_s, z_t, bits, a, T, mask), a * T**2 * soft + (1 - a) * plain, atol=1e-5)


def _ofdm_batches(cfg: OfdmConfig, seed: int):
    mask = torch.from_numpy(cfg.data_mask)[None, :, :, None]

    def batch(step: int):
        rng = np.random.default_rng((seed, step))
        slot = simulate(cfg, rng.uniform(10, 40, 32), rng)
        return inputs(cfg, slot), torch.from_numpy(slot.bits), mask

    return batch


def _ofdm_score(cfg: OfdmConfig, model) -> tuple[float, float]:
    """(masked BCE, BER) on 200 held-out slots at 25 dB."""
    slot = simulate(cfg, 25.0, np.random.default_rng(99), n=200)
    with torch.no_grad():
        z = model(inputs(cfg, slot))
    sel = torch.broadcast_to(torch.from_numpy(cfg.data_mask)[None, :, :, None], z.shape)
    bce = float(F.binary_cross_entropy_with_logits(z[sel], torch.from_numpy(slot.bits)[sel].float()))
    e, n = bit_errors(cfg, z.numpy(), slot.bits)
    return bce, e / n


def test_short_distillation_improves_a_deeprx_student() -> None:
    cfg = OfdmConfig(n_sc=12)
    torch.manual_seed(0)
    teacher = DeepRx(DeepRxArch(width=12, blocks=2, n_sc=12))
    train_logit_model(teacher, _ofdm_batches(cfg, 1), KdOptions(steps=150, lr=5e-3))
    student = DeepRx(DeepRxArch(width=4, blocks=1, n_sc=12)).eval()
    before = _ofdm_score(cfg, student)
    result = plugin_manager.get("compressors", "kd").run(
        KdRequest(teacher=teacher, student=student, batch=_ofdm_batches(cfg, 2), options=KdOptions(steps=60, lr=5e-3))
    )
    after = _ofdm_score(cfg, result.distilled)
    assert after[0] < before[0] and after[1] < before[1] - 0.02  # 62k bits: the BER std is ~0.002
    assert _ofdm_score(cfg, student) == before  # the initial student is left untouched
    assert result.scratch is not None and len(result.loss_history["scratch"]) == len(result.loss_history["distilled"])


class Mlp(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _mlp_task():
    """Three noisy bits, each a nonlinear function of 8 Gaussian features (targets flip with 10 % chance)."""
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))

    def batch(step: int):
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(256, 8, generator=g)
        clean = ((x @ w) ** 2 > 1.0).long()
        flip = (torch.rand(clean.shape, generator=g) < 0.1).long()
        return x, clean ^ flip, None

    return batch


def test_kd_works_on_a_second_logit_family() -> None:
    batch = _mlp_task()
    torch.manual_seed(0)
    teacher = Mlp(64)
    train_logit_model(teacher, batch, KdOptions(steps=300, lr=1e-2))
    student = Mlp(8)
    x, bits, _ = batch(10**6)

    def bce(model) -> float:
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(model(x), bits.float()))

    result = plugin_manager.get("compressors", "kd").run(
        KdRequest(teacher=teacher, student=student, batch=batch, options=KdOptions(steps=150, lr=1e-2, alpha=0.8))
    )
    assert bce(result.distilled) < bce(student) - 0.1
    assert bce(result.scratch) < bce(student) - 0.1
    assert bce(teacher) < bce(student)
    # distilled and scratch start from the same weights but follow different losses
    assert not torch.allclose(result.distilled.net[0].weight, result.scratch.net[0].weight)


def test_models_trained_together_equal_each_trained_alone() -> None:
    """train_logit_models shares batches and the teacher's forward pass, nothing else (issue 21's sweeps)."""
    batch = _mlp_task()
    torch.manual_seed(0)
    teacher = Mlp(32)
    train_logit_model(teacher, batch, KdOptions(steps=40, lr=1e-2))
    inits = [Mlp(8), Mlp(16)]
    options = [KdOptions(steps=30, lr=1e-2, alpha=0.5, temperature=2.0), KdOptions(steps=30, lr=3e-3, alpha=0.9)]
    together = [copy.deepcopy(m) for m in inits]
    losses = train_logit_models(together, batch, options, teacher)
    for init, joint, o, loss in zip(inits, together, options, losses):
        alone = copy.deepcopy(init)
        assert train_logit_model(alone, batch, o, teacher) == loss
        assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), joint.state_dict().values()))
    assert not torch.equal(together[0].net[0].weight[:, :1], inits[0].net[0].weight[:, :1])  # it did train
