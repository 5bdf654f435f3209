"""Deployments: a model (a package, or a classical method such as ``method:rzf-equal``) to a site's agents, all of
them, a fraction first (staged rollout), or a list."""

from __future__ import annotations

from fastapi import APIRouter

from edgejoule.registry import service
from edgejoule.registry.api.deps import ADMIN, NotifyDep, SessionsDep
from edgejoule.registry.schemas import DeploymentRequest, DeploymentResult

router = APIRouter(dependencies=ADMIN)


@router.post("/deployments", status_code=201)
def create_deployment(body: DeploymentRequest, sessions: SessionsDep, notify: NotifyDep) -> DeploymentResult:
    """Assign a model to a site's agents: all, a fraction first (staged rollout), or a list."""
    with sessions.begin() as session:
        deployment, agents = service.deploy(session, body.site, body.model_id, body.fraction, body.agents)
        result = DeploymentResult(deployment_id=deployment.id, site=body.site, model_id=deployment.model_id,
                                  agents=agents)
    notify(agents)
    return result
