"""What the registry does, independent of how it was asked (HTTP or MQTT)."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, delete, func, select
from sqlalchemy.orm import Session

from edgejoule.baselines import checked_method
from edgejoule.errors import EdgejouleError
from edgejoule.registry.auth import new_token, token_hash
from edgejoule.registry.db import (
    DEAD_LETTER_BYTES,
    DEAD_LETTERS_KEPT,
    ROLLUP_LEVELS,
    AgentRow,
    AliasRow,
    AssignmentRow,
    DeadLetterRow,
    DeploymentRow,
    EventRow,
    ModelRow,
    RolloutRow,
    TelemetryRow,
    TelemetrySeriesRow,
    utcnow,
)
from edgejoule.registry.schemas import utc
from edgejoule.schemas.api import API_PREFIX, AgentRegistration, Assignment, LoadEvent
from edgejoule.schemas.manifest import ModelManifest
from edgejoule.schemas.messages import Heartbeat, Telemetry
from edgejoule.schemas.targets import parse_target

FAILED_OUTCOMES = {"load_failed", "selftest_failed"}


class Conflict(Exception):
    """The request contradicts what is stored (HTTP 409)."""


class NotFound(Exception):
    """HTTP 404."""


class Invalid(Exception):
    """The request names something that cannot be (HTTP 422): an unknown method, options it does not take."""


def get_model(session: Session, model_id: str) -> ModelRow:
    row = session.get(ModelRow, model_id)
    if row is None:
        raise NotFound(f"unknown model '{model_id}'")
    return row


def add_model(session: Session, manifest: ModelManifest) -> ModelRow:
    if session.get(ModelRow, manifest.id) is not None:
        raise Conflict(f"model '{manifest.id}' exists already; model packages are immutable, give a new id")
    latest = session.scalar(select(func.max(ModelRow.version)).where(ModelRow.site == manifest.site,
                                                                     ModelRow.task == manifest.task))
    row = ModelRow(id=manifest.id, site=manifest.site, task=manifest.task, family=manifest.family,
                   version=(latest or 0) + 1, sha256=manifest.sha256, size_bytes=manifest.size_bytes,
                   estimated_energy_uj=manifest.energy.total_uj, training_energy_j=manifest.training_energy_j,
                   manifest=manifest.model_dump(mode="json", by_alias=True))
    session.add(row)
    return row


def delete_model(session: Session, model_id: str) -> tuple[ModelRow, list[str]]:
    """Forget a package: refused (Conflict, naming what holds it) while an agent is assigned it, an alias names it
    or a running rollout compares it; where it is an agent's previous model, that rollback target is cleared (a
    rollback could not install it any more). Returns the row (its file may be shared: see ``unused_sha256``) and the
    agents whose rollback target was cleared. Deployments and telemetry keep naming it: they are history."""
    model = get_model(session, model_id)
    serving = sorted(session.scalars(select(AssignmentRow.agent_id).where(AssignmentRow.model_id == model_id)))
    aliases = sorted(session.scalars(select(AliasRow.name).where(AliasRow.model_id == model_id)))
    rollouts = sorted(session.scalars(select(RolloutRow.id).where(
        RolloutRow.active_site.is_not(None), (RolloutRow.candidate == model_id) | (RolloutRow.incumbent == model_id))))
    held = [f"assigned to {', '.join(serving)}"] if serving else []
    held += [f"aliased as {', '.join(aliases)}"] if aliases else []
    held += [f"compared by rollout {', '.join(map(str, rollouts))}"] if rollouts else []
    if held:
        raise Conflict(f"model '{model_id}' is {'; '.join(held)}: deploy another model (or remove the alias, end the "
                       f"rollout) first")
    previous = list(session.scalars(select(AssignmentRow).where(AssignmentRow.previous_model_id == model_id)))
    for assignment in previous:
        assignment.previous_model_id = None
    session.delete(model)
    return model, sorted(a.agent_id for a in previous)


def unused_sha256(session: Session, sha256: str) -> bool:
    """Whether no stored model names this file any more (the artifact store is content-addressed: two packages
    with the same bytes share one file)."""
    return session.scalar(select(func.count()).select_from(ModelRow).where(ModelRow.sha256 == sha256)) == 0


def register_agent(session: Session, reg: AgentRegistration) -> tuple[AgentRow, str]:
    if session.get(AgentRow, reg.agent_id) is not None:
        raise Conflict(f"agent '{reg.agent_id}' is registered already")
    token = new_token()
    row = AgentRow(id=reg.agent_id, site=reg.site, token_hash=token_hash(token), hardware=reg.hardware, plugins=[])
    session.add(row)
    return row, token


def rotate_token(session: Session, agent_id: str) -> tuple[AgentRow, str]:
    """A new credential for ``agent_id`` (shown once, like the first): the old one stops working over HTTP now."""
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFound(f"unknown agent '{agent_id}'")
    token = new_token()
    agent.token_hash = token_hash(token)
    return agent, token


def revoke_agent(session: Session, agent_id: str) -> None:
    """Forget ``agent_id``: its credential, its assignment. What it reported stays in the fleet's history."""
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFound(f"unknown agent '{agent_id}'")
    if (assignment := session.get(AssignmentRow, agent_id)) is not None:
        session.delete(assignment)
    session.delete(agent)


