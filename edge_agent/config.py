"""Agent configuration: environment variables ``EDGE_AGENT_*`` and, optionally, a JSON file named by
``EDGE_AGENT_CONFIG_FILE`` (environment variables win)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, JsonConfigSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict


def check_url(value: str, schemes: tuple[str, ...], form: str) -> None:
    """Raise ValueError unless ``value`` has one of ``schemes``, a host and (if given) a numeric port."""
    url = urlsplit(value)
    try:
        port = url.port
    except ValueError:
        port = -1
    if url.scheme not in schemes or not url.hostname or port == -1 or url.netloc.endswith(":"):
        raise ValueError(f"'{value}' is not a URL of the form {form}")


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_AGENT_", extra="forbid")

    agent_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    site: str
    registry_url: str = "http://127.0.0.1:8000"
    token: str = Field("", description="the agent's own credential, from registration")
    broker_url: str | None = Field(None, description="mqtt://HOST:PORT; None: the broker the registry names in the "
                                     "assignment, and telemetry over HTTP until it names one")
    mqtt_username: str | None = Field(None, description="MQTT login; default: the agent id, when a token is set")
    mqtt_password: str | None = Field(None, description="default: the one the registry gives this agent's token "
                                      "(GET /agents/ID/broker-login), kept in DATA_DIR for restarts")
    mqtt_ca_file: Path | None = Field(None, description="the CA that signed an mqtts:// broker's certificate (the "
                                      "registry's DATA_DIR/broker/tls/ca.crt); default: the system's CAs")
    meter: str = Field("auto", description="energy meter plugin, or auto (best available)")
    source: str = Field("replay", description="replay (the site's test split), npz:PATH (file or directory), "
                                              "http:HOST:PORT, unix:PATH or tcp:HOST:PORT (edge_agent/sources.py)")
    data_dir: Path = Path("edge-agent-data")
    window_inferences: int = Field(500, ge=1, description="inferences per telemetry window")
    idle_seconds: float = Field(1.0, ge=0, description="idle measurement at start and on refresh")
    idle_refresh_windows: int = Field(20, ge=1, description="re-measure idle power every N windows")
    poll_seconds: float = Field(30.0, gt=0)
    max_package_bytes: int = Field(256 * 1024 * 1024, gt=0)
    threads: int = Field(1, ge=1)
    warmup_inferences: int = Field(100, ge=0, description="run, unmeasured, after every package load (first "
                                                          "invokes allocate and fill caches: not the model's cost)")
    meter_hz: float = Field(200.0, gt=0, le=10_000, description="sampling rate of power meters (INA2xx, Pi 5 PMIC)")
    spool_max_messages: int = Field(100_000, ge=1, description="windows kept while undelivered; the oldest go first")
    spool_sync: Literal["normal", "full"] = Field("normal", description="SQLite synchronous: full fsyncs every window")
    shutdown_seconds: float = Field(5.0, ge=0, description="on SIGTERM/SIGINT: time to deliver what waits")
    health: str | None = Field(None, description="HOST:PORT of the local health endpoint (GET /healthz); None: off")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("registry_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        check_url(v, ("http", "https"), "http://HOST:PORT")
        return v

    @field_validator("broker_url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        if v is not None:
            check_url(v, ("mqtt", "mqtts"), "mqtt://HOST:PORT or mqtts://HOST:PORT")
        return v

    @field_validator("health")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            check_url(f"http://{v}", ("http",), "HOST:PORT (e.g. 127.0.0.1:8557)")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        from edgejoule.edge_agent.sources import check_spec

        check_spec(v)
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _mqtt_login(self) -> "AgentSettings":
        # the registry's broker (broker-auth, serve's embedded one) knows each agent by its id, with a password
        # the agent asks the registry for with its token, so one credential is all an agent is given; an explicit
        # login (another broker's) wins
        if self.mqtt_username is None and self.token:
            self.mqtt_username = self.agent_id
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[Any] = [init_settings, env_settings]
        config_file = os.environ.get("EDGE_AGENT_CONFIG_FILE")
        if config_file:
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=config_file))
        return tuple(sources)

    @property
    def packages_dir(self) -> Path:
        return self.data_dir / "packages"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"
