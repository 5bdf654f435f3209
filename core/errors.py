"""The one base class for errors a user can fix: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class EdgejouleError(Exception):
    """An error caused by input or configuration, with a message that says how to fix it."""


def first_problem(exc: ValidationError) -> str:
    """``where: what`` of a pydantic error's first problem, for a one-line message (the full report is a wall)."""
    err = exc.errors()[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