def heartbeat(session: Session, beat: Heartbeat) -> None:
    agent = session.get(AgentRow, beat.agent_id)
    if agent is None:
        raise NotFound(f"unknown agent '{beat.agent_id}'")
    agent.hardware, agent.runtime, agent.plugins = beat.hardware, beat.runtime, beat.plugins
    agent.current_model_id, agent.state, agent.last_seen = beat.current_model_id, "online", beat.sent_at


def set_state(session: Session, agent_id: str, state: str, at: datetime) -> None:
    agent = session.get(AgentRow, agent_id)
    if agent is not None:
        agent.state, agent.last_seen = state, at


def check_target(session: Session, site: str, target: str) -> str:
    """``target`` as it is stored: a package trained for ``site``, or a classical method (checked by one run on a
    probe channel) in its canonical spelling. An unknown package is NotFound, one of another site a Conflict, a
    method that cannot be served Invalid."""
    try:
        method = parse_target(target)
        if method is not None:
            checked_method(method)
            return method.id
    except (ValueError, EdgejouleError) as exc:
        raise Invalid(str(exc)) from None
    model = get_model(session, target)
    if model.site != site:
        raise Conflict(f"model '{target}' was trained for site '{model.site}', not '{site}'")
    return target


def deploy(session: Session, site: str, target: str, fraction: float = 1.0, agents: list[str] | None = None) -> tuple[DeploymentRow, list[str]]:
    """Assign ``target`` (a package id or a method, :mod:`edgejoule.schemas.targets`) to a site's agents: the named
    ones, or the first ``fraction`` of them (by id)."""
    target = check_target(session, site, target)
    site_agents = sorted(session.scalars(select(AgentRow.id).where(AgentRow.site == site)))
    if agents is not None:
        unknown = sorted(set(agents) - set(site_agents))
        if unknown:
            raise NotFound(f"agents not registered at site '{site}': {', '.join(unknown)}")
        targets = sorted(agents)
    else:
        targets = site_agents[: math.ceil(fraction * len(site_agents))]
    deployment = DeploymentRow(site=site, model_id=target)
    session.add(deployment)
    session.flush()
    for agent_id in targets:
        current = session.get(AssignmentRow, agent_id)
        if current is None:
            session.add(AssignmentRow(agent_id=agent_id, model_id=target, deployment_id=deployment.id))
        elif current.model_id != target:
            current.previous_model_id, current.model_id = current.model_id, target
            current.deployment_id, current.assigned_at = deployment.id, datetime.now(timezone.utc)
    return deployment, targets


def assignment_of(session: Session, row: AssignmentRow, base_url: str, broker_url: str | None) -> Assignment:
    """What an agent is told to run: a package with its URLs under ``base_url`` (empty: relative), or a method;
    and the broker to report to."""
    common = dict(agent_id=row.agent_id, model_id=row.model_id, deployment_id=row.deployment_id,
                  assigned_at=row.assigned_at, broker_url=broker_url)
    method = parse_target(row.model_id)
    if method is not None:
        return Assignment(**common, method=method)
    model = get_model(session, row.model_id)
    return Assignment(**common, version=model.version, sha256=model.sha256, size_bytes=model.size_bytes,
                      manifest_url=f"{base_url}{API_PREFIX}/models/{model.id}/manifest",
                      package_url=f"{base_url}{API_PREFIX}/models/{model.id}/package")


def rollback(session: Session, agent_id: str) -> AssignmentRow:
    assignment = session.get(AssignmentRow, agent_id)
    if assignment is None or assignment.previous_model_id is None:
        raise Conflict(f"agent '{agent_id}' has no previous model to roll back to")
    assignment.model_id, assignment.previous_model_id = assignment.previous_model_id, assignment.model_id
    assignment.assigned_at = datetime.now(timezone.utc)
    return assignment


