"""Coded BLER of the detectors over seeds (issue 21 item 5): the runs of benchmarks/research/coded_detectors.sh,
with the classical detectors' soft outputs decoded here on the same blocks.

Per site and SNR, every detector's coded BLER as the mean over seeds of the per-seed BLER with its Student-t
95 % interval (the nets differ per seed: training is part of the spread), and KAQ - LSQ paired per seed (the
same blocks) with its t-interval. The classical rows are computed here, on each run's test blocks (the
``coded_error_rates`` stream of seed + 1), so they see exactly the blocks the nets saw, whatever the version of
``detect`` that made the run: the max-log ML reference (edgejoule.plugins.detection.soft_ml), and ZF and LMMSE
under both LLR rules, the noise variance as every stream's (the nets' rule) and each stream's post-detection SINR
(edgejoule.plugins.detection.soft_linear, what ``detect --coded`` now gives them). The runs' own ``ml-detector``
rows are kept (hard decisions in runs made before ``detect`` decoded ML's soft output).
Run: .venv/bin/python benchmarks/research/coded_summary.py runs/coded21 [--markdown docs/detection/coded.md]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from edgejoule import plugin_manager
from edgejoule.plugins.detection.soft_linear import linear_soft
from edgejoule.plugins.detection.soft_ml import ml_soft
from edgejoule.tasks.detection import channel_source, coded_error_rates, constellation
from edgejoule.tasks.error_rate import t_interval

REFERENCE = "ml max-log (reference)"
# the classical rows computed here: name -> (baseline, LLRs with each stream's SINR?)
CLASSICAL = {"zf, common variance": ("zf-detector", False), "zf, per-stream SINR": ("zf-detector", True),
             "lmmse, common variance": ("lmmse-detector", False), "lmmse, per-stream SINR": ("lmmse-detector", True)}
ORDER = [*CLASSICAL, "ml-detector", REFERENCE]
CLASSICAL_RUN_ROWS = {"zf-detector", "lmmse-detector"}  # replaced: their LLR rule depends on the run's version


def classical_points(request: dict) -> dict[str, list[dict]]:
    """The coded BLER of the classical rows (module docstring) for one run's request on its own test blocks."""
    const = constellation(request["modulation"])
    source = channel_source(request["site"], request["n_r"], request["n_u"], "test")

    def points(detect=None, llrs=None) -> list[dict]:
        return coded_error_rates(detect, source, const, request["snr_db"], request["coded"], request["eval_blocks"],
                                 seed=request["seed"] + 1, min_errors=request["min_errors"], llrs=llrs)

    rows = {REFERENCE: points(llrs=ml_soft(const))}
    for name, (baseline, per_stream) in CLASSICAL.items():
        if per_stream:
            rows[name] = points(llrs=linear_soft(const, regularized=baseline == "lmmse-detector"))
        else:
            base = plugin_manager.get("baselines", baseline)
            rows[name] = points(lambda b, base=base: base.run(b.H, b.y, b.noise_var, const=const).output)
    return rows


def collect(root: Path) -> dict[str, dict]:
    """site -> {"snr_db", "runs": {seed: {detector: [BLER point per SNR]}}}."""
    sites: dict[str, dict] = defaultdict(lambda: {"snr_db": None, "runs": {}})
    classical: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(root.glob("*/results.json")):
        result = json.loads(path.read_text())
        request = result["request"]
        rows = {c["name"]: c["bler_points"] for c in result["curves"] if c["name"] not in CLASSICAL_RUN_ROWS}
        # runs of one seed at other bit widths have the same test blocks: their classical rows are computed once
        key = json.dumps({k: request[k] for k in ("site", "n_r", "n_u", "modulation", "snr_db", "coded",
                                                   "eval_blocks", "seed", "min_errors")}, sort_keys=True)
        if key not in classical:
            classical[key] = classical_points(request)
        rows.update(classical[key])
        site = sites[f"{request['site']} {request['n_r']}x{request['n_u']}"]
        site["snr_db"] = result["snr_db"]
        # the runs of one seed at other bit widths share the baselines and FP nets (same seed, same training)
        site["runs"].setdefault(request["seed"], {}).update(rows)
    return sites


def _cell(values: list[float], difference: bool = False) -> str:
    """Mean [t-interval]; a rate's interval is cut to [0, 1], a difference's is not."""
    sign = "+" if difference else ""
    if len(values) < 2:
        return f"{values[0]:{sign}.3g}" if values else "-"
    mean, low, high = t_interval(values)
    if not difference:
        low, high = max(low, 0.0), min(high, 1.0)
    return f"{mean:{sign}.3g} [{low:{sign}.3g}, {high:{sign}.3g}]"


def table(name: str, site: dict) -> str:
    runs, snrs = site["runs"], site["snr_db"]
    seeds = sorted(runs)
    names = {d for r in runs.values() for d in r}
    detectors = ORDER + sorted(names - set(ORDER))

    def rates(detector: str, i: int) -> list[float]:
        return [runs[s][detector][i]["rate"] for s in seeds if detector in runs[s]]

    def count(detector: str) -> int:
        return sum(detector in runs[s] for s in seeds)

    head = " | ".join(f"{s:g} dB" for s in snrs) + " |"
    rule = "|---|---|" + "---|" * len(snrs)
    lines = [f"### {name}: coded BLER, mean over seeds [95 % t-interval]", "", "| detector | seeds | " + head, rule]
    lines += [f"| {d} | {count(d)} | " + " | ".join(_cell(rates(d, i)) for i in range(len(snrs))) + " |"
              for d in detectors]
    lines += ["", "| KAQ - LSQ, paired per seed | seeds | " + head, rule]
    for kaq in sorted(d for d in names if "-kaq" in d):
        lsq = kaq.replace("-kaq", "-lsq")
        diffs = [_cell([a - b for a, b in zip(rates(kaq, i), rates(lsq, i))], difference=True) for i in range(len(snrs))]
        model, bits = kaq.split("-kaq")
        lines.append(f"| {model} {bits} bits | {count(kaq)} | " + " | ".join(diffs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()
    sites = collect(args.root)
    text = "\n".join(table(name, site) for name, site in sites.items())
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if not sites:
        raise SystemExit(f"no runs under {args.root}")


if __name__ == "__main__":
    main()
