"""Issue 21 item 3: KAQ, LSQ and PTQ at 3 and 2 bits over seeds, from the runs of ``kaq_low_bits.sh``.

For each net, channel and bit width: the SNR at BER 1e-3 and 1e-2 per seed with the mean and its 95 % t-interval
over seeds, and the paired difference KAQ - LSQ per seed (negative: KAQ needs less SNR) with its t-interval, the
question the issue asks. Where a curve does not reach a target BER, the BER at the highest SNR is compared instead
(ratio KAQ / LSQ, geometric mean over seeds, t-interval on the log). The BER at the highest SNR is given with its
Clopper-Pearson 95 % interval for one seed (errors = BER x bits evaluated; 20,000 detections of N_U users x 2 bits).

    python benchmarks/research/kaq_summary.py runs/kaq21 [--plot docs/detection/kaq-vs-lsq-seeds.png]
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgejoule.tasks.error_rate import clopper_pearson, t_interval

NAME = re.compile(r"^(?P<stage>sweep|final)-(?P<site>[a-z-]+?)-(?P<variant>[a-z]+)-s(?P<seed>\d+)$")


def over_seeds(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (nan bounds for one seed)."""
    if len(values) < 2:
        return float(np.mean(values)), math.nan, math.nan
    return t_interval(values)


def load(root: Path) -> dict:
    """(site, model, method, bits) -> {seed: curve}, plus the bits evaluated per point per site. The method is
    ``kaq-<variant>`` for KAQ (the final runs' ``default`` and the sweep's variants); LSQ, PTQ and FP come from the
    ``default`` final runs (the other runs train the same FP nets, from the same seeds). ``own_lsq``: the LSQ
    curves of the final run that trained each KAQ variant, so that KAQ - LSQ pairs nets of one run."""
    runs: dict = defaultdict(dict)
    own_lsq: dict = defaultdict(dict)
    bits_per_point: dict[str, int] = {}
    for path in sorted(root.glob("*/results.json")):
        m = NAME.match(path.parent.name)
        if not m:
            continue
        result = json.loads(path.read_text())
        req = result["request"]
        bits_per_point[m["site"]] = req["eval_samples"] * req["n_u"] * 2  # QPSK: 2 bits per user
        for curve in result["curves"]:
            quantizer = curve["quantizer"] or ("fp" if curve["name"].endswith("-fp") else None)
            if quantizer is None or (m["stage"] == "sweep" and quantizer != "kaq"):
                continue
            seed, key = int(m["seed"]), (m["site"], curve["model"], m["variant"], curve["bits"])
            if quantizer == "lsq":
                own_lsq[key][seed] = curve
            if quantizer == "kaq":
                runs[(m["site"], curve["model"], f"kaq-{m['variant']}", curve["bits"])][seed] = curve
            elif m["variant"] == "default":
                runs[(m["site"], curve["model"], quantizer, curve["bits"])][seed] = curve
    return {"runs": runs, "bits": bits_per_point, "own_lsq": own_lsq}


def lsq_for(data: dict, site: str, model: str, method: str, bits: int) -> dict[int, dict]:
    """The LSQ curves to pair with KAQ ``method``: those of its own runs, else the default runs'."""
    return data["own_lsq"].get((site, model, method.removeprefix("kaq-"), bits)) or \
        data["runs"].get((site, model, "lsq", bits), {})


