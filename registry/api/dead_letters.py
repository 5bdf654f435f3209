"""The dead letters: MQTT messages the ingest refused (malformed, out of range, another sender's), kept so that
an operator can see what an agent sends that never reaches the fleet view, and why."""

from __future__ import annotations

from fastapi import APIRouter, Query

from edgejoule.registry import service
from edgejoule.registry.api.deps import ADMIN, SessionsDep
from edgejoule.registry.schemas import DeadLetter

router = APIRouter(dependencies=ADMIN)


@router.get("/dead-letters")
def get_dead_letters(sessions: SessionsDep, limit: int = Query(100, ge=1, le=1000)) -> list[DeadLetter]:
    """The newest ``limit`` refused messages (the registry keeps the newest 10,000)."""
    with sessions() as session:
        return [DeadLetter.model_validate(row) for row in service.dead_letters(session, limit)]
