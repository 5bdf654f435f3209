"""Entry point of the ``mpq`` compressor and the ``edgejoule compress`` command (torch imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.search.space import DEFAULT_FAMILY


class MpqCompressor:
    """Exhaustive MPQ + architecture search (``edgejoule.plugins.search.search``); ``run`` returns the report dict."""

    name = "mpq"

    def run(self, request: Any, progress: Any = None) -> dict[str, Any]:
        from edgejoule.plugins.search.compress import compress
        from edgejoule.plugins.search.search import SearchRequest

        return compress(SearchRequest.model_validate(request), progress)


def _ints(text: str, option: str) -> tuple[int, ...]:
    from edgejoule.errors import EdgejouleError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EdgejouleError(f"{option} must be comma-separated integers, got '{text}'") from None


def compress_command(
    site: str = typer.Option(..., help="site name (edgejoule sites list)"),
    budget: str = typer.Option("default", help="smoke (minutes), default, or long"),
    family: str = typer.Option(DEFAULT_FAMILY, help="model family: precoder_structured (the default: the "
                               "template with the optimal beamforming structure as output, which reaches WMMSE's sum "
                               "rate) or precoder_cnn (the paper's Fig. 1 template, to reproduce its tables)"),
    c_out: str = typer.Option("8,16,32,64", "--c-out", help="C_out values to search"),
    d_fcl: str = typer.Option("512,1024", "--d-fcl", help="D_FCL values to search"),
    bits: str = typer.Option("2,4,8,16", help="bit widths per layer to search, from {2,4,8,16}"),
    seeds: str = typer.Option("0", help="training seeds (results are averaged)"),
    out: Path = typer.Option(None, help="output directory (default: runs/compress-SITE-BUDGET)"),
    executor: str = typer.Option("local", help="local (process pool) or dask"),
    scheduler: str = typer.Option(None, help="Dask scheduler address, tcp://HOST:PORT"),
    workers: int = typer.Option(2, min=1, help="local worker processes"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search bits x architectures for a site's precoder, print the Pareto front and the gain over WMMSE."""
    from edgejoule.cli.output import print_json
    from edgejoule.plugins.search.compress import compress, print_summary
    from edgejoule.plugins.search.search import SearchRequest
    from edgejoule.plugins.search.space import SearchSpace

    request = SearchRequest(
        site=site, family=family, budget=budget, seeds=_ints(seeds, "--seeds"),
        space=SearchSpace(c_out=_ints(c_out, "--c-out"), d_fcl=_ints(d_fcl, "--d-fcl"), bits=_ints(bits, "--bits")),
        out_dir=out or Path("runs") / f"compress-{site}-{budget}", executor=executor, scheduler=scheduler, workers=workers,
    )
    summary = compress(request, quiet=as_json)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary, request)


@hookimpl
def register_compressors(register) -> None:
    register("mpq", MpqCompressor())


@hookimpl
def register_commands(cli) -> None:
    cli.command("compress")(compress_command)
