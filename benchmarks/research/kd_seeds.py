"""KD over seeds from finished ``edgejoule distill`` runs of one scenario that differ only in ``--seed`` (the CPU
runs of docs/RECEIVER.md: students of several seeds distilled from one teacher with ``--teacher-from``).

Per receiver (role and size): the SINR at BER 1e-3 and 1e-2 per seed with the t-interval over seeds, and the BER
at the top SINR (the floor) as the geometric mean over seeds. Per student size, distilled against scratch, paired
per seed (twins start from the same weights and are scored on the same slots): the KD gain in dB at each target
where both cross it on every seed, and the floor ratio distilled / scratch at the top SINR (geometric mean, t-
interval on the log; below 1: the distilled student floors lower).
Run: .venv/bin/python benchmarks/research/kd_seeds.py runs/kd21/teacher32x6 runs/kd21/students32x6-s1 ...
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from edgejoule.tasks.error_rate import snr_at_target, t_interval

TARGETS = (1e-3, 1e-2)


def load(runs: list[Path]) -> tuple[list[float], dict[str, dict[int, dict]]]:
    """The SINRs and, per receiver label, each seed's entry; refuses runs of different scenarios."""
    sinr, scenario, by_label = None, None, defaultdict(dict)
    for run in runs:
        result = json.loads((run / "results.json").read_text())
        request = dict(result["request"])
        seed = request.pop("seed")
        for field in ("teacher_from", "checkpoint_every"):  # neither changes what is trained or scored
            request.pop(field, None)
        if scenario is not None and request != scenario:
            diff = sorted(k for k in request if request[k] != scenario.get(k))
            raise SystemExit(f"{run}: another scenario than the first run's ({', '.join(diff)})")
        scenario, sinr = request, result["sinr_db"]
        for entry in result["receivers"]:
            by_label[entry["label"]][seed] = entry
    return sinr, by_label


def _interval(values: list[float], fmt: str = ".2f") -> str:
    if len(values) < 2:
        return f"{values[0]:{fmt}}" if values else "-"
    mean, low, high = t_interval(values)
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def crossing(sinr: list[float], entries: dict[int, dict], target: float) -> str:
    result = snr_at_target(sinr, [entries[s]["ber"] for s in sorted(entries)], target)
    if result.mean is None:
        reached = sum(x is not None for x in result.per_seed)
        return f"not reached ({reached} of {len(result.per_seed)} seeds)" if reached else "not reached"
    return _interval([x for x in result.per_seed if x is not None])


def floor(entries: dict[int, dict]) -> str:
    logs = [math.log(entries[s]["ber"][-1]) for s in sorted(entries) if entries[s]["ber"][-1] > 0]
    if not logs:
        return "0"
    if len(logs) < 2:
        return f"{math.exp(logs[0]):.2e}"
    mean, low, high = t_interval(logs)
    return f"{math.exp(mean):.2e} [{math.exp(low):.1e}, {math.exp(high):.1e}]"


def kd_rows(sinr: list[float], by_label: dict[str, dict[int, dict]]) -> list[str]:
    rows = []
    for label in sorted(k for k in by_label if k.startswith("distilled ")):
        size = label.split(" ", 1)[1]  # "16x3", or with kd_sweep's variants "16x3 T=2 a=0.7": one scratch twin
        twin = by_label.get(f"scratch {size.split()[0]}", {})
        seeds = sorted(set(by_label[label]) & set(twin))
        cells = []
        for target in TARGETS:
            d = snr_at_target(sinr, [by_label[label][s]["ber"] for s in seeds], target).per_seed
            s = snr_at_target(sinr, [twin[s]["ber"] for s in seeds], target).per_seed
            gains = [b - a for a, b in zip(d, s) if a is not None and b is not None]
            cells.append(_interval(gains) + " dB" if len(gains) == len(seeds) and gains else "not reached by both")
        ratios = [math.log(by_label[label][s]["ber"][-1] / twin[s]["ber"][-1]) for s in seeds
                  if by_label[label][s]["ber"][-1] > 0 and twin[s]["ber"][-1] > 0]
        if len(ratios) >= 2:
            mean, low, high = t_interval(ratios)
            ratio = f"{math.exp(mean):.2f} [{math.exp(low):.2f}, {math.exp(high):.2f}]"
        else:
            ratio = f"{math.exp(ratios[0]):.2f}" if ratios else "-"
        better = sum(r < 0 for r in ratios)
        rows.append(f"| {size} | {len(seeds)} | " + " | ".join(cells) + f" | {ratio}; distilled lower on {better} "
                    f"of {len(ratios)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    sinr, by_label = load(args.runs)
    top = f"{sinr[-1]:g} dB"
    print(f"| receiver | seeds | SINR @ 1e-3 (dB) | SINR @ 1e-2 (dB) | BER at {top}, geometric mean [95 %] |")
    print("|---|---|---|---|---|")
    for label, entries in by_label.items():
        print(f"| {label} | {len(entries)} | {crossing(sinr, entries, 1e-3)} | {crossing(sinr, entries, 1e-2)} | "
              f"{floor(entries)} |")
    print(f"\n| student | seeds | KD gain @ 1e-3 | KD gain @ 1e-2 | floor at {top}, distilled / scratch [95 %] |")
    print("|---|---|---|---|---|")
    print("\n".join(kd_rows(sinr, by_label)))


if __name__ == "__main__":
    main()
