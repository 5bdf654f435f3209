"""The registry's admin requests and answers (models, agents, deployments, fleet queries, operations): what
``/openapi.json`` documents for them, checked on the way in and out by the service and read with the same
models by the ``edgejoule`` client. The agent contract is :mod:`edgejoule.schemas.api`.

Fleet rows are ``TypedDict``s: their keys follow the grouping (a per-site row has no ``model_id``), and a
per-agent answer has a thousand rows, which pydantic checks as plain dicts without building a model each."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from typing_extensions import NotRequired, TypedDict

from edgejoule.registry.rollout_gate import GateResult, parse_policy
from edgejoule.schemas.http import Problem
from edgejoule.schemas.messages import within_range


def utc(moment: datetime) -> datetime:
    """Aware UTC; a naive time is taken as UTC. Stored times are UTC, so SQLite (which keeps no zone) compares
    and buckets them the same way as PostgreSQL, and answers say so, as RFC 3339 (the OpenAPI date-time) requires."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(utc)]
# the latest time a fleet query may name: far enough for "until forever", near enough to convert to UTC
LATEST_QUERY = datetime(9000, 1, 1, tzinfo=timezone.utc)


def _queried(moment: datetime) -> datetime:
    return within_range(moment, LATEST_QUERY)


# a fleet query's since/until: from 2000 on (times out of Python's or PostgreSQL's range were 500s)
QueryTime = Annotated[datetime, AfterValidator(_queried)]


# every error answer is a problem (RFC 9457); the OpenAPI names its media type (``_openapi_with_problems`` in app.py)
PROBLEMS = {status: {"model": Problem} for status in (400, 401, 403, 404, 409, 410, 413, 422, 500)}


class DeploymentRequest(BaseModel):
    site: str
    model_id: str = Field(max_length=128, description="a package id, or a classical method: method:NAME or "
                          "method:NAME(key=value,...), e.g. method:rzf-equal, method:wmmse(tol=0.01)")
    fraction: float = Field(1.0, gt=0, le=1, description="share of the site's agents (staged rollout)")
    agents: list[str] | None = Field(None, description="exactly these agents instead of a fraction")


class DeploymentResult(BaseModel):
    deployment_id: int
    site: str
    model_id: str = Field(description="what was deployed; a method in its canonical spelling")
    agents: list[str]


class AliasRequest(BaseModel):
    model_id: str


class UploadedModel(BaseModel):
    id: str
    site: str
    task: str
    version: int
    sha256: str


class DeletedModel(BaseModel):
    id: str
    rollback_cleared: list[str] = Field(description="agents that had it as their previous model: no rollback now")


class ModelSummary(BaseModel):
    id: str
    site: str
    task: str
    family: str
    version: int
    estimated_energy_uj: float = Field(description="the energy model's estimate per inference, from the manifest")
    metrics: dict[str, float] = Field(description="on the site's test split, from the manifest")
    alias: str | None = Field(description="an alias of the site pointing at this model, if any")
    created_at: UtcDatetime


class AliasSet(BaseModel):
    site: str
    alias: str
    model_id: str


class AgentSummary(BaseModel):
    agent_id: str
    site: str
    state: Literal["online", "offline", "unknown"] = Field(
        description="online only while heartbeats keep coming; offline at once on the MQTT last will")
    current_model_id: str | None
    runtime: str
    hardware: dict[str, str]
    plugins: list[str]
    last_seen: UtcDatetime | None


class RolledBack(BaseModel):
    agent_id: str
    model_id: str = Field(description="the model the agent is assigned again")


class _Sums(TypedDict):
    windows: int
    inferences: int
    energy_total_uj: float | None  # per inference, measured; None without inferences
    energy_dynamic_uj: float | None
    estimated_energy_uj: float | None  # mean of the windows' estimates, where they carry one
    latency_ms_p50: float | None  # means of the windows' percentiles, weighted by inferences
    latency_ms_p95: float | None
    quality: dict[str, float]  # each metric's mean, weighted by the inferences of the windows reporting it


class FleetRow(_Sums):
    """One group of ``GET /fleet``: its key (``site``; ``model_id`` when grouped by model or agent, None for
    the fallback baseline; ``agent_id`` when grouped by agent) and the meters that measured it."""

    site: str
    model_id: NotRequired[str | None]
    agent_id: NotRequired[str]
    meters: list[str]


class SeriesPoint(_Sums):
    """One site, model and time bucket of ``GET /fleet/series``."""

    site: str
    model_id: str | None
    bucket_start: int  # epoch seconds (UTC)


class ParetoPoint(BaseModel):
    model_id: str
    version: int
    estimated_energy_uj: float
    energy_counting: Literal["implemented", "paper"] = Field(
        description="the counting rule of the estimate (edgejoule.energy.counting; packages from before it: paper)")
    measured_energy_uj: float | None = Field(description="the fleet's energy per inference, if it ran")
    quality: float | None = Field(description="the requested metric on the test split, from the manifest")
    on_front: bool = Field(description="no other model of the site whose estimate has the same counting has both "
                           "less energy and more quality")


