"""``edgejoule registry serve|migrate``, ``edgejoule agents add``, ``edgejoule models``, ``edgejoule deploy``,
``edgejoule fleet``. This entry-point module imports without FastAPI; the commands import what they need.

Client commands talk to ``--registry`` (or ``$EDGEJOULE_REGISTRY_URL``) with the admin token
(``--token`` or ``$EDGEJOULE_ADMIN_TOKEN``)."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from edgejoule.hookspecs import hookimpl

if TYPE_CHECKING:
    import httpx

registry_app = typer.Typer(help="Run the registry service.", no_args_is_help=True)
agents_app = typer.Typer(help="Agents known to the registry.", no_args_is_help=True)

REGISTRY_OPTION = typer.Option("http://127.0.0.1:8000", "--registry", envvar="EDGEJOULE_REGISTRY_URL")
# the client takes the server's variable too: one variable is enough on the registry's own machine
ADMIN_TOKEN_VARIABLES = ["EDGEJOULE_ADMIN_TOKEN", "EDGEJOULE_REGISTRY_ADMIN_TOKEN"]
TOKEN_OPTION = typer.Option(..., "--token", envvar=ADMIN_TOKEN_VARIABLES, help="admin token")


def _admin_token(data_dir: Path) -> str:
    """$EDGEJOULE_REGISTRY_ADMIN_TOKEN, else the token kept in DATA_DIR/admin-token (created once, mode 600)."""
    token = os.environ.get("EDGEJOULE_REGISTRY_ADMIN_TOKEN")
    if token:
        return token
    path = data_dir / "admin-token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


@registry_app.command()
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    data_dir: Path = typer.Option(Path("registry-data"), envvar="EDGEJOULE_REGISTRY_DATA_DIR"),
    database_url: str = typer.Option(None, envvar="EDGEJOULE_REGISTRY_DATABASE_URL", help="default: SQLite in data dir"),
    broker: str = typer.Option(None, envvar="EDGEJOULE_REGISTRY_BROKER_URL",
                               help="mqtt://[USER@]HOST:PORT (password in $EDGEJOULE_REGISTRY_MQTT_PASSWORD); "
                                    "default: an embedded mosquitto on a loopback port"),
    secure_broker: bool = typer.Option(True, "--secure-broker/--anonymous-broker",
                                       help="embedded broker: per-agent logins (the agent id and a "
                                            "password the agent gets with its token) and an ACL, or anonymous (any local process may publish "
                                            "as any agent; development only)"),
    no_broker: bool = typer.Option(False, "--no-broker", help="no MQTT at all (telemetry over HTTP only)"),
    broker_port: int = typer.Option(None, envvar="EDGEJOULE_REGISTRY_BROKER_PORT",
                                    help="embedded broker's port; default: chosen once, kept in DATA_DIR/broker/port"),
    broker_tls: bool = typer.Option(False, "--broker-tls", help="embedded broker: TLS (mqtts://), with a CA and "
                                    "certificate made at the first start in DATA_DIR/broker/tls (agents: ca.crt)"),
    log_level: str = typer.Option("INFO", envvar="EDGEJOULE_REGISTRY_LOG_LEVEL",
                                  help="structured (JSON lines) logs on stderr at this level"),
) -> None:
    """Serve the API, the dashboard and the MQTT ingest (with a local mosquitto unless --broker is given)."""
    import uvicorn

    from edgejoule.registry.logs import configure

    configure(log_level.upper())

    from edgejoule.cli.output import console
    from edgejoule.registry.app import create_app
    from edgejoule.registry.broker import EmbeddedBroker
    from edgejoule.registry.broker_auth import REGISTRY_USER, agent_credentials, mosquitto_hash, write_broker_files
    from edgejoule.registry.broker_passwords import BrokerPasswords
    from edgejoule.registry.db import make_engine, session_factory
    from edgejoule.registry.migrate import upgrade
    from edgejoule.registry.settings import RegistrySettings

    settings = RegistrySettings(data_dir=data_dir, database_url=database_url, admin_token=_admin_token(data_dir),
                                broker_url=broker)
    embedded = None
    if broker is None and not no_broker:
        embedded = EmbeddedBroker(data_dir / "broker", broker_port, secure=secure_broker, tls=broker_tls)
        settings.mqtt_ca_file = embedded.tls.ca if embedded.tls else None
        settings.mqtt_shared = False  # its one registry; a plain subscription survives a broker restart
        if secure_broker:
            upgrade(settings.db_url)
            engine = make_engine(settings.db_url)
            with session_factory(engine)() as session:
                agents = agent_credentials(session)
            engine.dispose()
            registry_password = secrets.token_urlsafe(32)  # lives only in this process and as a hash
            write_broker_files(embedded.directory, BrokerPasswords.at(settings.broker_secret_path), agents,
                               mosquitto_hash(registry_password), embedded.port, "127.0.0.1", tls=embedded.tls)
            embedded.start()
            settings.mqtt_password = registry_password
            settings.broker_url = embedded.url.replace("://", f"://{REGISTRY_USER}@")
        else:
            settings.broker_url = embedded.start().url
            console.print(f"[yellow]development broker {embedded.url} is anonymous (--anonymous-broker): any local "
                          f"process may publish as any agent[/yellow]")
    broker_public = embedded.url if embedded else (settings.broker_url or "")
    # agents started next to the registry read the broker's address here (the embedded one keeps its port)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "broker-url").write_text(broker_public)
    console.print(f"registry on http://{host}:{port} (database {settings.db_url.split('://')[0]}, broker "
                  f"{broker_public or 'none'}); admin token in "
                  f"{'$EDGEJOULE_REGISTRY_ADMIN_TOKEN' if os.environ.get('EDGEJOULE_REGISTRY_ADMIN_TOKEN') else data_dir / 'admin-token'}")
    # uvicorn shuts down gracefully on SIGTERM, restores the handler it found and raises the signal again:
    # with this handler that ends in SystemExit, so the finally below stops the embedded broker
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        if embedded is not None:
            embedded.stop()


@registry_app.command("broker-auth")
def broker_auth(
    out: Path = typer.Option(..., help="directory for the broker's mosquitto.conf, dynamic-security.json and "
                                       "persistence"),
    data_dir: Path = typer.Option(Path("registry-data"), envvar="EDGEJOULE_REGISTRY_DATA_DIR"),
    database_url: str = typer.Option(None, envvar="EDGEJOULE_REGISTRY_DATABASE_URL"),
    port: int = typer.Option(1883, help="the broker's listener"),
    host: str = typer.Option("", help="address to listen on (default: all)"),
    broker_user: str = typer.Option("mosquitto", help="the user mosquitto runs as (owns the files)"),
    registry_user: str = typer.Option("edgejoule-registry"),
    registry_password: str = typer.Option(..., envvar="EDGEJOULE_REGISTRY_MQTT_PASSWORD", prompt=True,
                                          hide_input=True, help="the registry's own broker password"),
    broker_secret_file: Path = typer.Option(None, envvar="EDGEJOULE_REGISTRY_BROKER_SECRET_FILE",
                                            help="the secret the agents' passwords derive from (the registry "
                                                 "workers' own); default: DATA_DIR/broker-secret"),
) -> None:
    """Write a complete mosquitto configuration for an external broker: logins and access (dynamic-security
    plugin: each agent publishes only under its own topic root and subscribes only to its assignment), persistence,
    queues sized for outages. Run it with ``mosquitto -c OUT/mosquitto.conf``; agents registered later get their
    logins from the registry at run time."""
    from edgejoule.registry.broker_auth import agent_credentials, mosquitto_hash, write_broker_files
    from edgejoule.registry.broker_passwords import BrokerPasswords
    from edgejoule.registry.db import make_engine, session_factory
    from edgejoule.registry.settings import RegistrySettings

    settings = RegistrySettings(data_dir=data_dir, database_url=database_url, admin_token="x" * 16,
                                broker_secret_file=broker_secret_file)
    with session_factory(make_engine(settings.db_url))() as session:
        agents = agent_credentials(session)
    conf, dynsec = write_broker_files(out, BrokerPasswords.at(settings.broker_secret_path), agents,
                                      mosquitto_hash(registry_password), port, host, broker_user, registry_user)
    typer.echo(f"{len(agents)} agents: {conf}, {dynsec}; start the broker with: mosquitto -c {conf}")


@registry_app.command("retire-worker")
def retire_worker(client_id: str = typer.Option(..., help="the MQTT client id of the registry worker that is gone"),
                  idle_s: float = typer.Option(2.0, help="done once nothing has arrived for this long")) -> None:
    """Retire a registry worker that died: take over its MQTT session (its client id), store what the broker kept
    for it, and end the session, so its share of the shared subscription goes to the other workers. Settings
    from EDGEJOULE_REGISTRY_* as for the app factory (database, broker URL and password)."""
    import asyncio
    import time

    from edgejoule.errors import EdgejouleError
    from edgejoule.registry.app import create_app
    from edgejoule.registry.settings import RegistrySettings

    app = create_app(RegistrySettings(mqtt_client_id=client_id, mqtt_retire_on_stop=True))

    async def drain() -> None:
        async with app.router.lifespan_context(app):  # the app's own start and stop: the stop retires the session
            ingest = app.state.ingest
            if ingest is None or not await asyncio.to_thread(ingest.subscribed.wait, 30):
                raise EdgejouleError(f"could not subscribe to the broker at {app.state.settings.broker_url}")
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < idle_s:
                if not ingest.inbox.empty():
                    quiet_since = time.monotonic()
                await asyncio.sleep(0.1)

    asyncio.run(drain())
    stored = app.state.metrics.get_sample_value("edgejoule_telemetry_ingested_total", {"via": "mqtt"}) or 0
    typer.echo(f"retired worker '{client_id}': stored {stored:.0f} telemetry windows it held; its session is ended")


@registry_app.command()
def migrate(database_url: str = typer.Option(..., envvar="EDGEJOULE_REGISTRY_DATABASE_URL")) -> None:
    """Bring a database to the newest schema (what every start of the registry does too, one process at a time)."""
    from edgejoule.registry.migrate import upgrade

    before, after = upgrade(database_url)
    done = f"migrated from {before or 'an empty database'}" if before != after else "nothing to do"
    typer.echo(f"database is at the newest schema, {after} ({done})")


def _call(method: str, registry: str, token: str, path: str, answer: Any, **kwargs: Any) -> Any:
    """The registry's answer to one request, read as ``answer`` (a type of ``edgejoule.registry.schemas``)."""
    from edgejoule.schemas.api import API_PREFIX

    response = _send(method, f"{registry.rstrip('/')}{API_PREFIX}{path}", registry, token, **kwargs)
    return None if answer is None else _read(response, answer, f"{method} {path}")  # None: a 204, nothing to read


