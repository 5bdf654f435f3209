"""Telemetry over HTTP: the fallback of the MQTT telemetry topic, stored by the same service function."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy.exc import IntegrityError

from edgejoule.registry import service
from edgejoule.registry.api.deps import CallerDep, CountersDep, SessionsDep, fits
from edgejoule.schemas.messages import Telemetry

router = APIRouter()


@router.post("/telemetry", status_code=202)
def post_telemetry(message: Telemetry, who: CallerDep, sessions: SessionsDep, counters: CountersDep) -> dict[str, bool]:
    """HTTP fallback of the MQTT telemetry topic; idempotent on message_id. An agent reports only its own site
    and the models it was assigned (403 otherwise); the admin may post any window (imports)."""
    if not who.admin and who.agent_id != message.agent_id:
        raise HTTPException(403, "an agent may only post its own telemetry")
    fits(message)
    try:
        with sessions.begin() as session:
            problem = None if who.admin else service.foreign_telemetry(session, [message]).get(message.message_id)
            if problem:
                counters["foreign"].labels("http").inc()
                raise HTTPException(403, problem)
            stored = service.ingest_telemetry_batch(session, [message]) == 1
    except IntegrityError:  # another request or registry worker stored it first
        stored = False
    if stored:
        counters["telemetry"].labels("http").inc()
    else:
        counters["duplicates"].inc()
    return {"stored": stored}
