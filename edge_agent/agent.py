"""The agent: keep the assigned package installed, serve inferences, measure, report."""

from __future__ import annotations

import logging
import platform
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import Iterator

import numpy as np

from edgejoule import plugin_manager
from edgejoule.edge_agent.config import AgentSettings
from edgejoule.edge_agent.measure import EnergyAccount, WindowResult
from edgejoule.edge_agent.packages import LoadedPackage, PackageRejected, PackageStore
from edgejoule.edge_agent.registry_client import RegistryClient, RegistryUnavailable
from edgejoule.edge_agent.sources import Request, open_source
from edgejoule.edge_agent.telemetry import MqttTelemetry, Spool
from edgejoule.errors import EdgejouleError
from edgejoule.runtime import complex_of
from edgejoule.schemas.api import LoadEvent
from edgejoule.schemas.messages import Heartbeat, Telemetry
from edgejoule.sites import get_site
from edgejoule.tasks.precoding import sum_rate

log = logging.getLogger("edge_agent")
METER_PREFERENCE = ("rapl", "ina2xx", "pi5_pmic", "cpu_time")
RATE_CHUNK = 64  # inferences per sum-rate evaluation: 256 kB of channels and precoders, cache-resident


def pick_meter(name: str):
    if name != "auto":
        meter = plugin_manager.get("energy_meters", name)
        if not meter.available():
            raise EdgejouleError(f"energy meter '{name}' is not available on this device")
        return meter
    for candidate in METER_PREFERENCE:
        if candidate in plugin_manager.names("energy_meters") and plugin_manager.get("energy_meters", candidate).available():
            return plugin_manager.get("energy_meters", candidate)
    raise EdgejouleError("no energy meter available (not even cpu_time): is the 'meters' plugin installed?")