def _listed(registry: str, token: str, path: str, item: Any, params: dict[str, str] | None = None) -> list[Any]:
    """Every row of a paged list answer: its pages one after the other, following each ``Link: rel="next"``."""
    from edgejoule.schemas.api import API_PREFIX

    rows: list[Any] = []
    url: str | None = f"{registry.rstrip('/')}{API_PREFIX}{path}"
    while url is not None:
        response = _send("GET", url, registry, token, params=params)
        rows += _read(response, list[item], f"GET {path}")
        following = response.links.get("next", {}).get("url")
        url, params = (str(response.url.join(following)) if following else None), None  # the link carries them
    return rows


def _send(method: str, url: str, registry: str, token: str, **kwargs: Any) -> httpx.Response:
    """One request; an error answer becomes one line: its status and the problem's ``detail`` (RFC 9457)."""
    import httpx

    from edgejoule.errors import EdgejouleError
    from edgejoule.schemas.http import problem_detail

    try:
        response = httpx.request(method, url, timeout=30, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        raise EdgejouleError(f"cannot reach the registry at {registry}: {exc}") from None
    if response.status_code >= 400:
        detail = problem_detail(response.headers.get("content-type", ""), response.content)
        raise EdgejouleError(f"registry answered {response.status_code}: {detail}")
    return response


def _read(response: httpx.Response, answer: Any, request: str) -> Any:
    from pydantic import TypeAdapter, ValidationError

    from edgejoule.errors import EdgejouleError, first_problem

    try:
        return TypeAdapter(answer).validate_json(response.content)
    except ValidationError as exc:
        raise EdgejouleError(f"the registry's answer to {request} is not what this client reads "
                             f"({first_problem(exc)}): are the registry and this edgejoule the same version?") from None


@agents_app.command("add")
def add_agent(agent_id: str = typer.Option(..., "--agent-id"), site: str = typer.Option(...),
              registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Register an agent and print its credential (shown once)."""
    from edgejoule.cli.output import print_json
    from edgejoule.schemas.api import AgentRegistered, AgentRegistration

    result = _call("POST", registry, token, "/agents", AgentRegistered,
                   json=AgentRegistration(agent_id=agent_id, site=site).model_dump(mode="json"))
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        typer.echo(f"agent {result.agent_id} at {result.site}: EDGE_AGENT_TOKEN={result.token}")


@agents_app.command("list")
def list_agents(site: str = typer.Option(None), registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
                as_json: bool = typer.Option(False, "--json")) -> None:
    """The registered agents: site, state, the model each serves, last seen."""
    from rich.table import Table

    from edgejoule.cli.output import console, print_json
    from edgejoule.registry.schemas import AgentSummary

    agents = _listed(registry, token, "/agents", AgentSummary, {"site": site} if site else None)
    if as_json:
        print_json([a.model_dump(mode="json") for a in agents])
        return
    table = Table(title="agents")
    for col in ("agent", "site", "state", "model", "last seen"):
        table.add_column(col, overflow="fold")
    for a in agents:
        table.add_row(a.agent_id, a.site, a.state, a.current_model_id or "classical fallback",
                      a.last_seen.isoformat(timespec="seconds") if a.last_seen else "never")
    console.print(table)


@agents_app.command("rotate")
def rotate_agent_token(agent_id: str = typer.Argument(...), registry: str = REGISTRY_OPTION,
                       token: str = TOKEN_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Replace an agent's token (lost or stolen): the new one is printed once, the old one is refused at once."""
    from edgejoule.cli.output import print_json
    from edgejoule.schemas.api import AgentRegistered

    result = _call("POST", registry, token, f"/agents/{agent_id}/token", AgentRegistered)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        typer.echo(f"agent {result.agent_id} at {result.site}: EDGE_AGENT_TOKEN={result.token} (the old token is revoked)")


@agents_app.command("revoke")
def revoke_agent(agent_id: str = typer.Argument(...), registry: str = REGISTRY_OPTION,
                 token: str = TOKEN_OPTION) -> None:
    """Revoke an agent: its token and broker login stop working now; its telemetry stays in the fleet's history."""
    _call("DELETE", registry, token, f"/agents/{agent_id}", None)
    typer.echo(f"agent {agent_id} revoked")


def models(site: str = typer.Option(None), registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """The model packages in the registry."""
    from rich.table import Table

    from edgejoule.cli.output import console, print_json
    from edgejoule.registry.schemas import ModelSummary

    listed = _listed(registry, token, "/models", ModelSummary, {"site": site} if site else None)
    if as_json:
        print_json([m.model_dump(mode="json") for m in listed])
        return
    table = Table(title="models")
    for col in ("id", "site", "task", "version", "alias", "estimated uJ", "sum rate"):
        table.add_column(col, overflow="fold")
    for m in listed:
        table.add_row(m.id, m.site, m.task, str(m.version), m.alias or "", f"{m.estimated_energy_uj:.4g}",
                      _number(m.metrics.get("sum_rate"), ".3f"))
    console.print(table)


def unpublish(model_id: str = typer.Argument(..., help="the package to delete from the registry"),
              registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Delete a model package from the registry (refused while an agent is assigned it, an alias names it or a
    rollout compares it). The fleet's history keeps naming it."""
    from edgejoule.cli.output import print_json
    from edgejoule.registry.schemas import DeletedModel

    deleted = _call("DELETE", registry, token, f"/models/{model_id}", DeletedModel)
    if as_json:
        print_json(deleted.model_dump(mode="json"))
        return
    cleared = f"; no rollback to it any more for {', '.join(deleted.rollback_cleared)}" if deleted.rollback_cleared else ""
    typer.echo(f"deleted {deleted.id}{cleared}")


def deploy(model_id: str = typer.Argument(None, help="the package to deploy (or --method)"),
           site: str = typer.Option(...),
           method: str = typer.Option(None, help="deploy a classical method instead: zf, rzf, rzf-equal, mrt, wmmse"),
           option: list[str] = typer.Option([], "--option", help="the method's option as KEY=VALUE, e.g. tol=0.01 "
                                            "(repeat)"),
           fraction: float = typer.Option(1.0, min=0.0, max=1.0, help="share of the site's agents first"),
           agents: str = typer.Option(None, help="comma-separated agent ids instead of a fraction"),
           registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Deploy a model package, or a classical method (--method), to a site's agents (staged with --fraction). The
    agents serve a method under the model id method:NAME, measured and reported like a package."""
    from edgejoule.cli.output import print_json
    from edgejoule.registry.schemas import DeploymentRequest, DeploymentResult

    target = _deploy_target(model_id, method, option)
    chosen = [a.strip() for a in agents.split(",") if a.strip()] if agents else None
    body = DeploymentRequest(site=site, model_id=target, fraction=fraction, agents=chosen)
    result = _call("POST", registry, token, "/deployments", DeploymentResult, json=body.model_dump(mode="json"))
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        typer.echo(f"deployment {result.deployment_id}: {result.model_id} -> {', '.join(result.agents) or 'no agents'}")


def _deploy_target(model_id: str | None, method: str | None, options: list[str]) -> str:
    """A package id, or the target id of ``method`` with its ``KEY=VALUE`` options (the registry checks both)."""
    from edgejoule.errors import EdgejouleError
    from edgejoule.schemas.targets import parse_target

    if (model_id is None) == (method is None):
        raise EdgejouleError("name a package or give --method, not both")
    if method is None:
        if options:
            raise EdgejouleError("--option goes with --method")
        return model_id  # type: ignore[return-value]
    if any("=" not in item for item in options):
        raise EdgejouleError("--option takes KEY=VALUE, e.g. --option tol=0.01")
    spelled = f"method:{method}" + (f"({','.join(options)})" if options else "")
    try:
        return parse_target(spelled).id  # type: ignore[union-attr]
    except ValueError as exc:
        raise EdgejouleError(str(exc)) from None


def fleet(group_by: str = typer.Option("agent", help="site, model or agent"), site: str = typer.Option(None),
          registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Fleet status: agents, and energy per inference (the fleet's meters vs the model's estimate) and quality
    per group. A fleet figure from a meter that estimates (no sensor: cpu_time) is marked "est."."""
    from rich.table import Table

    from edgejoule.cli.output import console, print_json
    from edgejoule.registry.schemas import AgentSummary, FleetRow

    params = {"group_by": group_by} | ({"site": site} if site else {})
    rows = _listed(registry, token, "/fleet", FleetRow, params)
    agents = _listed(registry, token, "/agents", AgentSummary, {"site": site} if site else None)
    if as_json:
        print_json({"groups": rows, "agents": [a.model_dump(mode="json") for a in agents]})  # rows: plain dicts
        return
    t = Table(title="agents")
    for col in ("agent", "site", "state", "model", "runtime"):
        t.add_column(col)
    for a in agents:
        t.add_row(a.agent_id, a.site, a.state, a.current_model_id or "-", a.runtime)
    console.print(t)
    t = Table(title=f"energy per inference by {group_by}")
    for col in ("site", "model", "agent", "inferences", "fleet uJ", "dynamic uJ", "model est. uJ", "meter",
                "p95 ms", "sum rate"):
        # ids are what a reader copies into the next command: wrapped, never cut
        t.add_column(col, justify="left" if col in ("site", "model", "agent") else "right", overflow="fold")
    for r in rows:
        model = r.get("model_id", "") if "model_id" not in r or r["model_id"] else "classical fallback"
        t.add_row(r["site"], model, r.get("agent_id", ""), str(r["inferences"]),
                  _number(r["energy_total_uj"], ".4g") + _estimated(r["meters"]),
                  _number(r["energy_dynamic_uj"], ".4g") + _estimated(r["meters"]),
                  _number(r["estimated_energy_uj"], ".4g"), ", ".join(r["meters"]), _number(r["latency_ms_p95"], ".3f"),
                  _number(r["quality"].get("sum_rate"), ".3f"))
    console.print(t)


def compare(site: str = typer.Option(..., help="the site whose models and methods to compare"),
            registry: str = REGISTRY_OPTION, token: str = TOKEN_OPTION,
            as_json: bool = typer.Option(False, "--json")) -> None:
    """What the site's agents measured for each model and classical method side by side, and the verdict in words:
    does the DNN beat the classical methods served on the same site, and at what energy (implemented counting)."""
    from rich.table import Table

    from edgejoule.cli.output import console, print_json
    from edgejoule.registry.schemas import FleetRow
    from edgejoule.registry.verdict import verdict

    rows = _listed(registry, token, "/fleet", FleetRow, {"group_by": "model", "site": site})
    found = verdict(site, rows)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    t = Table(title=f"{site}: what its agents served, best sum rate first")
    for col in ("model or method", "inferences", "sum rate", "% of WMMSE", "est. uJ (implemented)", "metered uJ",
                "p95 ms"):
        t.add_column(col, justify="left" if col == "model or method" else "right", overflow="fold")
    for s in found.served:
        t.add_row(s.name, str(s.inferences), f"{s.sum_rate:.3f}", _number(s.percent_of_wmmse, ".1f"),
                  _number(s.estimated_uj, ".4g"), _number(s.measured_uj, ".4g") + (" est." if s.measured_is_estimate else ""),
                  _number(s.latency_ms_p95, ".3f"))
    console.print(t)
    typer.echo(found.sentence)


def _estimated(meters: list[str]) -> str:
    """The mark for a group one of whose meters only estimates (no sensor): its figure is not a measurement."""
    return " est." if any(m.endswith("(estimated)") for m in meters) else ""


def _number(value: float | None, spec: str) -> str:
    """A table cell; "-" where the registry has no value (a group without inferences, a metric not reported)."""
    return "-" if value is None else format(value, spec)


@hookimpl
def register_commands(cli) -> None:
    cli.add_typer(registry_app, name="registry")
    cli.add_typer(agents_app, name="agents")
    cli.command("models")(models)
    cli.command("unpublish")(unpublish)
    cli.command("deploy")(deploy)
    cli.command("fleet")(fleet)
    cli.command("compare")(compare)
