"""Sites: the configurations the server knows, and the aliases (production, candidate, ...) of each site's
models."""

from __future__ import annotations

from fastapi import APIRouter, Body, HTTPException
from fastapi import Path as PathParam

from edgejoule.registry import service
from edgejoule.registry.api.deps import ADMIN, SessionsDep
from edgejoule.registry.db import AliasRow
from edgejoule.registry.schemas import AliasRequest, AliasSet
from edgejoule.sites import SiteConfig, list_sites

router = APIRouter(dependencies=ADMIN)


@router.put("/sites/{site}/aliases/{name}")
def set_alias(sessions: SessionsDep, site: str = PathParam(max_length=64),
              name: str = PathParam(pattern=r"^[A-Za-z0-9._-]{1,32}$"), body: AliasRequest = Body(...)) -> AliasSet:
    """Point an alias (production, candidate, ...) of a site at one of its models."""
    with sessions.begin() as session:
        model = service.get_model(session, body.model_id)
        if model.site != site:
            raise HTTPException(409, f"model '{model.id}' belongs to site '{model.site}'")
        session.merge(AliasRow(site=site, task=model.task, name=name, model_id=model.id))
    return AliasSet(site=site, alias=name, model_id=body.model_id)


@router.get("/sites")
def get_sites() -> dict[str, SiteConfig]:
    return list_sites()
