"""Files replaced whole: a reader, or a process killed during the write, sees the old file or the new one, never
a part of either.

The new content goes to a temporary file of a unique name beside the target (so two writers never share one and
the rename stays on one filesystem), is flushed to the disk, and is renamed over the target; then the directory
is flushed, so that the rename itself survives a power loss. Anything that fails on the way removes the
temporary file and leaves the target as it was. Only a kill leaves a temporary behind (nothing runs to remove
it); the next write of the same target removes those untouched for ``STALE_AFTER_S``, long past any write in
progress, so that a process killed again and again does not fill its directory.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, content: bytes | str | Callable[[BinaryIO], object], *, mode: int = 0o600,
                 durable: bool = True) -> None:
    """Replace ``path`` by ``content``: bytes, text (UTF-8), or a function that writes to the open binary file
    (``np.savez``, ``torch.save``). ``mode`` is the new file's permissions (private unless asked otherwise);
    ``durable=False`` skips the flushes to disk, for files rewritten often whose loss costs nothing. Raises
    ``OSError`` (a full or read-only disk, a missing directory) for the caller to put in words."""
    path = Path(path)
    _remove_stale_temporaries(path)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            if callable(content):
                content(out)
            else:
                out.write(content.encode() if isinstance(content, str) else content)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _sync_directory(path.parent)


STALE_AFTER_S = 3600.0
_RANDOM = "?" * 8  # mkstemp's part of the name


def _remove_stale_temporaries(path: Path) -> None:
    """Removes what killed writers of ``path`` left (``.NAME.XXXXXXXX.tmp``, untouched for ``STALE_AFTER_S``)."""
    oldest = time.time() - STALE_AFTER_S
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{_RANDOM}.tmp"):
        try:
            if tmp.stat().st_mtime < oldest:
                tmp.unlink()
        except OSError:  # removed by another writer meanwhile, or not ours to remove: the write goes on
            pass


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
