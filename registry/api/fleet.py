"""Fleet queries (admin): energy per inference, latency and quality per group and over time, each site's
Pareto front, and a model's eCAL."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request, Response

from edgejoule.registry import fleet as fleet_queries
from edgejoule.registry import service
from edgejoule.registry.api.deps import ADMIN, SessionsDep
from edgejoule.registry.api.paging import PAGED, Cursor, Limit, after, page
from edgejoule.registry.schemas import Ecal, FleetRow, ParetoPoint, QueryTime, SeriesPoint

router = APIRouter(dependencies=ADMIN)


@router.get("/fleet", responses=PAGED)
def get_fleet(sessions: SessionsDep, request: Request, response: Response,
              group_by: Literal["site", "model", "agent"] = "model", site: str | None = None,
              model_id: str | None = None, agent_id: str | None = None, since: QueryTime | None = None,
              until: QueryTime | None = None, limit: Limit = 1000, cursor: Cursor = None) -> list[FleetRow]:
    """Energy per inference (measured and estimated), latency, quality and counts over a time window, by group in
    the order of (site, model, agent), a page at a time (``Link`` to the next). The groups are summed from the
    roll-ups whole; the pages spare the answer's size (a fleet's per-agent answer ran to hundreds of kB)."""
    start = after(cursor, (str, str, str))
    with sessions() as session:
        rows = sorted(fleet_queries.fleet(session, group_by, site, model_id, agent_id, since, until), key=_key)
    if start is not None:
        rows = [r for r in rows if _key(r) > start]
    return page(rows, limit, _key, request, response)


def _key(row: FleetRow) -> list[str]:
    """A group's place in the order: its site, model ('' for the classical fallback) and agent."""
    return [row["site"], row.get("model_id") or "", row.get("agent_id", "")]


@router.get("/fleet/series")
def get_series(sessions: SessionsDep, bucket_s: int = Query(300, ge=1, le=30 * 86400), site: str | None = None,
               model_id: str | None = None, since: QueryTime | None = None,
               until: QueryTime | None = None) -> list[SeriesPoint]:
    """Energy per inference and quality per site and model, in time buckets of ``bucket_s`` seconds."""
    with sessions() as session:
        return fleet_queries.series(session, bucket_s, site, model_id, since, until)


@router.get("/sites/{site}/pareto")
def get_pareto(site: str, sessions: SessionsDep, metric: str = "sum_rate") -> list[ParetoPoint]:
    """The site's models: estimated and measured energy per inference against quality, Pareto front marked."""
    with sessions() as session:
        return fleet_queries.pareto(session, site, metric)


@router.get("/models/{model_id}/ecal")
def get_ecal(model_id: str, sessions: SessionsDep) -> Ecal:
    with sessions() as session:
        service.get_model(session, model_id)
        return fleet_queries.ecal(session, model_id)
