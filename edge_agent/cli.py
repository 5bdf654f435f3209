"""``edge-agent run | once | status | bench``: configured by EDGE_AGENT_* variables or EDGE_AGENT_CONFIG_FILE.

A configuration error (a missing or malformed setting, a registry that refuses the agent's token or site)
ends ``run`` and ``once`` with one line naming the variable and exit status 2, before anything is served.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from typing import TYPE_CHECKING, Iterator

import typer
from pydantic import ValidationError

from edgejoule.errors import EdgejouleError

if TYPE_CHECKING:
    from edgejoule.edge_agent.agent import Agent

app = typer.Typer(help="The edgejoule edge agent.", no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)


def _agent() -> "Agent":
    from edgejoule.edge_agent.agent import Agent, AgentMisconfigured
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.service import configure_logging

    settings = AgentSettings()
    configure_logging(settings.log_format, settings.log_level)
    if not settings.token:
        raise AgentMisconfigured("EDGE_AGENT_TOKEN is not set: the token the registry gave this agent at "
                                 "registration (edgejoule agents register) is needed")
    return Agent(settings)


@contextlib.contextmanager
def service(agent: "Agent") -> Iterator[None]:
    """SIGTERM and SIGINT stop the agent cleanly (the request in flight is answered, the window reported,
    the spool kept, "offline" published); systemd is told READY and pinged by the watchdog; the health
    endpoint answers while the agent lives."""
    from edgejoule.edge_agent.service import HealthServer, Watchdog, notify

    def stop(signum: int, frame: object) -> None:
        agent.stop.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    health = HealthServer(agent.settings.health, agent.health) if agent.settings.health else None
    watchdog = Watchdog(agent.serving_alive_at)
    try:
        yield
    finally:
        notify("STOPPING=1")
        watchdog.close()
        agent.close()
        if health is not None:
            health.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def once(inferences: int = typer.Option(1000, min=1, help="inferences to run and report")) -> None:
    """One pull, N inferences, every window reported; prints the telemetry as JSON lines."""
    agent = _agent()
    with service(agent):
        for message in agent.once(inferences):
            print(message.model_dump_json(by_alias=True))


@app.command()
def run() -> None:
    """Serve until stopped (SIGTERM or SIGINT): poll (or be told of) the assignment, run windows, report each."""
    from edgejoule.edge_agent.service import notify

    agent = _agent()
    with service(agent):
        agent.start()
        notify("READY=1")
        agent.run()


@app.command()
def status() -> None:
    """The installed packages, the meter, the spooled telemetry and what the running agent last said, as JSON."""
    from edgejoule.edge_agent.agent import pick_meter, read_health
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageRejected, PackageStore
    from edgejoule.edge_agent.telemetry import spooled

    settings = AgentSettings()
    store = PackageStore(settings.packages_dir)
    packages: dict[str, str | None] = {}
    for which in ("current", "previous"):
        try:
            packages[f"{which}_model"] = store.installed_id(which)
        except PackageRejected as exc:  # the agent sets it aside at its next start
            packages[f"{which}_model"], packages[f"{which}_problem"] = None, str(exc)
    meter = pick_meter(settings.meter)
    health = read_health(settings.data_dir)
    print(json.dumps({
        "agent_id": settings.agent_id, "site": settings.site, **packages,
        "meter": meter.name, "meter_kind": meter.kind, "spooled_telemetry": spooled(settings.spool_dir),
        "agent": health.model_dump() if health else None,
    }, indent=2))


@app.command()
def bench(seconds: float = typer.Option(10.0, "--seconds", min=0.5, help="how long to run the loop"),
          method: str = typer.Option("current", help="'current' (the installed package or method, else ZF), 'zf', or "
                                     "a classical method: rzf, rzf-equal, mrt, wmmse, 'method:wmmse(tol=0.01)'")) -> None:
    """A tight loop on the current model (or ZF) on the site's test channels: energy per inference with the
    idle power subtracted, and its spread over the loop's windows (for comparing models on one device)."""
    from edgejoule.edge_agent.bench import run_bench
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.service import configure_logging

    settings = AgentSettings()
    configure_logging(settings.log_format, settings.log_level)
    print(run_bench(settings, seconds, method).model_dump_json(indent=2))


@app.command()
def unit() -> None:
    """Print the systemd unit shipped with the agent (Type=notify, watchdog, restart policy): docs/EDGE.md."""
    from importlib.resources import files

    print(files("edgejoule.edge_agent").joinpath("edge-agent.service").read_text(), end="")


def main() -> None:
    from edgejoule.edge_agent.service import configure_logging

    configure_logging()  # until the settings say which format and level
    try:
        app()
    except EdgejouleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "EDGE_AGENT_" + "_".join(str(p) for p in err["loc"]).upper()
        print(f"error: {name}: {err['msg']}", file=sys.stderr)
        sys.exit(2)
