"""LiteRT latency of the default precoder (C_out=64, D_FCL=1024, 64x4) stored as float, int8, int4 and mixed,
against torch eager on the same inputs; the edge agent's overhead over a bare ``interpreter.invoke``; the
agent process's memory while serving.

Usage: .venv/bin/python benchmarks/bench_edge.py [--inferences 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.runtime import PrecoderRuntime
from core.sites import get_site, load_dataset
from plugins.export.tflite import ExportError, export_precoder
from plugins.precoder_cnn import PrecoderCNNFamily

ARCH = {"c_out": 64, "d_fcl": 1024, "n_t": 64, "n_u": 4}
CONFIGS = {"float": [16, 16, 16, 16], "int8": [8, 8, 8, 8], "int4": [4, 4, 4, 4], "mixed": [16, 8, 4, 2]}


def chosen(directory: Path, bits: list[int]) -> Path:
    from plugins.lsq import attach, freeze

    torch.manual_seed(0)
    model = PrecoderCNNFamily().build(ARCH)
    attach(model, bits)
    model.eval()
    model(torch.randn(2, 4, 64, dtype=torch.complex64))  # initializes the LSQ steps
    frozen, _ = freeze(model)
    torch.save(frozen.state_dict(), directory / "w.pt")
    (directory / "chosen.json").write_text(json.dumps({
        "site": "urban-nlos", "family": "precoder_cnn", "arch": ARCH, "bits": bits, "metrics": {"sum_rate": 0.0},
        "energy": {"energy_uj": 0.0, "compute_uj": 0.0, "weights_uj": 0.0, "activations_uj": 0.0}, "weights": "w.pt"}))
    return directory / "chosen.json"


def per_call_ms(fn, inputs, repeats: int) -> float:
    for x in inputs[:10]:
        fn(x)
    t0 = time.perf_counter()
    for i in range(repeats):
        fn(inputs[i % len(inputs)])
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inferences", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(get_site("urban-nlos"))
    H = ds.H("test", 100)
    print(f"{'package':8} {'size MB':>8} {'LiteRT invoke ms':>17} {'agent precode ms':>17} {'overhead':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, bits in CONFIGS.items():
            src = Path(tmp) / f"{name}-src"
            src.mkdir()
            try:
                manifest = export_precoder(chosen(src, bits), Path(tmp) / name)
            except ExportError as exc:
                print(f"{name:8} refused by the export parity check: {exc}")
                continue
            runtime = PrecoderRuntime(Path(tmp) / name / "model.tflite", manifest.normalization)
            xs = [runtime.features(H[i : i + 1]) for i in range(len(H))]
            bare = per_call_ms(runtime.invoke, xs, args.inferences)
            agent = per_call_ms(lambda h: runtime.precode(h[None]), list(H), args.inferences)
            print(f"{name:8} {manifest.size_bytes / 1e6:8.2f} {bare:17.3f} {agent:17.3f} {100 * (agent / bare - 1):8.1f}%"
                  f"  {manifest.runtime}")
        model = PrecoderCNNFamily().build(ARCH).eval()
        Ht = torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power)))
        with torch.no_grad():
            eager = per_call_ms(lambda h: model(h[None], ds.p_max), list(Ht), args.inferences)
            batched = per_call_ms(lambda h: model(Ht, ds.p_max), [None], 20) / len(Ht)
        print(f"torch eager (float32, 1 thread): batch 1 {eager:.3f} ms, batch {len(Ht)} {batched:.3f} ms per channel")
        serve = (
            "import sys, json, resource; sys.modules['torch'] = None\n"
            "from pathlib import Path\nfrom core.runtime import PrecoderRuntime\nfrom core.sites import get_site, load_dataset\n"
            f"p = Path({str(Path(tmp) / 'int8')!r}); m = json.loads((p / 'manifest.json').read_text())\n"
            "r = PrecoderRuntime(p / 'model.tflite', m['normalization'])\n"
            "H = load_dataset(get_site('urban-nlos')).H('test')\n"
            "[r.precode(H[i % len(H)][None]) for i in range(2000)]\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
        rss = subprocess.run([sys.executable, "-c", serve], capture_output=True, text=True, check=True).stdout.split()[-1]
        print(f"serving process (no torch, int8 package, 2000 inferences): peak RSS {float(rss):.0f} MB")


if __name__ == "__main__":
    main()
