"""Inference latency of unfolded detectors in torch: FP vs KAQ-, LSQ- and PTQ-quantized, beside numpy ZF/LMMSE;
and of the FP nets exported to LiteRT (:mod:`edgejoule.plugins.detection.export`, one detection per invoke).

Usage: .venv/bin/python benchmarks/bench_detection.py [--n-r 8] [--n-u 4] [--repeats 200]
       .venv/bin/python benchmarks/bench_detection.py --sphere   (sphere decoder: operations and time vs exhaustive ML)
One thread. The quantized nets are fake-quantized (float tensors on a b-bit grid): this measures what the
quantizer costs in a float runtime, not the speed of integer kernels. Nets are trained only briefly (latency
does not depend on the learned values). Median over ``--repeats`` calls per batch size. LiteRT rows: batch 1 is
one ``invoke``; batch 1024 is 1024 invokes (the exported graph takes one detection). Quantized nets have no
LiteRT row: their activation step follows each frame's channel (KAQ) and does not export (see DETECTION.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgejoule.plugins.detection.detectors import ML_MAX_CANDIDATES, linear_detect, ml_detect, ml_op_count
from edgejoule.plugins.detection.export import DetectorRuntime, convert_detector
from edgejoule.plugins.detection.kaq_core import quantize_activations
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.plugins.detection.unfolded_net import TrainConfig, build_net, tensors, train
from edgejoule.tasks.detection import ChannelSource, constellation, simulate


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def sphere_table(samples: int = 500) -> None:
    """Measured multiplications per detection of the sphere decoder (mean, median) vs exhaustive ML's count."""
    from edgejoule.plugins.detection.sphere import sphere_detect

    rng = np.random.default_rng(0)
    print(f"{'config':<18}{'SNR dB':>7}{'mean ops':>11}{'median ops':>12}{'ML ops':>11}{'ms/det':>9}{'ML ms/det':>11}{'= ML':>6}")
    for mod, n_r, n_u in (("qpsk", 8, 4), ("16qam", 4, 3), ("16qam", 8, 8)):
        const = constellation(mod)
        G = ChannelSource(n_r, n_u).draw(samples, rng)
        for snr in (0.0, 8.0, 16.0, 24.0):
            b = simulate(G, const, snr, rng)
            t0 = time.perf_counter()
            x, ops = sphere_detect(b.H, b.y, const)
            t_sd = 1e3 * (time.perf_counter() - t0) / samples
            ml_ops = ml_op_count(2 * n_r, 2 * n_u, const.order)
            same, t_ml = "-", float("nan")
            if const.order**n_u <= ML_MAX_CANDIDATES:
                t0 = time.perf_counter()
                same = str(bool(np.array_equal(x, ml_detect(b.H, b.y, const))))
                t_ml = 1e3 * (time.perf_counter() - t0) / samples
            print(f"{f'{n_r}x{n_u} {mod}':<18}{snr:>7.0f}{ops.mean():>11.4g}{np.median(ops):>12.4g}{ml_ops:>11.3g}"
                  f"{t_sd:>9.3f}{t_ml:>11.3f}{same:>6}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-r", type=int, default=8)
    parser.add_argument("--n-u", type=int, default=4)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--sphere", action="store_true", help="the sphere-decoder table instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.sphere:
        sphere_table()
        return
    const = constellation("qpsk")
    src = ChannelSource(args.n_r, args.n_u)
    cfg = TrainConfig(samples=512, epochs=1)
    rng = np.random.default_rng(0)
    print(f"{args.n_r}x{args.n_u} QPSK, K=5, activations at {args.bits} bits, 1 thread, median ms per call")
    print(f"{'detector':<14}{'batch 1':>10}{'batch 1024':>12}{'vs FP (1024)':>14}")
    batches = {size: simulate(src.draw(size, rng), const, 10.0, rng) for size in (1, 1024)}
    for kind in ("pgd", "admm"):
        fp = build_net(UnfoldedArch(kind=kind, n_r=args.n_r, n_u=args.n_u))
        train(fp, src, const, cfg)
        nets = {"fp": fp} | {q: quantize_activations(fp, q, args.bits, src, cfg) for q in ("kaq", "lsq", "ptq")}
        ref = None
        for name, net in nets.items():
            row = []
            for size, b in batches.items():
                H, y, nv, _ = tensors(b)
                with torch.no_grad():
                    row.append(median_ms(lambda: net(H, y, nv), args.repeats))
            ref = ref or row[1]
            print(f"{kind + '-' + name:<14}{row[0]:>10.3f}{row[1]:>12.3f}{row[1] / ref:>13.2f}x")
        with tempfile.TemporaryDirectory() as tmp:
            convert_detector(fp, args.n_r, args.n_u, Path(tmp) / "model.tflite")
            runtime = DetectorRuntime(Path(tmp) / "model.tflite")
            one = batches[1]
            row = [median_ms(lambda: runtime.invoke(one.H, one.y, one.noise_var.astype(np.float32)), args.repeats),
                   median_ms(lambda: runtime.detect(batches[1024]), max(5, args.repeats // 20))]
            print(f"{kind + '-fp LiteRT':<14}{row[0]:>10.3f}{row[1]:>12.3f}{row[1] / ref:>13.2f}x")
    for name, noisy in (("zf (numpy)", False), ("lmmse (numpy)", True)):
        row = [median_ms(lambda b=b: linear_detect(b.H, b.y, b.noise_var if noisy else None), args.repeats)
               for b in batches.values()]
        print(f"{name:<14}{row[0]:>10.3f}{row[1]:>12.3f}")


if __name__ == "__main__":
    main()
