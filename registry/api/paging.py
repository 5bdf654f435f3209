"""Pages of the list answers: at most ``limit`` rows, from ``cursor`` on, and ``Link: <...>; rel="next"``
(RFC 8288) while more remain; the answer itself stays a plain list, so a client that reads one page still reads it.

The cursor is opaque to clients: the sort key of the last row sent (base64url JSON). A page starts after that key,
not at an offset, so a row added or removed between two requests neither repeats nor skips another."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Query, Request, Response

Row = TypeVar("Row")
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page, at most 1000")]
Cursor = Annotated[str | None, Query(max_length=512, description='where the page starts: the cursor in the previous '
                                                                 'answer\'s Link rel="next"')]
# the OpenAPI's word on the header, for the routes that page
PAGED: dict[int | str, dict[str, Any]] = {200: {"headers": {"Link": {
    "description": 'RFC 8288 <URL>; rel="next" while more rows remain', "schema": {"type": "string"}}}}}


def after(cursor: str | None, kinds: Sequence[type]) -> list[Any] | None:
    """The sort key a cursor names (its parts of ``kinds``), None for the first page; 400 for a cursor that this
    registry did not hand out (a key of the wrong shape would otherwise reach the SQL comparison)."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not (isinstance(key, list) and len(key) == len(kinds)
            and all(type(part) is kind for part, kind in zip(key, kinds, strict=True))):
        raise HTTPException(400, "invalid cursor: pass the one in the previous answer's Link header unchanged")
    return key


def page(rows: list[Row], limit: int, key: Callable[[Row], list[Any]], request: Request, response: Response) -> list[Row]:
    """The first ``limit`` of ``rows`` (fetched as ``limit + 1``, to know whether another page follows) and, if one
    does, the Link to it: this request's URL (its filters and limit) with the last row's cursor."""
    if len(rows) <= limit:
        return rows
    rows = rows[:limit]
    cursor = base64.urlsafe_b64encode(json.dumps(key(rows[-1])).encode()).decode().rstrip("=")
    response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
    return rows