def fmt(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def snr_cell(curves: dict[int, dict], key: str) -> str:
    values = [c[key] for c in curves.values()]
    reached = [v for v in values if v is not None]
    if not reached:
        return "not reached"
    cell = fmt(*over_seeds(reached))
    return cell if len(reached) == len(values) else f"{cell} ({len(reached)} of {len(values)} seeds)"


def paired(kaq: dict[int, dict], lsq: dict[int, dict]) -> str:
    """KAQ - LSQ in dB at 1e-3 where both reach it on every common seed, else at 1e-2, else the BER ratio."""
    seeds = sorted(kaq.keys() & lsq.keys())
    for key, label in (("snr_at_1e3", "@1e-3"), ("snr_at_1e2", "@1e-2")):
        if seeds and all(kaq[s][key] is not None and lsq[s][key] is not None for s in seeds):
            diffs = [kaq[s][key] - lsq[s][key] for s in seeds]
            better = sum(d < 0 for d in diffs)
            return f"{fmt(*over_seeds(diffs))} dB {label}; KAQ ahead on {better} of {len(seeds)}"
    ratios = log_ratios(kaq, lsq)
    if not ratios:
        return "n/a"
    mean, lo, hi = over_seeds(ratios)
    ahead = sum(r < 0 for r in ratios)
    return f"BER ratio at top SNR {fmt(*map(math.exp, (mean, lo, hi)))}; KAQ ahead on {ahead} of {len(ratios)}"


def log_ratios(kaq: dict[int, dict], lsq: dict[int, dict]) -> list[float]:
    """Per common seed, log(BER of KAQ / BER of LSQ) at the highest SNR."""
    return [math.log(kaq[s]["ber"][-1] / lsq[s]["ber"][-1]) for s in sorted(kaq.keys() & lsq.keys())
            if lsq[s]["ber"][-1] > 0 and kaq[s]["ber"][-1] > 0]


def plot(data: dict, path: Path) -> None:
    """Per net, channel and bit width: KAQ / LSQ BER at the highest SNR, each seed a dot, the geometric mean with
    its 95 % t-interval over seeds a bar; one colour per KAQ variant with four seeds."""
    import matplotlib

    runs = data["runs"]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({(site, model, bits) for site, model, method, bits in runs if method == "lsq"},
                   key=lambda c: (c[0], c[1], -c[2]))
    variants = sorted({m for _, _, m, _ in runs if m.startswith("kaq") and
                       all(len(runs.get((c[0], c[1], m, c[2]), {})) > 1 for c in cases)})
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(cases) + 1.2))
    for v, variant in enumerate(variants):
        for y, (site, model, bits) in enumerate(cases):
            logs = log_ratios(runs[(site, model, variant, bits)], lsq_for(data, site, model, variant, bits))
            mean, lo, hi = over_seeds(logs)
            row = y + (v - (len(variants) - 1) / 2) * 0.25
            ax.plot(np.exp(logs), [row] * len(logs), "o", ms=3, color=f"C{v}", alpha=0.6)
            ax.errorbar(math.exp(mean), row, xerr=[[math.exp(mean) - math.exp(lo)], [math.exp(hi) - math.exp(mean)]],
                        fmt="s", color=f"C{v}", capsize=3, label=variant if y == 0 else None)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(cases)), [f"{site} {model} {bits} bits" for site, model, bits in cases])
    ax.invert_yaxis()
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([0.25, 0.5, 1, 2], ["0.25", "0.5", "1", "2"])
    ax.set_xlabel("BER of KAQ / BER of LSQ at the highest SNR (< 1: KAQ better)")
    ax.set_title("seeds (dots), geometric mean and 95 % t-interval over seeds", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(cases)), ncol=len(variants), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--plot", type=Path, help="also draw the KAQ / LSQ ratios per case here (PNG)")
    args = parser.parse_args()
    data = load(args.root)
    runs = data["runs"]
    if args.plot:
        plot(data, args.plot)
    print("| net | bits | method | seeds | SNR @ 1e-3 (dB) | SNR @ 1e-2 (dB) | BER at top SNR, first seed [95 % CI] "
          "| KAQ - LSQ, paired over seeds |")
    print("|---|---|---|---|---|---|---|---|")
    for site, model, method, bits in sorted(runs, key=lambda k: (k[0], k[1], -k[3], k[2])):
        curves = runs[(site, model, method, bits)]
        first = curves[min(curves)]
        n = data["bits"][site]
        errors = round(first["ber"][-1] * n)
        lo, hi = clopper_pearson(errors, n)
        top = f"{first['ber'][-1]:.2e} [{lo:.1e}, {hi:.1e}] ({errors} errors)"
        versus = paired(curves, lsq_for(data, site, model, method, bits)) if method.startswith("kaq") else ""
        print(f"| {site} {model} | {bits if method != 'fp' else 'FP'} | {method} | {len(curves)} | "
              f"{snr_cell(curves, 'snr_at_1e3')} | {snr_cell(curves, 'snr_at_1e2')} | {top} | {versus} |")


if __name__ == "__main__":
    main()
