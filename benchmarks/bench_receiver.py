"""OFDM receivers: training time per epoch and inference latency (torch and LiteRT, 1 thread) of deeprx sizes;
the numpy input features; LS+LMMSE.

An epoch here is 100 optimizer steps of 32 fresh slots (3,200 slots), the unit ``edgejoule distill`` trains in.
LiteRT: each size converted with ``edgejoule.plugins.reception.export`` (parity-checked) and invoked one slot at a time,
as an edge receiver runs it; the features (LS, interpolation, Z, G) are timed apart, in numpy.
Run: .venv/bin/python benchmarks/bench_receiver.py [--n-sc 12]

``--ablation``: why the inputs are what they are (docs/RECEIVER.md, "Diagnosis"). A 16x3 receiver trained
for 1,000 steps (batch 32, SINR uniform in 0..40 dB, the distill defaults) on four input sets, BER at 10-40 dB
on 500 fresh slots per point beside LS+LMMSE on the same slots. A missing plane is a zero plane (its weights
get no gradient, so this equals a narrower input layer):
raw = Y, P, LS estimate zero off the pilots (as first built); interp = the LS estimate interpolated;
product = interp + Re/Im(H^* Y) + |H|^2; equalized = interp + Z + G (edgejoule.plugins.reception.deeprx_arch.features).

``--headroom``: where the error floor comes from and whether training budget, SINR range or size moves a net
below it (docs/RECEIVER.md, "Results"). At Doppler 300 and 1000 Hz, on 2,000 fresh slots at 30 and 40 dB:
LS+LMMSE, LS+LMMSE with noiseless pilots (only interpolation error left), LMMSE with the true channel at every
RE (no estimation error); at 1000 Hz, deeprx receivers on ``features`` trained from seed 0 with the distill
batches: 16x3 for 1,000 and 4,000 steps at 0..40 dB, 16x3 for 1,000 steps at 20..40 dB, 24x5 for 1,000 steps.

``--checkpoint RUN/teacher.pt --arch 24x5 --doppler 1000``: a saved receiver (a distill teacher checkpoint) beside
LS+LMMSE on the ``--headroom`` test slots of that Doppler (2,000 per point at 30 and 40 dB), to follow a long
teacher run's BER over its training steps.

``--run RUN``: every receiver of a finished ``edgejoule distill`` run (its own scenario and trained weights)
exported with ``edgejoule.plugins.reception.export`` (parity-checked) and timed on the agent's runtime
(``edgejoule.runtime.load_interpreter``, 1 thread, one slot per call): the features (numpy) plus one LiteRT
``invoke``, beside LS+LMMSE in numpy; with the run's lowest BER and each receiver's energy per slot under both
countings (``receiver_cost``; docs/RECEIVER.md, the KD scenario's table of energy and latency).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_detection import median_ms  # benchmarks/ is on sys.path when run as a script

from edgejoule.errors import EdgejouleError
from edgejoule.plugins.reception.deeprx_arch import DeepRxArch, describe, features
from edgejoule.plugins.reception.deeprx_net import DeepRx, inputs
from edgejoule.plugins.reception.distill_cli import parse_arch
from edgejoule.plugins.reception.distill_experiment import DistillRequest, batches, receiver_cost
from edgejoule.plugins.reception.export import ReceiverRuntime, export_receiver
from edgejoule.plugins.reception.kd_core import KdOptions, train_logit_model
from edgejoule.plugins.reception.ofdm_receiver import receive, true_channel_receive
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, simulate

SIZES = [(24, 5), (16, 3), (8, 2)]
EPOCH_STEPS = 100
ABLATION_STEPS = 1000
ABLATION_SINR_DB = (10.0, 20.0, 30.0, 40.0)
HEADROOM_SINR_DB = (30.0, 40.0)
HEADROOM_SLOTS = 2000
HEADROOM_TRAIN_DOPPLER = 1000.0  # where the baseline's floor is furthest above the true-channel bound
HEADROOM_NETS = [((16, 3), 1000, (0.0, 40.0)), ((16, 3), 4000, (0.0, 40.0)), ((16, 3), 1000, (20.0, 40.0)),
                 ((24, 5), 1000, (0.0, 40.0))]


def ablation_planes(cfg: OfdmConfig, slot, variant: str) -> np.ndarray:
    """The nine input planes of ``variant`` (module docstring); ``equalized`` is ``features`` itself."""
    x = features(cfg, slot)
    if variant == "raw":
        x[:, 4], x[:, 5] = slot.h_ls.real, slot.h_ls.imag
    if variant in ("raw", "interp"):
        x[:, 6:] = 0.0
    if variant == "product":
        m = (x[:, 4] - 1j * x[:, 5]) * slot.y  # H^* Y, unnormalized; plane 8 stays |H|^2
        x[:, 6], x[:, 7] = m.real, m.imag
    return x


def train(cfg: OfdmConfig, req: DistillRequest, planes, width_blocks: tuple[int, int], steps: int,
          sinr_db: tuple[float, float]) -> DeepRx:
    """A deeprx receiver trained from seed 0 on ``planes(cfg, slot)`` with the distill batches (fresh slots per
    step, SINR uniform in ``sinr_db``): every variant sees the same slots in the same order."""
    mask = torch.from_numpy(cfg.data_mask)[None, :, :, None]

    def batch(step: int):
        rng = np.random.default_rng((req.seed, 0, step))
        slot = simulate(cfg, rng.uniform(*sinr_db, req.batch), rng)
        return torch.from_numpy(planes(cfg, slot)), torch.from_numpy(slot.bits), mask

    torch.manual_seed(0)
    model = DeepRx(DeepRxArch(width=width_blocks[0], blocks=width_blocks[1], n_sc=cfg.n_sc))
    train_logit_model(model, batch, KdOptions(steps=steps, lr=req.lr))
    return model


def row(label: str, cfg: OfdmConfig, logits, test) -> None:
    """One table row: the BER of ``logits(slot)`` on each test batch."""
    bers = []
    for slot in test:
        e, n = bit_errors(cfg, logits(slot), slot.bits)
        bers.append(e / n)
    print(f"{label:<38}" + "".join(f"{b:>10.2e}" for b in bers))


def net_logits(model: DeepRx, planes, cfg: OfdmConfig):
    def logits(slot) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(planes(cfg, slot))).numpy()

    return logits


def ablation(cfg: OfdmConfig, req: DistillRequest) -> None:
    print(f"input ablation: deeprx 16x3, {ABLATION_STEPS} steps; BER at " + ", ".join(f"{s:g}" for s in ABLATION_SINR_DB) + " dB")
    test = [simulate(cfg, s, np.random.default_rng((2, i)), n=500) for i, s in enumerate(ABLATION_SINR_DB)]
    for variant in ("raw", "interp", "product", "equalized"):
        def planes(cfg: OfdmConfig, slot, variant: str = variant) -> np.ndarray:
            return ablation_planes(cfg, slot, variant)

        model = train(cfg, req, planes, (16, 3), ABLATION_STEPS, req.train_sinr_db)
        row(variant, cfg, net_logits(model, planes, cfg), test)
    row("LS+LMMSE", cfg, lambda slot: receive(cfg, slot), test)


def headroom_test(cfg: OfdmConfig) -> list:
    """The fixed test slots of ``--headroom`` and ``--checkpoint`` (one batch per SINR in HEADROOM_SINR_DB)."""
    return [simulate(cfg, s, np.random.default_rng((3, i)), n=HEADROOM_SLOTS) for i, s in enumerate(HEADROOM_SINR_DB)]


def headroom(req: DistillRequest) -> None:
    print(f"where the floor comes from, BER at " + ", ".join(f"{s:g}" for s in HEADROOM_SINR_DB) + f" dB, "
          f"{HEADROOM_SLOTS} slots per point")
    for doppler in (300.0, 1000.0):
        cfg = OfdmConfig(n_sc=req.n_sc, doppler_hz=doppler)
        test = headroom_test(cfg)
        print(f"Doppler {doppler:g} Hz")
        row("  LS+LMMSE", cfg, lambda slot: receive(cfg, slot), test)
        row("  LS+LMMSE, noiseless pilots", cfg, lambda slot: receive(
            cfg, slot.model_copy(update={"h_ls": np.where(cfg.pilot_mask, slot.h, 0)})), test)
        row("  true channel at every RE", cfg, lambda slot: true_channel_receive(cfg, slot), test)
        if doppler != HEADROOM_TRAIN_DOPPLER:
            continue
        for width_blocks, steps, sinr_db in HEADROOM_NETS:
            model = train(cfg, req, features, width_blocks, steps, sinr_db)
            label = f"  deeprx {width_blocks[0]}x{width_blocks[1]}, {steps} steps, {sinr_db[0]:g}..{sinr_db[1]:g} dB"
            row(label, cfg, net_logits(model, features, cfg), test)


def checkpoint(path: Path, width_blocks: tuple[int, int], cfg: OfdmConfig) -> None:
    """A saved deeprx state dict beside LS+LMMSE on the headroom test slots of ``cfg``."""
    model = DeepRx(DeepRxArch(width=width_blocks[0], blocks=width_blocks[1], n_sc=cfg.n_sc))
    model.load_state_dict(torch.load(path, weights_only=True))
    test = headroom_test(cfg)
    print(f"Doppler {cfg.doppler_hz:g} Hz, BER at " + ", ".join(f"{s:g}" for s in HEADROOM_SINR_DB) + f" dB, "
          f"{HEADROOM_SLOTS} slots per point")
    row("LS+LMMSE", cfg, lambda slot: receive(cfg, slot), test)
    row(f"deeprx {width_blocks[0]}x{width_blocks[1]} {path}", cfg, net_logits(model.eval(), features, cfg), test)


def run_latency(run: Path, repeats: int = 300) -> None:
    """``--run``: the module docstring's table for a finished distill run, in markdown."""
    import json

    result = json.loads((run / "results.json").read_text())
    req = DistillRequest.model_validate(result["request"])
    cfg = req.cfg
    one = simulate(cfg, 20.0, np.random.default_rng(0), n=1)
    feats = median_ms(lambda: features(cfg, one), repeats)
    print(f"{run}: {cfg.channel} {cfg.delay_spread_ns:g} ns, pilots {list(cfg.pilot_symbols)}, {cfg.doppler_hz:g} Hz, "
          f"grid 14 x {cfg.n_sc}; median ms per slot over {repeats} calls, 1 thread; features {feats:.3f} ms (numpy)")
    print("\n| receiver | lowest BER | energy per slot (uJ, implemented / paper) | LiteRT invoke (ms) | "
          "features + invoke (ms) | parity BER LiteRT / torch |\n|---|---|---|---|---|---|")
    for e in result["receivers"]:
        arch = req.arch((e["arch"]["width"], e["arch"]["blocks"])) if e["arch"] else None
        cost = " / ".join(f"{v:.3g}" for v in receiver_cost(req, arch)[2].values())
        if arch is None:
            ms = median_ms(lambda: receive(cfg, one), repeats)
            print(f"| {e['label']} | {min(e['ber']):.2e} | {cost} | - (numpy) | {ms:.3f} | - |")
            continue
        name = "teacher.pt" if e["role"] == "teacher" else f"{e['role']}-{arch.width}x{arch.blocks}.pt"
        model = DeepRx(arch)
        model.load_state_dict(torch.load(run / name, weights_only=True))
        with tempfile.TemporaryDirectory() as tmp:
            manifest = export_receiver(model.eval(), arch, cfg, Path(tmp))
            runtime = ReceiverRuntime(Path(tmp) / "model.tflite")
            x = features(cfg, one)
            lite = median_ms(lambda: runtime.invoke(x), repeats)
            both = median_ms(lambda: runtime.invoke(features(cfg, one)), repeats)
        m = manifest.metrics
        print(f"| {e['label']} | {min(e['ber']):.2e} | {cost} | {lite:.3f} | {both:.3f} | "
              f"{m['parity_ber_litert']:.2e} / {m['parity_ber_torch']:.2e} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-sc", type=int, default=12)
    parser.add_argument("--ablation", action="store_true", help="the input-feature ablation instead of the timings")
    parser.add_argument("--headroom", action="store_true", help="the error floor's sources and training-budget checks")
    parser.add_argument("--checkpoint", type=Path, help="a saved deeprx state dict to score beside LS+LMMSE")
    parser.add_argument("--arch", default="24x5", help="WIDTHxBLOCKS of --checkpoint")
    parser.add_argument("--doppler", type=float, default=1000.0, help="Doppler in Hz for --checkpoint")
    parser.add_argument("--run", type=Path, help="a finished edgejoule distill run: its receivers' LiteRT latency")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.run:
        run_latency(args.run)
        return
    cfg = OfdmConfig(n_sc=args.n_sc)
    req = DistillRequest(n_sc=args.n_sc)
    if args.ablation:
        ablation(cfg, req)
        return
    if args.headroom:
        headroom(req)
        return
    if args.checkpoint:
        try:
            checkpoint(args.checkpoint, parse_arch(args.arch, "--arch"), OfdmConfig(n_sc=args.n_sc, doppler_hz=args.doppler))
        except (EdgejouleError, OSError, RuntimeError) as exc:  # a wrong size or path: one line, not a traceback
            raise SystemExit(f"--checkpoint {args.checkpoint}: {str(exc).splitlines()[0]}") from None
        return
    one = simulate(cfg, 20.0, np.random.default_rng(0), n=1)
    many = simulate(cfg, 20.0, np.random.default_rng(1), n=32)
    print(f"grid 14 x {args.n_sc}, 1 thread; epoch = {EPOCH_STEPS} steps x 32 slots; latency = median ms per call")
    print(f"{'receiver':<14}{'MACs':>12}{'s/epoch':>10}{'torch b=1':>11}{'torch/slot b=32':>17}{'LiteRT b=1':>12}{'x faster':>10}")
    x1, x32 = inputs(cfg, one), inputs(cfg, many)
    for width, blocks in SIZES:
        arch = DeepRxArch(width=width, blocks=blocks, n_sc=args.n_sc)
        model = DeepRx(arch)
        t0 = time.perf_counter()
        train_logit_model(model, batches(req), KdOptions(steps=EPOCH_STEPS // 5))
        epoch_s = (time.perf_counter() - t0) * 5
        with torch.no_grad():
            b1 = median_ms(lambda: model(x1), 50)
            b32 = median_ms(lambda: model(x32), 10) / 32
        with tempfile.TemporaryDirectory() as tmp:
            export_receiver(model, arch, cfg, Path(tmp))
            runtime = ReceiverRuntime(Path(tmp) / "model.tflite")
            lite = median_ms(lambda: runtime.invoke(x1.numpy()), 200)
        macs = sum(layer.macs for layer in describe(arch))
        print(f"{f'deeprx {width}x{blocks}':<14}{macs:>12,}{epoch_s:>10.1f}{b1:>11.3f}{b32:>17.3f}{lite:>12.3f}{b1 / lite:>10.1f}")
    f1 = median_ms(lambda: features(cfg, one), 200)
    f32 = median_ms(lambda: features(cfg, many), 50) / 32
    print(f"{'features':<14}{'':>12}{'-':>10}{f1:>11.3f}{f32:>17.3f}{'(numpy)':>12}")
    b1 = median_ms(lambda: receive(cfg, one), 50)
    b32 = median_ms(lambda: receive(cfg, many), 10) / 32
    print(f"{'LS+LMMSE':<14}{'':>12}{'-':>10}{b1:>11.3f}{b32:>17.3f}{'(numpy)':>12}")


if __name__ == "__main__":
    main()
