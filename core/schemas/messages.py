"""Messages the edge agent publishes over MQTT (and, as a fallback, posts over HTTP)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _now() -> datetime:
    return datetime.now(timezone.utc)


# what a reported time may be: no earlier than this, and no later than the receiver's clock plus the skew
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_CLOCK_SKEW = timedelta(days=1)


def within_range(moment: datetime, latest: datetime) -> datetime:
    """``moment`` if it lies in ``[EARLIEST, latest]`` (a naive time read as UTC), else ValueError. The year is
    checked first: converting year 1 or 9999 with an offset to UTC overflows, and PostgreSQL refuses such
    times (one stored heartbeat of year 1 turned every fleet query into a 500)."""
    if not EARLIEST.year <= moment.year <= latest.year:
        raise ValueError(f"a time between {EARLIEST.year} and {latest.year}")
    utc = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    if not EARLIEST <= utc <= latest:
        raise ValueError(f"a time between {EARLIEST.isoformat()} and {latest.isoformat(timespec='seconds')}")
    return moment


def _reported(moment: datetime) -> datetime:
    return within_range(moment, datetime.now(timezone.utc) + MAX_CLOCK_SKEW)


# a time an agent reports (window, heartbeat, state): not before 2000, at most a day ahead of the receiver
ReportedTime = Annotated[datetime, AfterValidator(_reported)]
Name = Annotated[str, StringConstraints(max_length=128)]
# what a machine says about itself: a few dozen short entries (a 5 MB heartbeat field was stored before)
Hardware = Annotated[dict[Name, Annotated[str, StringConstraints(max_length=1024)]], Field(max_length=64)]


class Telemetry(BaseModel):
    """One measurement window of one agent: energy and latency per inference, and achieved quality.

    ``message_id`` makes ingestion idempotent: a message replayed from the agent's spool or redelivered by
    the broker is stored once.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    schema_version: Literal[1] = Field(1, alias="schema")
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=8, max_length=64)
    agent_id: str
    site: str
    model_id: str | None = Field(None, description="None while serving the classical fallback")
    fallback: str | None = Field(None, description="the baseline served instead of a model, e.g. 'zf'")
    window_start: ReportedTime
    window_end: ReportedTime
    inferences: int = Field(ge=0)
    meter: str = Field(description="energy meter plugin, e.g. rapl, pi5_pmic, ina219, cpu_time")
    meter_kind: Literal["measured", "estimated"]
    energy_total_uj: float = Field(ge=0, description="per inference, idle power included")
    energy_dynamic_uj: float = Field(description="per inference, idle power subtracted (may be < 0 by noise)")
    idle_power_w: float = Field(ge=0)
    estimated_energy_uj: float | None = Field(None, description="the manifest's accelerator-model estimate")
    latency_ms_p50: float = Field(ge=0)
    latency_ms_p95: float = Field(ge=0)
    latency_ms_p99: float = Field(ge=0)
    quality: dict[str, float] = Field(default_factory=dict, description="e.g. {'sum_rate': 11.2}")
    sent_at: ReportedTime = Field(default_factory=_now)


class TelemetryHealth(BaseModel):
    """How an agent's telemetry is faring: what waits, what was lost and why (heartbeats, ``edge-agent status``)."""

    model_config = ConfigDict(extra="forbid")

    pending: int = Field(0, ge=0, description="windows waiting in the spool (and in memory while it is degraded)")
    dropped: int = Field(0, ge=0, description="windows lost: the spool's cap reached, or memory full while degraded")
    rejected: int = Field(0, ge=0, description="windows the registry refused as invalid (never retried)")
    degraded: str | None = Field(None, max_length=500, description="why the spool cannot be written, if so")
    refused: str | None = Field(None, max_length=500, description="the last delivery refusal (PUBACK code, HTTP status)")
    broker: str | None = Field(None, max_length=500, description="why the broker is not connected, if it is not")


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    schema_version: Literal[1] = Field(1, alias="schema")
    agent_id: str
    site: str
    sent_at: ReportedTime = Field(default_factory=_now)
    hardware: Hardware = Field(default_factory=dict, description="machine, cpu, memory, meter, ...")
    runtime: str = Field("", description="e.g. ai-edge-litert 2.3.0")
    plugins: list[Name] = Field(default_factory=list, max_length=256)
    current_model_id: str | None = None
    previous_model_id: str | None = None
    telemetry: TelemetryHealth | None = Field(None, description="absent from agents older than this field")


class AgentState(BaseModel):
    """Retained on the agent's status topic; the broker publishes the 'offline' last will for it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(1, alias="schema")
    agent_id: str
    state: Literal["online", "offline"]
    at: ReportedTime = Field(default_factory=_now)
