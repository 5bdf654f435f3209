"""Energy per inference over a window, from any meter: total, and dynamic (idle power subtracted)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgejoule.interfaces import EnergyMeter


@dataclass
class WindowResult:
    inferences: int
    seconds: float
    energy_uj: float
    idle_power_w: float
    latencies_ms: np.ndarray

    @property
    def total_uj_per_inference(self) -> float:
        return self.energy_uj / max(self.inferences, 1)

    @property
    def dynamic_uj_per_inference(self) -> float:
        return (self.energy_uj - self.idle_power_w * self.seconds * 1e6) / max(self.inferences, 1)

    def percentiles(self, qs: tuple[float, ...]) -> list[float]:
        """Latency percentiles in ms, in one pass over the window's latencies."""
        if not len(self.latencies_ms):
            return [0.0] * len(qs)
        return [float(v) for v in np.percentile(self.latencies_ms, qs)]


class EnergyAccount:
    def __init__(self, meter: EnergyMeter, idle_seconds: float) -> None:
        self.meter = meter
        self.idle_seconds = idle_seconds
        self.idle_power_w = 0.0

    def measure_idle(self) -> float:
        """Power while doing nothing, watts (0 for meters that only see this process, like cpu_time)."""
        e0, t0 = self.meter.read_uj(), time.monotonic()
        time.sleep(self.idle_seconds)
        e1, t1 = self.meter.read_uj(), time.monotonic()
        self.idle_power_w = max((e1 - e0) / 1e6 / max(t1 - t0, 1e-9), 0.0)
        return self.idle_power_w

    def start(self) -> tuple[float, float]:
        return self.meter.read_uj(), time.monotonic()

    def finish(self, start: tuple[float, float], inferences: int, latencies_s: list[float]) -> WindowResult:
        e1, t1 = self.meter.read_uj(), time.monotonic()
        return WindowResult(inferences, t1 - start[1], e1 - start[0], self.idle_power_w, np.multiply(latencies_s, 1e3))
