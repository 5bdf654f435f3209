"""Fleet queries (admin): energy per inference, latency and quality per group and over time, each site's
Pareto front, and a model's eCAL."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from edgejoule.registry import fleet as fleet_queries
from edgejoule.registry import service
from edgejoule.registry.api.deps import ADMIN, SessionsDep
from edgejoule.registry.schemas import Ecal, FleetRow, ParetoPoint, QueryTime, SeriesPoint

router = APIRouter(dependencies=ADMIN)


@router.get("/fleet")
def get_fleet(sessions: SessionsDep, group_by: Literal["site", "model", "agent"] = "model", site: str | None = None,
              model_id: str | None = None, agent_id: str | None = None, since: QueryTime | None = None,
              until: QueryTime | None = None) -> list[FleetRow]:
    """Energy per inference (measured and estimated), latency, quality and counts over a time window."""
    with sessions() as session:
        return fleet_queries.fleet(session, group_by, site, model_id, agent_id, since, until)


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
