"""Where on the slot a receiver errs: bit error rate per OFDM symbol and per subcarrier at one SINR, for LS+LMMSE,
the true-channel bound and the nets of a finished ``edgejoule distill`` run (its teacher and students), all on the
same slots. It says what limits a floor: errors that grow with the distance from the pilot symbol are the
channel's ageing (tracking), errors at the band edges are interpolation without neighbours, errors on the pilot
symbol itself are the frequency interpolation between its pilots. In the plot an RE without errors is drawn at
half an error.

Run: .venv/bin/python benchmarks/research/error_map.py runs/kd21/teacher32x6 --sinr 40 --slots 4000 \\
         --plot docs/receiver/error-map.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from edgejoule.plugins.reception.distill_experiment import DistillRequest, load_net, net_receiver
from edgejoule.plugins.reception.ofdm_receiver import receive, true_channel_receive
from edgejoule.tasks.ofdm import OfdmConfig, simulate

CHUNK = 100


def receivers(run: Path) -> tuple[DistillRequest, dict]:
    """LS+LMMSE, the true-channel bound and every saved net of ``run`` (teacher.pt, distilled-*.pt, scratch-*.pt)."""
    req = DistillRequest.model_validate(json.loads((run / "results.json").read_text())["request"])
    cfg = req.cfg
    out = {"LS+LMMSE": lambda s: receive(cfg, s), "true channel": lambda s: true_channel_receive(cfg, s),
           f"teacher {req.teacher[0]}x{req.teacher[1]}": net_receiver(cfg, load_net(req, req.teacher,
                                                                                      run / "teacher.pt"))}
    students = [(tuple(int(v) for v in size.split("x")), role, path)
                for path in [*run.glob("distilled-*.pt"), *run.glob("scratch-*.pt")]
                for role, size in [path.stem.split("-")]]
    for arch, role, path in sorted(students):  # by size, distilled before scratch
        out[f"{role} {arch[0]}x{arch[1]}"] = net_receiver(cfg, load_net(req, arch, path))
    return req, out


def error_map(cfg: OfdmConfig, rxs: dict, sinr_db: float, slots: int, seed: int) -> tuple[dict, np.ndarray]:
    """Bit errors per RE [n_sym, n_sc] of each receiver and the bits sent per RE, on ``slots`` slots."""
    errors = {name: np.zeros((cfg.n_sym, cfg.n_sc)) for name in rxs}
    rng = np.random.default_rng((seed, 3))  # slots of their own: no test curve draws from this stream
    for _ in range(slots // CHUNK):
        slot = simulate(cfg, sinr_db, rng, n=CHUNK)
        for name, rx in rxs.items():
            wrong = (np.asarray(rx(slot)) > 0) != (slot.bits > 0)
            errors[name] += (wrong & cfg.data_mask[None, :, :, None]).sum((0, 3))
    bits = cfg.data_mask * (slots // CHUNK * CHUNK * cfg.bits_per_symbol)
    return errors, bits


def _rates(e: np.ndarray, n: np.ndarray) -> str:
    return " | ".join(f"{a / b:.1e}" if b else "pilots" for a, b in zip(e, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sinr", type=float, default=40.0)
    parser.add_argument("--slots", type=int, default=4000)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    req, rxs = receivers(args.run)
    cfg = req.cfg
    errors, bits = error_map(cfg, rxs, args.sinr, args.slots, req.seed)
    pilots = ", ".join(str(s) for s in cfg.pilot_symbols)
    print(f"BER per OFDM symbol at {args.sinr:g} dB, {args.slots} slots (pilot symbol {pilots})\n")
    print("| receiver | " + " | ".join(str(i) for i in range(cfg.n_sym)) + " |\n|---|" + "---|" * cfg.n_sym)
    for name, e in errors.items():
        print(f"| {name} | {_rates(e.sum(1), bits.sum(1))} |")
    print("\nBER per subcarrier, all symbols\n\n| receiver | " + " | ".join(str(i) for i in range(cfg.n_sc))
          + " |\n|---|" + "---|" * cfg.n_sc)
    for name, e in errors.items():
        print(f"| {name} | {_rates(e.sum(0), bits.sum(0))} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(errors), figsize=(2.6 * len(errors), 3.6), sharey=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            maps = {name: np.log10(np.where(bits > 0, np.maximum(e, 0.5) / np.maximum(bits, 1), np.nan))
                    for name, e in errors.items()}
        for ax, (name, m) in zip(axes, maps.items()):
            image = ax.imshow(m, aspect="auto", origin="lower", vmin=-5, vmax=-1, cmap="viridis")
            ax.set(title=name, xlabel="subcarrier")
        axes[0].set_ylabel("OFDM symbol")
        fig.colorbar(image, ax=axes, label=f"log10 BER at {args.sinr:g} dB (white: pilots)")
        fig.savefig(args.plot, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
