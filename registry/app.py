"""The registry's HTTP API (FastAPI): the agent contract of ``edgejoule.schemas.api`` plus the admin and fleet
endpoints, a dashboard page, Prometheus metrics and a health check."""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from importlib import resources
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Body, Depends, FastAPI, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from edgejoule import plugin_manager
from edgejoule.errors import first_problem
from edgejoule.schemas import topics
from edgejoule.schemas.api import API_PREFIX, SHA256_HEADER, AgentRegistered, AgentRegistration, Assignment, LoadEvent
from edgejoule.schemas.manifest import ModelManifest
from edgejoule.schemas.messages import Heartbeat, Telemetry
from edgejoule.sites import SiteConfig, list_sites
from edgejoule.registry import fleet as fleet_queries
from edgejoule.registry import service
from edgejoule.registry.artifacts import ArtifactStore
from edgejoule.registry.auth import Principal, principal, require_admin, require_self_or_admin
from edgejoule.registry.db import AgentRow, AliasRow, AssignmentRow, ModelRow, make_engine, session_factory
from edgejoule.registry.migrate import upgrade
from edgejoule.registry.schemas import (PROBLEMS, AgentSummary, AliasRequest, AliasSet, DeploymentRequest, DeploymentResult, Ecal,
                              FleetRow, Health, ModelSummary, ParetoPoint, Plugins, RolledBack, SeriesPoint,
                              UploadedModel, utc)
from edgejoule.registry.settings import RegistrySettings

log = logging.getLogger("registry")
TFLITE_MAGIC = b"TFL3"


def _state(agent: AgentRow, stale: datetime) -> str:
    """online only while heartbeats keep coming; the MQTT last will sets offline at once."""
    last_seen = None if agent.last_seen is None else utc(agent.last_seen)
    if agent.state == "online" and (last_seen is None or last_seen < stale):
        return "offline"
    return agent.state


def _assignment(row: AssignmentRow, model: ModelRow, base: str) -> Assignment:
    return Assignment(agent_id=row.agent_id, model_id=model.id, version=model.version, sha256=model.sha256,
                      size_bytes=model.size_bytes, manifest_url=f"{base}{API_PREFIX}/models/{model.id}/manifest",
                      package_url=f"{base}{API_PREFIX}/models/{model.id}/package", deployment_id=row.deployment_id,
                      assigned_at=row.assigned_at)


