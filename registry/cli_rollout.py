"""``edgejoule rollout start|status|pause|resume|abort|history|rollback``: gated rollouts from the command line, a
client of ``/api/v1/rollouts`` (``edgejoule.registry.api.rollouts``). Its own entry point of group ``edgejoule``, as
any plugin's commands; it imports without FastAPI."""

from __future__ import annotations

import getpass
import re
from typing import TYPE_CHECKING

import typer

from edgejoule.hookspecs import hookimpl
from edgejoule.registry.cli_plugin import REGISTRY_OPTION, TOKEN_OPTION, _call, _listed

if TYPE_CHECKING:
    from edgejoule.registry.schemas import Rollout

rollout_app = typer.Typer(help="Rollouts gated on the energy and quality the fleet measures.", no_args_is_help=True)
DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*$")
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
JSON_OPTION = typer.Option(False, "--json")
REASON_OPTION = typer.Option("", help="why (kept in the rollout's events)")


def seconds(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` in seconds; one line saying the form otherwise."""
    from edgejoule.errors import EdgejouleError

    match = DURATION.match(text)
    if match is None:
        raise EdgejouleError(f"--timeout {text!r}: write a duration such as 90s, 30m, 1h or 2d")
    return float(match[1]) * SECONDS[match[2]]


def fractions(text: str) -> list[float]:
    from edgejoule.errors import EdgejouleError

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise EdgejouleError(f"--stages {text!r}: write increasing fractions such as 0.1,0.5,1") from None


@rollout_app.command("start")
def start(candidate: str = typer.Argument(..., help="a package id, or a method such as method:rzf-equal"),
          site: str = typer.Option(...),
          stages: str = typer.Option("0.1,0.5,1", help="fractions of the site's agents, in order"),
          gate: str = typer.Option("quality>=0.99,energy<=1.0", help="criteria on candidate/incumbent ratios"),
          min_inferences: int = typer.Option(1000, help="per side, before any decision"),
          min_windows: int = typer.Option(5, help="per side, before any decision"),
          confidence: float = typer.Option(0.95, help="of each decision against noise"),
          timeout: str = typer.Option("1h", help="per stage, e.g. 30m, 1h; then --on-timeout"),
          on_timeout: str = typer.Option("rollback", help="rollback or promote when a stage stays undecided"),
          registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Start a gated rollout of CANDIDATE against what the site's agents serve now."""
    from edgejoule.registry.schemas import Rollout, RolloutRequest

    body = RolloutRequest(candidate=candidate, site=site, stages=fractions(stages), gate=gate,
                          min_inferences=min_inferences, min_windows=min_windows, confidence=confidence,
                          timeout_s=seconds(timeout), on_timeout=on_timeout, started_by=getpass.getuser()[:64])
    _show(_call("POST", registry, token, "/rollouts", Rollout, json=body.model_dump(mode="json")), as_json)


@rollout_app.command("status")
def status(rollout_id: int = typer.Argument(None, help="one rollout; default: the newest of each site"),
           site: str = typer.Option(None), registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
           as_json: bool = JSON_OPTION) -> None:
    """Where rollouts stand: stage, canaries, the gate's readings with their intervals, and the decisions."""
    from edgejoule.cli.output import print_json
    from edgejoule.registry.schemas import Rollout

    if rollout_id is not None:
        _show(_call("GET", registry, token, f"/rollouts/{rollout_id}", Rollout), as_json)
        return
    listed = _listed(registry, token, "/rollouts", Rollout, {"site": site} if site else None)
    newest = list({r.site: r for r in reversed(listed)}.values())
    if as_json:
        print_json([r.model_dump(mode="json") for r in newest])
    elif not newest:
        typer.echo("no rollouts")
    for rollout in [] if as_json else newest:
        _show(rollout, False)


def _act(action: str, rollout_id: int, reason: str, registry: str, token: str, as_json: bool) -> None:
    from edgejoule.registry.schemas import Rollout, RolloutAction

    body = RolloutAction(reason=reason).model_dump(mode="json")
    _show(_call("POST", registry, token, f"/rollouts/{rollout_id}/{action}", Rollout, json=body), as_json)


@rollout_app.command("pause")
def pause(rollout_id: int = typer.Argument(...), reason: str = REASON_OPTION, registry: str = REGISTRY_OPTION,
          token: str = TOKEN_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Stop deciding (and the stage's clock); the canaries keep the candidate."""
    _act("pause", rollout_id, reason, registry, token, as_json)


@rollout_app.command("resume")
def resume(rollout_id: int = typer.Argument(...), reason: str = REASON_OPTION, registry: str = REGISTRY_OPTION,
           token: str = TOKEN_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Decide again; the stage's timeout moves by the time it was paused."""
    _act("resume", rollout_id, reason, registry, token, as_json)


@rollout_app.command("abort")
def abort(rollout_id: int = typer.Argument(...), reason: str = REASON_OPTION, registry: str = REGISTRY_OPTION,
          token: str = TOKEN_OPTION, as_json: bool = JSON_OPTION) -> None:
    """End a rollout now: its canaries go back to the incumbent."""
    _act("abort", rollout_id, reason, registry, token, as_json)


@rollout_app.command("rollback")
def rollback(site: str = typer.Option(...), reason: str = REASON_OPTION, registry: str = REGISTRY_OPTION,
             token: str = TOKEN_OPTION, as_json: bool = JSON_OPTION) -> None:
    """One step back: undo the site's last promoted rollout (every agent on its incumbent again)."""
    from edgejoule.registry.schemas import Rollout, RolloutAction

    body = RolloutAction(reason=reason).model_dump(mode="json")
    _show(_call("POST", registry, token, f"/sites/{site}/rollback", Rollout, json=body), as_json)


@rollout_app.command("history")
def history(site: str = typer.Option(...), registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
            as_json: bool = JSON_OPTION) -> None:
    """What served the site when, who started each rollout and why it ended."""
    from edgejoule.cli.output import print_json
    from edgejoule.registry.schemas import SiteHistory

    told = _call("GET", registry, token, f"/sites/{site}/history", SiteHistory)
    if as_json:
        print_json(told)
        return
    for period in told.served:
        since = period.since.isoformat(timespec="seconds") if period.since else "before"
        until = period.until.isoformat(timespec="seconds") if period.until else "now"
        typer.echo(f"{since} .. {until}  {period.target}  ({period.how})")
    for r in told.rollouts:
        typer.echo(f"rollout {r.id}: {r.candidate} against {r.incumbent}, started by {r.started_by} at "
                   f"{r.started_at.isoformat(timespec='seconds')}: {r.state}{' - ' + r.reason if r.reason else ''}")


def _show(rollout: Rollout, as_json: bool) -> None:
    """A rollout as one paragraph: where it stands, the gate's latest readings, its decisions."""
    from edgejoule.cli.output import print_json

    if as_json:
        print_json(rollout)
        return
    r = rollout
    typer.echo(f"rollout {r.id} at {r.site}: {r.candidate} against {r.incumbent} ({r.gate}), {r.state}, stage "
               f"{r.stage + 1}/{len(r.stages)} ({r.stages[r.stage]:.0%}: {', '.join(r.canaries)})"
               + (f": {r.reason}" if r.reason else ""))
    if r.readings is not None:
        g = r.readings
        typer.echo(f"  gate: {g.verdict} - {g.reason}")
        typer.echo(f"  canary {g.canary.windows} windows / {g.canary.inferences} inferences, incumbent "
                   f"{g.incumbent.windows} / {g.incumbent.inferences}; energy {g.energy_basis}")
        for reading in g.readings:
            interval = "-" if reading.ratio is None else f"{reading.ratio:.4f} [{reading.low:.4f}, {reading.high:.4f}]"
            typer.echo(f"  {reading.criterion:<16} ratio {interval}  {reading.verdict}")
    for event in r.events:
        if event.kind not in ("started", "stage"):
            typer.echo(f"  {event.at.isoformat(timespec='seconds')} {event.kind}: {event.reason}")


@hookimpl
def register_commands(cli) -> None:
    cli.add_typer(rollout_app, name="rollout")
