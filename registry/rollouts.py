"""Gated rollouts: a candidate (package or classical method) goes to a site's agents in stages, and each stage's
gate (``edgejoule.registry.rollout_gate``) compares what the canaries measure with what the incumbent agents
measure over the same time. A passed gate enters the next stage, a failed one (or a load failure) puts every
canary back on the incumbent, an undecided one waits until the stage's timeout and then does what the rollout
says. Everything is in the database (``RolloutRow``, ``RolloutEventRow``), read again at every evaluation, so a
restarted registry continues where it was; the registry's lifespan runs :func:`evaluate_every`.

The canaries are the site's agents in an order fixed at the start (by a hash of site, candidate and agent, so
successive rollouts do not always try the same agents first) and recorded with the rollout; a stage of fraction f
takes the first ceil(f n) of them, and a stage below 1 always leaves one incumbent agent to compare with."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from edgejoule.registry import service
from edgejoule.registry.db import (
    AgentRow,
    AssignmentRow,
    EventRow,
    RolloutEventRow,
    RolloutRow,
    TelemetryRow,
    TelemetrySeriesRow,
    utcnow,
)
from edgejoule.registry.rollout_gate import GateResult, Windows, judge, parse_policy
from edgejoule.registry.schemas import Rollout, RolloutEvent, RolloutRequest, ServedPeriod, SiteHistory, utc
from edgejoule.registry.service import Conflict, NotFound

log = logging.getLogger("registry.rollouts")
ACTIVE = ("running", "paused")


def start(session: Session, request: RolloutRequest, now: datetime) -> tuple[RolloutRow, list[str]]:
    """A new rollout at its first stage; returns it and the agents whose assignment changed. Conflict (409) while
    another rollout of the site is active, naming it, and when the site's agents do not serve one incumbent."""
    running = session.scalar(select(RolloutRow).where(RolloutRow.active_site == request.site))
    if running is not None:
        raise Conflict(f"site '{request.site}' has rollout {running.id} {running.state} ({running.candidate} against "
                       f"{running.incumbent}, started by {running.started_by}): abort it or wait for its end")
    candidate = service.check_target(session, request.site, request.candidate)
    agents = _site_agents(session, request.site)
    if len(agents) < 2:
        raise Conflict(f"site '{request.site}' has {len(agents)} agents: a gated rollout compares canaries with "
                       f"agents that keep the incumbent, so it needs two; deploy instead")
    serving = {a: m for a, m in session.execute(select(AssignmentRow.agent_id, AssignmentRow.model_id)
                                                .where(AssignmentRow.agent_id.in_(agents)))}
    incumbents = {serving.get(a) for a in agents}
    if len(incumbents) != 1 or None in incumbents:
        told = ", ".join(f"{a}: {serving.get(a) or 'nothing assigned'}" for a in agents)
        raise Conflict(f"the agents of site '{request.site}' do not serve one incumbent ({told}): deploy one to all "
                       f"of them first")
    incumbent = incumbents.pop()
    if incumbent == candidate:
        raise Conflict(f"'{candidate}' is what site '{request.site}' serves already")
    order = sorted(agents, key=lambda a: hashlib.sha256(f"{request.site}/{candidate}/{a}".encode()).hexdigest())
    row = RolloutRow(site=request.site, active_site=request.site, candidate=candidate, incumbent=incumbent,
                     stages=request.stages, agent_order=order, gate=request.gate, quality_metric=request.quality_metric,
                     min_inferences=request.min_inferences, min_windows=request.min_windows,
                     confidence=request.confidence, timeout_s=request.timeout_s, on_timeout=request.on_timeout,
                     started_by=request.started_by, started_at=now, state="running", reason="", stage=0,
                     stage_started_at=now, deadline=now, looks=0, look_windows=0,
                     events_after=session.scalar(select(func.max(EventRow.id))) or 0)
    session.add(row)
    session.flush()
    _event(session, row, now, "started", f"{candidate} against {incumbent}, started by {request.started_by}")
    return row, _enter_stage(session, row, 0, now)


