"""Agents: registration (the token is shown once), their state, heartbeats, assignments, load events and
rollbacks. An agent acts only as itself; listing, registering and rolling back need the admin."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from sqlalchemy.exc import IntegrityError

from edgejoule.registry import service
from edgejoule.registry.api.deps import (
    ADMIN,
    SELF_OR_ADMIN,
    IngestDep,
    NotifyDep,
    PasswordsDep,
    SessionsDep,
    SettingsDep,
    fits,
)
from edgejoule.registry.api.paging import PAGED, Cursor, Limit, after, page
from edgejoule.registry.broker_passwords import BrokerPasswords
from edgejoule.registry.db import AgentRow, AssignmentRow
from edgejoule.registry.ingest import MqttIngest
from edgejoule.registry.schemas import AgentSummary, RolledBack, utc
from edgejoule.schemas.api import AgentRegistered, AgentRegistration, Assignment, BrokerLogin, LoadEvent
from edgejoule.schemas.messages import Heartbeat

router = APIRouter()


def _issued(agent: AgentRow, token: str, ingest: MqttIngest | None, passwords: BrokerPasswords) -> AgentRegistered:
    """The new credentials of ``agent`` (committed), once the broker has the login (a few seconds at most; without
    a broker at once)."""
    if ingest is not None:
        ingest.logins.changed(wait=True)
    return AgentRegistered(agent_id=agent.id, site=agent.site, token=token, mqtt_username=agent.id,
                           mqtt_password=passwords.password(agent.id, agent.token_hash))


@router.post("/agents", status_code=201, dependencies=ADMIN)
def register(reg: AgentRegistration, sessions: SessionsDep, ingest: IngestDep,
             passwords: PasswordsDep) -> AgentRegistered:
    """Register an agent; its token is shown once (only a hash is stored). Its broker password derives from the
    token: the agent can ask for it again (``GET /agents/{id}/broker-login``)."""
    try:
        with sessions.begin() as session:
            row, token = service.register_agent(session, fits(reg))
    except IntegrityError:  # registered by a concurrent request between the check and the commit
        raise HTTPException(409, f"agent '{reg.agent_id}' is registered already") from None
    return _issued(row, token, ingest, passwords)


@router.post("/agents/{agent_id}/token", dependencies=ADMIN)
def rotate_token(agent_id: str, sessions: SessionsDep, ingest: IngestDep, passwords: PasswordsDep) -> AgentRegistered:
    """A new token for a lost or stolen one (shown once); the old one is refused from now on, over HTTP and on
    the broker (a new password), where a session logged in with the old one is ended."""
    with sessions.begin() as session:
        agent, token = service.rotate_token(session, agent_id)
    return _issued(agent, token, ingest, passwords)


@router.get("/agents/{agent_id}/broker-login", dependencies=SELF_OR_ADMIN)
def broker_login(agent_id: str, sessions: SessionsDep, passwords: PasswordsDep) -> BrokerLogin:
    """The agent's MQTT login on the registry's broker (what ``edge-agent`` uses unless it is given one)."""
    with sessions() as session:
        agent = session.get(AgentRow, agent_id)
        if agent is None:
            raise HTTPException(404, f"unknown agent '{agent_id}'")
        return BrokerLogin(mqtt_username=agent_id, mqtt_password=passwords.password(agent_id, agent.token_hash))


@router.delete("/agents/{agent_id}", status_code=204, dependencies=ADMIN)
def revoke(agent_id: str, sessions: SessionsDep, ingest: IngestDep) -> Response:
    """Revoke an agent: its token is refused, its broker login deleted (its session ends), its assignment dropped;
    its telemetry stays. The id can be registered again, with a new token."""
    with sessions.begin() as session:
        service.revoke_agent(session, agent_id)
    if ingest is not None:
        ingest.logins.changed()  # the login goes with the row: the database is the truth
    return Response(status_code=204)


@router.get("/agents", dependencies=ADMIN, responses=PAGED)
def list_agents(sessions: SessionsDep, settings: SettingsDep, request: Request, response: Response,
                site: str | None = None, limit: Limit = 100, cursor: Cursor = None) -> list[AgentSummary]:
    """The agents by id, a page at a time (``Link`` to the next)."""
    with sessions() as session:
        q = session.query(AgentRow)
        if site:
            q = q.filter_by(site=site)
        if (start := after(cursor, (str,))) is not None:
            q = q.filter(AgentRow.id > start[0])
        agents = page(q.order_by(AgentRow.id).limit(limit + 1).all(), limit, lambda a: [a.id], request, response)
        stale = datetime.now(timezone.utc) - timedelta(seconds=settings.offline_after_s)
        return [{"agent_id": a.id, "site": a.site, "state": _state(a, stale), "current_model_id": a.current_model_id,
                 "runtime": a.runtime, "hardware": a.hardware, "plugins": a.plugins,
                 "last_seen": a.last_seen} for a in agents]


@router.post("/agents/{agent_id}/heartbeat", status_code=204, dependencies=SELF_OR_ADMIN)
def post_heartbeat(agent_id: str, beat: Heartbeat, sessions: SessionsDep) -> Response:
    if beat.agent_id != agent_id:
        raise HTTPException(403, "the heartbeat names another agent")
    with sessions.begin() as session:
        registered = session.get(AgentRow, agent_id)
        if registered is not None and registered.site != beat.site:  # e.g. an urban model on campus channels
            raise HTTPException(409, f"agent '{agent_id}' is registered at site '{registered.site}' but configured "
                                     f"for site '{beat.site}'")
        service.heartbeat(session, fits(beat))
    return Response(status_code=204)


@router.get("/agents/{agent_id}/assignment", response_model=Assignment | None, dependencies=SELF_OR_ADMIN,
            responses={204: {"description": "no assignment: the agent serves its classical fallback"},
                       304: {"description": "unchanged since the ETag sent in If-None-Match"}})
def get_assignment(agent_id: str, sessions: SessionsDep, settings: SettingsDep, response: Response,
                   if_none_match: Annotated[str | None, Header(description="the ETag of the assignment the agent "
                                                                            "holds")] = None) -> Any:
    """The agent's assignment. Agents poll it: its ETag names its content, so a poll that sends the ETag back
    (If-None-Match) is answered 304 without a body while nothing changed."""
    with sessions() as session:
        row = session.get(AssignmentRow, agent_id)
        if row is None:
            return Response(status_code=204)
        assignment = service.assignment_of(session, row, settings.public_url, settings.broker_for_agents)
    etag = f'"{hashlib.sha256(assignment.model_dump_json().encode()).hexdigest()[:32]}"'
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return assignment


@router.post("/agents/{agent_id}/events", status_code=202, dependencies=SELF_OR_ADMIN)
def post_event(agent_id: str, event: LoadEvent, sessions: SessionsDep, notify: NotifyDep) -> dict[str, bool]:
    if event.agent_id != agent_id:
        raise HTTPException(403, "the event names another agent")
    fits(event)
    with sessions.begin() as session:
        rolled_back = service.record_event(session, event)
    if rolled_back:
        notify([agent_id])
    return {"rolled_back": rolled_back}


@router.post("/agents/{agent_id}/rollback", dependencies=ADMIN)
def manual_rollback(agent_id: str, sessions: SessionsDep, notify: NotifyDep) -> RolledBack:
    with sessions.begin() as session:
        model_id = service.rollback(session, agent_id).model_id
    notify([agent_id])
    return RolledBack(agent_id=agent_id, model_id=model_id)


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match against the current ETag (RFC 9110 13.1.2: a list, ``*``, weak comparison)."""
    return any(tag.strip().removeprefix("W/") in ("*", etag) for tag in if_none_match.split(","))


def _state(agent: AgentRow, stale: datetime) -> str:
    """online only while heartbeats keep coming; the MQTT last will sets offline at once."""
    last_seen = None if agent.last_seen is None else utc(agent.last_seen)
    if agent.state == "online" and (last_seen is None or last_seen < stale):
        return "offline"
    return agent.state
