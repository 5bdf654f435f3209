"""The dashboard: one HTML page that reads the API with the admin token typed into it, and the chart library it
loads from the registry itself (registry/static/, vendored), so the page works where the network is closed."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

router = APIRouter()

STATIC_TYPES = {"uPlot.iife.min.js": "text/javascript; charset=utf-8", "uPlot.min.css": "text/css; charset=utf-8"}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> str:
    return resources.files("edgejoule.registry").joinpath("dashboard.html").read_text()


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """A vendored asset, outside the API prefix so it needs no token. The page asks for it with the library's
    version in the query, so a year's caching never serves an old file after an upgrade."""
    if name not in STATIC_TYPES:
        raise HTTPException(404, f"no static file {name}")
    body = resources.files("edgejoule.registry").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC_TYPES[name],
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})
