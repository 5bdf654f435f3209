"""Why KAQ lost to LSQ at 4 bits: the measurements behind docs/DETECTION.md, "Why KAQ lost to LSQ".

Usage: .venv/bin/python benchmarks/kaq_diagnose.py [--seed 0] [--targets]   (one thread, about 4 minutes;
``--targets``: only the FP training and point 5, about 1 minute)

On PGD-Net, Rayleigh 8x4 QPSK, FP-trained as ``edgejoule detect`` does (30 epochs of 10,000 draws), prints:
1. per layer, the FP activation range (99.9 % quantile of |v_k|) at 0-20 dB beside the step factor of the
   former fixed policy, ((L-1)a + 3 sqrt(e)) / ((L-1)a + 3 sqrt(e_cal)) with e_cal from a mixed-SNR batch,
   and of the fitted ``noise-enhancement`` policy;
2. BER of a 4-bit LSQ net (10 QAT epochs) when all its learned steps, or one layer's, are scaled by a factor:
   where the BER-optimal step lies relative to the learned one, at each SNR;
3. at the start of 4-bit QAT, the detection MSE beside w * sum_k MMD^2 (w = 1) and the norms of their
   gradients on the detector's weights and on the steps;
4. after 4-bit KAQ QAT (30 epochs, ``learned`` policy) with MMD weight 0 and 1 (annealed): each layer's
   learned step and exponent g_k, beside plain LSQ's steps;
5. at the start of 4-bit QAT, for each MMD target of :class:`edgejoule.plugins.detection.kaq_core.KaqLoss` (``activations``,
   ``decisions``, ``output``): the MMD term beside the MSE and the cosine between the two terms' gradients on
   the steps and on the detector weights (negative: the MMD pulls against the task), summed over batches at
   0-20 dB.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from edgejoule.plugins.detection.kaq_core import (
    KaqActQuant,
    KaqLoss,
    LearnedPolicy,
    NoiseEnhancementPolicy,
    _calibration_batch,
    calibrate_policies,
    mmd2,
    quantize_activations,
    zf_error_std,
)
from edgejoule.plugins.detection.kaq_options import MMD_TARGETS
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.plugins.detection.unfolded_net import BatchCondition, TrainConfig, build_net, detector, tensors, train
from edgejoule.tasks.detection import ChannelSource, constellation, error_rates, simulate

SNRS = (0.0, 4.0, 8.0, 12.0, 16.0, 20.0)


def batch_at(src: ChannelSource, const, snr: float, n: int, seed: int):
    rng = np.random.default_rng([seed, int(snr * 10)])
    return tensors(simulate(src.draw(n, rng), const, snr, rng))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", action="store_true", help="only point 5 (the MMD targets at QAT start)")
    args = ap.parse_args()
    seed = args.seed
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    const, src = constellation("qpsk"), ChannelSource(8, 4)
    fp = build_net(UnfoldedArch(kind="pgd", n_r=8, n_u=4))
    train(fp, src, const, TrainConfig(seed=seed))
    qat = TrainConfig(epochs=10, seed=seed + 1)
    if args.targets:
        mmd_targets(fp, src, const, qat, seed)
        return

    print("1. FP activation range (99.9 % quantile of |v_k|) and step factors vs SNR (dB)", SNRS)
    cal = _calibration_batch(src, const, qat)
    outer = (const.levels_per_dim - 1) * const.scale
    former_ref = outer + 3 * float(zf_error_std(BatchCondition(cal[0], cal[2])))
    fitted = [KaqActQuant(4, NoiseEnhancementPolicy(const)) for _ in range(5)]
    calibrate_policies(fp, fitted, src, const, qat)
    rows = []
    for snr in SNRS:
        H, y, nv, _ = batch_at(src, const, snr, 1024, seed)
        cond = BatchCondition(H, nv)
        with torch.no_grad():
            acts = fp(H, y, nv, keep=True)[1]
        rows.append(([float(a.abs().flatten().quantile(0.999)) for a in acts],
                     (outer + 3 * float(zf_error_std(cond))) / former_ref,
                     [float(q.policy.factor(cond)) for q in fitted]))
    for k in range(5):
        rng_ = [r[0][k] for r in rows]
        print(f"  layer {k + 1}: range {' '.join(f'{v:.2f}' for v in rng_)} (max/min {max(rng_) / min(rng_):.2f}); "
              f"fitted factor {' '.join(f'{r[2][k]:.2f}' for r in rows)}")
    print(f"  former factor (all layers): {' '.join(f'{r[1]:.2f}' for r in rows)}")

    print("2. BER x 1e4 of a 4-bit LSQ net (10 QAT epochs) with its learned steps scaled")
    lsq = quantize_activations(fp, "lsq", 4, src, qat)
    learned = [float(q.fq.step.detach()) for q in lsq.quant]
    scales, eval_snrs = (0.5, 0.6, 0.75, 1.0, 1.25, 1.5), [0.0, 4.0, 8.0, 12.0, 16.0]
    for layer in (None, 0, 3, 4):
        ber = []
        for f in scales:
            with torch.no_grad():
                for k, q in enumerate(lsq.quant):
                    q.fq.step.fill_(learned[k] * (f if layer in (None, k) else 1.0))
            ber.append([r.ber for r in error_rates(detector(lsq), src, const, eval_snrs, 20_000, seed=seed + 1)])
        ber = np.array(ber)
        print(f"  {'all layers' if layer is None else f'layer {layer + 1}'} (scales {scales}):")
        for i, snr in enumerate(eval_snrs):
            print(f"    {snr:4.0f} dB: {' '.join(f'{1e4 * b:6.1f}' for b in ber[:, i])}  best x{scales[ber[:, i].argmin()]}")

    print("3. QAT start (4 bits, learned policy = LSQ here): MSE vs w * sum_k MMD^2 (w = 1, 256 samples per layer,")
    print("   Silverman bandwidths as KaqLoss starts with); gradient norms on the detector weights / on the steps")
    net = copy.deepcopy(fp)
    net.quant = torch.nn.ModuleList(KaqActQuant(4, LearnedPolicy(const)) for _ in range(5))
    calibrate_policies(fp, list(net.quant), src, const, qat)
    with torch.no_grad():
        net(*cal[:3])
    params = [p for n, p in net.named_parameters() if not n.startswith("quant")], [q.step for q in net.quant]

    def norms(term: torch.Tensor) -> str:
        out = []
        for group in params:
            g = torch.autograd.grad(term, group, retain_graph=True, allow_unused=True)
            out.append(f"{float(torch.sqrt(sum((x**2).sum() for x in g if x is not None))):.3g}")
        return " / ".join(out)

    for snr in (0.0, 10.0, 20.0):
        b = batch_at(src, const, snr, 128, seed + 2)
        x_hat, acts = net(*b[:3], keep=True)
        with torch.no_grad():
            ref = fp(*b[:3], keep=True)[1]
        mse = ((x_hat - b[3]) ** 2).sum(-1).mean()
        idx = torch.randperm(ref[0].numel(), generator=torch.Generator().manual_seed(seed))[:256]
        mmd = sum(mmd2(a.flatten()[idx], q.flatten()[idx], 1.06 * a.flatten()[idx].std() * 256**-0.2)
                  for a, q in zip(ref, acts))
        print(f"  {snr:4.0f} dB: MSE {mse.item():.4f} (grads {norms(mse)}); MMD term {mmd.item():.4f} (grads {norms(mmd)})")

    print("4. after 30 QAT epochs at 4 bits: learned steps (and exponents g_k)")
    qat30 = TrainConfig(seed=seed + 1)
    for label, method, w in (("LSQ", "lsq", 0.0), ("KAQ w=0", "kaq", 0.0), ("KAQ w=1", "kaq", 1.0)):
        net = quantize_activations(fp, method, 4, src, qat30, mmd_weight=w)
        steps = [float((q.fq.step if method == "lsq" else q.step).detach()) for q in net.quant]
        exps = "" if method == "lsq" else " exponents " + " ".join(f"{float(q.policy.exponent.detach()):+.3f}" for q in net.quant)
        print(f"  {label:8s} steps {' '.join(f'{v:.3f}' for v in steps)}{exps}")

    mmd_targets(fp, src, const, qat, seed)


def mmd_targets(fp, src: ChannelSource, const, qat: TrainConfig, seed: int) -> None:
    print("5. QAT start (4 bits): MMD term (w = 1) per target beside the MSE, and the cosine between their")
    print("   gradients on the steps / on the detector weights, summed over one batch of 128 at each SNR (dB)", SNRS)
    net = copy.deepcopy(fp)
    net.quant = torch.nn.ModuleList(KaqActQuant(4, LearnedPolicy(const)) for _ in range(5))
    calibrate_policies(fp, list(net.quant), src, const, qat)
    with torch.no_grad():
        net(*_calibration_batch(src, const, qat)[:3])
    groups = [q.step for q in net.quant], [p for n, p in net.named_parameters() if not n.startswith("quant")]

    def grads(term: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for group in groups:
            g = torch.autograd.grad(term, group, retain_graph=True, allow_unused=True)
            out.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, group)]))
        return out

    for target in MMD_TARGETS:
        loss = KaqLoss(fp, target=target)
        torch.manual_seed(seed)
        g_mse, g_mmd, mse_sum, mmd_sum = [0, 0], [0, 0], 0.0, 0.0
        for snr in SNRS:
            b = batch_at(src, const, snr, 128, seed + 2)
            x_hat, acts = net(*b[:3], keep=True)
            mse = ((x_hat - b[3]) ** 2).sum(-1).mean()
            fp_s, q_s = loss.compared(b, acts)
            h = loss.log_h.exp().detach()
            mmd = sum(mmd2(a, q, h[j]) for j, (a, q) in enumerate(zip(fp_s, q_s)))
            g_mse = [a + g for a, g in zip(g_mse, grads(mse))]
            g_mmd = [a + g for a, g in zip(g_mmd, grads(mmd))]
            mse_sum, mmd_sum = mse_sum + float(mse.detach()), mmd_sum + float(mmd.detach())
        cos = [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in zip(g_mse, g_mmd)]
        print(f"  {target:11s}: MMD term {mmd_sum / len(SNRS):.4f} vs MSE {mse_sum / len(SNRS):.4f}; "
              f"grad norm ratio MMD/MSE {float(g_mmd[0].norm() / g_mse[0].norm()):.2f} / "
              f"{float(g_mmd[1].norm() / g_mse[1].norm()):.2f}; cosine {cos[0]:+.2f} / {cos[1]:+.2f}")


if __name__ == "__main__":
    main()
