"""The library's own settings (``EDGEJOULE_*``), read from the environment where they are used.

Three prefixes, one per process that reads them: ``EDGEJOULE_`` for the library and the ``edgejoule`` command
(these), ``EDGEJOULE_REGISTRY_`` for the registry service (``edgejoule.registry.settings``) and ``EDGE_AGENT_`` for
the edge agent (``edgejoule.edge_agent.config``): a machine that runs two of them (a registry beside an agent, in
the demo) configures each without the other reading its variables. ``EDGEJOULE_ADMIN_TOKEN``, the client's token,
falls back to the server's ``EDGEJOULE_REGISTRY_ADMIN_TOKEN`` (one machine, one token).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read anew at each use (no settings are cached in the process): a test or an embedding program that changes the
    environment is seen at once."""

    model_config = SettingsConfigDict(env_prefix="EDGEJOULE_", extra="ignore")

    cache: Path | None = Field(None, description="where the datasets are cached (DIR/datasets); default: XDG cache")
    sites: Path | None = Field(None, description="a directory of site configurations (*.json) beside the named ones")
    disable_plugins: str = Field("", description="entry-point names not to load, comma-separated")

    @field_validator("cache", "sites", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        """``EDGEJOULE_CACHE=`` (set, empty) means the default, as an unset variable, not the working directory."""
        return None if value == "" else value

    @property
    def disabled_plugins(self) -> set[str]:
        return {name.strip() for name in self.disable_plugins.split(",") if name.strip()}
