r"""Energy meters for edge devices: read real energy where a sensor exists, estimate (and say so) elsewhere.

Every meter offers a cumulative reading in microjoules; the agent differences readings over a window:

.. math::

    E_{inf} = \frac{E(t_1) - E(t_0)}{n}, \qquad
    E_{inf}^{dyn} = \frac{E(t_1) - E(t_0) - P_{idle} (t_1 - t_0)}{n}

- ``rapl``: Linux powercap (Intel RAPL / AMD): ``energy_uj`` counters of the package domains under
  ``/sys/class/powercap``; a counter that wraps restarts at 0 after ``max_energy_range_uj``.
- ``ina2xx``: an INA219/INA226/INA260 power monitor on I2C through the kernel's ``ina2xx`` hwmon driver
  (``power1_input`` in microwatts), or an INA3221 (Jetson) through ``ina3221`` (three channels, volts x amps);
  sampled by a background thread (200 Hz by default) and integrated by the trapezoid rule,
  :math:`E(t) = \sum_k \tfrac12 (P_{k-1} + P_k)(t_k - t_{k-1}) + P_K (t - t_K)`.
- ``pi5_pmic``: the Raspberry Pi 5 PMIC rails from ``vcgencmd pmic_read_adc`` (volts x amps per rail),
  sampled and integrated the same way.
- ``cpu_time``: no sensor: this process's CPU time times an assumed power per busy core; labelled
  ``estimated`` everywhere it is reported.

Each reads files or a command under a configurable root, so tests point them at fake sysfs trees.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from edgejoule.hookspecs import hookimpl


class RaplMeter:
    name = "rapl"
    kind = "measured"

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self._last: dict[Path, int] = {}
        self._total = 0.0

    def domains(self) -> list[Path]:
        """Top-level package domains (intel-rapl:0, intel-rapl:1, ...), not their sub-zones."""
        return sorted(p for p in self.root.glob("*rapl:*") if re.fullmatch(r"[a-z-]*rapl:\d+", p.name)
                      and os.access(p / "energy_uj", os.R_OK))

    def available(self) -> bool:
        try:
            return bool(self.domains()) and all(self._read(d)[0] >= 0 for d in self.domains())
        except (OSError, ValueError):  # unreadable (permissions) or unparsable counter
            return False

    @staticmethod
    def _read(domain: Path) -> tuple[int, int]:
        energy = int((domain / "energy_uj").read_text())
        max_range = int((domain / "max_energy_range_uj").read_text())
        return energy, max_range

    def read_uj(self) -> float:
        for domain in self.domains():
            energy, max_range = self._read(domain)
            last = self._last.get(domain)
            if last is not None:
                # a counter below its last value has wrapped once through max_energy_range_uj
                self._total += energy - last if energy >= last else energy + max_range - last
            self._last[domain] = energy
        return self._total


class _PowerIntegrator:
    """Turns power readings (watts) into a cumulative energy by the trapezoid rule."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._total_uj = 0.0

    def add(self, power_w: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            t0, p0 = self._last
            self._total_uj += 0.5 * (p0 + power_w) * (now - t0) * 1e6
        self._last = (now, power_w)
        return self._total_uj

    def total_at(self, now: float) -> float:
        """The energy up to ``now``: the trapezoids so far, and the last reading held since it was taken."""
        if self._last is None:
            return self._total_uj
        t0, p0 = self._last
        return self._total_uj + p0 * max(now - t0, 0.0) * 1e6


class _SampledPowerMeter:
    """A power sensor read by a background thread at ``sample_hz`` (as fast as the sensor answers, if slower)
    and integrated by the trapezoid rule, so a window's energy is the integral between its own timestamps,
    not two readings times its length: short windows and changing loads (one model, then another) are
    told apart. The thread starts at the first ``read_uj``; ``available`` reads once, without it."""

    kind = "measured"

    def __init__(self, sample_hz: float = 200.0) -> None:
        self.sample_hz = sample_hz
        self._integrator = _PowerIntegrator()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: str | None = None  # the last failed reading (the sampler keeps going)

    def power_w(self) -> float:
        """One reading of the sensor, watts."""
        raise NotImplementedError

    def available(self) -> bool:
        try:
            return self.power_w() >= 0
        except (OSError, ValueError, subprocess.SubprocessError):  # unreadable, unparsable, or the command failed
            return False

    def _sample(self) -> None:
        try:
            power = self.power_w()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.error = str(exc)
            return
        now = time.monotonic()
        with self._lock:
            self._integrator.add(power, now)

    def _loop(self) -> None:
        period = 1.0 / self.sample_hz
        due = time.monotonic()
        while not self._stop.is_set():
            due = max(due + period, time.monotonic())  # a slow sensor: as fast as it answers, no burst after
            self._stop.wait(due - time.monotonic())
            self._sample()

    def read_uj(self) -> float:
        if self._thread is None:
            self._sample()  # the integral starts at this first reading
            self._thread = threading.Thread(target=self._loop, name=f"{self.name}-sampler", daemon=True)
            self._thread.start()
        with self._lock:
            return self._integrator.total_at(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)


class Ina2xxMeter(_SampledPowerMeter):
    """INA219/INA226/INA260 (``power1_input``, microwatts) and INA3221 (three channels: bus voltage
    ``inN_input`` in mV times current ``currN_input`` in mA, the Jetson boards' monitor) through hwmon."""

    name = "ina2xx"

    def __init__(self, root: str | Path = "/sys/class/hwmon", sample_hz: float = 200.0) -> None:
        super().__init__(sample_hz)
        self.root = Path(root)
        self._sensor: Path | None = None

    def sensor(self) -> Path | None:
        for hwmon in sorted(self.root.glob("hwmon*")):
            try:
                name = (hwmon / "name").read_text().strip()
            except OSError:
                continue
            if (name.startswith("ina2") and (hwmon / "power1_input").exists()) or (
                    name == "ina3221" and (hwmon / "curr1_input").exists()):
                return hwmon
        return None

    def power_w(self) -> float:
        sensor = self._sensor or self.sensor()
        if sensor is None:
            raise OSError("no INA219/INA226/INA260/INA3221 hwmon sensor found (is the ina2xx or ina3221 driver bound?)")
        self._sensor = sensor
        if (sensor / "power1_input").exists():
            return int((sensor / "power1_input").read_text()) / 1e6
        channels = [c for c in (1, 2, 3) if (sensor / f"curr{c}_input").exists()]
        return sum(int((sensor / f"in{c}_input").read_text()) * int((sensor / f"curr{c}_input").read_text())
                   for c in channels) / 1e6  # mV x mA = uW


def parse_pmic(text: str) -> float:
    """Total power (W) from ``vcgencmd pmic_read_adc`` output: sum over rails of volts x amps."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\S+?)_[AV]\s+(current|volt)\(\d+\)=([\d.]+)([AV])", line)
        if m:
            (amps if m.group(2) == "current" else volts)[m.group(1)] = float(m.group(3))
    return sum(a * volts[rail] for rail, a in amps.items() if rail in volts)


class Pi5PmicMeter(_SampledPowerMeter):
    """The Raspberry Pi 5 PMIC through ``vcgencmd pmic_read_adc``: a command per reading (a few ms), so it is
    sampled as fast as the command answers when that is slower than ``sample_hz``."""

    name = "pi5_pmic"

    def __init__(self, command: str = "vcgencmd", sample_hz: float = 200.0) -> None:
        super().__init__(sample_hz)
        self.command = command

    def available(self) -> bool:
        return shutil.which(self.command) is not None and super().available()

    def power_w(self) -> float:
        out = subprocess.run([self.command, "pmic_read_adc"], capture_output=True, text=True, timeout=5, check=True)
        return parse_pmic(out.stdout)


class CpuTimeMeter:
    """Estimated: CPU seconds of this process times ``watts_per_core`` (a nominal busy-core power)."""

    name = "cpu_time"
    kind = "estimated"

    def __init__(self, watts_per_core: float = 5.0) -> None:
        self.watts_per_core = watts_per_core

    def available(self) -> bool:
        return True

    def read_uj(self) -> float:
        return time.process_time() * self.watts_per_core * 1e6


#: the order the agent tries them in when asked for "auto"
PREFERENCE = ("rapl", "ina2xx", "pi5_pmic", "cpu_time")


@hookimpl
def register_energy_meters(register) -> None:
    register("rapl", RaplMeter())
    register("ina2xx", Ina2xxMeter())
    register("pi5_pmic", Pi5PmicMeter())
    register("cpu_time", CpuTimeMeter())
