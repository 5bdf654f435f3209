"""Console output shared by the commands: JSON, tables and progress bars."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes), so scripts can parse it."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    print(json.dumps(data, indent=2, default=float))


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True) -> Iterator[Any]:
    """Yields ``advance(n)``; draws a rich progress bar on stderr (nothing when ``enabled`` is False)."""
    if not enabled:
        yield lambda n=1: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
