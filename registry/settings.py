"""Registry configuration: ``EDGEJOULE_REGISTRY_*`` environment variables (or arguments of ``serve``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEJOULE_REGISTRY_", extra="forbid")

    data_dir: Path = Path("registry-data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite (WAL) in data_dir")
    admin_token: str = Field(min_length=16, description="the admin credential (Bearer token)")
    broker_url: str | None = Field(None, description="mqtt://HOST:PORT; None: no MQTT ingest")
    max_upload_bytes: int = Field(256 * 1024 * 1024, gt=0, description="a model upload (multipart) body")
    max_json_bytes: int = Field(1024 * 1024, gt=0, description="any other request body (JSON)")
    mqtt_client_id: str = Field("edgejoule-registry", description="stable, so the broker keeps the session; "
                                "give each registry process its own")
    mqtt_shared: bool = Field(True, description="subscribe through the MQTT v5 shared subscription, so several "
                              "registry processes split the messages; off for a broker that serves one registry "
                              "(serve's embedded one): mosquitto 2.0 does not persist shared subscriptions, so "
                              "after a broker restart they wait for the registry to subscribe again")
    mqtt_retire_on_stop: bool = Field(False, description="a worker of several that stops cleanly hands its share of "
                                      "the shared subscription to the others (ends its session); off: the broker "
                                      "queues its share until it is back")
    mqtt_ca_file: Path | None = Field(None, description="mqtts://: the CA that signed the broker's certificate "
                                      "(default: the system's)")
    mqtt_client_cert: Path | None = Field(None, description="mqtts://: a client certificate, if the broker wants one")
    mqtt_client_key: Path | None = Field(None, description="mqtts://: its key")
    mqtt_password: str | None = Field(None, description="the registry's broker password (user from the URL)")
    broker_secret_file: Path | None = Field(None, description="the secret the agents' broker passwords derive from; "
                                            "default: DATA_DIR/broker-secret, made at the first start; every "
                                            "registry worker on one broker must read the same")
    offline_after_s: float = Field(180.0, gt=0, description="an agent silent this long shows as offline")
    public_url: str = Field("", description="prefix for package URLs given to agents (default: relative)")
    public_broker_url: str = Field("", description="the broker URL agents are told in their assignment (default: "
                                   "broker_url without its user)")
    rollout_interval_s: float = Field(10.0, gt=0, description="how often the gates of running rollouts are read")
    log_level: str = Field("INFO", description="level of the JSON-lines logs on stderr (app_from_env)")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def broker_for_agents(self) -> str | None:
        """What agents are told to connect to: ``public_broker_url``, else ``broker_url`` without the registry's
        own user (each agent logs in as itself)."""
        if self.public_broker_url or not self.broker_url:
            return self.public_broker_url or None
        url = urlparse(self.broker_url)
        return url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()

    @property
    def broker_secret_path(self) -> Path:
        return self.broker_secret_file or self.data_dir / "broker-secret"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
