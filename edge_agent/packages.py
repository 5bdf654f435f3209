"""Installed model packages: verified before use, swapped atomically, the previous one kept for rollback.

Layout under the packages directory: ``current/`` and ``previous/`` (each ``model.tflite`` +
``manifest.json``), and ``staging-*`` while a new package is checked. A package is installed only after
its size, sha256 and TFLite magic match and its self-test passes; a failure leaves ``current`` untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgejoule.errors import EdgejouleError
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


def self_test(package: LoadedPackage) -> None:
    """One inference on a random channel: the output must be finite and spend the power budget."""
    spec = package.manifest.inputs[0].shape
    n_u, n_t = spec[-2], spec[-1]
    rng = np.random.default_rng(0)
    scale = np.sqrt(package.runtime.noise_power)
    H = (rng.normal(size=(1, n_u, n_t)) + 1j * rng.normal(size=(1, n_u, n_t))) * scale
    W = package.runtime.precode(H)
    power = float(np.sum(np.abs(W) ** 2))
    if not np.all(np.isfinite(W)) or not np.isclose(power, package.runtime.p_max, rtol=1e-3):
        raise PackageRejected(f"{package.manifest.id}: self-test failed (output not finite or power {power:.3g} W)")


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
        path = self.root / which / MANIFEST_FILE
        return ModelManifest.model_validate_json(path.read_text()) if path.exists() else None

    def load(self, directory: Path | None = None) -> LoadedPackage | None:
        directory = directory or self.current_dir
        if not (directory / MANIFEST_FILE).exists():
            return None
        manifest = ModelManifest.model_validate_json((directory / MANIFEST_FILE).read_text())
        try:
            runtime = PrecoderRuntime(directory / MODEL_FILE, manifest.normalization, self.threads)
        except EdgejouleError as exc:
            raise PackageRejected(f"{manifest.id}: {exc}") from None
        return LoadedPackage(manifest, runtime)

    def install(self, manifest: ModelManifest, model_file: Path) -> LoadedPackage:
        """Verify, load and self-test ``model_file``; only then make it current (the old one -> previous)."""
        verify_file(manifest, model_file)
        staging = self.root / f"staging-{manifest.id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            shutil.copy(model_file, staging / MODEL_FILE)
            (staging / MANIFEST_FILE).write_text(manifest.to_json())
            package = self.load(staging)
            assert package is not None
            self_test(package)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.current_dir.exists():
            shutil.rmtree(self.previous_dir, ignore_errors=True)
            os.replace(self.current_dir, self.previous_dir)
        os.replace(staging, self.current_dir)
        return self.load()  # type: ignore[return-value]

    def rollback(self) -> LoadedPackage | None:
        """Make the previous package current again (the failed one is discarded)."""
        if not self.previous_dir.exists():
            return None
        shutil.rmtree(self.current_dir, ignore_errors=True)
        os.replace(self.previous_dir, self.current_dir)
        return self.load()
