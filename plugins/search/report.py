r"""What a search tells: Pareto fronts per architecture and overall, every classical method (ZF, both RZFs, MRT,
and the WMMSE curve with its stopping tolerance varied) under both countings (``implemented`` and ``paper``,
:mod:`edgejoule.energy.counting`), the Table II reproduction, who wins, and plots in the style of the paper's
Figs. 2 and 3.

Who wins is told at equal sum rate, with energy efficiency :math:`\eta = R / E` (bit/s/Hz/uJ): a DNN of sum rate
:math:`R` against the most efficient WMMSE point with sum rate at least :math:`R`, and against the most efficient
classical method of any kind with sum rate at least :math:`R`; the gain :math:`\eta_{DNN} / \eta_{classical}` may be below 1,
and the report then says the classical method is the more efficient. The ``frontier`` lists every classical
method and the chosen DNN with the method that dominates it (more sum rate at less ``implemented`` energy), if
any. The DNN's energy per counting is its family's (``PrecoderCNNFamily.energy``): ``paper`` is eqs. 7-11 on the
layers the family describes (the structured family's STRUCT layer by its formula); ``implemented`` is eqs. 7-11
on the weight layers plus every weightless operation of the exported graph (scalings, softmax, STRUCT),
counted while it runs (``edgejoule.plugins.energy.op_counter``, docs/ENERGY.md)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgejoule.baselines import run_precoding_baseline
from edgejoule.energy.counting import COUNTINGS
from edgejoule.plugins.search.pareto import pareto_front
from edgejoule.sites import load_dataset
from edgejoule.sites.config import SiteConfig

WMMSE_TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
PAPER_TABLE_II = {16: (54.5, 18.9), 8: (17.5, 18.6), 4: (7.4, 17.8), 2: (4.6, 17.1)}
PAPER_TABLE_II_ARCH = (64, 1024)  # C_out x D_FCL of the network the paper's Table II measured
TARGET_FRACTION = 0.97
ONE_SHOT = ("zf", "rzf", "rzf-equal", "mrt")


class Point(BaseModel):
    """One architecture and bit configuration, averaged over seeds."""

    c_out: int
    d_fcl: int
    bits: list[int]
    sum_rate: float
    sum_rate_std: float
    energy_uj: float  # implemented
    seeds: int
    energy_uj_by_counting: dict[str, float] = {}

    @property
    def efficiency(self) -> float:
        return self.sum_rate / self.energy_uj

    def energy_for(self, counting: str) -> float:
        """The energy under ``counting``; a point given one energy only (by hand) has it under every counting."""
        return self.energy_uj_by_counting.get(counting, self.energy_uj)

    @property
    def uniform(self) -> bool:
        return len(set(self.bits)) == 1


class ClassicalPoint(BaseModel):
    method: str
    tol: float | None
    sum_rate: float
    energy_uj: float  # implemented
    energy_uj_by_counting: dict[str, float]
    iterations: float | None

    @property
    def efficiency(self) -> float:
        return self.sum_rate / self.energy_uj

    @property
    def label(self) -> str:
        return self.method if self.tol is None else f"{self.method} (tol {self.tol:g})"


def aggregate(rows: list[dict[str, Any]]) -> list[Point]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["c_out"], row["d_fcl"], tuple(row["bits"]))].append(row)
    return [
        Point(c_out=c, d_fcl=d, bits=list(bits), sum_rate=float(np.mean([r["sum_rate"] for r in rs])),
              sum_rate_std=float(np.std([r["sum_rate"] for r in rs])),
              energy_uj=rs[0]["energy_uj_by_counting"]["implemented"],
              energy_uj_by_counting=rs[0]["energy_uj_by_counting"], seeds=len(rs))
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
    return {"sum_rate": report.sum_rate_mean, "energy_uj": report.energy_uj("implemented"),
            "energy_uj_by_counting": {c: report.energy_uj(c) for c in COUNTINGS}, "iterations": report.iterations_mean}


def most_efficient_reaching(reference: list[ClassicalPoint], sum_rate: float,
                            method: str | None = None) -> ClassicalPoint | None:
    """The most energy-efficient (implemented) classical point, of ``method`` or any, with at least ``sum_rate``."""
    able = [r for r in reference if r.sum_rate >= sum_rate and (method is None or r.method == method)]
    return max(able, key=lambda r: r.efficiency, default=None)


def gain_at_equal_rate(points: list[Point], reference: list[ClassicalPoint]) -> list[dict[str, Any]]:
    """For each WMMSE point: the most efficient DNN with at least its sum rate and its efficiency gain over that
    point per counting, and over the most efficient classical method of any kind reaching the same sum rate."""
    rows = []
    for ref in (r for r in reference if r.method == "wmmse"):
        best = max((p for p in points if p.sum_rate >= ref.sum_rate), key=lambda p: p.efficiency, default=None)
        rival = most_efficient_reaching(reference, ref.sum_rate)
        rows.append({"wmmse_tol": ref.tol, "wmmse_sum_rate": ref.sum_rate, "wmmse_energy_uj": ref.energy_uj_by_counting,
                     "dnn": best.model_dump() if best else None,
                     "efficiency_gain": _gains(best, ref),
                     "most_efficient_classical": rival.label if rival else None,
                     "efficiency_gain_vs_most_efficient_classical": _gains(best, rival)})
    return rows


def _gains(dnn: Point | None, classical: ClassicalPoint | None) -> dict[str, float] | None:
    """eta_DNN / eta_classical per counting, each side's energy under that counting."""
    if dnn is None or classical is None:
        return None
    return {c: (dnn.sum_rate / dnn.energy_for(c)) / (classical.sum_rate / e)
            for c, e in classical.energy_uj_by_counting.items()}


