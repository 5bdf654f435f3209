r"""Energy meters for edge devices: read real energy where a sensor exists, estimate (and say so) elsewhere.

Every meter offers a cumulative reading in microjoules; the agent differences readings over a window:

.. math::

    E_{inf} = \frac{E(t_1) - E(t_0)}{n}, \qquad
    E_{inf}^{dyn} = \frac{E(t_1) - E(t_0) - P_{idle} (t_1 - t_0)}{n}

- ``rapl``: Linux powercap (Intel RAPL / AMD): ``energy_uj`` counters of the package domains under
  ``/sys/class/powercap``; a counter that wraps restarts at 0 after ``max_energy_range_uj``.
- ``ina2xx``: an INA219/INA226/INA260 power monitor on I2C through the kernel's ``ina2xx`` hwmon driver
  (``power1_input`` in microwatts), integrated over time by the trapezoid rule.
- ``pi5_pmic``: the Raspberry Pi 5 PMIC rails from ``vcgencmd pmic_read_adc`` (volts x amps per rail),
  integrated over time.
- ``cpu_time``: no sensor: this process's CPU time times an assumed power per busy core; labelled
  ``estimated`` everywhere it is reported.

Each reads files or a command under a configurable root, so tests point them at fake sysfs trees.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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


class Ina2xxMeter:
    name = "ina2xx"
    kind = "measured"

    def __init__(self, root: str | Path = "/sys/class/hwmon") -> None:
        self.root = Path(root)
        self._integrator = _PowerIntegrator()

    def sensor(self) -> Path | None:
        for hwmon in sorted(self.root.glob("hwmon*")):
            try:
                if (hwmon / "name").read_text().strip().startswith("ina2") and (hwmon / "power1_input").exists():
                    return hwmon
            except OSError:
                continue
        return None

    def available(self) -> bool:
        sensor = self.sensor()
        try:
            return sensor is not None and int((sensor / "power1_input").read_text()) >= 0
        except (OSError, ValueError):  # unreadable (permissions, a driver error) or unparsable reading
            return False

    def read_uj(self) -> float:
        sensor = self.sensor()
        if sensor is None:
            raise OSError("no INA219/INA226/INA260 hwmon sensor found (is the ina2xx driver bound?)")
        return self._integrator.add(int((sensor / "power1_input").read_text()) / 1e6)


def parse_pmic(text: str) -> float:
    """Total power (W) from ``vcgencmd pmic_read_adc`` output: sum over rails of volts x amps."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\S+?)_[AV]\s+(current|volt)\(\d+\)=([\d.]+)([AV])", line)
        if m:
            (amps if m.group(2) == "current" else volts)[m.group(1)] = float(m.group(3))
    return sum(a * volts[rail] for rail, a in amps.items() if rail in volts)


class Pi5PmicMeter:
    name = "pi5_pmic"
    kind = "measured"

    def __init__(self, command: str = "vcgencmd") -> None:
        self.command = command
        self._integrator = _PowerIntegrator()

    def available(self) -> bool:
        if shutil.which(self.command) is None:
            return False
        try:
            return parse_pmic(self._run()) > 0
        except (OSError, subprocess.SubprocessError):
            return False

    def _run(self) -> str:
        return subprocess.run([self.command, "pmic_read_adc"], capture_output=True, text=True, timeout=5, check=True).stdout

    def read_uj(self) -> float:
        return self._integrator.add(parse_pmic(self._run()))


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
