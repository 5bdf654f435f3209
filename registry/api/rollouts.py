"""Rollouts: a candidate gated stage by stage on what the fleet measures against the site's incumbent
(``edgejoule.registry.rollouts``); pause, resume, abort; a site's history and its one-step rollback. Admin only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgejoule.registry import rollouts
from edgejoule.registry.api.deps import ADMIN, NotifyDep, SessionsDep
from edgejoule.registry.api.paging import PAGED, Cursor, Limit, after, page
from edgejoule.registry.db import RolloutRow, utcnow
from edgejoule.registry.schemas import Rollout, RolloutAction, RolloutRequest, SiteHistory

router = APIRouter(dependencies=ADMIN)
SiteName = Annotated[str, Query(max_length=64)]
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # an INTEGER key: a larger one was a 500 on PostgreSQL


@router.post("/rollouts", status_code=201)
def start_rollout(body: RolloutRequest, sessions: SessionsDep, notify: NotifyDep) -> Rollout:
    """Start a gated rollout; 409 while the site has another one running (named), or no single incumbent."""
    try:
        with sessions.begin() as session:
            row, agents = rollouts.start(session, body, utcnow())
            answer = rollouts.describe(session, row)
    except IntegrityError:  # another request started one on the site between the check and the commit
        raise HTTPException(409, f"site '{body.site}' has a rollout running: started meanwhile") from None
    notify(agents)
    return answer


@router.get("/rollouts", responses=PAGED)
def list_rollouts(sessions: SessionsDep, request: Request, response: Response, site: SiteName | None = None,
                  limit: Limit = 100, cursor: Cursor = None) -> list[Rollout]:
    """The rollouts, newest first, a page at a time (``Link`` to the next)."""
    start = after(cursor, (int,))
    with sessions() as session:
        found = rollouts.listed(session, site, limit + 1, before=None if start is None else start[0])
    return page(found, limit, lambda r: [r.id], request, response)


@router.get("/rollouts/{rollout_id}")
def get_rollout(rollout_id: RolloutId, sessions: SessionsDep) -> Rollout:
    with sessions() as session:
        return rollouts.describe(session, rollouts.get(session, rollout_id))


@router.post("/rollouts/{rollout_id}/pause")
def pause_rollout(rollout_id: RolloutId, body: RolloutAction, sessions: SessionsDep) -> Rollout:
    """Stop deciding (and the stage's clock); the canaries keep the candidate."""
    with sessions.begin() as session:
        return rollouts.describe(session, rollouts.pause(session, rollout_id, body.reason, utcnow()))


@router.post("/rollouts/{rollout_id}/resume")
def resume_rollout(rollout_id: RolloutId, body: RolloutAction, sessions: SessionsDep) -> Rollout:
    with sessions.begin() as session:
        return rollouts.describe(session, rollouts.resume(session, rollout_id, body.reason, utcnow()))


@router.post("/rollouts/{rollout_id}/abort")
def abort_rollout(rollout_id: RolloutId, body: RolloutAction, sessions: SessionsDep, notify: NotifyDep) -> Rollout:
    """End it now: the canaries go back to the incumbent."""
    return _reassigning(sessions, notify, lambda session: rollouts.abort(session, rollout_id, body.reason, utcnow()))


@router.post("/sites/{site}/rollback")
def roll_site_back(site: str, body: RolloutAction, sessions: SessionsDep, notify: NotifyDep) -> Rollout:
    """One step back: the site's last promoted rollout undone (every agent on its incumbent again)."""
    return _reassigning(sessions, notify, lambda session: rollouts.revert(session, site, body.reason, utcnow()))


def _reassigning(sessions: SessionsDep, notify: NotifyDep,
                 act: Callable[[Session], tuple[RolloutRow, list[str]]]) -> Rollout:
    """``act`` in one transaction, then the agents whose assignment it changed are told."""
    with sessions.begin() as session:
        row, agents = act(session)
        answer = rollouts.describe(session, row)
    notify(agents)
    return answer


@router.get("/sites/{site}/history")
def site_history(site: str, sessions: SessionsDep) -> SiteHistory:
    """Which model or method served the site when, who started each rollout and why it ended."""
    with sessions() as session:
        return rollouts.history(session, site)
