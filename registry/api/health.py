"""Operations: liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from edgejoule.registry.api.deps import IngestDep, MetricsDep, SessionsDep
from edgejoule.registry.schemas import Health, Readiness

log = logging.getLogger("registry")
router = APIRouter()


@router.get("/healthz")
def health(ingest: IngestDep) -> Health:
    return Health(status="ok", mqtt=None if ingest is None else ingest.connected.is_set())


@router.get("/readyz", responses={503: {"model": Readiness, "description": "the database or the MQTT ingest is down"}})
def ready(response: Response, sessions: SessionsDep, ingest: IngestDep) -> Readiness:
    """Ready to serve: the database answers and, with a broker, the MQTT ingest is subscribed."""
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError as exc:
        log.warning("the database did not answer: %s", str(exc).splitlines()[0])
        database = False
    mqtt = None if ingest is None else ingest.subscribed.is_set()
    ok = database and mqtt is not False
    if not ok:
        response.status_code = 503
    return Readiness(status="ready" if ok else "unavailable", database=database, mqtt=mqtt)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)
