"""Files replaced whole (edgejoule.files.write_atomic), the one way the project rewrites a file that somebody may
read or that a kill may interrupt: the resume file of a distill run, a search's checkpoints, the dataset cache, the
registry's artifacts and broker files, the agent's health file and broker login."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edgejoule.files import write_atomic
from edgejoule.plugins.sites.geometric import GeometricGenerator
from edgejoule.sites import get_site, load_dataset
from tests.conftest import wait_for


def test_bytes_text_and_writer_functions_replace_the_file(tmp_path):
    path = tmp_path / "f"
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    write_atomic(path, "grüße")
    assert path.read_text(encoding="utf-8") == "grüße"
    write_atomic(path, lambda out: np.save(out, np.arange(3)))
    assert np.load(path).tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["f"]  # no temporary file left behind


def test_mode_is_private_unless_asked(tmp_path):
    write_atomic(tmp_path / "secret", "x")
    write_atomic(tmp_path / "shared", "x", mode=0o644)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")

    def half_then_fail(out):
        out.write(b"new, but only ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_a_missing_directory_raises_oserror(tmp_path):
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "file" / "f", "x")


def test_concurrent_writers_never_mix_their_contents(tmp_path):
    """Each writer has a temporary file of its own (a fixed ``.tmp`` name, as some writers had, lets two interleave
    into one file and rename a mixture)."""
    path = tmp_path / "f"
    contents = [bytes([i]) * 200_000 for i in range(8)]

    def writer(i):
        for _ in range(10):
            write_atomic(path, contents[i], durable=False)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in contents and os.listdir(tmp_path) == ["f"]


SLOW_WRITER = """
import sys, time
from pathlib import Path
from edgejoule.files import write_atomic

def slow(out):
    out.write(b"new" * 1000)
    out.flush()
    Path(sys.argv[2]).touch()  # half written: kill me now
    time.sleep(60)
    out.write(b"end")

write_atomic(Path(sys.argv[1]), slow)
"""


def test_kill_9_during_the_write_leaves_the_old_file(tmp_path):
    path, ready = tmp_path / "f", tmp_path / "ready"
    path.write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path), str(ready)])
    try:
        wait_for(ready.exists, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert path.read_text() == "old"
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1  # nothing ran to remove it

    # the next write keeps a temporary that may still be written, and removes one a kill left long ago
    write_atomic(path, "new")
    assert left[0].exists()
    hours_ago = time.time() - 2 * 3600
    os.utime(left[0], (hours_ago, hours_ago))
    recent = tmp_path / ".f.abcd1234.tmp"  # another writer's, just begun
    other = tmp_path / ".f.x.abcd1234.tmp"  # a killed writer's of another file, f.x
    recent.write_text("")
    other.write_text("")
    os.utime(other, (hours_ago, hours_ago))
    write_atomic(path, "newer")
    assert not left[0].exists() and recent.exists() and other.exists()
    assert path.read_text() == "newer"


def test_an_unwritable_dataset_cache_warns_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    """The cache only saves time: a cache directory that cannot be made (here its parent is a file; a read-only or
    full disk fails the same way) was a traceback, now a warning and the generated dataset."""
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("EDGEJOULE_CACHE", str(tmp_path / "file" / "cache"))
    site = get_site("campus-los").with_overrides(n_samples=50)
    with caplog.at_level(logging.WARNING, logger="edgejoule.sites.dataset"):
        ds = load_dataset(site, GeometricGenerator())
    np.testing.assert_array_equal(ds.H(), load_dataset(site, GeometricGenerator(), use_cache=False).H())
    assert "could not cache the dataset" in caplog.text


def test_durable_writes_sync_the_file_and_its_directory(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_atomic(tmp_path / "f", "x")
    assert len(synced) == 2  # the file's data, then the directory entry of the rename
    synced.clear()
    write_atomic(tmp_path / "g", "x", durable=False)
    assert synced == []

