"""``edge-agent bench --seconds N [--method M]``: energy per inference of one method on this device, for comparing
models: the installed package or method (``current``), ZF, or any classical method (``rzf-equal``,
``method:wmmse(tol=0.01)``) served as the agent would serve it if it were deployed.

A tight loop (no endpoint, no telemetry) on the site's test channels: warmed up, the idle power measured
over ``max(idle_seconds, 1)`` s and subtracted, the loop cut into ``WINDOWS`` windows whose dynamic energy
per inference gives the mean and its spread (sample standard deviation).
"""

from __future__ import annotations

import statistics
import time
from typing import Literal

from pydantic import BaseModel

from edgejoule.edge_agent.agent import pick_meter, serving_path
from edgejoule.edge_agent.config import AgentSettings
from edgejoule.edge_agent.measure import EnergyAccount
from edgejoule.edge_agent.packages import InstalledMethod, Loaded, LoadedMethod, PackageStore, method_serving
from edgejoule.errors import EdgejouleError
from edgejoule.schemas.targets import PREFIX, parse_target
from edgejoule.sites import get_site, load_dataset
from edgejoule.sites.config import SiteConfig

WINDOWS = 10
WARMUP = 200


class BenchResult(BaseModel):
    model_config = {"protected_namespaces": ()}

    method: str
    meter: str
    meter_kind: Literal["measured", "estimated"]
    seconds: float
    inferences: int
    idle_power_w: float
    dynamic_uj_per_inference: float
    dynamic_uj_spread: float
    total_uj_per_inference: float
    latency_ms_p50: float


def benched(settings: AgentSettings, site: SiteConfig, method: str) -> Loaded | None:
    """What ``--method`` names: the installed package or method, ZF (None: the agent's fallback), or a method."""
    if method == "current":
        return PackageStore(settings.packages_dir, settings.threads).load()
    if method == "zf":
        return None
    try:
        target = parse_target(method if method.startswith(PREFIX) else PREFIX + method)
        installed = InstalledMethod.at_site(target, site)  # type: ignore[arg-type]
        return LoadedMethod(installed, method_serving(installed))
    except ValueError as exc:
        raise EdgejouleError(f"--method: {exc}") from None


def run_bench(settings: AgentSettings, seconds: float, method: str) -> BenchResult:
    site = get_site(settings.site)
    package = benched(settings, site, method)
    serve = serving_path(package, site)
    H = load_dataset(site).H("test")
    meter = pick_meter(settings.meter, settings.meter_hz)
    account = EnergyAccount(meter, max(settings.idle_seconds, 1.0))
    for i in range(WARMUP):
        serve(H[i % len(H)])
    account.measure_idle()
    per_window = seconds / WINDOWS
    dynamic, total, latencies, count = [], [], [], 0
    for _ in range(WINDOWS):
        start = account.start()
        n, times = 0, []
        end = time.monotonic() + per_window
        while time.monotonic() < end:
            t0 = time.perf_counter()
            serve(H[(count + n) % len(H)])
            times.append(time.perf_counter() - t0)
            n += 1
        result = account.finish(start, n, times)
        dynamic.append(result.dynamic_uj_per_inference)
        total.append(result.total_uj_per_inference)
        latencies.extend(result.latencies_ms)
        count += n
    return BenchResult(
        method=package.id if package else "zf", meter=meter.name, meter_kind=meter.kind, seconds=seconds,
        inferences=count, idle_power_w=account.idle_power_w, dynamic_uj_per_inference=statistics.fmean(dynamic),
        dynamic_uj_spread=statistics.stdev(dynamic), total_uj_per_inference=statistics.fmean(total),
        latency_ms_p50=statistics.median(latencies),
    )
