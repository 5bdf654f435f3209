"""The registry's HTTP app (FastAPI): the agent contract of ``edgejoule.schemas.api`` plus the admin and fleet
endpoints, a dashboard page, Prometheus metrics, liveness and readiness.

The routes are the routers of :mod:`edgejoule.registry.api`; here the app gets its parts (on ``app.state``, where
the routes' dependencies find them), its middlewares and the mapping of the service's errors to HTTP answers.
``create_app(settings)`` is what ``edgejoule registry serve`` and the tests run; ``app_from_env`` builds the same
app from ``EDGEJOULE_REGISTRY_*`` for ``uvicorn --factory`` and gunicorn."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgejoule.registry import rollouts, service
from edgejoule.registry.api.main import api_router, root_router
from edgejoule.registry.artifacts import ArtifactStore
from edgejoule.registry.broker_passwords import BrokerPasswords
from edgejoule.registry.db import AssignmentRow, make_engine, session_factory
from edgejoule.registry.gate import RequestGate, problem_response
from edgejoule.registry.ingest import MqttIngest, TlsClient
from edgejoule.registry.logs import configure
from edgejoule.registry.migrate import upgrade
from edgejoule.registry.schemas import PROBLEMS
from edgejoule.registry.settings import RegistrySettings
from edgejoule.schemas import topics
from edgejoule.schemas.http import PROBLEM_JSON, ValidationProblem

log = logging.getLogger("registry")
SERVICE_ERRORS = {service.NotFound: 404, service.Conflict: 409, service.Invalid: 422}


def create_app(settings: RegistrySettings) -> FastAPI:
    app = FastAPI(title="edgejoule registry", version="1", lifespan=_lifespan, responses=PROBLEMS)
    app.state.settings = settings
    app.state.notify = partial(_announce, app.state)
    app.state.metrics, app.state.counters = _metrics()
    app.openapi = partial(_openapi_with_problems, app, app.openapi)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for error in SERVICE_ERRORS:
        app.add_exception_handler(error, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
    # the last one added runs first: the gate (credentials, body caps, NUL) before the request log
    app.middleware("http")(_log_requests)
    app.add_middleware(RequestGate)
    app.include_router(api_router)
    app.include_router(root_router)
    return app


def app_from_env() -> FastAPI:
    """The app with its settings from the environment (``EDGEJOULE_REGISTRY_*``) and JSON logs on stderr: an
    external broker (``EDGEJOULE_REGISTRY_BROKER_URL``) or none. ``uvicorn --factory
    edgejoule.registry.app:app_from_env``; gunicorn ``'edgejoule.registry.app:app_from_env()'``."""
    settings = RegistrySettings()
    configure(settings.log_level.upper())
    return create_app(settings)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    settings: RegistrySettings = state.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    state.sessions = session_factory(engine)
    state.store = ArtifactStore(settings.artifacts_dir)
    state.passwords = BrokerPasswords.at(settings.broker_secret_path)
    state.ingest = None
    if settings.broker_url:
        state.ingest = MqttIngest(settings.broker_url, state.sessions, state.counters, state.passwords,
                                  client_id=settings.mqtt_client_id, shared=settings.mqtt_shared,
                                  password=settings.mqtt_password,
                                  tls=TlsClient(settings.mqtt_ca_file, settings.mqtt_client_cert,
                                                settings.mqtt_client_key),
                                  on_rollback=state.notify, retire_on_stop=settings.mqtt_retire_on_stop)
        state.ingest.start()
    # what exists now (modules, table metadata, the engine) lives as long as the process: keep it out of the
    # collector's full passes, which otherwise add tens of ms now and then to a large fleet query
    gc.freeze()
    # gated rollouts continue from their rows in the database, also after a restart
    evaluation = asyncio.create_task(rollouts.evaluate_every(state.sessions, settings.rollout_interval_s, state.notify))
    yield
    evaluation.cancel()
    if state.ingest is not None:
        state.ingest.stop()
    engine.dispose()


def _metrics() -> tuple[CollectorRegistry, dict[str, Counter]]:
    metrics = CollectorRegistry()
    counters = {
        "telemetry": Counter("edgejoule_telemetry_ingested", "telemetry messages stored", ["via"], registry=metrics),
        "duplicates": Counter("edgejoule_telemetry_duplicates", "telemetry messages seen again", registry=metrics),
        "uploads": Counter("edgejoule_model_uploads", "model packages stored", registry=metrics),
        "rejected": Counter("edgejoule_uploads_rejected", "uploads refused", registry=metrics),
        "foreign": Counter("edgejoule_telemetry_foreign", "telemetry refused: not its sender's site or assigned "
                           "models", ["via"], registry=metrics),
        "rejected_messages": Counter("edgejoule_mqtt_messages_rejected", "malformed MQTT messages dropped",
                                     registry=metrics),
    }
    return metrics, counters


def _announce(state: State, agent_ids: list[str]) -> None:
    """Publish each agent's new assignment on its assignment topic (agents also poll for it)."""
    if state.ingest is None:
        return
    with state.sessions() as session:
        for agent_id in agent_ids:
            row = session.get(AssignmentRow, agent_id)
            if row is not None:
                payload = service.assignment_of(session, row, state.settings.public_url,
                                                state.settings.broker_for_agents)
                state.ingest.publish(topics.assignment(agent_id), payload.model_dump_json())


def _openapi_with_problems(app: FastAPI, generate: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's document, with every error answer under ``application/problem+json``, the media type the
    handlers below answer with (FastAPI files an error's model under the route's own media type: JSON, or the
    text of ``/metrics``)."""
    if app.openapi_schema is None:
        for operation in (op for path in generate()["paths"].values() for op in path.values()):
            for status, answer in operation.get("responses", {}).items():
                if status[0] in "45" and answer.get("content"):
                    answer["content"] = {PROBLEM_JSON: next(iter(answer["content"].values()))}
    return app.openapi_schema


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each place that does not match the schema, without echoing the input back (a NaN in it is not
    JSON: that was a 500); ``detail`` is the first of them, the one line a client shows."""
    errors = [ValidationProblem.model_validate(error) for error in exc.errors()]
    first = errors[0]
    detail = f"{'.'.join(map(str, first.loc))}: {first.msg}" + (f" (and {len(errors) - 1} more)" if errors[1:] else "")
    return problem_response(422, detail, errors=errors)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(SERVICE_ERRORS[type(exc)], str(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """The routes' own refusals (HTTPException) and the router's (404 no such path, 405 method)."""
    return problem_response(exc.status_code, str(exc.detail), exc.headers)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """A 500 in the same shape; what went wrong is in the log (``_log_requests``), not told to the caller."""
    return problem_response(500, "the registry failed on this request; its log has the details")


async def _log_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception:  # the 500 Starlette answers: logged here, as one JSON line with its exception
        log.exception("request failed", extra={"method": request.method, "path": request.url.path, "status": 500,
                                               "ms": round((time.perf_counter() - started) * 1000, 2)})
        raise
    log.info("request", extra={"method": request.method, "path": request.url.path, "status": response.status_code,
                               "ms": round((time.perf_counter() - started) * 1000, 2)})
    return response