class Ecal(BaseModel):
    model_id: str
    inferences: int
    training_energy_j: float
    inference_energy_j: float
    n_train: int
    ecal_j_per_bit: float | None = Field(description="None before the model has run or been trained")


class Plugins(BaseModel):
    server: dict[str, dict[str, list[str]]] = Field(description="plugin -> kind of thing -> names it provides")
    agents: dict[str, list[str]] = Field(description="agent -> the plugins its last heartbeat reported")


class Health(BaseModel):
    status: Literal["ok"]
    mqtt: bool | None = Field(description="the MQTT ingest's connection; None without a broker")


class Readiness(BaseModel):
    """``/readyz``: 200 when everything the registry depends on answers, 503 naming what does not."""

    status: Literal["ready", "unavailable"]
    database: bool = Field(description="the database answered SELECT 1")
    mqtt: bool | None = Field(description="the MQTT ingest's subscriptions are granted; None without a broker")


class DeadLetter(BaseModel):
    """An MQTT message the ingest refused, newest first (``GET /dead-letters``)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    topic: str
    reason: str
    payload: str = Field(description="the first 4 KiB, invalid UTF-8 escaped")
    received_at: datetime


def _stages(stages: list[float]) -> list[float]:
    if not all(0 < f <= 1 for f in stages) or any(b <= a for a, b in zip(stages, stages[1:])) or stages[-1] != 1:
        raise ValueError("stages are increasing fractions of the site's agents in (0, 1], the last 1 (e.g. 0.1,0.5,1)")
    return stages


def _gate(text: str) -> str:
    """The gate in one spelling (``quality>=0.99,energy<=1``), after ``parse_policy`` read it."""
    return ",".join(str(c) for c in parse_policy(text))


class RolloutRequest(BaseModel):
    """``POST /rollouts``: a gated rollout of ``candidate`` on ``site`` against what its agents serve now."""

    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(min_length=1, max_length=128, description="a package id or a method (method:rzf-equal)")
    site: str = Field(min_length=1, max_length=64)
    stages: Annotated[list[float], AfterValidator(_stages)] = Field(
        [0.1, 0.5, 1.0], min_length=1, max_length=20, description="fractions of the site's agents, in order")
    gate: Annotated[str, AfterValidator(_gate)] = Field(
        "quality>=0.99,energy<=1.0", max_length=256,
        description="criteria on candidate/incumbent ratios: quality, energy (per inference), latency (p95)")
    quality_metric: str = Field("sum_rate", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                description="the telemetry quality metric the gate's 'quality' reads")
    min_inferences: int = Field(1000, ge=1, le=2**31 - 1, description="per side, before any decision")
    min_windows: int = Field(5, ge=2, le=10**6, description="per side, before any decision")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="of each decision against noise")
    timeout_s: float = Field(3600.0, gt=0, le=366 * 86400, description="per stage; then on_timeout is done")
    on_timeout: Literal["rollback", "promote"] = "rollback"
    started_by: str = Field("admin", min_length=1, max_length=64, description="who asked, for the history")


class RolloutAction(BaseModel):
    """Pause, resume, abort or roll back, with why (kept in the rollout's events)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


class RolloutEvent(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: UtcDatetime
    stage: int
    kind: str = Field(description="started, stage, passed, failed, timed_out, paused, resumed, promoted, "
                                  "rolled_back, aborted, reverted")
    reason: str
    readings: GateResult | None = Field(description="the gate's reading behind a decision")


RolloutState = Literal["running", "paused", "promoted", "rolled_back", "aborted", "reverted"]


class Rollout(BaseModel):
    """A rollout as it stands, with its events (oldest first)."""

    id: int
    site: str
    candidate: str
    incumbent: str
    state: RolloutState
    reason: str = Field(description="why it ended (empty while it runs: see readings)")
    stage: int = Field(description="index into stages")
    stages: list[float]
    canaries: list[str] = Field(description="the agents serving the candidate at this stage")
    agent_order: list[str] = Field(description="the site's agents in the order the stages take them")
    gate: str
    quality_metric: str
    min_inferences: int
    min_windows: int
    confidence: float
    timeout_s: float
    on_timeout: Literal["rollback", "promote"]
    started_by: str
    started_at: UtcDatetime
    stage_started_at: UtcDatetime
    deadline: UtcDatetime
    ended_at: UtcDatetime | None
    readings: GateResult | None = Field(description="the gate's latest reading")
    events: list[RolloutEvent]


class ServedPeriod(BaseModel):
    target: str = Field(description="the package or method the site's agents served")
    since: UtcDatetime | None = Field(description="None: before the first rollout the registry knows of")
    until: UtcDatetime | None = Field(description="None: still serving")
    how: str = Field(description="what made it the site's")


class SiteHistory(BaseModel):
    """``GET /sites/{site}/history``: what served when, and every rollout (newest first)."""

    site: str
    served: list[ServedPeriod]
    rollouts: list[Rollout]