def record_event(session: Session, event: LoadEvent) -> bool:
    """Store a load event; a failed load rolls that agent back automatically. Returns whether it did."""
    session.add(EventRow(agent_id=event.agent_id, model_id=event.model_id, outcome=event.outcome,
                         detail=event.detail[:2000], at=event.at or datetime.now(timezone.utc)))
    assignment = session.get(AssignmentRow, event.agent_id)
    if event.outcome in FAILED_OUTCOMES and assignment is not None and assignment.model_id == event.model_id \
            and assignment.previous_model_id is not None:
        rollback(session, event.agent_id)
        return True
    return False


# column widths of the tables: what the schemas allow but a column cannot hold is refused up front (ValueError),
# so one bad message cannot stall an ingest batch or turn into a server error
LIMITS = {"message_id": 64, "agent_id": 64, "site": 64, "model_id": 128, "fallback": 32, "meter": 32,
          "runtime": 128, "current_model_id": 128, "task": 32, "family": 64}
# per-inference energies (uJ), latencies (ms), powers (W) and quality values beyond this are not measurements,
# and their products with the inference counts would overflow PostgreSQL's float8 sums
FLOAT_LIMIT = 1e15
QUALITY_METRICS_LIMIT = 16
METRIC_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
INT_LIMIT = 2**31 - 1  # PostgreSQL INTEGER


def check_fits(message):
    """Return ``message`` if its strings fit the tables (and carry no NUL, which PostgreSQL refuses)."""
    fields = vars(message)  # pydantic keeps the fields here; getattr on absent ones is slow on the ingest path
    for field, limit in LIMITS.items():
        value = fields.get(field)
        if isinstance(value, str) and (len(value) > limit or "\x00" in value):
            raise ValueError(f"{field} must be at most {limit} characters, without NUL")
    if fields.get("inferences", 0) > INT_LIMIT:
        raise ValueError(f"inferences must be at most {INT_LIMIT} per window")
    quality = fields.get("quality") or {}
    if fields.get("model_id") == "":
        raise ValueError("model_id must not be empty (send null while serving the classical fallback)")
    floats = [v for v in fields.values() if isinstance(v, float)]
    if not all(abs(v) <= FLOAT_LIMIT for v in [*floats, *quality.values()]):  # NaN too: it would poison every sum
        raise ValueError(f"measurements must be numbers within +-{FLOAT_LIMIT:g}")
    if len(quality) > QUALITY_METRICS_LIMIT or not all(METRIC_NAME.fullmatch(name) for name in quality):
        raise ValueError(f"quality holds at most {QUALITY_METRICS_LIMIT} metrics named like 'sum_rate' "
                         f"(letters, digits, '_', '.', '-'; at most 64)")
    if any(len(name) > LIMITS["model_id"] or "\x00" in name for name in fields.get("plugins") or []):
        raise ValueError("plugin names must be at most 128 characters, without NUL")
    return message


def foreign_telemetry(session: Session, messages: list[Telemetry]) -> dict[str, str]:
    """The windows their senders may not report, by message_id, each with why. A window counts only for its
    agent's registered site and for a model the agent was assigned (current or previous; none while it serves a
    classical fallback): anything else would let one agent write another site's fleet view, eCAL and Pareto front.
    One query for the whole batch."""
    rows = session.execute(select(AgentRow.id, AgentRow.site, AssignmentRow.model_id, AssignmentRow.previous_model_id)
                           .outerjoin(AssignmentRow, AssignmentRow.agent_id == AgentRow.id)
                           .where(AgentRow.id.in_({m.agent_id for m in messages})))
    senders = {agent: (site, {current, previous}) for agent, site, current, previous in rows}
    problems = {}
    for m in messages:
        site, models = senders.get(m.agent_id, (None, set()))
        if site is None:
            problems[m.message_id] = f"agent '{m.agent_id}' is not registered"
        elif m.site != site:
            problems[m.message_id] = f"agent '{m.agent_id}' is registered at site '{site}', not '{m.site}'"
        elif m.model_id is not None and m.model_id not in models:
            problems[m.message_id] = f"model '{m.model_id}' is not assigned to agent '{m.agent_id}'"
    return problems


def ingest_telemetry_batch(session: Session, messages: list[Telemetry]) -> int:
    """Store telemetry messages once each, and add them to the roll-up in the same transaction: a replayed
    or redelivered message_id is ignored by both. Returns how many were new. On SQLite, raises IntegrityError when
    another registry process stored one of them meanwhile; the caller retries (the whole transaction, roll-up
    included, was rolled back), and the retry skips what is stored. On PostgreSQL the insert skips it itself."""
    messages = list({m.message_id: m for m in messages}.values())
    if not messages:
        return 0
    series = _series_ids(session, {_stream(m) for m in messages})
    fresh = _store_new(session, messages, series)
    if fresh:
        _roll_up(session, fresh, series)
    return len(fresh)


