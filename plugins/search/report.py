"""What a search tells: Pareto fronts per architecture and overall, the WMMSE reference curve (its stopping
tolerance varied), the Table II reproduction, the gain over WMMSE at equal sum rate, and plots in the style
of the paper's Figs. 2 and 3."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgejoule.baselines import run_precoding_baseline
from edgejoule.plugins.search.pareto import pareto_front
from edgejoule.sites import load_dataset
from edgejoule.sites.config import SiteConfig

WMMSE_TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
PAPER_TABLE_II = {16: (54.5, 18.9), 8: (17.5, 18.6), 4: (7.4, 17.8), 2: (4.6, 17.1)}
TARGET_FRACTION = 0.97
ONE_SHOT = ("zf", "rzf", "rzf-equal", "mrt")


class Point(BaseModel):
    """One architecture and bit configuration, averaged over seeds."""

    c_out: int
    d_fcl: int
    bits: list[int]
    sum_rate: float
    sum_rate_std: float
    energy_uj: float
    seeds: int

    @property
    def efficiency(self) -> float:
        return self.sum_rate / self.energy_uj

    @property
    def uniform(self) -> bool:
        return len(set(self.bits)) == 1


class ClassicalPoint(BaseModel):
    method: str
    tol: float | None
    sum_rate: float
    energy_uj: float
    iterations: float | None

    @property
    def efficiency(self) -> float:
        return self.sum_rate / self.energy_uj


def aggregate(rows: list[dict[str, Any]]) -> list[Point]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["c_out"], row["d_fcl"], tuple(row["bits"]))].append(row)
    return [
        Point(c_out=c, d_fcl=d, bits=list(bits), sum_rate=float(np.mean([r["sum_rate"] for r in rs])),
              sum_rate_std=float(np.std([r["sum_rate"] for r in rs])), energy_uj=rs[0]["energy_uj"], seeds=len(rs))
        for (c, d, bits), rs in sorted(groups.items())
    ]


def front(points: list[Point]) -> list[Point]:
    return [points[i] for i in pareto_front([(p.sum_rate, p.efficiency) for p in points])]


def classical_curve(site: SiteConfig, eval_samples: int | None) -> list[ClassicalPoint]:
    ds = load_dataset(site)
    # the cheap one-shot references; equal-power RZF is what a structured network starts from
    curve = [ClassicalPoint(method=m, tol=None, **_fields(run_precoding_baseline(ds, m, limit=eval_samples)))
             for m in ONE_SHOT]
    for tol in WMMSE_TOLERANCES:
        report = run_precoding_baseline(ds, "wmmse", limit=eval_samples, tol=tol)
        curve.append(ClassicalPoint(method="wmmse", tol=tol, **_fields(report)))
    return curve


def _fields(report) -> dict[str, Any]:
    return {"sum_rate": report.sum_rate_mean, "energy_uj": report.energy.total_uj, "iterations": report.iterations_mean}


def gain_at_equal_rate(points: list[Point], reference: list[ClassicalPoint]) -> list[dict[str, Any]]:
    """For each WMMSE point: the most efficient DNN with at least its sum rate, and the efficiency ratio."""
    rows = []
    for ref in (r for r in reference if r.method == "wmmse"):
        able = [p for p in points if p.sum_rate >= ref.sum_rate]
        best = max(able, key=lambda p: p.efficiency, default=None)
        rows.append({"wmmse_tol": ref.tol, "wmmse_sum_rate": ref.sum_rate, "wmmse_energy_uj": ref.energy_uj,
                     "dnn": best.model_dump() if best else None,
                     "efficiency_gain": best.efficiency / ref.efficiency if best else None})
    return rows


def table_ii(points: list[Point], ptq: dict[int, float]) -> list[dict[str, Any]]:
    """Uniform bit widths of the largest architecture searched, with the paper's figures beside ours."""
    largest = max(((p.c_out, p.d_fcl) for p in points), default=None)
    rows = []
    for p in points:
        if (p.c_out, p.d_fcl) == largest and p.uniform:
            paper = PAPER_TABLE_II.get(p.bits[0])
            rows.append({"bits": p.bits, "energy_uj": p.energy_uj, "sum_rate": p.sum_rate, "sum_rate_std": p.sum_rate_std,
                         "ptq_sum_rate": ptq.get(p.bits[0]), "paper_energy_uj": paper[0] if paper else None,
                         "paper_sum_rate": paper[1] if paper else None})
    return sorted(rows, key=lambda r: -r["bits"][0])


