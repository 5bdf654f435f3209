"""``edgejoule sites``: list, generate and export site channel datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgejoule import plugin_manager
from edgejoule.cli.output import console, print_json, progress_bar
from edgejoule.sites import get_site, list_sites
from edgejoule.sites.dataset import ChannelDataset, cached, load_dataset, user_positions
from edgejoule.tasks.precoding import average_snr_db

app = typer.Typer(help="Sites and their channel datasets.", no_args_is_help=True)


def dataset_with_progress(name: str, quiet: bool = False) -> ChannelDataset:
    """Load a site's dataset, generating it with a progress bar if it is not cached yet."""
    site = get_site(name)
    generator = plugin_manager.get("channel_generators", site.generator)
    with progress_bar(f"generating {name}", len(user_positions(site)), enabled=not quiet and not cached(site)) as advance:
        return load_dataset(site, generator, progress=advance)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """The known sites (built-in and from $EDGEJOULE_SITES)."""
    sites = list_sites()
    if as_json:
        print_json({n: s.model_dump(mode="json") for n, s in sites.items()})
        return
    table = Table(title="sites")
    for col in ("name", "generator", "propagation", "positions", "samples", "cached", "description"):
        table.add_column(col)
    for name, s in sites.items():
        table.add_row(name, s.generator, s.propagation, str(s.n_anchor_points * s.positions_per_anchor),
                      str(s.n_samples), "yes" if cached(s) else "no", s.description)
    console.print(table)


@app.command()
def generate(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Generate (or load from the cache) a site's channel dataset and summarize it."""
    ds = dataset_with_progress(name, quiet=as_json)
    summary = {
        "site": name,
        "positions": int(len(ds.positions)),
        "samples": int(len(ds.users)),
        "splits": {k: int(len(v)) for k, v in ds.splits.items()},
        "average_snr_db": average_snr_db(ds.H(), ds.p_max, ds.noise_power),
        "noise_power_w": ds.noise_power,
        "p_max_w": ds.p_max,
    }
    if as_json:
        print_json(summary)
    else:
        splits = ", ".join(f"{n} {k}" for k, n in summary["splits"].items())
        console.print(f"{name}: {summary['samples']} channels at {summary['positions']} user positions ({splits}), "
                      f"average SNR {summary['average_snr_db']:.1f} dB, P_max {ds.p_max:g} W, "
                      f"noise {ds.noise_power:.3g} W")


@app.command()
def export(name: str, out: Path = typer.Option(..., "--out", help="Destination .npz file.")) -> None:
    """Export a site's dataset: H [samples, N_U, N_T] complex64, noise_power, p_max, split indices."""
    if out.suffix != ".npz":
        raise typer.BadParameter(f"{out} must end in .npz", param_hint="--out")
    path = dataset_with_progress(name).export_npz(out)
    console.print(f"wrote {path}")
