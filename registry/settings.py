"""Registry configuration: ``EDGEJOULE_REGISTRY_*`` environment variables (or arguments of ``serve``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEJOULE_REGISTRY_", extra="forbid")

    data_dir: Path = Path("registry-data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite (WAL) in data_dir")
    admin_token: str = Field(min_length=16, description="the admin credential (Bearer token)")
    broker_url: str | None = Field(None, description="mqtt://HOST:PORT; None: no MQTT ingest")
    max_upload_bytes: int = Field(256 * 1024 * 1024, gt=0)
    mqtt_client_id: str = Field("edgejoule-registry", description="stable, so the broker keeps the session; "
                                "give each registry process its own")
    mqtt_password: str | None = Field(None, description="the registry's broker password (user from the URL)")
    offline_after_s: float = Field(180.0, gt=0, description="an agent silent this long shows as offline")
    public_url: str = Field("", description="prefix for package URLs given to agents (default: relative)")
    log_level: str = Field("INFO", description="level of the JSON-lines logs on stderr (app_from_env)")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
