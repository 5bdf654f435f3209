"""The HTTP contract between edge agents and the registry: paths and bodies.

Auth: ``Authorization: Bearer <token>``; the admin token and per-agent tokens are separate. An agent
token may only act as its own agent.

================================================  ======  =========================================
path                                              who     what
================================================  ======  =========================================
``POST /api/v1/agents``                           admin   register an agent -> AgentRegistered
``POST /api/v1/agents/{agent_id}/heartbeat``      agent   Heartbeat
``GET  /api/v1/agents/{agent_id}/assignment``     agent   Assignment, or 204 if none
``POST /api/v1/agents/{agent_id}/events``         agent   LoadEvent (failed load -> rollback)
``POST /api/v1/telemetry``                        agent   Telemetry (HTTP fallback of MQTT)
``GET  /api/v1/models/{model_id}/manifest``       both    ModelManifest
``GET  /api/v1/models/{model_id}/package``        both    the .tflite bytes, header X-Content-SHA256
``POST /api/v1/models``                           admin   upload: multipart 'manifest' + 'model'
================================================  ======  =========================================
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgejoule.schemas.messages import Hardware, ReportedTime

API_PREFIX = "/api/v1"
SHA256_HEADER = "X-Content-SHA256"


class AgentRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    site: str
    hardware: Hardware = Field(default_factory=dict)


class AgentRegistered(BaseModel):
    agent_id: str
    site: str
    token: str = Field(description="shown once; the registry stores only its hash")
    mqtt_username: str
    mqtt_password: str


class Assignment(BaseModel):
    """Which model an agent should run now."""

    model_config = ConfigDict(protected_namespaces=())

    agent_id: str
    model_id: str
    version: int
    sha256: str
    size_bytes: int
    manifest_url: str
    package_url: str
    deployment_id: int | None = None
    assigned_at: datetime | None = None
    broker_url: str | None = Field(None, description="the MQTT broker to publish telemetry to (mqtt://HOST:PORT); "
                                   "an agent's own setting overrides it")


class LoadEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    agent_id: str
    model_id: str
    outcome: Literal["loaded", "load_failed", "selftest_failed", "rolled_back"]
    detail: str = Field("", max_length=2000)
    at: ReportedTime | None = None