def verdict(dnn: Point, reference: list[ClassicalPoint]) -> dict[str, Any]:
    """The chosen model at equal sum rate against WMMSE and against the most efficient classical method, in
    numbers and in words."""
    rows = {}
    for name, rival in (("wmmse", most_efficient_reaching(reference, dnn.sum_rate, "wmmse")),
                        ("most_efficient_classical", most_efficient_reaching(reference, dnn.sum_rate))):
        gains = _gains(dnn, rival)
        rows[name] = {"method": rival.label if rival else None, "efficiency_gain": gains,
                      "words": _in_words(dnn, rival, gains)}
    return rows


def _in_words(dnn: Point, rival: ClassicalPoint | None, gains: dict[str, float] | None) -> str:
    if rival is None or gains is None:
        return f"no classical method of this kind reaches the DNN's {dnn.sum_rate:.3f} bit/s/Hz"
    gain = gains["implemented"]
    head = (f"{rival.label} reaches {rival.sum_rate:.3f} bit/s/Hz (the DNN {dnn.sum_rate:.3f}) at {rival.energy_uj:.4g} uJ "
            f"(implemented; paper {rival.energy_uj_by_counting['paper']:.4g}) against the DNN's {dnn.energy_uj:.4g} uJ")
    if gain >= 1:
        return f"{head}: the DNN is {gain:.3g}x more energy-efficient (implemented)"
    return f"{head}: the DNN is {1 / gain:.3g}x LESS energy-efficient (implemented); the classical method wins"


def frontier(dnn: Point, reference: list[ClassicalPoint]) -> list[dict[str, Any]]:
    """Every classical method and the chosen DNN: sum rate, energy per counting, and the cheapest method with
    more sum rate at less implemented energy (``dominated_by``), or None."""
    entries = [{"method": r.label, "sum_rate": r.sum_rate, "energy_uj": r.energy_uj_by_counting} for r in reference]
    entries.append({"method": "chosen DNN", "sum_rate": dnn.sum_rate,
                    "energy_uj": {c: dnn.energy_for(c) for c in COUNTINGS}, "dnn": dnn.model_dump()})
    for e in entries:
        better = [o for o in entries if o["sum_rate"] > e["sum_rate"]
                  and o["energy_uj"]["implemented"] < e["energy_uj"]["implemented"]]
        e["dominated_by"] = min(better, key=lambda o: o["energy_uj"]["implemented"])["method"] if better else None
    return entries


