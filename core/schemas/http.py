"""The HTTP conventions the registry and its clients (the ``edgejoule`` commands, the edge agent) share, so that
a generic HTTP client, a proxy or a cache reads them without knowing edgejoule:

- errors are RFC 9457 problem details (``application/problem+json``: type, title, status, detail), with
  ``detail`` the one line a client shows;
- a package download carries its RFC 9530 ``Content-Digest`` (``sha-256=:<base64>:``), which the agent checks.

The answers' pages follow RFC 8288 (``Link: <...>; rel="next"``), which httpx parses itself."""

from __future__ import annotations

import base64
import binascii
import json
import re
from http import HTTPStatus

from pydantic import BaseModel, Field

PROBLEM_JSON = "application/problem+json"
CONTENT_DIGEST_HEADER = "Content-Digest"


class ValidationProblem(BaseModel):
    type: str
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An error answer (RFC 9457): what was wrong and how to fix it. ``type`` is ``about:blank``: the status and
    its ``title`` say what kind of problem it is; ``detail`` says what this one is."""

    type: str = Field("about:blank", description="a URI naming the kind of problem; about:blank: the HTTP status")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(description="the HTTP status code, as in the answer's status line")
    detail: str = Field(description="what was wrong with this request and how to fix it")
    errors: list[ValidationProblem] | None = Field(
        None, description="a request that does not match the API's schema: each place that did not match "
                          "(the input is not echoed back)")


def problem(status: int, detail: str, errors: list[ValidationProblem] | None = None) -> Problem:
    return Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)


def problem_detail(content_type: str, body: bytes) -> str:
    """The one line a client shows for an error answer: the problem's ``detail``, or the start of a body that is
    not a problem (a proxy's error page)."""
    if content_type.split(";")[0].strip() in (PROBLEM_JSON, "application/json"):
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if detail is not None:
            return str(detail)
    return body.decode(errors="replace").strip()[:300]


def content_digest(sha256_hex: str) -> str:
    """The RFC 9530 ``Content-Digest`` value of content whose sha256 is ``sha256_hex``."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def digest_sha256(header: str) -> str | None:
    """The sha256 (hex) a ``Content-Digest`` header announces; None without a ``sha-256`` member (another
    algorithm only) or for one that is not base64."""
    found = re.search(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]*):", header)
    if found is None:
        return None
    try:
        return base64.b64decode(found.group(1), validate=True).hex()
    except binascii.Error:
        return None
