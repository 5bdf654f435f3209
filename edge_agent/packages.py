"""Installed model packages: verified before use, swapped atomically, the previous one kept for rollback.

Layout under the packages directory: ``current/`` and ``previous/`` (each ``model.tflite`` +
``manifest.json``), and ``staging-*`` while a new package is checked. A package is installed only after
its size, sha256 and TFLite magic match and its self-test passes; a failure leaves ``current`` untouched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import ValidationError

from edgejoule.errors import EdgejouleError, first_problem
from edgejoule.runtime import PrecoderRuntime
from edgejoule.schemas.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest

TFLITE_MAGIC = b"TFL3"


class PackageRejected(EdgejouleError):
    """A package failed verification, loading or its self-test; nothing was changed."""


@dataclass
class LoadedPackage:
    manifest: ModelManifest
    runtime: PrecoderRuntime


def verify_file(manifest: ModelManifest, path: Path) -> None:
    size = path.stat().st_size
    if size != manifest.size_bytes:
        raise PackageRejected(f"{manifest.id}: {size} bytes, the manifest says {manifest.size_bytes} (truncated download?)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != manifest.sha256:
        raise PackageRejected(f"{manifest.id}: sha256 {digest[:12]}... does not match the manifest's {manifest.sha256[:12]}...")
    with path.open("rb") as f:
        if f.read(8)[4:8] != TFLITE_MAGIC:
            raise PackageRejected(f"{manifest.id}: not a TFLite file (no TFL3 identifier)")


#: a package whose sum rate on the site's check channels is below this share of its manifest's is refused:
#: the gap between a sample of 128 channels and the export's 200 stays within a few percent, while a graph
#: normalized twice (a manifest that says ``in_graph: false`` for a graph that normalizes) loses 13 %
QUALITY_FLOOR = 0.92

#: ``(package) -> None``: a check the caller adds to the self-test (the agent's: quality on its site's channels)
Check = Callable[[LoadedPackage], None]


def self_test(package: LoadedPackage, check: Check | None = None) -> None:
    """One inference on a random channel: the output must be finite and spend the power budget; then ``check``.
    Any exception on the way (a manifest without inputs, a graph that fails to run) is a rejection."""
    try:
        spec = package.manifest.inputs[0].shape
        n_u, n_t = spec[-2], spec[-1]
        rng = np.random.default_rng(0)
        scale = np.sqrt(package.runtime.noise_power)
        H = (rng.normal(size=(1, n_u, n_t)) + 1j * rng.normal(size=(1, n_u, n_t))) * scale
        W = package.runtime.precode(H)
        power = float(np.sum(np.abs(W) ** 2))
        if not np.all(np.isfinite(W)) or not np.isclose(power, package.runtime.p_max, rtol=1e-3):
            raise PackageRejected(f"{package.manifest.id}: self-test failed (output not finite or power {power:.3g} W)")
        if check is not None:
            check(package)
    except PackageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a broken package raises, it must not stop the agent
        raise PackageRejected(f"{package.manifest.id}: self-test failed: {type(exc).__name__}: {exc}") from None


def check_quality(package: LoadedPackage, H: np.ndarray, noise_power_w: float) -> None:
    """Refuse a package whose sum rate on ``H`` (the site's check channels) is far below its manifest's claim."""
    from edgejoule.tasks.precoding import sum_rate

    claimed = package.manifest.metrics.get("sum_rate_litert", package.manifest.metrics.get("sum_rate"))
    if claimed is None or not np.isfinite(claimed) or claimed <= 0:
        return
    achieved = float(sum_rate(H, package.runtime.precode(H), noise_power_w).mean())
    if achieved < QUALITY_FLOOR * claimed:
        raise PackageRejected(f"{package.manifest.id}: self-test failed: sum rate {achieved:.3g} on the site's check "
                              f"channels, the manifest claims {claimed:.3g} (a normalization applied twice?)")


class PackageStore:
    def __init__(self, root: Path, threads: int = 1) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self._recover()

    @property
    def current_dir(self) -> Path:
        return self.root / "current"

    @property
    def previous_dir(self) -> Path:
        return self.root / "previous"

    def _recover(self) -> None:
        """A crash between the two renames of a swap leaves only ``previous``: bring it back."""
        if not self.current_dir.exists() and self.previous_dir.exists():
            os.replace(self.previous_dir, self.current_dir)
        for staging in self.root.glob("staging-*"):
            shutil.rmtree(staging, ignore_errors=True)

    def manifest(self, which: str = "current") -> ModelManifest | None:
        """The manifest of ``which`` (None if there is none); one that cannot be read is a ``PackageRejected``."""
        path = self.root / which / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            return ModelManifest.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            reason = first_problem(exc).removeprefix(": ") if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
            raise PackageRejected(f"{which}/{MANIFEST_FILE} is unreadable: {reason}") from None

    def load(self, directory: Path | None = None) -> LoadedPackage | None:
        directory = directory or self.current_dir
        manifest = self.manifest(directory.name)
        if manifest is None:
            return None
        try:
            runtime = PrecoderRuntime(directory / MODEL_FILE, manifest.normalization, self.threads)
        except Exception as exc:  # noqa: BLE001 - LiteRT raises what it likes on a broken file
            raise PackageRejected(f"{manifest.id}: {exc}") from None
        return LoadedPackage(manifest, runtime)

    def set_aside(self) -> str:
        """Move an unusable ``current`` to ``rejected/`` (kept for diagnosis, replacing the one before) and make
        ``previous`` current; returns the rejected package's id, as far as its manifest can be read."""
        try:  # a truncated or mangled manifest usually still names its package
            found = re.search(r'"id"\s*:\s*"([^"]{1,200})"', (self.current_dir / MANIFEST_FILE).read_text())
        except OSError:
            found = None
        model_id = found.group(1) if found else "unknown"
        rejected = self.root / "rejected"
        shutil.rmtree(rejected, ignore_errors=True)
        os.replace(self.current_dir, rejected)
        self._recover()
        return model_id

    def install(self, manifest: ModelManifest, model_file: Path, check: Check | None = None) -> LoadedPackage:
        """Verify, load and self-test ``model_file`` (with ``check``); only then make it current (the old one ->
        previous)."""
        verify_file(manifest, model_file)
        staging = self.root / f"staging-{manifest.id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            shutil.copy(model_file, staging / MODEL_FILE)
            (staging / MANIFEST_FILE).write_text(manifest.to_json())
            package = self.load(staging)
            assert package is not None
            self_test(package, check)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.current_dir.exists():
            shutil.rmtree(self.previous_dir, ignore_errors=True)
            os.replace(self.current_dir, self.previous_dir)
        os.replace(staging, self.current_dir)
        return self.load()  # type: ignore[return-value]
