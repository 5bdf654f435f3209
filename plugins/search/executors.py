"""Where the independent work units run: a local process pool (default) or a Dask cluster, one code path.

Both yield results as they complete, so the search can persist each one at once.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from edgejoule.errors import EdgejouleError

Runner = Callable[[Callable[..., Any], Sequence[tuple]], Iterator[Any]]


@contextmanager
def local_pool(workers: int) -> Iterator[Runner]:
    # spawn, not fork: worker processes must not inherit a parent's torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        def run(fn: Callable[..., Any], calls: Sequence[tuple]) -> Iterator[Any]:
            futures = [pool.submit(fn, *args) for args in calls]
            for future in as_completed(futures):
                yield future.result()

        yield run


@contextmanager
def dask_cluster(scheduler: str) -> Iterator[Runner]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise EdgejouleError("the dask executor needs the 'cluster' extra: pip install 'edgejoule[cluster]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise EdgejouleError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    with client:
        def run(fn: Callable[..., Any], calls: Sequence[tuple]) -> Iterator[Any]:
            futures = [client.submit(fn, *args, pure=False) for args in calls]
            for future in dask_completed(futures):
                yield future.result()

        yield run


def executor(kind: str, workers: int = 2, scheduler: str | None = None):
    if kind == "local":
        return local_pool(workers)
    if kind == "dask":
        if not scheduler:
            raise EdgejouleError("--executor dask needs --scheduler tcp://HOST:PORT")
        return dask_cluster(scheduler)
    raise EdgejouleError(f"unknown executor '{kind}'; use local or dask")
