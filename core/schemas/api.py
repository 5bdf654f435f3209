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

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgejoule.schemas.messages import Hardware, ReportedTime
from edgejoule.schemas.targets import MethodTarget

API_PREFIX = "/api/v1"
SHA256_HEADER = "X-Content-SHA256"


class AgentRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    site: str
    hardware: Hardware = Field(default_factory=dict)


class BrokerLogin(BaseModel):
    """An agent's MQTT login on the registry's broker. The password is derived from the registry's secret and the
    agent's current token (a rotation changes it): the agent asks for it with its token."""

    mqtt_username: str
    mqtt_password: str


class AgentRegistered(BrokerLogin):
    agent_id: str
    site: str
    token: str = Field(description="shown once; the registry stores only its hash")


class Assignment(BaseModel):
    """Which model an agent should run now: a package (``sha256``, ``size_bytes`` and the two URLs) or a classical
    method (``method``; ``model_id`` is its target id, e.g. ``method:rzf-equal``)."""

    model_config = ConfigDict(protected_namespaces=())

    agent_id: str
    model_id: str
    version: int | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    manifest_url: str | None = None
    package_url: str | None = None
    method: MethodTarget | None = None
    deployment_id: int | None = None
    assigned_at: datetime | None = None
    broker_url: str | None = Field(None, description="the MQTT broker to publish telemetry to (mqtt://HOST:PORT); "
                                   "an agent's own setting overrides it")

    @model_validator(mode="after")
    def _package_or_method(self) -> Assignment:
        package = (self.sha256, self.size_bytes, self.manifest_url, self.package_url)
        if self.method is not None:
            if any(v is not None for v in package) or self.model_id != self.method.id:
                raise ValueError("a method assignment names no package, and its model_id is the method's id")
        elif any(v is None for v in package):
            raise ValueError("a package assignment needs sha256, size_bytes, manifest_url and package_url")
        return self


class LoadEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    agent_id: str
    model_id: str
    outcome: Literal["loaded", "load_failed", "selftest_failed", "rolled_back"]
    detail: str = Field("", max_length=2000)
    at: ReportedTime | None = None
