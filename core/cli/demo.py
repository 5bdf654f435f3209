"""``edgejoule demo``: the main job on the default sites, printed like the paper's Table I."""

from __future__ import annotations

import typer
from rich.table import Table

from edgejoule.baselines import BaselineReport, run_precoding_baseline
from edgejoule.cli.output import console, print_json
from edgejoule.cli.sites import dataset_with_progress
from edgejoule.tasks.precoding import average_snr_db

DEMO_SITES = ("urban-nlos", "campus-los")


def demo(
    sites: list[str] = typer.Option(list(DEMO_SITES), "--site", help="sites to run (repeat the option)"),
    limit: int = typer.Option(None, min=1, help="only the first N test samples per site"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate the demo sites, run ZF and WMMSE on each, and print energy and sum rate per method."""
    rows: list[tuple[str, float, BaselineReport]] = []
    for name in sites:
        ds = dataset_with_progress(name, quiet=as_json)
        snr = average_snr_db(ds.H("test", limit), ds.p_max, ds.noise_power)
        for method in ("wmmse", "zf"):
            with console.status(f"{method} on {name}"):
                rows.append((name, snr, run_precoding_baseline(ds, method, limit=limit)))
    if as_json:
        print_json([r.model_dump(mode="json") | {"average_snr_db": snr} for _, snr, r in rows])
        return
    table = Table(title="Energy per inference and sum rate on the site's test split, under both countings "
                        "(the paper's Table I is the `paper` one)")
    for col in ("site", "SNR (dB)", "method", "implemented uJ", "paper uJ", "sum rate (bit/s/Hz)",
                "bit/s/Hz/uJ (implemented)", "iterations"):
        table.add_column(col, justify="right")
    for name, snr, r in rows:
        its = f"{r.iterations_mean:.1f}" if r.iterations_mean is not None else "-"
        table.add_row(name, f"{snr:.1f}", r.method.upper(), f"{r.energy_uj('implemented'):.4g}",
                      f"{r.energy_uj('paper'):.4g}", f"{r.sum_rate_mean:.2f}", f"{r.energy_efficiency:.4g}", its)
    console.print(table)