def canaries(row: RolloutRow, stage: int | None = None) -> list[str]:
    """The agents serving the candidate at ``stage`` (default: the current one)."""
    fraction, n = row.stages[row.stage if stage is None else stage], len(row.agent_order)
    count = n if fraction >= 1 else min(max(math.ceil(fraction * n), 1), n - 1)
    return row.agent_order[:count]


def evaluate(session: Session, row: RolloutRow, now: datetime) -> list[str]:
    """Read the gate of a running rollout's stage and act on it; returns the agents whose assignment changed."""
    if row.state != "running":
        return []
    chosen = set(canaries(row))
    candidate, incumbent = _windows(session, row, chosen)
    result = judge(parse_policy(row.gate), candidate, incumbent, confidence=row.confidence,
                   min_windows=row.min_windows, min_inferences=row.min_inferences, looks=row.looks,
                   last_look_windows=row.look_windows, load_failures=_load_failures(session, row, chosen))
    if result.look != row.looks:
        row.looks, row.look_windows = result.look, min(result.canary.windows, result.incumbent.windows)
    row.readings = result.model_dump(mode="json")
    if result.verdict == "pass":
        _event(session, row, now, "passed", result.reason, result)
        return _enter_stage(session, row, row.stage + 1, now)
    if result.verdict == "fail":
        _event(session, row, now, "failed", result.reason, result)
        return _back_to_incumbent(session, row, now, "rolled_back", f"gate failed at stage {row.stage + 1}: "
                                  f"{result.reason}")
    if now < utc(row.deadline):
        return []
    waited = f"undecided after {row.timeout_s:g} s ({result.reason})"
    _event(session, row, now, "timed_out", waited, result)
    if row.on_timeout == "promote":
        return _enter_stage(session, row, row.stage + 1, now)
    return _back_to_incumbent(session, row, now, "rolled_back", f"stage {row.stage + 1} timed out: {waited}")


def evaluate_due(sessions: sessionmaker, now: datetime | None = None) -> list[str]:
    """Evaluate every running rollout, each in its own transaction with its row locked (another registry worker
    skips it on PostgreSQL); one that fails is logged and does not stop the others."""
    with sessions() as session:
        ids = list(session.scalars(select(RolloutRow.id).where(RolloutRow.state == "running")))
    changed: list[str] = []
    for rollout_id in ids:
        try:
            with sessions.begin() as session:
                row = session.scalar(select(RolloutRow).where(RolloutRow.id == rollout_id)
                                     .with_for_update(skip_locked=True))
                if row is not None:
                    changed += evaluate(session, row, now or utcnow())
        except Exception:
            log.exception("evaluating rollout %s failed", rollout_id)
    return changed


async def evaluate_every(sessions: sessionmaker, interval_s: float, notify: Callable[[list[str]], None]) -> None:
    """The registry's background evaluation: every ``interval_s``, each running rollout's gate, and the agents
    whose assignment changed are told (MQTT; they poll too)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            changed = await asyncio.to_thread(evaluate_due, sessions)
            if changed:
                await asyncio.to_thread(notify, changed)
        except Exception:  # e.g. the database away for a moment: the next round tries again, the loop lives on
            log.exception("evaluating the rollouts failed")


def get(session: Session, rollout_id: int) -> RolloutRow:
    row = session.get(RolloutRow, rollout_id)
    if row is None:
        raise NotFound(f"unknown rollout {rollout_id}")
    return row


def pause(session: Session, rollout_id: int, reason: str, now: datetime) -> RolloutRow:
    """Stop deciding; the stage's timeout stops too (the canaries keep the candidate meanwhile)."""
    row = _in_state(get(session, rollout_id), "running", "paused")
    row.state, row.paused_at = "paused", now
    _event(session, row, now, "paused", reason)
    return row


