"""The routes' dependencies: the parts of the app that ``create_app`` and its lifespan put on ``app.state``
(each app its own: tests serve several in one process), and who a request comes from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.orm import Session, sessionmaker

from edgejoule.registry import service
from edgejoule.registry.artifacts import ArtifactStore
from edgejoule.registry.broker_passwords import BrokerPasswords
from edgejoule.registry.gate import Principal
from edgejoule.registry.ingest import MqttIngest
from edgejoule.registry.settings import RegistrySettings

bearer = HTTPBearer(auto_error=False)
Checked = TypeVar("Checked")


def _from_state(name: str) -> Any:
    async def dependency(request: Request) -> Any:  # async: FastAPI would send a plain def to its thread pool
        return getattr(request.app.state, name)

    return Depends(dependency)


SettingsDep = Annotated[RegistrySettings, _from_state("settings")]
SessionsDep = Annotated[sessionmaker[Session], _from_state("sessions")]
StoreDep = Annotated[ArtifactStore, _from_state("store")]
MetricsDep = Annotated[CollectorRegistry, _from_state("metrics")]
CountersDep = Annotated[dict[str, Counter], _from_state("counters")]
IngestDep = Annotated[MqttIngest | None, _from_state("ingest")]  # None without a broker
PasswordsDep = Annotated[BrokerPasswords, _from_state("passwords")]
# publishes the agents' new assignments over MQTT (a no-op without a broker)
NotifyDep = Annotated[Callable[[list[str]], None], _from_state("notify")]


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """Who sends the request: the gate (``edgejoule.registry.gate``) checked the credentials before the body was
    read. ``credentials`` is here for the OpenAPI description (the Bearer scheme), not read."""
    return request.state.principal


def require_admin(who: Principal = Depends(principal)) -> Principal:
    if not who.admin:
        raise HTTPException(403, "this needs the admin credential")
    return who


def require_self_or_admin(agent_id: str, who: Principal = Depends(principal)) -> Principal:
    if not who.admin and who.agent_id != agent_id:
        raise HTTPException(403, f"an agent may only act as itself, not as '{agent_id}'")
    return who


CallerDep = Annotated[Principal, Depends(principal)]
ADMIN = [Depends(require_admin)]
SELF_OR_ADMIN = [Depends(require_self_or_admin)]


def fits(message: Checked) -> Checked:
    """``message`` if every value fits its column (``service.check_fits``); a 422 naming the one that does not."""
    try:
        return service.check_fits(message)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
