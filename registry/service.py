"""What the registry does, independent of how it was asked (HTTP or MQTT)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.schemas.api import AgentRegistration, LoadEvent
from core.schemas.manifest import ModelManifest
from core.schemas.messages import Heartbeat, Telemetry
from registry.auth import new_token, token_hash
from registry.db import AgentRow, AssignmentRow, DeploymentRow, EventRow, ModelRow, TelemetryRow

FAILED_OUTCOMES = {"load_failed", "selftest_failed"}


class Conflict(Exception):
    """The request contradicts what is stored (HTTP 409)."""


class NotFound(Exception):
    """HTTP 404."""


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


def register_agent(session: Session, reg: AgentRegistration) -> tuple[AgentRow, str]:
    if session.get(AgentRow, reg.agent_id) is not None:
        raise Conflict(f"agent '{reg.agent_id}' is registered already")
    token = new_token()
    row = AgentRow(id=reg.agent_id, site=reg.site, token_hash=token_hash(token), hardware=reg.hardware, plugins=[])
    session.add(row)
    return row, token


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


def deploy(session: Session, site: str, model_id: str, fraction: float = 1.0, agents: list[str] | None = None) -> tuple[DeploymentRow, list[str]]:
    """Assign ``model_id`` to a site's agents: the named ones, or the first ``fraction`` of them (by id)."""
    model = session.get(ModelRow, model_id)
    if model is None:
        raise NotFound(f"unknown model '{model_id}'")
    if model.site != site:
        raise Conflict(f"model '{model_id}' was trained for site '{model.site}', not '{site}'")
    site_agents = sorted(session.scalars(select(AgentRow.id).where(AgentRow.site == site)))
    if agents is not None:
        unknown = sorted(set(agents) - set(site_agents))
        if unknown:
            raise NotFound(f"agents not registered at site '{site}': {', '.join(unknown)}")
        targets = sorted(agents)
    else:
        targets = site_agents[: math.ceil(fraction * len(site_agents))]
    deployment = DeploymentRow(site=site, model_id=model_id)
    session.add(deployment)
    session.flush()
    for agent_id in targets:
        current = session.get(AssignmentRow, agent_id)
        if current is None:
            session.add(AssignmentRow(agent_id=agent_id, model_id=model_id, deployment_id=deployment.id))
        elif current.model_id != model_id:
            current.previous_model_id, current.model_id = current.model_id, model_id
            current.deployment_id, current.assigned_at = deployment.id, datetime.now(timezone.utc)
    return deployment, targets


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


def ingest_telemetry(session: Session, message: Telemetry) -> bool:
    """Store one telemetry message once: a replayed or redelivered message_id is ignored. True if new."""
    if session.get(TelemetryRow, message.message_id) is not None:
        return False
    session.add(TelemetryRow(
        message_id=message.message_id, agent_id=message.agent_id, site=message.site, model_id=message.model_id,
        window_end=message.window_end, inferences=message.inferences, meter=message.meter,
        meter_kind=message.meter_kind, energy_total_uj=message.energy_total_uj,
        energy_dynamic_uj=message.energy_dynamic_uj, estimated_energy_uj=message.estimated_energy_uj,
        latency_ms_p50=message.latency_ms_p50, latency_ms_p95=message.latency_ms_p95, quality=message.quality))
    try:
        session.flush()
    except IntegrityError:  # another registry worker stored it first
        session.rollback()
        return False
    return True