def resume(session: Session, rollout_id: int, reason: str, now: datetime) -> RolloutRow:
    row = _in_state(get(session, rollout_id), "paused", "resumed")
    row.deadline = utc(row.deadline) + (now - utc(row.paused_at or now))
    row.state, row.paused_at = "running", None
    _event(session, row, now, "resumed", reason)
    return row


def abort(session: Session, rollout_id: int, reason: str, now: datetime) -> tuple[RolloutRow, list[str]]:
    """End an active rollout by hand: its canaries go back to the incumbent."""
    row = get(session, rollout_id)
    if row.state not in ACTIVE:
        raise Conflict(f"rollout {rollout_id} has ended ({row.state}): nothing to abort")
    return row, _back_to_incumbent(session, row, now, "aborted", reason or "aborted by the admin")


def revert(session: Session, site: str, reason: str, now: datetime) -> tuple[RolloutRow, list[str]]:
    """One step back: the site's last promoted rollout undone, every agent on its incumbent again."""
    running = session.scalar(select(RolloutRow).where(RolloutRow.active_site == site))
    if running is not None:
        raise Conflict(f"site '{site}' has rollout {running.id} {running.state}: abort it instead")
    last = session.scalar(select(RolloutRow).where(RolloutRow.site == site).order_by(RolloutRow.id.desc()).limit(1))
    if last is None or last.state != "promoted":
        said = f"its last rollout ({last.id}) ended {last.state}" if last else "it has no rollout"
        raise Conflict(f"site '{site}' has nothing to roll back: {said}")
    _, agents = service.deploy(session, site, last.incumbent, agents=_site_agents(session, site))
    last.state, last.reason = "reverted", reason or f"rolled back to {last.incumbent} by the admin"
    _event(session, last, now, "reverted", last.reason)
    return last, agents


def describe(session: Session, row: RolloutRow) -> Rollout:
    events = session.scalars(select(RolloutEventRow).where(RolloutEventRow.rollout_id == row.id)
                             .order_by(RolloutEventRow.id))
    return Rollout(id=row.id, site=row.site, candidate=row.candidate, incumbent=row.incumbent, state=row.state,
                   reason=row.reason, stage=row.stage, stages=row.stages, canaries=canaries(row),
                   agent_order=row.agent_order, gate=row.gate, quality_metric=row.quality_metric,
                   min_inferences=row.min_inferences, min_windows=row.min_windows, confidence=row.confidence,
                   timeout_s=row.timeout_s, on_timeout=row.on_timeout, started_by=row.started_by,
                   started_at=row.started_at, stage_started_at=row.stage_started_at, deadline=row.deadline,
                   ended_at=row.ended_at, readings=row.readings,
                   events=[RolloutEvent.model_validate(e) for e in events])


def listed(session: Session, site: str | None, limit: int, before: int | None = None) -> list[Rollout]:
    """Up to ``limit`` rollouts, newest first; with ``before``, those older than that id (the next page)."""
    query = select(RolloutRow).order_by(RolloutRow.id.desc()).limit(limit)
    if site is not None:
        query = query.where(RolloutRow.site == site)
    if before is not None:
        query = query.where(RolloutRow.id < before)
    return [describe(session, row) for row in session.scalars(query)]


def history(session: Session, site: str) -> SiteHistory:
    """What served the site when (as its rollouts changed it) and every rollout, newest first."""
    rollouts = listed(session, site, limit=1000)
    served: list[ServedPeriod] = []
    for rollout in reversed(rollouts):
        if not served:
            served.append(ServedPeriod(target=rollout.incumbent, since=None, until=None, how="before any rollout"))
        for event in rollout.events:
            target = {"promoted": rollout.candidate, "reverted": rollout.incumbent}.get(event.kind)
            if target is not None:
                served[-1].until = event.at
                served.append(ServedPeriod(target=target, since=event.at, until=None,
                                           how=f"rollout {rollout.id} {event.kind} ({rollout.started_by})"))
    return SiteHistory(site=site, served=list(reversed(served)), rollouts=rollouts)


def _site_agents(session: Session, site: str) -> list[str]:
    return sorted(session.scalars(select(AgentRow.id).where(AgentRow.site == site)))


