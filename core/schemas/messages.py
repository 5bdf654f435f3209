"""Messages the edge agent publishes over MQTT (and, as a fallback, posts over HTTP)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(timezone.utc)


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
    window_start: datetime
    window_end: datetime
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
    sent_at: datetime = Field(default_factory=_now)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    schema_version: Literal[1] = Field(1, alias="schema")
    agent_id: str
    site: str
    sent_at: datetime = Field(default_factory=_now)
    hardware: dict[str, str] = Field(default_factory=dict, description="machine, cpu, memory, meter, ...")
    runtime: str = Field("", description="e.g. ai-edge-litert 2.3.0")
    plugins: list[str] = Field(default_factory=list)
    current_model_id: str | None = None
    previous_model_id: str | None = None


class AgentState(BaseModel):
    """Retained on the agent's status topic; the broker publishes the 'offline' last will for it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(1, alias="schema")
    agent_id: str
    state: Literal["online", "offline"]
    at: datetime = Field(default_factory=_now)