Stream = tuple[str, str, str, str, str]


def _stream(m: Telemetry) -> Stream:
    """The key of ``telemetry_series`` (``TelemetrySeriesRow``), in its unique constraint's order."""
    return m.agent_id, m.model_id or "", m.site, m.meter, m.meter_kind


def _series_ids(session: Session, streams: set[Stream]) -> dict[Stream, int]:
    """The id of each stream, adding those not stored yet (a new agent, model or meter)."""
    S = TelemetrySeriesRow
    key = (S.agent_id, S.model_id, S.site, S.meter, S.meter_kind)

    def stored() -> dict[Stream, int]:
        agents = sorted({stream[0] for stream in streams})
        return {tuple(row[1:]): row[0] for row in session.execute(select(S.id, *key).where(S.agent_id.in_(agents)))}

    ids = stored()
    missing = sorted(streams - ids.keys())  # sorted: two PostgreSQL workers adding the same streams wait, not deadlock
    if missing:
        names = [column.key for column in key]
        if _postgres(session):
            _pg_insert(session, S.__table__, names, missing, conflict=tuple(names))
        else:
            _sqlite_insert(session, S.__table__, names, missing, then="ON CONFLICT DO NOTHING")
        ids = stored()
    return ids


def _store_new(session: Session, messages: list[Telemetry], series: dict[Stream, int]) -> list[Telemetry]:
    """Insert the messages whose message_id is not stored yet (ids unique in ``messages``); return those."""
    table = TelemetryRow.__table__

    def row(m: Telemetry) -> dict:
        return _telemetry_row(m) | {"series_id": series[_stream(m)]}

    if _postgres(session):  # one statement: ON CONFLICT skips the stored ids and RETURNING names the new ones
        # in id order: two workers inserting the same ids wait for each other in one direction only (no deadlock)
        rows = sorted((row(m) for m in messages), key=lambda r: r["message_id"])
        new = set(_pg_insert(session, table, list(rows[0]), [tuple(r.values()) for r in rows],
                             conflict=("message_id",), returning="message_id"))
        return [m for m in messages if m.message_id in new]
    known = set(session.scalars(select(TelemetryRow.message_id).where(
        TelemetryRow.message_id.in_([m.message_id for m in messages]))))
    fresh = [m for m in messages if m.message_id not in known]
    if fresh:
        rows = [row(m) for m in fresh]
        _sqlite_insert(session, table, list(rows[0]), [tuple(r.values()) for r in rows])
    return fresh


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _pg_insert(session: Session, table, columns: list[str], rows: list[tuple], conflict: tuple[str, ...] = (),
               add: tuple[str, ...] = (), returning: str | None = None) -> list:
    """A batch in one PostgreSQL statement: ``INSERT ... SELECT * FROM unnest(one array per column)``, which
    costs one plan and one round trip instead of one per row. With ``conflict``: rows whose key exists are
    skipped, or, with ``add``, those columns are added to the stored row (the roll-up's sums)."""
    dialect = session.get_bind().dialect
    arrays = ", ".join(f"%b::{table.c[c].type.compile(dialect)}[]" for c in columns)  # %b: binary, no quoting
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO " + (
            "UPDATE SET " + ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in add) if add else "NOTHING")
    if returning:
        sql += f" RETURNING {returning}"
    params = tuple([json.dumps(v) for v in values] if isinstance(table.c[c].type, JSON) else list(values)
                   for c, values in zip(columns, zip(*rows)))
    result = session.connection().exec_driver_sql(sql, params)
    return list(result.scalars()) if returning else []


def _telemetry_row(m: Telemetry) -> dict:
    return dict(message_id=m.message_id, agent_id=m.agent_id, site=m.site, model_id=m.model_id, fallback=m.fallback,
                window_start=utc(m.window_start), window_end=utc(m.window_end), inferences=m.inferences, meter=m.meter,
                meter_kind=m.meter_kind, energy_total_uj=m.energy_total_uj, energy_dynamic_uj=m.energy_dynamic_uj,
                idle_power_w=m.idle_power_w, estimated_energy_uj=m.estimated_energy_uj,
                latency_ms_p50=m.latency_ms_p50, latency_ms_p95=m.latency_ms_p95, latency_ms_p99=m.latency_ms_p99,
                quality=m.quality)


