"""The agent's MQTT login on the registry's broker, unless it is configured with one: the registry derives the
password from the agent's token and answers it to the agent (``GET /agents/{id}/broker-login``). The last answer is
kept in the data directory (mode 0600, beside the token's own configuration) so that a restart while the registry
is away still logs in to the broker; it is kept per token, so a new token asks again."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from edgejoule.edge_agent.registry_client import RegistryClient, RegistryRefused, RegistryUnavailable
from edgejoule.files import write_atomic
from edgejoule.schemas.api import BrokerLogin

log = logging.getLogger("edge_agent")
FILE = "broker-login.json"


class BrokerLogins:
    def __init__(self, data_dir: Path, token: str) -> None:
        self.path = data_dir / FILE
        self._token_id = hashlib.sha256(token.encode()).hexdigest()

    def get(self, registry: RegistryClient) -> BrokerLogin | None:
        """The registry's answer (kept), else the one kept for this token, else None."""
        try:
            login = registry.broker_login()
        except (RegistryUnavailable, RegistryRefused) as exc:
            kept = self._kept()
            log.warning("could not ask the registry for the broker login (%s); %s", exc,
                        "using the one kept from before" if kept else "none kept: telemetry waits for it")
            return kept
        self._keep(login)
        return login

    def _kept(self) -> BrokerLogin | None:
        try:
            kept = json.loads(self.path.read_text())
            return BrokerLogin.model_validate(kept["login"]) if kept.get("token") == self._token_id else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _keep(self, login: BrokerLogin) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"token": self._token_id, "login": login.model_dump()}))
        except OSError as exc:  # a read-only or full disk: the login still works for this run
            log.warning("could not keep the broker login in %s: %s", self.path, exc.strerror)
