"""``edgejoule baseline run``: a classical baseline on a site's test split."""

from __future__ import annotations

from contextlib import nullcontext

import typer

from edgejoule.baselines import run_precoding_baseline
from edgejoule.cli.output import console, print_json
from edgejoule.cli.sites import dataset_with_progress

app = typer.Typer(help="Classical baselines (ZF, WMMSE, ...).", no_args_is_help=True)


@app.command()
def run(
    site: str = typer.Option(..., help="site name (edgejoule sites list)"),
    method: str = typer.Option(..., help="zf, rzf, rzf-equal, mrt or wmmse (any registered precoding baseline)"),
    tol: float = typer.Option(None, min=0, help="stopping tolerance (WMMSE; default 1e-5)"),
    limit: int = typer.Option(None, min=1, help="only the first N test samples"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Mean sum rate, mean iterations and energy per inference under each counting on the site's test split."""
    ds = dataset_with_progress(site, quiet=as_json)
    options = {"tol": tol} if tol is not None else {}
    with console.status(f"running {method} on {site}", spinner="dots") if not as_json else nullcontext():
        report = run_precoding_baseline(ds, method, limit=limit, **options)
    if as_json:
        print_json(report.model_dump(mode="json") | {
            "energy_uj": report.energy.total_uj, "energy_efficiency": report.energy_efficiency,
            "energy_uj_by_counting": {c: e.total_uj for c, e in report.energy_by_counting.items()}})
    else:
        its = f", {report.iterations_mean:.1f} iterations" if report.iterations_mean is not None else ""
        energies = ", ".join(f"{e.total_uj:.4g} uJ ({c})" for c, e in report.energy_by_counting.items())
        console.print(f"{method} on {site}: sum rate {report.sum_rate_mean:.3f} bit/s/Hz{its}, "
                      f"{energies} per inference ({report.samples} samples)")

