"""The whole ``compress`` job: search, reference curve, report, plots, and the chosen model saved for export."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from typing import Any

from rich.table import Table

from edgejoule.cli.output import LINE_EVERY_S, console, progress_bar
from edgejoule.plugins.search import report, worker
from edgejoule.plugins.search.search import RESULTS_FILE, ResultStore, SearchRequest, checkpoint, run_search
from edgejoule.plugins.search.space import Candidate

CHOSEN_WEIGHTS = "chosen.pt"
CHOSEN_INFO = "chosen.json"


def compress(request: SearchRequest, progress: Any = None, quiet: bool = False) -> dict[str, Any]:
    """The search, then the report. Unless ``quiet`` (``--json``), it says what it does: a bar on a terminal, and
    one line per step when the output goes to a file or a pipe (where a bar draws nothing), and whether it resumes
    the results an earlier run left in the directory."""
    site = request.resolved_site()
    budget = request.resolved_budget()
    lines = not quiet and not console.is_terminal
    total = request.space.size() * len(request.seeds)
    earlier = len(ResultStore(request.out_dir / RESULTS_FILE).results)
    if earlier and not quiet:
        console.print(f"resuming {request.out_dir}: {min(earlier, total)} of {total} candidates are done there "
                      f"already (another --out, or the directory removed, searches afresh)", highlight=False)
    with progress_bar("searching", total, enabled=not quiet, line_every_s=None) as advance:  # its lines are per phase
        seen = {"candidates": 0}
        said: dict[str, float] = {}  # when each phase was last told, without a terminal

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase == "candidates":
                advance(done - seen["candidates"])
                seen["candidates"] = done
            # a log gets a line per phase at its start, its end and every LINE_EVERY_S between: not one per candidate
            if lines and (phase not in said or done == total or time.monotonic() - said[phase] >= LINE_EVERY_S):
                said[phase] = time.monotonic()
                console.print(f"{phase}: {done}/{total}", highlight=False)
            if progress:
                progress(phase, done, total)

        rows = run_search(request, on_progress)
    points = report.aggregate(worker.with_both_countings(rows, request.family, site))
    if lines:
        console.print(f"WMMSE reference curve on {_samples(budget.eval_samples)}", highlight=False)
    with console.status("WMMSE reference curve", spinner="dots") if not quiet else nullcontext():
        reference = report.classical_curve(site, budget.eval_samples)
    largest = max(request.space.archs())
    ptq = {b: worker.ptq_sum_rate(site, _candidate(largest, (b,) * 4, request.seeds[0]), budget,
                                  checkpoint(request.out_dir, _candidate(largest, (b,) * 4, request.seeds[0])),
                                  request.family)
           for b in request.space.bits}
    summary = report.summarize(points, reference, ptq)
    summary |= {"site": request.site, "family": request.family, "budget": budget.model_dump(),
                "space": request.space.model_dump()}
    summary["plots"] = [str(p) for p in report.plot(summary, points, request.out_dir, request.site)]
    summary["chosen_files"] = save_chosen(request, summary["chosen"], summary["dominated"])
    report.write(summary, request.out_dir)
    return summary


def _samples(eval_samples: int | None) -> str:
    return "the whole test split" if eval_samples is None else f"{eval_samples} test samples"


def _candidate(arch: tuple[int, int], bits: tuple[int, ...], seed: int) -> Candidate:
    return Candidate(c_out=arch[0], d_fcl=arch[1], bits=bits, seed=seed)


def save_chosen(request: SearchRequest, chosen: dict[str, Any], dominated: str | None) -> dict[str, str]:
    """Re-run the chosen candidate's (deterministic) fine-tuning and save its frozen float weights, so the
    exporter gets weights on their trained grid plus everything the manifest needs, and the line saying what
    dominates the model (None if nothing does), which the exporter refuses without --allow-dominated."""
    site = request.resolved_site()
    candidate = _candidate((chosen["c_out"], chosen["d_fcl"]), tuple(chosen["bits"]), request.seeds[0])
    weights = request.out_dir / CHOSEN_WEIGHTS
    result = worker.fine_tune(site, candidate, request.resolved_budget(), checkpoint(request.out_dir, candidate),
                              request.family, save_to=weights)
    info = request.out_dir / CHOSEN_INFO
    info.write_text(json.dumps({
        "site": request.site, "family": request.family,
        "arch": {"c_out": candidate.c_out, "d_fcl": candidate.d_fcl, "n_t": site.n_antennas, "n_u": site.n_users},
        "bits": list(candidate.bits), "metrics": {"sum_rate": result["sum_rate"]},
        "energy": {k: result[k] for k in ("energy_uj", "compute_uj", "weights_uj", "activations_uj")},
        "noise_power_w": site.noise_power_w, "p_max_w": site.tx_power_w, "weights": CHOSEN_WEIGHTS,
        "dominated": dominated,
    }, indent=2))
    return {"weights": str(weights), "info": str(info)}


def print_summary(summary: dict[str, Any], request: SearchRequest) -> None:
    table = Table(title=f"Pareto front of {request.family} on {request.site} ({summary['candidates']} configurations)")
    for col in ("C_out", "D_FCL", "bits", "sum rate", "energy (uJ, implemented)", "bit/s/Hz/uJ"):
        table.add_column(col, justify="right")
    for p in summary["front"]:
        table.add_row(str(p["c_out"]), str(p["d_fcl"]), ",".join(map(str, p["bits"])), f"{p['sum_rate']:.3f}",
                      f"{p['energy_uj']:.4g}", f"{p['efficiency']:.4g}")
    console.print(table)
    largest = max(request.space.archs())
    paper = largest == report.PAPER_TABLE_II_ARCH  # the paper's figures only beside the network they measured
    t2 = Table(title=f"Uniform bits, largest architecture, {largest[0]}x{largest[1]} " + (
        "(cf. paper Table II)" if paper else "(the paper's Table II is 64x1024: not comparable)"))
    for col in ("bits", "energy (uJ, paper)", "sum rate (LSQ)", "sum rate (PTQ)") + (("paper energy", "paper sum rate")
                                                                              if paper else ()):
        t2.add_column(col, justify="right")
    for r in summary["table_ii"]:
        t2.add_row(str(r["bits"][0]), f"{r['energy_uj']:.4g}", f"{r['sum_rate']:.3f}", f"{r['ptq_sum_rate']:.3f}",
                   *((str(r["paper_energy_uj"]), str(r["paper_sum_rate"])) if paper else ()))
    console.print(t2)
    wmmse = [r for r in summary["classical"] if r["method"] == "wmmse"]
    console.print(f"best DNN sum rate: {summary['best_sum_rate']['sum_rate']:.3f} bit/s/Hz = "
                  f"{100 * summary['best_fraction_of_wmmse']:.1f} % of WMMSE ({wmmse[-1]['sum_rate']:.3f}, tol 1e-5)")
    console.print(f"sum rates on {_samples(summary['budget']['eval_samples'])} of {request.site} "
                  f"(budget {summary['budget']['name']}); edgejoule baseline run uses the whole test split, so its "
                  f"WMMSE and ZF may differ", highlight=False)
    t3 = Table(title="Every method, both countings (the DNN's implemented energy counts its weightless ops too)")
    for col in ("method", "sum rate", "implemented (uJ)", "paper (uJ)", "dominated by (implemented)"):
        t3.add_column(col, justify="right", no_wrap=True)
    for e in summary["frontier"]:
        t3.add_row(e["method"], f"{e['sum_rate']:.3f}", f"{e['energy_uj']['implemented']:.4g}",
                   f"{e['energy_uj']['paper']:.4g}", e["dominated_by"] or "-")
    console.print(t3)
    gain = summary["max_efficiency_gain"]
    console.print("largest energy-efficiency gain over WMMSE at equal sum rate (implemented): "
                  + (f"{gain:.3g}x" if gain else "none (no DNN reaches any WMMSE point's sum rate)"))
    verdict = summary["verdict"]
    console.print(f"chosen model against WMMSE: {verdict['wmmse']['words']}")
    console.print(f"chosen model against the most efficient classical method: {verdict['most_efficient_classical']['words']}")
    if summary["dominated"]:
        console.print(summary["dominated"], style="bold red", markup=False, highlight=False)
    console.print(f"uniform models on the Pareto front: {summary['uniform_on_front'] or 'none'}")
    console.print(f"chosen model for export: {summary['chosen_files']['info']}; plots: {', '.join(summary['plots'])}")
