"""The dashboard: one HTML page that reads the API with the admin token typed into it."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> str:
    return resources.files("edgejoule.registry").joinpath("dashboard.html").read_text()
