"""``edgejoule plugins``: what is loaded, from where, and what it provides."""

from __future__ import annotations

import typer
from rich.table import Table

from edgejoule.cli.output import console, print_json
from edgejoule.plugin_manager import get_manager


def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every plugin, where it came from, and the hooks and names it provides."""
    infos = sorted(get_manager().infos.values(), key=lambda i: i.name)
    if as_json:
        print_json([vars(i) for i in infos])
        return
    table = Table(title="edgejoule plugins")
    for col in ("plugin", "source", "provides", "hooks"):
        table.add_column(col)
    for info in infos:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.provides.items())
        table.add_row(info.name, info.source, info.error or provides, ", ".join(info.hooks))
    console.print(table)