def dominated_line(entry: dict[str, Any], entries: list[dict[str, Any]]) -> str | None:
    """One line saying that ``entry`` (the chosen DNN's) is dominated, and by what; None if it is not."""
    if entry["dominated_by"] is None:
        return None
    by = next(e for e in entries if e["method"] == entry["dominated_by"])
    return (f"the chosen model is dominated: {by['method']} reaches {by['sum_rate']:.3f} bit/s/Hz at "
            f"{by['energy_uj']['implemented']:.4g} uJ (implemented), more than the model's {entry['sum_rate']:.3f} "
            f"bit/s/Hz at {entry['energy_uj']['implemented']:.4g} uJ")


def table_ii(points: list[Point], ptq: dict[int, float]) -> list[dict[str, Any]]:
    """Uniform bit widths of the largest architecture searched, with the paper's figures beside ours (our energy
    under the ``paper`` counting, eqs. 7-11, which is what the paper's figures are) only when that architecture is
    the paper's 64x1024: a smaller network's figures are not comparable with them."""
    largest = max(((p.c_out, p.d_fcl) for p in points), default=None)
    rows = []
    for p in points:
        if (p.c_out, p.d_fcl) == largest and p.uniform:
            paper = PAPER_TABLE_II.get(p.bits[0]) if largest == PAPER_TABLE_II_ARCH else None
            rows.append({"bits": p.bits, "energy_uj": p.energy_for("paper"), "sum_rate": p.sum_rate, "sum_rate_std": p.sum_rate_std,
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
    reached = [g["efficiency_gain"]["implemented"] for g in gains if g["efficiency_gain"] is not None]
    chosen = choose(points, wmmse_tight.sum_rate)
    entries = frontier(chosen, reference)
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
        "chosen": chosen.model_dump(),
        "verdict": verdict(chosen, reference),
        "frontier": entries,
        "dominated": dominated_line(entries[-1], entries),
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
    for counting, style in (("implemented", "-"), ("paper", ":")):
        ax.plot([r["sum_rate"] for r in wm], [r["sum_rate"] / r["energy_uj_by_counting"][counting] for r in wm],
                marker="s", linestyle=style, color="C1", label=f"WMMSE, tol 1e-1 .. 1e-5 ({counting})")
    for r in wm:
        ax.annotate(f"{r['tol']:g}", (r["sum_rate"], r["efficiency"]), fontsize=7)
    for method, marker, color in (("zf", "^", "C2"), ("rzf", "v", "C3"), ("rzf-equal", "<", "C4"), ("mrt", ">", "C5")):
        for r in (r for r in summary["classical"] if r["method"] == method):
            for counting, face in (("implemented", color), ("paper", "none")):
                ax.scatter([r["sum_rate"]], [r["sum_rate"] / r["energy_uj_by_counting"][counting]], marker=marker,
                           facecolors=face, edgecolors=color, label=f"{method.upper()} ({counting})")
    chosen = summary["frontier"][-1]
    ax.scatter([chosen["sum_rate"]], [chosen["sum_rate"] / chosen["energy_uj"]["implemented"]], marker="*", s=120,
               color="k", label="chosen DNN" + (" (dominated)" if chosen["dominated_by"] else ""))
    ax.set(xlabel="sum rate (bit/s/Hz)", ylabel="energy efficiency (bit/s/Hz/uJ)", yscale="log",
           title=f"DNN front vs the classical methods on {site} (cf. paper Fig. 3)")
    ax.legend(fontsize=8)
    paths.append(out / "fig3_dnn_vs_wmmse.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def write(summary: dict[str, Any], out: Path) -> Path:
    path = out / "report.json"
    path.write_text(json.dumps(summary, indent=2))
    return path