def create_app(settings: RegistrySettings, on_agents_changed: Callable[[], None] = lambda: None) -> FastAPI:
    """The app; ``on_agents_changed`` runs after an agent is registered (``serve`` rewrites the broker's
    password file and ACL there)."""
    metrics = CollectorRegistry()
    counters = {
        "telemetry": Counter("edgejoule_telemetry_ingested", "telemetry messages stored", ["via"], registry=metrics),
        "duplicates": Counter("edgejoule_telemetry_duplicates", "telemetry messages seen again", registry=metrics),
        "uploads": Counter("edgejoule_model_uploads", "model packages stored", registry=metrics),
        "rejected": Counter("edgejoule_uploads_rejected", "uploads refused", registry=metrics),
        "rejected_messages": Counter("edgejoule_mqtt_messages_rejected", "malformed MQTT messages dropped",
                                     registry=metrics),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.db_url)
        engine = make_engine(settings.db_url)
        app.state.sessions = session_factory(engine)
        app.state.store = ArtifactStore(settings.artifacts_dir)
        app.state.counters = counters
        app.state.ingest = None
        if settings.broker_url:
            from edgejoule.registry.ingest import MqttIngest

            app.state.ingest = MqttIngest(settings.broker_url, app.state.sessions, counters,
                                          client_id=settings.mqtt_client_id, password=settings.mqtt_password,
                                          on_rollback=notify)
            app.state.ingest.start()
        # what exists now (modules, table metadata, the engine) lives as long as the process: keep it out of the
        # collector's full passes, which otherwise add tens of ms now and then to a large fleet query
        gc.freeze()
        yield
        if app.state.ingest is not None:
            app.state.ingest.stop()
        engine.dispose()

    app = FastAPI(title="edgejoule registry", version="1", lifespan=lifespan, responses=PROBLEMS)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 as FastAPI's, without echoing the input back: a NaN in it is not JSON (that was a 500)."""
        errors = [{key: error[key] for key in ("type", "loc", "msg") if key in error} for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        log.info("request", extra={"method": request.method, "path": request.url.path, "status": response.status_code,
                                   "ms": round((time.perf_counter() - started) * 1000, 2)})
        return response

    @app.middleware("http")
    async def refuse_nul(request: Request, call_next):
        """NUL cannot be stored in PostgreSQL text: refuse it in paths, queries and JSON bodies up front."""
        bad = "\x00" in request.url.path or "%00" in request.url.query
        if not bad and request.headers.get("content-type", "").startswith("application/json"):
            body = await request.body()
            bad = b"\x00" in body or b"\\u0000" in body
        if bad:
            return JSONResponse({"detail": "NUL characters are not accepted"}, status_code=422)
        return await call_next(request)
    app.state.settings = settings

    def notify(agent_ids: list[str]) -> None:
        """Publish each agent's new assignment on its assignment topic (agents also poll for it)."""
        if app.state.ingest is None:
            return
        with app.state.sessions() as session:
            for agent_id in agent_ids:
                row = session.get(AssignmentRow, agent_id)
                if row is not None:
                    payload = _assignment(row, session.get(ModelRow, row.model_id), settings.public_url)
                    app.state.ingest.publish(topics.assignment(agent_id), payload.model_dump_json())

    # -- models ----------------------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/models", status_code=201, dependencies=[Depends(require_admin)])
    async def upload_model(manifest: UploadFile = File(...), model: UploadFile = File(...)) -> UploadedModel:
        """Upload a model package: its manifest (JSON) and its .tflite file. Nothing is stored unless both are valid."""
        limit = settings.max_upload_bytes
        try:
            parsed = ModelManifest.model_validate_json(await manifest.read(1024 * 1024))
        except ValidationError as exc:
            counters["rejected"].inc()
            raise HTTPException(422, f"invalid manifest: {first_problem(exc)}") from None
        try:
            service.check_fits(parsed)
        except ValueError as exc:
            counters["rejected"].inc()
            raise HTTPException(422, f"invalid manifest: {exc}") from None
        data = await model.read(limit + 1)
        problem = None
        if len(data) > limit:
            problem = (413, f"model file larger than the {limit}-byte limit")
        elif data[4:8] != TFLITE_MAGIC:
            problem = (422, "the model file is not a TFLite flatbuffer (no TFL3 identifier)")
        elif len(data) != parsed.size_bytes:
            problem = (422, f"model file has {len(data)} bytes, the manifest says {parsed.size_bytes}")
        elif hashlib.sha256(data).hexdigest() != parsed.sha256:
            problem = (422, "model file sha256 does not match the manifest")
        if problem:
            counters["rejected"].inc()
            raise HTTPException(*problem)
        with app.state.sessions.begin() as session:
            try:
                row = service.add_model(session, parsed)
            except service.Conflict as exc:
                raise HTTPException(409, str(exc)) from None
            app.state.store.put(data)
            result = UploadedModel(id=row.id, site=row.site, task=row.task, version=row.version, sha256=row.sha256)
        counters["uploads"].inc()
        return result

    @app.get(f"{API_PREFIX}/models", dependencies=[Depends(require_admin)])
    def list_models(site: str | None = None) -> list[ModelSummary]:
        with app.state.sessions() as session:
            q = session.query(ModelRow)
            if site:
                q = q.filter_by(site=site)
            aliases = {(a.model_id): a.name for a in session.query(AliasRow)}
            return [{"id": m.id, "site": m.site, "task": m.task, "family": m.family, "version": m.version,
                     "estimated_energy_uj": m.estimated_energy_uj, "metrics": m.manifest.get("metrics", {}),
                     "alias": aliases.get(m.id), "created_at": m.created_at}
                    for m in q.order_by(ModelRow.site, ModelRow.version)]

    def _model(session, model_id: str) -> ModelRow:
        row = session.get(ModelRow, model_id)
        if row is None:
            raise HTTPException(404, f"unknown model '{model_id}'")
        return row

    def _may_read(who: Principal, session, model_id: str) -> None:
        if who.admin:
            return
        assignment = session.get(AssignmentRow, who.agent_id)
        if assignment is None or model_id not in (assignment.model_id, assignment.previous_model_id):
            raise HTTPException(403, "an agent may only read the models assigned to it")

    @app.get(f"{API_PREFIX}/models/{{model_id}}/manifest")
    def get_manifest(model_id: str, who: Principal = Depends(principal)) -> ModelManifest:
        with app.state.sessions() as session:
            _may_read(who, session, model_id)
            return _model(session, model_id).manifest

    @app.get(f"{API_PREFIX}/models/{{model_id}}/package")
    def get_package(model_id: str, who: Principal = Depends(principal)) -> FileResponse:
        with app.state.sessions() as session:
            _may_read(who, session, model_id)
            model = _model(session, model_id)
        return FileResponse(app.state.store.path(model.sha256), media_type="application/octet-stream",
                            headers={SHA256_HEADER: model.sha256})

    @app.put(f"{API_PREFIX}/sites/{{site}}/aliases/{{name}}", dependencies=[Depends(require_admin)])
    def set_alias(site: str = PathParam(max_length=64), name: str = PathParam(pattern=r"^[A-Za-z0-9._-]{1,32}$"),
                  body: AliasRequest = Body(...)) -> AliasSet:
        """Point an alias (production, candidate, ...) of a site at one of its models."""
        with app.state.sessions.begin() as session:
            model = _model(session, body.model_id)
            if model.site != site:
                raise HTTPException(409, f"model '{model.id}' belongs to site '{model.site}'")
            session.merge(AliasRow(site=site, task=model.task, name=name, model_id=model.id))
        return AliasSet(site=site, alias=name, model_id=body.model_id)

    # -- agents ----------------------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/agents", status_code=201, dependencies=[Depends(require_admin)])
    def register(reg: AgentRegistration) -> AgentRegistered:
        """Register an agent; its token is shown once (only a hash is stored)."""
        with app.state.sessions.begin() as session:
            try:
                row, token = service.register_agent(session, service.check_fits(reg))
            except service.Conflict as exc:
                raise HTTPException(409, str(exc)) from None
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
        on_agents_changed()
        return AgentRegistered(agent_id=row.id, site=row.site, token=token, mqtt_username=row.id, mqtt_password=token)

    @app.get(f"{API_PREFIX}/agents", dependencies=[Depends(require_admin)])
    def list_agents(site: str | None = None) -> list[AgentSummary]:
        with app.state.sessions() as session:
            q = session.query(AgentRow)
            if site:
                q = q.filter_by(site=site)
            stale = datetime.now(timezone.utc) - timedelta(seconds=settings.offline_after_s)
            return [{"agent_id": a.id, "site": a.site, "state": _state(a, stale), "current_model_id": a.current_model_id,
                     "runtime": a.runtime, "hardware": a.hardware, "plugins": a.plugins,
                     "last_seen": a.last_seen} for a in q.order_by(AgentRow.id)]

    @app.post(f"{API_PREFIX}/agents/{{agent_id}}/heartbeat", status_code=204)
    def post_heartbeat(agent_id: str, beat: Heartbeat, who: Principal = Depends(require_self_or_admin)) -> Response:
        if beat.agent_id != agent_id:
            raise HTTPException(403, "the heartbeat names another agent")
        with app.state.sessions.begin() as session:
            try:
                service.heartbeat(session, service.check_fits(beat))
            except service.NotFound as exc:
                raise HTTPException(404, str(exc)) from None
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
        return Response(status_code=204)

    @app.get(f"{API_PREFIX}/agents/{{agent_id}}/assignment", response_model=Assignment | None)
    def get_assignment(agent_id: str, request: Request, who: Principal = Depends(require_self_or_admin)) -> Any:
        with app.state.sessions() as session:
            row = session.get(AssignmentRow, agent_id)
            if row is None:
                return Response(status_code=204)
            return _assignment(row, _model(session, row.model_id), settings.public_url)

    @app.post(f"{API_PREFIX}/agents/{{agent_id}}/events", status_code=202)
    def post_event(agent_id: str, event: LoadEvent, who: Principal = Depends(require_self_or_admin)) -> dict[str, bool]:
        if event.agent_id != agent_id:
            raise HTTPException(403, "the event names another agent")
        try:
            service.check_fits(event)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        with app.state.sessions.begin() as session:
            rolled_back = service.record_event(session, event)
        if rolled_back:
            notify([agent_id])
        return {"rolled_back": rolled_back}

    @app.post(f"{API_PREFIX}/agents/{{agent_id}}/rollback", dependencies=[Depends(require_admin)])
    def manual_rollback(agent_id: str) -> RolledBack:
        with app.state.sessions.begin() as session:
            try:
                row = service.rollback(session, agent_id)
            except service.Conflict as exc:
                raise HTTPException(409, str(exc)) from None
            model_id = row.model_id
        notify([agent_id])
        return RolledBack(agent_id=agent_id, model_id=model_id)

    # -- deployments -----------------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/deployments", status_code=201, dependencies=[Depends(require_admin)])
    def create_deployment(body: DeploymentRequest) -> DeploymentResult:
        """Assign a model to a site's agents: all, a fraction first (staged rollout), or a list."""
        with app.state.sessions.begin() as session:
            try:
                deployment, agents = service.deploy(session, body.site, body.model_id, body.fraction, body.agents)
            except service.NotFound as exc:
                raise HTTPException(404, str(exc)) from None
            except service.Conflict as exc:
                raise HTTPException(409, str(exc)) from None
            result = DeploymentResult(deployment_id=deployment.id, site=body.site, model_id=body.model_id, agents=agents)
        notify(agents)
        return result

    # -- telemetry and fleet ---------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/telemetry", status_code=202)
    def post_telemetry(message: Telemetry, who: Principal = Depends(principal)) -> dict[str, bool]:
        """HTTP fallback of the MQTT telemetry topic; idempotent on message_id."""
        if not who.admin and who.agent_id != message.agent_id:
            raise HTTPException(403, "an agent may only post its own telemetry")
        try:
            service.check_fits(message)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            with app.state.sessions.begin() as session:
                stored = service.ingest_telemetry_batch(session, [message]) == 1
        except IntegrityError:  # another request or registry worker stored it first
            stored = False
        if stored:
            counters["telemetry"].labels("http").inc()
        else:
            counters["duplicates"].inc()
        return {"stored": stored}

    @app.get(f"{API_PREFIX}/fleet", dependencies=[Depends(require_admin)])
    def get_fleet(group_by: Literal["site", "model", "agent"] = "model", site: str | None = None,
                  model_id: str | None = None, agent_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> list[FleetRow]:
        """Energy per inference (measured and estimated), latency, quality and counts over a time window."""
        with app.state.sessions() as session:
            return fleet_queries.fleet(session, group_by, site, model_id, agent_id, since, until)

    @app.get(f"{API_PREFIX}/fleet/series", dependencies=[Depends(require_admin)])
    def get_series(bucket_s: int = Query(300, ge=1, le=30 * 86400), site: str | None = None,
                   model_id: str | None = None, since: datetime | None = None,
                   until: datetime | None = None) -> list[SeriesPoint]:
        """Energy per inference and quality per site and model, in time buckets of ``bucket_s`` seconds."""
        with app.state.sessions() as session:
            return fleet_queries.series(session, bucket_s, site, model_id, since, until)

    @app.get(f"{API_PREFIX}/sites/{{site}}/pareto", dependencies=[Depends(require_admin)])
    def get_pareto(site: str, metric: str = "sum_rate") -> list[ParetoPoint]:
        """The site's models: estimated and measured energy per inference against quality, Pareto front marked."""
        with app.state.sessions() as session:
            return fleet_queries.pareto(session, site, metric)

    @app.get(f"{API_PREFIX}/models/{{model_id}}/ecal", dependencies=[Depends(require_admin)])
    def get_ecal(model_id: str) -> Ecal:
        with app.state.sessions() as session:
            _model(session, model_id)
            return fleet_queries.ecal(session, model_id)

    @app.get(f"{API_PREFIX}/sites", dependencies=[Depends(require_admin)])
    def get_sites() -> dict[str, SiteConfig]:
        return list_sites()

    @app.get(f"{API_PREFIX}/plugins", dependencies=[Depends(require_admin)])
    def get_plugins() -> Plugins:
        manager = plugin_manager.get_manager()
        with app.state.sessions() as session:
            agents = {a.id: a.plugins for a in session.query(AgentRow)}
        return Plugins(server={name: info.provides for name, info in manager.infos.items()}, agents=agents)

    # -- operations ------------------------------------------------------------------------------------
    @app.get("/healthz")
    def health() -> Health:
        ingest = app.state.ingest
        return Health(status="ok", mqtt=None if ingest is None else ingest.connected.is_set())

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> str:
        return resources.files("registry").joinpath("dashboard.html").read_text()

    return app
