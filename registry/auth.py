"""Credentials: one admin token, and one token per agent (only its sha256 is stored). The HTTP side, who a
request comes from and what it may do, is in :mod:`edgejoule.registry.api.deps`."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
