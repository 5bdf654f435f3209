"""The gate every request passes before the app does any work for it (an ASGI middleware): who sends it, then
how large and how clean its body is, read under a cap.

FastAPI reads and parses a request's body before it solves the route's dependencies, authentication included:
a 200 MB JSON body without a token was read, parsed and held (923 MB peak) for a 401. Here the credentials are
checked from the headers alone, before a byte of the body is read; a declared length over the cap is refused at
once and a body that grows past it (chunked) as soon as it does (413). JSON bodies (the API has no other kind
except uploads, which are multipart) are read whole, under ``max_json_bytes``, and refused with 422 if they
hold NUL, which PostgreSQL cannot store, or are not strict JSON (a lone surrogate such as ``\\ud800``, which no
UTF-8 column can hold, turned every fleet answer into a 500); the app then gets the same bytes.

Its refusals, like every error answer of the app (``problem_response``), are RFC 9457 problem details."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import pydantic_core
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgejoule.registry.auth import token_hash
from edgejoule.registry.db import AgentRow
from edgejoule.schemas.api import API_PREFIX
from edgejoule.schemas.http import PROBLEM_JSON, ValidationProblem, problem


@dataclass(frozen=True)
class Principal:
    admin: bool
    agent_id: str | None = None


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers

    def response(self) -> JSONResponse:
        return problem_response(self.status, self.detail, self.headers)


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None,
                     errors: list[ValidationProblem] | None = None) -> JSONResponse:
    """An error answer as RFC 9457 problem details: the gate's refusals and the app's errors alike (app.py), so a
    client reads one shape whichever layer refused."""
    body = problem(status, detail, errors).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def authenticate(state, authorization: str | None) -> Principal:
    """The admin or an agent, from ``Authorization: Bearer <token>``; Refused (401) otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Refused(401, "missing credentials: send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    if hmac.compare_digest(token.encode(), state.settings.admin_token.encode()):
        return Principal(admin=True)
    with state.sessions() as session:
        agent_id = session.query(AgentRow.id).filter_by(token_hash=token_hash(token)).scalar()
    if agent_id is None:
        raise Refused(401, "invalid credentials", {"WWW-Authenticate": "Bearer"})
    return Principal(admin=False, agent_id=agent_id)


class RequestGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        headers = Headers(scope=scope)
        upload = headers.get("content-type", "").lower().startswith("multipart/")
        cap = state.settings.max_upload_bytes if upload else state.settings.max_json_bytes
        try:
            if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
                raise Refused(422, "NUL characters are not accepted")
            if scope["path"].startswith(API_PREFIX):
                scope.setdefault("state", {})["principal"] = await run_in_threadpool(
                    authenticate, state, headers.get("authorization"))
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise Refused(413, f"request body larger than the {cap}-byte limit")
            if not upload:
                receive = _replay(_checked_json(await _read(receive, cap)), receive)
        except Refused as refused:
            await refused.response()(scope, receive, send)
            return
        if upload:
            await self._capped(scope, receive, send, cap)
        else:
            await self.app(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        """Pass a multipart body through as it arrives, and answer 413 instead of the app once it exceeds ``cap``
        (FastAPI turns the error its form parser meets into a 400, which the answer replaces)."""
        seen, over = 0, False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                over = True
                raise Refused(413, f"request body larger than the {cap}-byte limit")
            return message

        async def answer(message: Message) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await Refused(413, f"request body larger than the {cap}-byte limit").response()(scope, receive, send)

        await self.app(scope, counted, answer)


async def _read(receive: Receive, cap: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise Refused(413, f"request body larger than the {cap}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _checked_json(body: bytes) -> bytes:
    if b"\x00" in body or b"\\u0000" in body:
        raise Refused(422, "NUL characters are not accepted")
    if body:
        try:
            pydantic_core.from_json(body)
        except ValueError as exc:  # FastAPI's own parser would take a lone surrogate; this one refuses it
            raise Refused(422, f"the body is not valid JSON: {exc}") from None
    return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read here, then the connection's own messages (a response that streams waits for the disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
