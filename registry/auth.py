"""Credentials: one admin token, and one token per agent (only its sha256 is stored). An agent may act
only as itself."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edgejoule.registry.db import AgentRow

bearer = HTTPBearer(auto_error=False)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    admin: bool
    agent_id: str | None = None


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing credentials: send Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    token = credentials.credentials
    if hmac.compare_digest(token.encode(), request.app.state.settings.admin_token.encode()):
        return Principal(admin=True)
    with request.app.state.sessions() as session:
        agent = session.query(AgentRow).filter_by(token_hash=token_hash(token)).one_or_none()
    if agent is None:
        raise HTTPException(401, "invalid credentials", headers={"WWW-Authenticate": "Bearer"})
    return Principal(admin=False, agent_id=agent.id)


def require_admin(who: Principal = Depends(principal)) -> Principal:
    if not who.admin:
        raise HTTPException(403, "this needs the admin credential")
    return who


def require_self_or_admin(agent_id: str, who: Principal = Depends(principal)) -> Principal:
    if not who.admin and who.agent_id != agent_id:
        raise HTTPException(403, f"an agent may only act as itself, not as '{agent_id}'")
    return who