def choose(points: list[Point], wmmse_rate: float) -> Point:
    """The model to deploy: the most efficient one within TARGET_FRACTION of WMMSE, else the best sum rate."""
    good = [p for p in points if p.sum_rate >= TARGET_FRACTION * wmmse_rate]
    return max(good, key=lambda p: p.efficiency) if good else max(points, key=lambda p: p.sum_rate)


def summarize(points: list[Point], reference: list[ClassicalPoint], ptq: dict[int, float]) -> dict[str, Any]:
    overall = front(points)
    wmmse_tight = next(r for r in reference if r.method == "wmmse" and r.tol == min(WMMSE_TOLERANCES))
    best = max(points, key=lambda p: p.sum_rate)
    gains = gain_at_equal_rate(points, reference)
    reached = [g["efficiency_gain"] for g in gains if g["efficiency_gain"] is not None]
    return {
        "candidates": len(points),
        "front": [p.model_dump() | {"efficiency": p.efficiency} for p in overall],
        "fronts_per_arch": {f"{c}x{d}": [p.model_dump() | {"efficiency": p.efficiency} for p in front(
            [q for q in points if (q.c_out, q.d_fcl) == (c, d)])] for c, d in sorted({(p.c_out, p.d_fcl) for p in points})},
        "classical": [r.model_dump() | {"efficiency": r.efficiency} for r in reference],
        "gain_at_equal_rate": gains,
        "max_efficiency_gain": max(reached, default=None),
        "best_sum_rate": best.model_dump(),
        "best_fraction_of_wmmse": best.sum_rate / wmmse_tight.sum_rate,
        "uniform_on_front": [f"{p.c_out}x{p.d_fcl} {p.bits}" for p in overall if p.uniform],
        "no_uniform_on_front": not any(p.uniform for p in overall),
        "table_ii": table_ii(points, ptq),
        "chosen": choose(points, wmmse_tight.sum_rate).model_dump(),
    }


def plot(summary: dict[str, Any], points: list[Point], out: Path, site: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 5))
    for arch, pts in summary["fronts_per_arch"].items():
        c, d = (int(x) for x in arch.split("x"))
        every = [p for p in points if (p.c_out, p.d_fcl) == (c, d)]
        line = ax.plot([p["sum_rate"] for p in pts], [p["efficiency"] for p in pts], marker="o", label=f"C_out={c}, D_FCL={d}")
        ax.scatter([p.sum_rate for p in every], [p.efficiency for p in every], s=6, alpha=0.3, color=line[0].get_color())
    ax.set(xlabel="sum rate (bit/s/Hz)", ylabel="energy efficiency (bit/s/Hz/uJ)", yscale="log",
           title=f"Pareto fronts per architecture on {site} (cf. paper Fig. 2)")
    ax.legend(fontsize=8)
    paths.append(out / "fig2_fronts_per_arch.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    f = summary["front"]
    ax.plot([p["sum_rate"] for p in f], [p["efficiency"] for p in f], marker="o", label="DNN Pareto front (MPQ + NAS)")
    wm = [r for r in summary["classical"] if r["method"] == "wmmse"]
    ax.plot([r["sum_rate"] for r in wm], [r["efficiency"] for r in wm], marker="s", label="WMMSE, tol 1e-1 .. 1e-5")
    for r in wm:
        ax.annotate(f"{r['tol']:g}", (r["sum_rate"], r["efficiency"]), fontsize=7)
    for method, marker, label in (("zf", "^", "ZF"), ("rzf", "v", "RZF"), ("rzf-equal", "<", "RZF, equal powers"),
                                  ("mrt", ">", "MRT")):
        for r in (r for r in summary["classical"] if r["method"] == method):
            ax.scatter([r["sum_rate"]], [r["efficiency"]], marker=marker, color="k", label=label)
    ax.set(xlabel="sum rate (bit/s/Hz)", ylabel="energy efficiency (bit/s/Hz/uJ)", yscale="log",
           title=f"DNN front vs WMMSE on {site} (cf. paper Fig. 3)")
    ax.legend(fontsize=8)
    paths.append(out / "fig3_dnn_vs_wmmse.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def write(summary: dict[str, Any], out: Path) -> Path:
    path = out / "report.json"
    path.write_text(json.dumps(summary, indent=2))
    return path
