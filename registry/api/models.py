"""Model packages: upload (checked before anything is written), list, and the manifest and package an agent
downloads."""

from __future__ import annotations

import hashlib
import logging

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import tuple_
from sqlalchemy.orm import Session

from edgejoule.errors import first_problem
from edgejoule.registry import service
from edgejoule.registry.api.deps import ADMIN, CallerDep, CountersDep, Principal, SessionsDep, SettingsDep, StoreDep
from edgejoule.registry.api.paging import PAGED, Cursor, Limit, after, page
from edgejoule.registry.db import AliasRow, AssignmentRow, ModelRow
from edgejoule.registry.schemas import DeletedModel, ModelSummary, UploadedModel
from edgejoule.schemas.api import SHA256_HEADER
from edgejoule.schemas.http import CONTENT_DIGEST_HEADER, content_digest
from edgejoule.schemas.manifest import ModelManifest

TFLITE_MAGIC = b"TFL3"
log = logging.getLogger("registry")

router = APIRouter()


@router.post("/models", status_code=201, dependencies=ADMIN)
async def upload_model(settings: SettingsDep, sessions: SessionsDep, store: StoreDep, counters: CountersDep,
                       manifest: UploadFile = File(...), model: UploadFile = File(...)) -> UploadedModel:
    """Upload a model package: its manifest (JSON) and its .tflite file. Nothing is stored unless both are valid."""
    limit = settings.max_upload_bytes
    try:
        parsed = ModelManifest.model_validate_json(await manifest.read(1024 * 1024))
    except ValidationError as exc:
        counters["rejected"].inc()
        raise HTTPException(422, f"invalid manifest: {first_problem(exc)}") from None
    try:
        service.check_fits(parsed)
    except ValueError as exc:
        counters["rejected"].inc()
        raise HTTPException(422, f"invalid manifest: {exc}") from None
    data = await model.read(limit + 1)
    problem = None
    if len(data) > limit:
        problem = (413, f"model file larger than the {limit}-byte limit")
    elif data[4:8] != TFLITE_MAGIC:
        problem = (422, "the model file is not a TFLite flatbuffer (no TFL3 identifier)")
    elif len(data) != parsed.size_bytes:
        problem = (422, f"model file has {len(data)} bytes, the manifest says {parsed.size_bytes}")
    elif hashlib.sha256(data).hexdigest() != parsed.sha256:
        problem = (422, "model file sha256 does not match the manifest")
    if problem:
        counters["rejected"].inc()
        raise HTTPException(*problem)
    with sessions.begin() as session:
        row = service.add_model(session, parsed)
        store.put(data)
        result = UploadedModel(id=row.id, site=row.site, task=row.task, version=row.version, sha256=row.sha256)
    counters["uploads"].inc()
    return result


@router.get("/models", dependencies=ADMIN, responses=PAGED)
def list_models(sessions: SessionsDep, request: Request, response: Response, site: str | None = None,
                limit: Limit = 100, cursor: Cursor = None) -> list[ModelSummary]:
    """The packages by site and version, a page at a time (``Link`` to the next)."""
    order = (ModelRow.site, ModelRow.version, ModelRow.id)
    with sessions() as session:
        q = session.query(ModelRow)
        if site:
            q = q.filter_by(site=site)
        if (start := after(cursor, (str, int, str))) is not None:
            q = q.filter(tuple_(*order) > tuple_(*start))
        models = page(q.order_by(*order).limit(limit + 1).all(), limit, lambda m: [m.site, m.version, m.id],
                      request, response)
        aliases = {(a.model_id): a.name for a in session.query(AliasRow)}
        return [{"id": m.id, "site": m.site, "task": m.task, "family": m.family, "version": m.version,
                 "estimated_energy_uj": m.estimated_energy_uj, "metrics": m.manifest.get("metrics", {}),
                 "alias": aliases.get(m.id), "created_at": m.created_at} for m in models]


@router.delete("/models/{model_id}", dependencies=ADMIN)
def delete_model(model_id: str, sessions: SessionsDep, store: StoreDep) -> DeletedModel:
    """Delete a package and, unless another package has the same bytes, its file. 409 naming what holds it while
    an agent is assigned it, an alias names it or a running rollout compares it."""
    with sessions.begin() as session:
        model, cleared = service.delete_model(session, model_id)
        session.flush()
        unused = service.unused_sha256(session, model.sha256)
    if unused:  # after the commit: a failed commit must not leave a row without its file
        store.remove(model.sha256)
    return DeletedModel(id=model_id, rollback_cleared=cleared)


@router.get("/models/{model_id}/manifest")
def get_manifest(model_id: str, who: CallerDep, sessions: SessionsDep) -> ModelManifest:
    with sessions() as session:
        _may_read(who, session, model_id)
        return service.get_model(session, model_id).manifest


@router.get("/models/{model_id}/package")
def get_package(model_id: str, who: CallerDep, sessions: SessionsDep, store: StoreDep) -> FileResponse:
    with sessions() as session:
        _may_read(who, session, model_id)
        model = service.get_model(session, model_id)
    path = store.path(model.sha256)
    if not path.exists():  # the store lost it (a disk replaced, a backup restored without it): say so, once per ask
        log.error("the package file of a model is missing", extra={"model_id": model_id, "path": str(path)})
        raise HTTPException(410, f"the package file of model '{model_id}' is missing from the artifact store; "
                                 f"upload the package again under a new id")
    # RFC 9530's Content-Digest for any HTTP client; X-Content-SHA256 for agents that predate it
    return FileResponse(path, media_type="application/octet-stream",
                        headers={CONTENT_DIGEST_HEADER: content_digest(model.sha256), SHA256_HEADER: model.sha256})


def _may_read(who: Principal, session: Session, model_id: str) -> None:
    if who.admin:
        return
    assignment = session.get(AssignmentRow, who.agent_id)
    if assignment is None or model_id not in (assignment.model_id, assignment.previous_model_id):
        raise HTTPException(403, "an agent may only read the models assigned to it")
