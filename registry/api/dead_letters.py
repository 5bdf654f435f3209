"""The dead letters: MQTT messages the ingest refused (malformed, out of range, another sender's), kept so that
an operator can see what an agent sends that never reaches the fleet view, and why."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from edgejoule.registry.api.deps import ADMIN, SessionsDep
from edgejoule.registry.api.paging import PAGED, Cursor, Limit, after, page
from edgejoule.registry.db import DeadLetterRow
from edgejoule.registry.schemas import DeadLetter

router = APIRouter(dependencies=ADMIN)


@router.get("/dead-letters", responses=PAGED)
def get_dead_letters(sessions: SessionsDep, request: Request, response: Response, limit: Limit = 100,
                     cursor: Cursor = None) -> list[DeadLetter]:
    """The refused messages, newest first, a page at a time (``Link`` to older ones; the registry keeps the
    newest 10,000)."""
    q = select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit + 1)
    if (start := after(cursor, (int,))) is not None:
        q = q.where(DeadLetterRow.id < start[0])
    with sessions() as session:
        rows = page(list(session.scalars(q)), limit, lambda row: [row.id], request, response)
        return [DeadLetter.model_validate(row) for row in rows]
