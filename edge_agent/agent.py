"""The agent: keep the assigned package installed, serve inferences, measure, report.

Threads: the serving loop (the caller's) only serves, measures and appends each window to the spool; the
telemetry sender (``telemetry.Sender``) delivers; in ``run`` a control thread polls the registry (or is told
over MQTT), heartbeats, installs packages (loaded and self-tested before they are swapped in) and writes
the health file. So neither a hung broker nor a slow registry delays a base station's request.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgejoule import plugin_manager
from edgejoule.baselines import method_energy_uj
from edgejoule.edge_agent.broker_login import BrokerLogins
from edgejoule.edge_agent.config import AgentSettings
from edgejoule.edge_agent.measure import EnergyAccount, WindowResult
from edgejoule.edge_agent.packages import (
    InstalledMethod,
    Loaded,
    LoadedPackage,
    PackageRejected,
    PackageStore,
    check_quality,
    method_serving,
)
from edgejoule.edge_agent.registry_client import RegistryClient, RegistryRefused, RegistryUnavailable
from edgejoule.edge_agent.service import AgentHealth
from edgejoule.edge_agent.sources import Request, open_source
from edgejoule.edge_agent.telemetry import HttpTransport, MqttLink, Outbox, Spool
from edgejoule.errors import EdgejouleError
from edgejoule.files import write_atomic
from edgejoule.runtime import complex_of
from edgejoule.schemas.api import Assignment, LoadEvent
from edgejoule.schemas.messages import Heartbeat, Telemetry
from edgejoule.schemas.targets import MethodTarget
from edgejoule.sites import get_site
from edgejoule.sites.config import SiteConfig
from edgejoule.tasks.precoding import sum_rate

log = logging.getLogger("edge_agent")
FALLBACK = MethodTarget(name="zf")  # served while nothing is installed (telemetry: fallback "zf")
METER_PREFERENCE = ("rapl", "ina2xx", "pi5_pmic", "cpu_time")
RATE_CHUNK = 64  # inferences per sum-rate evaluation: 256 kB of channels and precoders, cache-resident
CHECK_CHANNELS = 128  # the site's test channels a new package's sum rate is checked on
HEALTH_FILE = "health.json"
HEALTH_EVERY_S = 1.0


class AgentMisconfigured(EdgejouleError):
    """The configuration is wrong (the registry refused who we are): stop with one line, exit 2."""


def pick_meter(name: str, sample_hz: float | None = None):
    if name != "auto":
        if name not in plugin_manager.names("energy_meters"):
            raise AgentMisconfigured(f"EDGE_AGENT_METER: no energy meter '{name}' (known: auto, "
                                     f"{', '.join(plugin_manager.names('energy_meters'))})")
        meter = plugin_manager.get("energy_meters", name)
        if not meter.available():
            raise AgentMisconfigured(f"EDGE_AGENT_METER: energy meter '{name}' is not available on this device")
    else:
        found = [m for m in METER_PREFERENCE if m in plugin_manager.names("energy_meters")
                 and plugin_manager.get("energy_meters", m).available()]
        if not found:
            raise EdgejouleError("no energy meter available (not even cpu_time): is the 'meters' plugin installed?")
        meter = plugin_manager.get("energy_meters", found[0])
    if sample_hz is not None and hasattr(meter, "sample_hz"):  # power meters sample in the background
        meter.sample_hz = sample_hz
    return meter


def runtime_version() -> str:
    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "none"


def serving_path(package: Loaded | None, site: SiteConfig) -> Callable[[np.ndarray], np.ndarray]:
    """``h -> planes``: the precoder's real and imaginary planes ``[1, 2, N_T, N_U]`` from the package's serving
    path (or the assigned method's), else from ZF; a new array per call."""
    if package is not None:
        return package.serve
    return method_serving(InstalledMethod.at_site(FALLBACK, site))


def explain(exc: RegistryRefused) -> str:
    """Which setting a refusal at start points to, as the one line the agent exits with."""
    variable = {401: "EDGE_AGENT_TOKEN", 403: "EDGE_AGENT_TOKEN", 404: "EDGE_AGENT_AGENT_ID", 409: "EDGE_AGENT_SITE"}
    return f"{variable.get(exc.status, 'EDGE_AGENT_REGISTRY_URL')}: {exc}"


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.site = get_site(settings.site)
        self.stop = threading.Event()
        self.store = PackageStore(settings.packages_dir, settings.threads)
        self.registry = RegistryClient(settings.registry_url, settings.agent_id, settings.token)
        self.meter = pick_meter(settings.meter, settings.meter_hz)
        self.energy = EnergyAccount(self.meter, settings.idle_seconds)
        self.broker_logins = BrokerLogins(settings.data_dir, settings.token)
        # the sender has its own HTTP client: it runs on its own thread; MQTT takes over once a broker is known
        transport = HttpTransport(RegistryClient(settings.registry_url, settings.agent_id, settings.token))
        spool = Spool(settings.spool_dir, settings.spool_max_messages, settings.spool_sync)
        self.outbox = Outbox(spool, transport, None)
        self.mqtt: MqttLink | None = None
        self._use_broker(None)
        self.last_error: str | None = None
        self.package_problem: str | None = None
        self.state = "starting"
        self.windows = 0
        self.alive_at = time.monotonic()
        self.source: Iterable[Request] | None = None
        self._failed_loads: list[LoadEvent] = []
        self._check_channels: np.ndarray | None = None
        self.package: Loaded | None = self._load_current()
        self._warmup_left = settings.warmup_inferences

    def _load_current(self) -> Loaded | None:
        """The installed package; on any failure it is set aside and the previous one (or ZF) is served."""
        while True:
            try:
                return self.store.load()
            except PackageRejected as exc:
                model_id = self.store.set_aside()
                self.package_problem = f"installed package {model_id} unusable, set aside: {exc}"
                log.error("%s; serving %s", self.package_problem, self._installed_or_fallback())
                self._failed_loads.append(self._load_event(model_id, "load_failed", str(exc)))

    # -- assignment ----------------------------------------------------------------------------------
    def start(self) -> None:
        """The first contact: who we are is checked (the heartbeat names our site; the registry answers 409
        if it is not the one we were registered at), then the assignment is installed. A refusal means the
        configuration is wrong: ``AgentMisconfigured``, before anything is served. A registry that cannot be
        reached is an outage: the installed package (or ZF) is served meanwhile."""
        try:
            self.registry.heartbeat(self._beat())
        except RegistryRefused as exc:
            raise AgentMisconfigured(explain(exc)) from None
        except RegistryUnavailable as exc:
            self.last_error = str(exc)
            log.warning("%s; serving %s until it answers", exc, self.model_id or "the ZF fallback")
            return
        before = self.model_id
        log.info(self.sync())
        if self.model_id != before:  # the registry learns at once what we serve now
            self.heartbeat()

    def _use_broker(self, named: str | None) -> None:
        """Telemetry moves to MQTT once a broker is known (EDGE_AGENT_BROKER_URL, else the one the registry names:
        ``named``) and a login for it: the sender switches transport, what waits in the spool goes out over MQTT.
        The login is the configured one, else the registry's for this agent's token (``broker_login``); without
        one yet (a first start with the registry away), telemetry stays on HTTP (or in the spool) and the next sync
        tries again."""
        s = self.settings
        url = s.broker_url or named
        asks = s.mqtt_password is None and bool(s.token) and s.mqtt_username == s.agent_id
        # with a link, only a refused login of the registry's is news: its password changed (a new broker secret)
        if url is None or (self.mqtt is not None and not (asks and self.mqtt.login_refused)):
            return
        password = s.mqtt_password
        if asks:
            login = self.broker_logins.get(self.registry)
            if login is None:
                return
            password = login.mqtt_password
        if self.mqtt is not None:
            self.mqtt.close()
        self.mqtt = MqttLink(url, s.agent_id, s.mqtt_username, password, s.mqtt_ca_file)
        self.outbox.use(self.mqtt)
        log.info("telemetry over MQTT at %s%s", url, "" if s.broker_url else ", the broker the registry names")

    def sync(self) -> str:
        """Install the assigned package if it is new. The registry being away changes nothing."""
        try:
            assignment = self.registry.assignment()
        except (RegistryUnavailable, RegistryRefused) as exc:
            self.last_error = str(exc)
            return f"{exc}; keeping {self.model_id or 'the ZF fallback'}"
        while self._failed_loads:  # packages set aside at start, told once the registry answers
            self._event(self._failed_loads.pop(0))
        self._use_broker(assignment.broker_url if assignment is not None else None)
        if assignment is None or assignment.model_id == self.model_id:
            return f"serving {self.model_id or 'the ZF fallback'}"
        if assignment.method is not None:
            return self._install_method(assignment)
        incoming = self.settings.data_dir / "incoming.tflite"
        try:
            manifest = self.registry.manifest(assignment)
            if manifest.sha256 != assignment.sha256:
                raise PackageRejected(f"{manifest.id}: manifest and assignment disagree on the sha256")
            self.registry.download(assignment, incoming, self.settings.max_package_bytes)
            package = self.store.install(manifest, incoming, self._check)
            self.package, self.package_problem = package, None  # one assignment: the serving loop sees either
            self._warmup_left = self.settings.warmup_inferences
            self._event(self._load_event(assignment.model_id, "loaded", ""))
            return f"installed {assignment.model_id}"
        except RegistryUnavailable as exc:
            self.last_error = str(exc)
            return f"download failed ({exc}), keeping {self.model_id or 'the ZF fallback'}"
        except (EdgejouleError, OSError) as exc:  # OSError: the data directory (full, read-only)
            self.last_error = str(exc)
            outcome = "selftest_failed" if "self-test" in str(exc) else "load_failed"
            self._event(self._load_event(assignment.model_id, outcome, str(exc)))
            return f"rejected {assignment.model_id}: {exc}; keeping {self.model_id or 'the ZF fallback'}"
        finally:
            incoming.unlink(missing_ok=True)

    def _install_method(self, assignment: Assignment) -> str:
        """Serve the classical method the registry assigned: checked by the same self-test as a package, its energy
        per inference under the ``implemented`` counting estimated on the site's check channels (what the fleet
        shows as its estimate beside the meter's reading)."""
        assert assignment.method is not None
        try:
            estimate = method_energy_uj(assignment.method, self._channels(), self.site.noise_power_w,
                                        self.site.tx_power_w)
            method = InstalledMethod.at_site(assignment.method, self.site, estimate)
            self.package, self.package_problem = self.store.install_method(method), None
        except (EdgejouleError, OSError) as exc:
            self.last_error = str(exc)
            self._event(self._load_event(assignment.model_id, "load_failed", str(exc)))
            return f"rejected {assignment.model_id}: {exc}; keeping {self.model_id or 'the ZF fallback'}"
        self._warmup_left = self.settings.warmup_inferences
        self._event(self._load_event(assignment.model_id, "loaded", ""))
        return f"serving {assignment.model_id}"

    def _channels(self) -> np.ndarray:
        """The site's check channels: a new package's sum rate and a method's energy estimate are taken on them."""
        if self._check_channels is None:
            from edgejoule.sites import load_dataset

            self._check_channels = load_dataset(self.site).H("test", CHECK_CHANNELS)
        return self._check_channels

    def _check(self, package: Loaded) -> None:
        """The self-test's quality check of a package: the sum rate on the site's check channels against the
        manifest's (a method makes no claim to check)."""
        if isinstance(package, LoadedPackage):
            check_quality(package, self._channels(), self.site.noise_power_w)

    def _load_event(self, model_id: str, outcome: str, detail: str) -> LoadEvent:
        return LoadEvent(agent_id=self.settings.agent_id, model_id=model_id, outcome=outcome, detail=detail[:2000],
                         at=datetime.now(timezone.utc))

    def _event(self, event: LoadEvent) -> None:
        try:
            self.registry.event(event)
        except EdgejouleError as exc:
            log.warning("could not report %s of %s: %s", event.outcome, event.model_id, exc)

    def _installed_or_fallback(self) -> str:
        try:
            return self.store.installed_id() or "the ZF fallback"
        except PackageRejected:
            return "the ZF fallback"

    @property
    def model_id(self) -> str | None:
        return self.package.id if self.package else None

    # -- serving -------------------------------------------------------------------------------------
    def precode(self, H: np.ndarray) -> np.ndarray:
        """The precoder for one channel ``[N_U, N_T]`` with the installed model, else ZF."""
        return complex_of(serving_path(self.package, self.site)(H))[0]

    def window(self, source: Iterable[Request], n: int) -> Telemetry | None:
        """Up to ``n`` inferences measured as one window; None if the source had nothing left.

        Per inference only what must happen then: the precoder served (and sent back if asked for), the
        channel and precoder kept in two lists, a latency appended. The sum rate is computed every
        ``RATE_CHUNK`` inferences on the chunk, and the percentiles once per window: a window-sized copy of
        every channel and precoder (2 MB for 500) would push the model's weights out of the cache and slow
        the invokes. The package is read once: one installed meanwhile serves from the next window.
        """
        self.alive_at = time.monotonic()
        if self.windows % self.settings.idle_refresh_windows == 0:
            self.energy.measure_idle()
        package = self.package
        serve = serving_path(package, self.site)
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
        self.alive_at = time.monotonic()
        if not count:  # a finite source (npz files) ran out, or a stop came, before this window began
            return None
        if channels:
            rate_total += self._rate_total(channels, precoders)
        result = self.energy.finish(start, count, latencies)
        self.windows += 1
        return self._telemetry(package, result, started_at, rate_total / count)

    def _rate_total(self, channels: list[np.ndarray], precoders: list[np.ndarray]) -> float:
        """The summed sum rate of a chunk of channels and their precoder planes; empties both lists.

        ``concatenate`` then ``reshape``: ``np.stack`` makes a view of every item first, which costs more."""
        H = np.concatenate(channels).reshape(len(channels), *channels[0].shape)
        total = float(sum_rate(H, complex_of(np.concatenate(precoders)), self.site.noise_power_w).sum())
        channels.clear()
        precoders.clear()
        return total

    def _telemetry(self, package: Loaded | None, r: WindowResult, started_at: datetime,
                   mean_sum_rate: float) -> Telemetry:
        p50, p95, p99 = r.percentiles((50, 95, 99))
        return Telemetry(
            agent_id=self.settings.agent_id, site=self.settings.site, model_id=package.id if package else None,
            fallback=None if package else "zf", window_start=started_at, window_end=datetime.now(timezone.utc),
            inferences=r.inferences, meter=self.meter.name, meter_kind=self.meter.kind,
            energy_total_uj=r.total_uj_per_inference, energy_dynamic_uj=r.dynamic_uj_per_inference,
            idle_power_w=r.idle_power_w, estimated_energy_uj=package.estimated_energy_uj if package else None,
            latency_ms_p50=p50, latency_ms_p95=p95, latency_ms_p99=p99,
            quality={"sum_rate": mean_sum_rate},
        )

    def measured_window(self, source: Iterable[Request], n: int) -> Telemetry | None:
        """``window``, after the warm-up: the first ``warmup_inferences`` after a load (start, or a new package)
        are served, answered and dropped unmeasured, in a window of their own. They carry start-up cost (the
        first invokes' allocations, cold caches, the sender's first connection), several times a steady
        window's energy, which the fleet's figures must not average in."""
        if self._warmup_left:
            warm = self.window(source, self._warmup_left)
            self._warmup_left = 0
            log.debug("warm-up: %d inferences served, not reported", warm.inferences if warm else 0)
        return self.window(source, n)

    def report(self, message: Telemetry) -> int:
        """Queue ``message`` for the sender (MQTT, or HTTP without a broker); returns at once with the number
        of windows waiting. Nothing here touches the network."""
        return self.outbox.submit(message)

    # -- health --------------------------------------------------------------------------------------
    def _beat(self) -> Heartbeat:
        try:
            previous = self.store.installed_id("previous")
        except PackageRejected:
            previous = None
        return Heartbeat(agent_id=self.settings.agent_id, site=self.settings.site, runtime=runtime_version(),
                         hardware={"machine": platform.machine(), "system": platform.system(),
                                   "cpu": platform.processor() or "unknown", "meter": self.meter.name,
                                   "meter_kind": self.meter.kind},
                         plugins=sorted(plugin_manager.get_manager().infos), current_model_id=self.model_id,
                         previous_model_id=previous, telemetry=self.outbox.sender.health())

    def heartbeat(self) -> None:
        try:
            self.registry.heartbeat(self._beat())
        except EdgejouleError as exc:
            self.last_error = str(exc)

    def health(self) -> AgentHealth:
        return AgentHealth(state=self.state, model_id=self.model_id, fallback=None if self.package else "zf",
                           package_problem=self.package_problem, windows=self.windows, last_error=self.last_error,
                           telemetry=self.outbox.sender.health())

    def serving_alive_at(self) -> float:
        """When the serving loop last showed progress: a window edge, or an endpoint waiting for requests."""
        return max(self.alive_at, getattr(self.source, "polled_at", 0.0))

    def write_health(self) -> None:
        """``health.json`` in the data directory, for ``edge-agent status`` (best effort: the disk may be full)."""
        path = self.settings.data_dir / HEALTH_FILE
        try:
            write_atomic(path, self.health().model_dump_json(), mode=0o644, durable=False)
        except OSError:
            pass

    # -- loops ---------------------------------------------------------------------------------------
    def once(self, inferences: int) -> list[Telemetry]:
        """One pull (``start``), ``inferences`` inferences in windows, every window reported."""
        self.start()
        self.source = open_source(self.settings.source, self.settings.site, self.stop)
        sent = []
        remaining = inferences
        self.state = "serving"
        while remaining > 0 and not self.stop.is_set():
            n = min(self.settings.window_inferences, remaining)
            message = self.measured_window(self.source, n)
            if message is None:
                break
            self.report(message)
            sent.append(message)
            remaining -= message.inferences
            if message.inferences < n:
                break
        return sent

    def run(self, stop_after_windows: int | None = None, source: Iterable[Request] | None = None) -> None:
        """Serve windows until ``stop_after_windows``, ``self.stop`` is set or the source runs out; ``source``
        replaces the configured one (a process embedding the agent). The stop ends the window in progress
        after the request in flight (an endpoint answers what it had queued), which is still reported."""
        self.source = source if source is not None else open_source(self.settings.source, self.settings.site, self.stop)
        control = threading.Thread(target=self._control, name="control", daemon=True)
        control.start()
        self.state = "serving"
        try:
            while (stop_after_windows is None or self.windows < stop_after_windows) and not self.stop.is_set():
                message = self.measured_window(self.source, self.settings.window_inferences)
                if message is not None:
                    self.report(message)
                if message is None or message.inferences < self.settings.window_inferences:
                    if not self.stop.is_set():
                        log.info("the input source has no more channels: stopping")
                    return
        finally:
            self.state = "stopping"
            self.stop.set()
            control.join(self.registry.http.timeout.read or 10.0)

    def _control(self) -> None:
        """Off the serving path: the assignment (polled, or announced over MQTT), heartbeats, the health file."""
        next_sync = time.monotonic() + self.settings.poll_seconds
        next_health = time.monotonic()
        while not self.stop.wait(0.2):
            if time.monotonic() >= next_health:
                self.write_health()
                next_health = time.monotonic() + HEALTH_EVERY_S
            notified = self.mqtt is not None and self.mqtt.assignment_changed.is_set()
            if notified or time.monotonic() >= next_sync:
                if notified:
                    self.mqtt.assignment_changed.clear()
                try:
                    log.info(self.sync())
                    self.heartbeat()
                except Exception:  # noqa: BLE001 - logged; this thread must outlive any one poll
                    log.exception("polling the registry failed")
                next_sync = time.monotonic() + self.settings.poll_seconds

    def close(self) -> None:
        """Stop, deliver what can be within ``shutdown_seconds`` (the rest stays in the spool), say offline."""
        self.stop.set()
        self.state = "stopping"
        left = self.outbox.close(self.settings.shutdown_seconds)
        if left:
            log.info("%d telemetry windows wait in the spool for the next start", left)
        self.state = "stopped"
        self.write_health()


def read_health(data_dir: Path) -> AgentHealth | None:
    """The health a running (or the last) agent wrote to ``data_dir``; None if there is none."""
    try:
        return AgentHealth.model_validate_json((Path(data_dir) / HEALTH_FILE).read_text())
    except (OSError, ValueError):
        return None
