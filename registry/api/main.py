"""The routers joined: the resources under ``API_PREFIX``, operations and the dashboard at the root."""

from __future__ import annotations

from fastapi import APIRouter

from edgejoule.registry.api import (
    agents,
    dashboard,
    dead_letters,
    deployments,
    fleet,
    health,
    models,
    plugins,
    rollouts,
    sites,
    telemetry,
)
from edgejoule.schemas.api import API_PREFIX

api_router = APIRouter(prefix=API_PREFIX)
for resource in (models, sites, agents, deployments, rollouts, telemetry, dead_letters, fleet, plugins):
    api_router.include_router(resource.router)

root_router = APIRouter()
for operations in (health, dashboard):
    root_router.include_router(operations.router)
