"""Energy meters against fake sysfs trees and command output (the hardware we cannot have)."""

from __future__ import annotations

import os
import time

import pytest

from edgejoule.plugins.energy.meters import CpuTimeMeter, Ina2xxMeter, Pi5PmicMeter, RaplMeter, _PowerIntegrator, parse_pmic


def write_domain(root, name, energy, max_range=1_000_000):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def test_rapl_sums_package_domains_and_handles_wrap_around(tmp_path):
    write_domain(tmp_path, "intel-rapl:0", 999_000)
    write_domain(tmp_path, "intel-rapl:1", 10)
    write_domain(tmp_path, "intel-rapl:0:0", 5)  # a sub-zone (core): counted within its package, skipped
    meter = RaplMeter(tmp_path)
    assert meter.available()
    assert meter.read_uj() == 0.0
    write_domain(tmp_path, "intel-rapl:0", 3_000)  # wrapped: 1000 to the top, then 3000
    write_domain(tmp_path, "intel-rapl:1", 510)
    write_domain(tmp_path, "intel-rapl:0:0", 10_000)
    assert meter.read_uj() == pytest.approx(4_000 + 500)


def test_rapl_missing_or_unreadable_counter(tmp_path):
    assert not RaplMeter(tmp_path / "absent").available()
    domain = write_domain(tmp_path, "intel-rapl:0", 1)
    if os.geteuid() == 0:
        (domain / "energy_uj").write_text("garbage\n")  # root reads anything: use an unparsable counter
    else:
        os.chmod(domain / "energy_uj", 0)
    assert not RaplMeter(tmp_path).available()
    (domain / "energy_uj").unlink()
    (domain / "energy_uj").mkdir()  # a read that fails with an OSError, for root too
    assert not RaplMeter(tmp_path).available()
    (domain / "energy_uj").rmdir()
    assert not RaplMeter(tmp_path).available()  # the counter file is missing


def test_ina2xx_integrates_power(tmp_path):
    hwmon = tmp_path / "hwmon3"
    hwmon.mkdir()
    (hwmon / "name").write_text("ina219\n")
    (hwmon / "power1_input").write_text("2000000\n")  # 2 W in microwatts
    (tmp_path / "hwmon0").mkdir()
    (tmp_path / "hwmon0" / "name").write_text("coretemp\n")
    meter = Ina2xxMeter(tmp_path)
    assert meter.available() and meter.sensor() == hwmon and meter.power_w() == 2.0
    integrator = _PowerIntegrator()
    integrator.add(2.0, now=0.0)
    assert integrator.add(4.0, now=0.5) == pytest.approx(1.5e6)  # trapezoid: 3 W x 0.5 s
    assert integrator.total_at(1.0) == pytest.approx(1.5e6 + 4.0 * 0.5e6)  # the last reading held since
    assert not Ina2xxMeter(tmp_path / "none").available()
    (hwmon / "power1_input").write_text("garbage\n")  # the driver answered something unparsable
    assert not Ina2xxMeter(tmp_path).available()
    (hwmon / "power1_input").unlink()
    (hwmon / "power1_input").mkdir()  # unreadable, for root too
    assert not Ina2xxMeter(tmp_path).available()


def window_energy_j(meter, set_power, phases: list[tuple[float, float]]) -> float:
    """The energy a window sees while the power steps through ``phases`` of (watts, seconds)."""
    set_power(phases[0][0])
    e0 = meter.read_uj()
    for watts, seconds in phases:
        set_power(watts)
        time.sleep(seconds)
    return (meter.read_uj() - e0) / 1e6


def test_power_meters_sample_inside_a_window_and_integrate(tmp_path):
    """2 W for 0.3 s then 6 W for 0.1 s is 1.2 J; two readings at the window's edges would say 1.6 J."""
    hwmon = tmp_path / "hwmon1"
    hwmon.mkdir()
    (hwmon / "name").write_text("ina226\n")

    def set_power(watts: float) -> None:
        (hwmon / "power1_input").write_text(f"{int(watts * 1e6)}\n")

    set_power(2.0)
    meter = Ina2xxMeter(tmp_path, sample_hz=500)
    try:
        assert window_energy_j(meter, set_power, [(2.0, 0.3), (6.0, 0.1)]) == pytest.approx(1.2, abs=0.06)
        assert window_energy_j(meter, set_power, [(1.0, 0.2)]) == pytest.approx(0.2, abs=0.03)  # the next window
    finally:
        meter.close()


def test_ina3221_channels_are_summed(tmp_path):
    """The Jetson's INA3221: bus millivolts times milliamps on each of its channels."""
    hwmon = tmp_path / "hwmon2"
    hwmon.mkdir()
    (hwmon / "name").write_text("ina3221\n")
    for channel, (mv, ma) in {1: (5000, 400), 2: (12000, 100)}.items():  # 2 W + 1.2 W
        (hwmon / f"in{channel}_input").write_text(f"{mv}\n")
        (hwmon / f"curr{channel}_input").write_text(f"{ma}\n")
    meter = Ina2xxMeter(tmp_path)
    assert meter.available() and meter.power_w() == pytest.approx(3.2)


def test_pi5_pmic_is_sampled_through_vcgencmd(tmp_path, monkeypatch):
    """A fake ``vcgencmd`` on PATH whose rails change inside the window: 1 W for 0.3 s, then 5 W for 0.2 s."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    readings = tmp_path / "pmic.txt"
    script = bin_dir / "vcgencmd"
    script.write_text(f'#!/bin/sh\n[ "$1" = pmic_read_adc ] && exec cat {readings}\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def set_power(watts: float) -> None:  # one rail at 5 V
        readings.write_text(f"   EXT5V_A current(0)={watts / 5:.8f}A\n   EXT5V_V volt(8)=5.00000000V\n")

    set_power(1.0)
    meter = Pi5PmicMeter(sample_hz=200)
    try:
        assert meter.available()
        assert window_energy_j(meter, set_power, [(1.0, 0.3), (5.0, 0.2)]) == pytest.approx(1.3, abs=0.1)
    finally:
        meter.close()


PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.10000000A
   3V3_SYS_A current(1)=0.20000000A
   VDD_CORE_A current(7)=2.00000000A
     3V7_WL_SW_V volt(8)=3.70000000V
   3V3_SYS_V volt(9)=3.30000000V
   VDD_CORE_V volt(15)=0.80000000V
   EXT5V_V volt(24)=5.10000000V
"""


def test_pi5_pmic_output_is_parsed_into_power():
    assert parse_pmic(PMIC_OUTPUT) == pytest.approx(0.1 * 3.7 + 0.2 * 3.3 + 2.0 * 0.8)


def test_cpu_time_is_labelled_estimated():
    meter = CpuTimeMeter(watts_per_core=10.0)
    assert meter.kind == "estimated" and meter.available()
    first = meter.read_uj()
    sum(i * i for i in range(200_000))
    assert meter.read_uj() > first
