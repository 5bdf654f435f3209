"""Running a search: FP pre-training per architecture, then every candidate, each result persisted as it
arrives so that a killed search resumes without redoing finished work."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from edgejoule import plugin_manager
from edgejoule.errors import EdgejouleError
from edgejoule.plugins.search import worker
from edgejoule.plugins.search.executors import executor
from edgejoule.plugins.search.space import (
    BUDGETS,
    DEFAULT_FAMILY,
    FAMILY_BEFORE_FAMILIES,
    Budget,
    Candidate,
    Executor,
    SearchSpace,
    candidates,
)
from edgejoule.sites import get_site, load_dataset
from edgejoule.sites.config import SiteConfig

Progress = Callable[[str, int, int], None]
RESULTS_FILE = "results.jsonl"
"""Called with (phase, done, total)."""


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str
    family: str = Field(DEFAULT_FAMILY, description="model family of the networks searched (a precoding one)")
    space: SearchSpace = SearchSpace()
    budget: str = "default"
    seeds: tuple[int, ...] = (0,)
    out_dir: Path
    executor: Executor = "local"
    scheduler: str | None = None
    workers: int = Field(2, ge=1)

    def resolved_budget(self) -> Budget:
        try:
            return BUDGETS[self.budget]
        except KeyError:
            raise EdgejouleError(f"unknown budget '{self.budget}'; use one of {', '.join(BUDGETS)}") from None

    def resolved_family(self) -> Any:
        family = plugin_manager.get("models", self.family)
        if family.task != "precoding":
            raise EdgejouleError(f"model family '{self.family}' is not a precoder; use one of "
                                 f"{', '.join(plugin_manager.names('models', task='precoding'))}")
        return family

    def resolved_site(self) -> SiteConfig:
        return get_site(self.site).with_overrides(n_samples=self.resolved_budget().n_samples)


class ResultStore:
    """results.jsonl: one finished candidate per line, flushed and synced as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.results: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill: that candidate simply runs again
                self.results[row["key"]] = row

    def add(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.results[row["key"]] = row


def run_search(request: SearchRequest, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Every candidate's result (finished ones from earlier runs included)."""
    budget = request.resolved_budget()
    site = request.resolved_site()
    family = request.resolved_family()
    out = request.out_dir
    _same_search(request)
    (out / "fp").mkdir(parents=True, exist_ok=True)
    (out / "request.json").write_text(request.model_dump_json(indent=2))
    load_dataset(site)  # generate and cache once, before the workers read it
    store = ResultStore(out / RESULTS_FILE)
    todo = [c for c in candidates(request.space, request.seeds) if c.key not in store.results]
    total = request.space.size() * len(request.seeds)
    archs = {c.arch_key: c for c in todo}
    # longest first: the pool's two workers then finish the FP phase together; smallest first left one worker
    # idle for minutes while the other trained the largest architecture alone
    pending_fp = sorted((c for c in archs.values() if not checkpoint(out, c).exists()),
                        key=lambda c: -sum(layer.macs for layer in family.describe(worker.candidate_arch(c, site))))
    with executor(request.executor, request.workers, request.scheduler) as run:
        done = 0
        for _ in run(worker.pretrain, [(site, c, budget, checkpoint(out, c), request.family) for c in pending_fp]):
            done += 1
            if progress:
                progress("FP pre-training", done, len(pending_fp))
        done = total - len(todo)
        for row in run(worker.fine_tune, [(site, c, budget, checkpoint(out, c), request.family) for c in todo]):
            store.add(row)
            done += 1
            if progress:
                progress("candidates", done, total)
    return list(store.results.values())


def _same_search(request: SearchRequest) -> None:
    """A directory resumes only the search that wrote it: its results and FP checkpoints belong to one site,
    budget and model family (the search space and seeds may grow)."""
    path = request.out_dir / "request.json"
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text())
    except json.JSONDecodeError:
        return  # cut short by a kill before any result: nothing to protect
    for field in ("site", "budget", "family"):
        # site and budget were always written; a search from before --family searched the template
        was = before.get(field, FAMILY_BEFORE_FAMILIES)
        if was != getattr(request, field):
            raise EdgejouleError(f"{request.out_dir} holds a search with {field} '{was}', not "
                                 f"'{getattr(request, field)}'; give another --out to start a new one")


def checkpoint(out: Path, candidate: Candidate) -> Path:
    return out / "fp" / f"{candidate.arch_key}.pt"