ROLLUP_SUMS = ("windows", "inferences", "energy_total_uj", "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95",
               "estimated_energy_uj", "estimated_windows")


def _roll_up(session: Session, fresh: list[Telemetry], series: dict[Stream, int]) -> None:
    """Add new windows to every roll-up level: sums per key of the finest level in Python, folded into the keys
    of each coarser level (whose buckets are whole numbers of finer ones), then one upsert per key and level."""
    finest = ROLLUP_LEVELS[-1].seconds
    sums: dict[tuple, list] = {}
    quality: dict[tuple, list] = {}
    for m in fresh:
        key = (int(utc(m.window_end).timestamp() // finest) * finest, series[_stream(m)])
        n = m.inferences
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = [0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0]
        acc[0] += 1
        acc[1] += n
        acc[2] += m.energy_total_uj * n
        acc[3] += m.energy_dynamic_uj * n
        acc[4] += m.latency_ms_p50 * n
        acc[5] += m.latency_ms_p95 * n
        if m.estimated_energy_uj is not None:
            acc[6] += m.estimated_energy_uj
            acc[7] += 1
        for name, value in m.quality.items():
            q = quality.get(qkey := (*key, name))
            if q is None:
                q = quality[qkey] = [0.0, 0]
            q[0] += value * n
            q[1] += n
    for level in ROLLUP_LEVELS:
        start = level.start_column
        coarser = level.seconds != finest
        _add(session, level.sums, (start, "series_id"), ROLLUP_SUMS, _fold(sums, level.seconds) if coarser else sums)
        _add(session, level.quality, (start, "series_id", "metric"), ("weighted_sum", "inferences"),
             _fold(quality, level.seconds) if coarser else quality)


def _fold(sums: dict[tuple, list], seconds: int) -> dict[tuple, list]:
    """Sums keyed by (bucket start, ...) moved to the buckets of ``seconds``, a multiple of theirs."""
    out: dict[tuple, list] = {}
    for key, values in sums.items():
        coarse = (key[0] // seconds * seconds, *key[1:])
        acc = out.get(coarse)
        out[coarse] = list(values) if acc is None else [a + b for a, b in zip(acc, values)]
    return out


def _sqlite_insert(session: Session, table, columns: list[str], rows: list[tuple], then: str = "") -> None:
    """``INSERT INTO table (columns) VALUES (?, ...) then`` as the driver's own executemany over tuples:
    SQLAlchemy's per-row parameter processing cost about as much as SQLite's own work (half of the writer's time
    for the raw rows). Datetimes and JSON, which the driver would store in other forms, pass through their
    column's own SQLite bind processor, so they are stored exactly as SQLAlchemy stores them (ints, floats and
    strings go as they are)."""
    dialect = session.get_bind().dialect
    processors = [(i, table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) for i, c in enumerate(columns)
                  if isinstance(table.c[c].type, (DateTime, JSON))]
    if processors:
        converted = []
        for row in rows:
            row = list(row)
            for i, process in processors:
                row[i] = process(row[i])
            converted.append(tuple(row))
        rows = converted
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) {then}"
    session.connection().exec_driver_sql(sql, rows)


def _add(session: Session, row: type, keys: tuple[str, ...], columns: tuple[str, ...], sums: dict[tuple, list]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET column = column + excluded.column, for every key at once."""
    if not sums:
        return
    table = row.__table__
    # sorted keys: two registry workers upserting the same keys lock them in the same order (no deadlock)
    rows = [(*key, *values) for key, values in sorted(sums.items())]
    if _postgres(session):
        _pg_insert(session, table, [*keys, *columns], rows, conflict=keys, add=columns)
        return
    _sqlite_insert(session, table, [*keys, *columns], rows, then=f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                   + ", ".join(f"{c} = {c} + excluded.{c}" for c in columns))


def dead_letter(session: Session, topic: str, reason: str, payload: bytes) -> None:
    """Keep a refused MQTT message for the admin (``GET /dead-letters``); the oldest go beyond
    :data:`DEAD_LETTERS_KEPT`. The payload is stored as text that any database takes: cut, and its invalid UTF-8
    (a lone surrogate's bytes too) escaped."""
    text = payload[:DEAD_LETTER_BYTES].decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    session.add(DeadLetterRow(topic=topic[:256], reason=reason[:512], payload=text, received_at=utcnow()))
    session.flush()
    newest = session.scalar(select(func.max(DeadLetterRow.id)))
    session.execute(delete(DeadLetterRow).where(DeadLetterRow.id <= newest - DEAD_LETTERS_KEPT))

