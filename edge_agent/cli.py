"""``edge-agent run | once | status``: configured by EDGE_AGENT_* variables or EDGE_AGENT_CONFIG_FILE."""

from __future__ import annotations

import json
import logging
import sys

import typer
from pydantic import ValidationError

from edgejoule.errors import EdgejouleError

app = typer.Typer(help="The edgejoule edge agent.", no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)


def _agent():
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings

    return Agent(AgentSettings())


@app.command()
def once(inferences: int = typer.Option(1000, min=1, help="inferences to run and report")) -> None:
    """One pull, N inferences, every window reported; prints the telemetry as JSON lines."""
    agent = _agent()
    try:
        for message in agent.once(inferences):
            print(message.model_dump_json(by_alias=True))
    finally:
        agent.close()


@app.command()
def run() -> None:
    """Serve until stopped: poll (or be told of) the assignment, run windows, report each."""
    agent = _agent()
    try:
        agent.run()
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()


@app.command()
def status() -> None:
    """The installed packages, the meter and the spooled telemetry, as JSON."""
    from edgejoule.edge_agent.agent import pick_meter
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageStore
    from edgejoule.edge_agent.telemetry import Spool

    settings = AgentSettings()
    store = PackageStore(settings.packages_dir)
    current, previous = store.manifest("current"), store.manifest("previous")
    print(json.dumps({
        "agent_id": settings.agent_id, "site": settings.site,
        "current_model": current.id if current else None, "previous_model": previous.id if previous else None,
        "meter": pick_meter(settings.meter).name, "spooled_telemetry": len(Spool(settings.spool_dir).pending()),
    }, indent=2))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise at INFO
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