def runtime_version() -> str:
    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "none"


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.site = get_site(settings.site)
        self.store = PackageStore(settings.packages_dir, settings.threads)
        self.registry = RegistryClient(settings.registry_url, settings.agent_id, settings.token)
        self.meter = pick_meter(settings.meter)
        self.energy = EnergyAccount(self.meter, settings.idle_seconds)
        self.mqtt = (MqttTelemetry(settings.broker_url, settings.agent_id, Spool(settings.spool_dir),
                                   settings.mqtt_username, settings.mqtt_password) if settings.broker_url else None)
        self.package: LoadedPackage | None = self._load_current()
        self.last_error: str | None = None
        self.windows = 0

    def _load_current(self) -> LoadedPackage | None:
        try:
            return self.store.load()
        except PackageRejected as exc:
            log.error("installed package unusable, rolling back: %s", exc)
            return self.store.rollback()

    # -- assignment ----------------------------------------------------------------------------------
    def sync(self) -> str:
        """Install the assigned package if it is new. The registry being away changes nothing."""
        try:
            assignment = self.registry.assignment()
        except RegistryUnavailable as exc:
            self.last_error = str(exc)
            return f"registry unreachable, keeping {self.model_id or 'the ZF fallback'}"
        if assignment is None or assignment.model_id == self.model_id:
            return f"serving {self.model_id or 'the ZF fallback'}"
        incoming = self.settings.data_dir / "incoming.tflite"
        try:
            manifest = self.registry.manifest(assignment)
            if manifest.sha256 != assignment.sha256:
                raise PackageRejected(f"{manifest.id}: manifest and assignment disagree on the sha256")
            self.registry.download(assignment, incoming, self.settings.max_package_bytes)
            self.package = self.store.install(manifest, incoming)
            self._event(assignment.model_id, "loaded", "")
            return f"installed {assignment.model_id}"
        except RegistryUnavailable as exc:
            self.last_error = str(exc)
            return f"download failed ({exc}), keeping {self.model_id or 'the ZF fallback'}"
        except EdgejouleError as exc:
            self.last_error = str(exc)
            self._event(assignment.model_id, "selftest_failed" if "self-test" in str(exc) else "load_failed", str(exc))
            return f"rejected {assignment.model_id}: {exc}; keeping {self.model_id or 'the ZF fallback'}"
        finally:
            incoming.unlink(missing_ok=True)

    def _event(self, model_id: str, outcome: str, detail: str) -> None:
        try:
            self.registry.event(LoadEvent(agent_id=self.settings.agent_id, model_id=model_id, outcome=outcome,
                                          detail=detail, at=datetime.now(timezone.utc)))
        except EdgejouleError as exc:
            log.warning("could not report %s of %s: %s", outcome, model_id, exc)

    @property
    def model_id(self) -> str | None:
        return self.package.manifest.id if self.package else None

    # -- serving -------------------------------------------------------------------------------------
    def _zf(self, h: np.ndarray) -> np.ndarray:
        W = plugin_manager.get("baselines", "zf").run(h[None], self.site.noise_power_w, self.site.tx_power_w).output
        return np.stack((W.real, W.imag), 1).astype(np.float32)

    @property
    def _serve(self):
        """``h -> planes``: the precoder's real and imaginary planes ``[1, 2, N_T, N_U]`` from the installed
        model's serving path, else from ZF; a new array per call."""
        return self.package.runtime.serve if self.package is not None else self._zf

    def precode(self, H: np.ndarray) -> np.ndarray:
        """The precoder for one channel ``[N_U, N_T]`` with the installed model, else ZF."""
        return complex_of(self._serve(H))[0]

    def window(self, source: Iterator[Request], n: int) -> Telemetry | None:
        """Up to ``n`` inferences measured as one window; None if the source had nothing left.

        Per inference only what must happen then: the precoder served (and sent back if asked for), the
        channel and precoder kept in two lists, a latency appended. The sum rate is computed every
        ``RATE_CHUNK`` inferences on the chunk, and the percentiles once per window: a window-sized copy of
        every channel and precoder (2 MB for 500) would push the model's weights out of the cache and slow
        the invokes.
        """
        if self.windows % self.settings.idle_refresh_windows == 0:
            self.energy.measure_idle()
        serve = self._serve
        channels: list[np.ndarray] = []
        precoders: list[np.ndarray] = []
        latencies: list[float] = []
        clock = time.perf_counter
        rate_total, count = 0.0, 0
        started_at = datetime.now(timezone.utc)
        start = self.energy.start()
        for H, reply in source:
            t0 = clock()
            W = serve(H)
            latencies.append(clock() - t0)
            if reply is not None:
                reply(complex_of(W)[0])
            channels.append(H)
            precoders.append(W)
            count += 1
            if len(channels) == RATE_CHUNK:
                rate_total += self._rate_total(channels, precoders)
            if count == n:
                break
        if not count:  # a finite source (npz files) ran out before this window began
            return None
        if channels:
            rate_total += self._rate_total(channels, precoders)
        result = self.energy.finish(start, count, latencies)
        self.windows += 1
        return self._telemetry(result, started_at, rate_total / count)

    def _rate_total(self, channels: list[np.ndarray], precoders: list[np.ndarray]) -> float:
        """The summed sum rate of a chunk of channels and their precoder planes; empties both lists.

        ``concatenate`` then ``reshape``: ``np.stack`` makes a view of every item first, which costs more."""
        H = np.concatenate(channels).reshape(len(channels), *channels[0].shape)
        total = float(sum_rate(H, complex_of(np.concatenate(precoders)), self.site.noise_power_w).sum())
        channels.clear()
        precoders.clear()
        return total

    def _telemetry(self, r: WindowResult, started_at: datetime, mean_sum_rate: float) -> Telemetry:
        manifest = self.package.manifest if self.package else None
        p50, p95, p99 = r.percentiles((50, 95, 99))
        return Telemetry(
            agent_id=self.settings.agent_id, site=self.settings.site, model_id=manifest.id if manifest else None,
            fallback=None if manifest else "zf", window_start=started_at, window_end=datetime.now(timezone.utc),
            inferences=r.inferences, meter=self.meter.name, meter_kind=self.meter.kind,
            energy_total_uj=r.total_uj_per_inference, energy_dynamic_uj=r.dynamic_uj_per_inference,
            idle_power_w=r.idle_power_w, estimated_energy_uj=manifest.energy.total_uj if manifest else None,
            latency_ms_p50=p50, latency_ms_p95=p95, latency_ms_p99=p99,
            quality={"sum_rate": mean_sum_rate},
        )

    def report(self, message: Telemetry) -> int:
        """Publish over MQTT (spooled) or, without a broker, post over HTTP. Returns messages still waiting."""
        if self.mqtt is not None:
            return self.mqtt.send(message)
        try:
            self.registry.telemetry(message)
            return 0
        except RegistryUnavailable as exc:
            self.last_error = str(exc)
            return 1

    def heartbeat(self) -> None:
        beat = Heartbeat(agent_id=self.settings.agent_id, site=self.settings.site, runtime=runtime_version(),
                         hardware={"machine": platform.machine(), "system": platform.system(),
                                   "cpu": platform.processor() or "unknown", "meter": self.meter.name},
                         plugins=sorted(plugin_manager.get_manager().infos), current_model_id=self.model_id,
                         previous_model_id=(m.id if (m := self.store.manifest("previous")) else None))
        try:
            self.registry.heartbeat(beat)
        except EdgejouleError as exc:
            self.last_error = str(exc)

    def once(self, inferences: int) -> list[Telemetry]:
        """One pull, ``inferences`` inferences in windows, every window reported."""
        log.info(self.sync())
        self.heartbeat()
        source = open_source(self.settings.source, self.settings.site)
        sent = []
        remaining = inferences
        while remaining > 0:
            n = min(self.settings.window_inferences, remaining)
            message = self.window(source, n)
            if message is None:
                break
            self.report(message)
            sent.append(message)
            remaining -= message.inferences
            if message.inferences < n:
                break
        return sent

    def run(self, stop_after_windows: int | None = None, stop: threading.Event | None = None,
            source: Iterator[Request] | None = None) -> None:
        """Serve windows until ``stop_after_windows``, ``stop`` is set or the source runs out; ``source``
        replaces the configured one (a process embedding the agent)."""
        source = source if source is not None else open_source(self.settings.source, self.settings.site)
        last_sync = -float("inf")
        while (stop_after_windows is None or self.windows < stop_after_windows) and not (stop and stop.is_set()):
            notified = self.mqtt is not None and self.mqtt.assignment_changed.is_set()
            if notified or time.monotonic() - last_sync >= self.settings.poll_seconds:
                if notified:
                    self.mqtt.assignment_changed.clear()
                log.info(self.sync())
                self.heartbeat()
                last_sync = time.monotonic()
            message = self.window(source, self.settings.window_inferences)
            if message is not None:
                self.report(message)
            if message is None or message.inferences < self.settings.window_inferences:
                log.info("the input source has no more channels: stopping")
                return

    def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.close()