def _in_state(row: RolloutRow, state: str, to: str) -> RolloutRow:
    if row.state != state:
        raise Conflict(f"rollout {row.id} is {row.state}: only a {state} rollout can be {to}")
    return row


def _enter_stage(session: Session, row: RolloutRow, stage: int, now: datetime) -> list[str]:
    row.stage, row.stage_started_at = stage, now
    row.deadline, row.looks, row.look_windows = now + timedelta(seconds=row.timeout_s), 0, 0
    registered = set(_site_agents(session, row.site))  # an agent revoked since the start is left out
    _, agents = service.deploy(session, row.site, row.candidate,
                               agents=[a for a in canaries(row) if a in registered])
    _event(session, row, now, "stage", f"stage {stage + 1} of {len(row.stages)} ({row.stages[stage]:.0%}): "
                                       f"{', '.join(agents)} serve {row.candidate}")
    if len(canaries(row)) == len(row.agent_order):
        _end(session, row, now, "promoted", f"{row.candidate} serves every agent of site '{row.site}'")
    return agents


def _back_to_incumbent(session: Session, row: RolloutRow, now: datetime, state: str, reason: str) -> list[str]:
    registered = set(_site_agents(session, row.site))
    _, agents = service.deploy(session, row.site, row.incumbent,
                               agents=[a for a in canaries(row) if a in registered])
    _end(session, row, now, state, reason)
    return agents


def _end(session: Session, row: RolloutRow, now: datetime, state: str, reason: str) -> None:
    row.state, row.reason, row.ended_at, row.active_site, row.paused_at = state, reason, now, None, None
    _event(session, row, now, state, reason)


def _event(session: Session, row: RolloutRow, now: datetime, kind: str, reason: str,
           result: GateResult | None = None) -> None:
    session.add(RolloutEventRow(rollout_id=row.id, at=now, stage=row.stage, kind=kind, reason=reason,
                                readings=result.model_dump(mode="json") if result else None))


def _windows(session: Session, row: RolloutRow, chosen: set[str]) -> tuple[Windows, Windows]:
    """The windows since the stage started: the canaries' with the candidate, the others' with the incumbent."""
    S, T = TelemetrySeriesRow, TelemetryRow
    rows = session.execute(
        select(T.agent_id, T.model_id, T.inferences, T.energy_total_uj, T.latency_ms_p95, T.quality, S.meter_kind)
        .join(S, S.id == T.series_id)
        .where(S.site == row.site, S.model_id.in_([row.candidate, row.incumbent]),
               T.window_end > utc(row.stage_started_at)))
    sides: dict[bool, list] = {True: [], False: []}
    for agent, model, *values in rows:
        if (agent in chosen) == (model == row.candidate):
            sides[agent in chosen].append((agent, *values))
    return _side(sides[True], row.quality_metric), _side(sides[False], row.quality_metric)


def _side(rows: list[tuple], quality_metric: str) -> Windows:
    """One side's rows (agent, inferences, energy, latency p95, quality, meter kind) as the gate reads them."""
    return Windows(agents=sorted({r[0] for r in rows}), inferences=[r[1] for r in rows],
                   values={"energy": [r[2] for r in rows], "latency": [r[3] for r in rows],
                           "quality": [float((r[4] or {}).get(quality_metric, math.nan)) for r in rows]},
                   meter_kinds={r[5] for r in rows})


def _load_failures(session: Session, row: RolloutRow, chosen: set[str]) -> list[str]:
    """Failed loads of the candidate on the canaries since the rollout started (by event id: no clock involved)."""
    events = session.scalars(select(EventRow).where(EventRow.id > row.events_after, EventRow.model_id == row.candidate,
                                                    EventRow.agent_id.in_(chosen),
                                                    EventRow.outcome.in_(sorted(service.FAILED_OUTCOMES))))
    return [f"{e.agent_id}: {e.outcome}{' (' + e.detail[:200] + ')' if e.detail else ''}" for e in events]
