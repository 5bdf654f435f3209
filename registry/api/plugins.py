"""Plugins: the server's, and what each agent reported in its last heartbeat."""

from __future__ import annotations

from fastapi import APIRouter

from edgejoule import plugin_manager
from edgejoule.registry.api.deps import ADMIN, SessionsDep
from edgejoule.registry.db import AgentRow
from edgejoule.registry.schemas import Plugins

router = APIRouter(dependencies=ADMIN)


@router.get("/plugins")
def get_plugins(sessions: SessionsDep) -> Plugins:
    manager = plugin_manager.get_manager()
    with sessions() as session:
        agents = {a.id: a.plugins for a in session.query(AgentRow)}
    return Plugins(server={name: info.provides for name, info in manager.infos.items()}, agents=agents)
