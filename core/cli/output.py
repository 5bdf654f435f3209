"""Console output shared by the commands: JSON, tables and progress bars."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
LINE_EVERY_S = 15.0


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes), so scripts can parse it."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    print(json.dumps(data, indent=2, default=float))


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True,
                 line_every_s: float | None = LINE_EVERY_S) -> Iterator[Any]:
    """Yields ``advance(n)``; draws a rich progress bar on stderr (nothing when ``enabled`` is False). Off a
    terminal (a log file, a pipe), where a bar draws nothing, it writes a line at the start, every
    ``line_every_s`` seconds and at the end instead, so a run of hours shows in its log how far it is
    (None: the caller writes its own lines)."""
    if not enabled:
        yield lambda n=1: None
        return
    if not errors.is_terminal:
        if line_every_s is None:
            yield lambda n=1: None
            return
        yield from _progress_lines(description, total, line_every_s)
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


def _progress_lines(description: str, total: float | None, every_s: float) -> Iterator[Any]:
    start = time.monotonic()
    # the rate is measured from the first advance on: a resumed run's first advance is the work done before
    state = {"done": 0.0, "said": start, "base": None, "since": start}

    def say() -> None:
        now = time.monotonic()
        of = f"/{total:,.0f}" if total else ""
        left = ""
        if total and state["base"] is not None and state["done"] > state["base"]:
            rate = (state["done"] - state["base"]) / max(now - state["since"], 1e-9)
            left = f", about {_duration((total - state['done']) / rate)} left"
        errors.print(f"{description}: {state['done']:,.0f}{of} after {_duration(now - start)}{left}", highlight=False)

    def advance(n: float = 1) -> None:
        state["done"] += n
        if state["base"] is None:
            state["base"], state["since"] = state["done"], time.monotonic()
        finished = bool(total) and state["done"] >= total > state["done"] - n  # the end, said once
        if finished or time.monotonic() - state["said"] >= every_s:
            state["said"] = time.monotonic()
            say()

    say()
    yield advance


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
