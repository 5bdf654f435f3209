"""What the agent serves, installed: model packages, verified before use, swapped atomically, the previous one
kept for rollback; or a classical method the registry assigned (``method:rzf-equal``), kept the same way.

Layout under the packages directory: ``current/`` and ``previous/`` (each ``model.tflite`` + ``manifest.json``,
or ``method.json`` for a method), and ``staging-*`` while a new one is checked. A package is installed only
after its size, sha256 and TFLite magic match and its self-test passes; a failure leaves ``current`` untouched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgejoule.baselines import served_method
from edgejoule.errors import EdgejouleError, first_problem
from edgejoule.runtime import PrecoderRuntime, complex_of
from edgejoule.schemas.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest
from edgejoule.schemas.targets import MethodTarget
from edgejoule.sites.config import SiteConfig

TFLITE_MAGIC = b"TFL3"


class PackageRejected(EdgejouleError):
    """A package failed verification, loading or its self-test; nothing was changed."""


METHOD_FILE = "method.json"
Schema = TypeVar("Schema", bound=BaseModel)


@dataclass
class LoadedPackage:
    manifest: ModelManifest
    runtime: PrecoderRuntime

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def serve(self) -> Callable[[np.ndarray], np.ndarray]:
        return self.runtime.serve

    @property
    def estimated_energy_uj(self) -> float | None:
        """The manifest's estimate where it is of the ``implemented`` counting, the one the fleet compares models
        and classical methods by; a package from before that counting (``paper``) reports none rather than a
        figure counted by another rule."""
        energy = self.manifest.energy
        return energy.total_uj if energy.counting == "implemented" else None


class InstalledMethod(BaseModel):
    """``method.json``, a method's manifest: the method, the site's constants it is served with, and its energy per
    inference under the ``implemented`` counting on the site's check channels, computed when it was installed
    (WMMSE's iterations depend on the channels)."""

    model_config = ConfigDict(extra="forbid")

    target: MethodTarget
    n_users: int = Field(ge=1)
    n_antennas: int = Field(ge=1)
    noise_power_w: float = Field(gt=0)
    p_max_w: float = Field(gt=0)
    estimated_energy_uj: float | None = None

    @classmethod
    def at_site(cls, target: MethodTarget, site: SiteConfig,
                estimated_energy_uj: float | None = None) -> InstalledMethod:
        """``target`` served with ``site``'s dimensions, noise power and power budget."""
        return cls(target=target, n_users=site.n_users, n_antennas=site.n_antennas, noise_power_w=site.noise_power_w,
                   p_max_w=site.tx_power_w, estimated_energy_uj=estimated_energy_uj)


@dataclass
class LoadedMethod:
    """A classical method as the agent serves it: ``serve`` is ``h -> W``'s planes, like a package's runtime."""

    installed: InstalledMethod
    serve: Callable[[np.ndarray], np.ndarray]

    @property
    def id(self) -> str:
        return self.installed.target.id

    @property
    def estimated_energy_uj(self) -> float | None:
        return self.installed.estimated_energy_uj

    def precode(self, H: np.ndarray) -> np.ndarray:
        """``serve`` over a batch, as :meth:`PrecoderRuntime.precode`."""
        return complex_of(np.concatenate([self.serve(h) for h in H]))


Loaded = LoadedPackage | LoadedMethod


def method_serving(installed: InstalledMethod) -> Callable[[np.ndarray], np.ndarray]:
    """``h`` [N_U, N_T] -> the method's precoder as float32 planes ``[1, 2, N_T, N_U]``, the shape a package serves."""
    precode = served_method(installed.target)
    noise_power_w, p_max_w = installed.noise_power_w, installed.p_max_w

    def serve(h: np.ndarray) -> np.ndarray:
        W = precode(h[None], noise_power_w, p_max_w)
        return np.stack((W.real, W.imag), 1).astype(np.float32)

    return serve


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

#: ``(package or method) -> None``: a check the caller adds to the self-test (the agent's: quality on its site's
#: channels)
Check = Callable[["Loaded"], None]


def self_test(loaded: Loaded, check: Check | None = None) -> None:
    """One inference on a random channel: the output must be finite and spend the power budget; then ``check``.
    Any exception on the way (a manifest without inputs, a graph that fails to run) is a rejection."""
    try:
        if isinstance(loaded, LoadedMethod):
            m = loaded.installed
            n_u, n_t, noise_power, p_max = m.n_users, m.n_antennas, m.noise_power_w, m.p_max_w
        else:
            n_u, n_t = loaded.manifest.inputs[0].shape[-2:]
            noise_power, p_max = loaded.runtime.noise_power, loaded.runtime.p_max
        rng = np.random.default_rng(0)
        H = (rng.normal(size=(1, n_u, n_t)) + 1j * rng.normal(size=(1, n_u, n_t))) * np.sqrt(noise_power)
        W = complex_of(loaded.serve(H[0].astype(np.complex64)))
        power = float(np.sum(np.abs(W) ** 2))
        if not np.all(np.isfinite(W)) or not np.isclose(power, p_max, rtol=1e-3):
            raise PackageRejected(f"{loaded.id}: self-test failed (output not finite or power {power:.3g} W)")
        if check is not None:
            check(loaded)
    except PackageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a broken package raises, it must not stop the agent
        raise PackageRejected(f"{loaded.id}: self-test failed: {type(exc).__name__}: {exc}") from None


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
        return self._read(which, MANIFEST_FILE, ModelManifest)

    def method(self, which: str = "current") -> InstalledMethod | None:
        """The method installed as ``which``, if a method is; one that cannot be read is a ``PackageRejected``."""
        return self._read(which, METHOD_FILE, InstalledMethod)

    def _read(self, which: str, name: str, schema: type[Schema]) -> Schema | None:
        path = self.root / which / name
        if not path.exists():
            return None
        try:
            return schema.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            reason = first_problem(exc).removeprefix(": ") if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
            raise PackageRejected(f"{which}/{name} is unreadable: {reason}") from None

    def installed_id(self, which: str = "current") -> str | None:
        """What ``which`` holds: a package's id or a method's target id (None if empty)."""
        if (method := self.method(which)) is not None:
            return method.target.id
        return m.id if (m := self.manifest(which)) else None

    def load(self, directory: Path | None = None) -> Loaded | None:
        directory = directory or self.current_dir
        method = self.method(directory.name)
        if method is not None:
            try:
                return LoadedMethod(method, method_serving(method))
            except EdgejouleError as exc:  # a method this agent's plugins do not (or no longer) offer
                raise PackageRejected(f"{method.target.id}: {exc}") from None
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
        try:  # a truncated or mangled manifest usually still names its package (or method)
            text = next((self.current_dir / name).read_text() for name in (MANIFEST_FILE, METHOD_FILE)
                        if (self.current_dir / name).exists())
            found = re.search(r'"(id|name)"\s*:\s*"([^"]{1,200})"', text)
        except (OSError, StopIteration):
            found = None
        model_id = "unknown" if found is None else found.group(2) if found.group(1) == "id" else f"method:{found.group(2)}"
        rejected = self.root / "rejected"
        shutil.rmtree(rejected, ignore_errors=True)
        os.replace(self.current_dir, rejected)
        self._recover()
        return model_id

    def install(self, manifest: ModelManifest, model_file: Path, check: Check | None = None) -> LoadedPackage:
        """Verify, load and self-test ``model_file`` (with ``check``); only then make it current (the old one ->
        previous)."""
        verify_file(manifest, model_file)

        def write(staging: Path) -> None:
            shutil.copy(model_file, staging / MODEL_FILE)
            (staging / MANIFEST_FILE).write_text(manifest.to_json())

        return self._install(manifest.id, write, check)  # type: ignore[return-value]

    def install_method(self, method: InstalledMethod, check: Check | None = None) -> LoadedMethod:
        """Make ``method`` current after its self-test, the way a package is installed (so it survives a restart and
        a rollback has somewhere to go)."""
        return self._install(method.target.id, lambda staging: (staging / METHOD_FILE).write_text(
            method.model_dump_json()), check)  # type: ignore[return-value]

    def _install(self, name: str, write: Callable[[Path], None], check: Check | None) -> Loaded:
        staging = self.root / ("staging-" + re.sub(r"[^A-Za-z0-9._-]", "_", name))  # method:wmmse(tol=0.01): no ':' in paths
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            write(staging)
            loaded = self.load(staging)
            assert loaded is not None
            self_test(loaded, check)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.current_dir.exists():
            shutil.rmtree(self.previous_dir, ignore_errors=True)
            os.replace(self.current_dir, self.previous_dir)
        os.replace(staging, self.current_dir)
        return self.load()  # type: ignore[return-value]
