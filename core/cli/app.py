"""Entry point of the ``edgejoule`` command: builds the typer app, lets plugins add commands, turns
user errors into one readable line and a non-zero exit."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from typer.core import TyperOption

from edgejoule import __version__
from edgejoule.cli import baselines, demo, energy, plugins_cmd, sites
from edgejoule.cli.output import errors
from edgejoule.errors import EdgejouleError
from edgejoule.plugin_manager import get_manager

EXIT_USER_ERROR = 2
_typer_display_type = TyperOption.display_type_rich


def _display_type(option: TyperOption, ctx: typer.Context) -> str | None:
    """The value an option takes, in the rich help: none for a flag. typer 0.29 prints a flag's Python type
    (``--json <bool>``, even ``--help <bool>``) as if it took a value; set here once, for every command and every
    plugin's, rather than a metavar on each flag."""
    return None if option.is_flag else _typer_display_type(option, ctx)


TyperOption.display_type_rich = _display_type  # type: ignore[method-assign]


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="edgejoule",
        help="Energy-efficient, site-specific neural models for the wireless edge.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_options)
    app.command("plugins")(plugins_cmd.plugins)
    app.add_typer(sites.app, name="sites")
    app.add_typer(energy.app, name="energy")
    app.add_typer(baselines.app, name="baseline")
    app.command("demo")(demo.demo)
    get_manager().add_commands(app)
    return app


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgejoule {__version__}")
        raise typer.Exit()


def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Energy-efficient, site-specific neural models for the wireless edge."""


def one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "input"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid {where}: {err['msg']}{more}"


def main(argv: list[str] | None = None) -> None:
    # typer (standalone mode) reports its own usage errors and exits 2; what escapes it is ours to word.
    try:
        build_app()(args=argv)
    except EdgejouleError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(EXIT_USER_ERROR)
    except ValidationError as exc:
        errors.print(f"[red]error:[/red] {one_line(exc)}", highlight=False)
        sys.exit(EXIT_USER_ERROR)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        errors.print(f"[red]error:[/red] {exc.strerror}: {exc.filename}", highlight=False)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
