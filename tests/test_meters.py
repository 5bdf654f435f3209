"""Energy meters against fake sysfs trees and command output (the hardware we cannot have)."""

from __future__ import annotations

import os

import pytest

from edgejoule.plugins.energy.meters import CpuTimeMeter, Ina2xxMeter, RaplMeter, _PowerIntegrator, parse_pmic


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
    assert meter.available() and meter.sensor() == hwmon
    assert meter.read_uj() == 0.0
    integrator = _PowerIntegrator()
    integrator.add(2.0, now=0.0)
    assert integrator.add(4.0, now=0.5) == pytest.approx(1.5e6)  # trapezoid: 3 W x 0.5 s
    assert not Ina2xxMeter(tmp_path / "none").available()
    (hwmon / "power1_input").write_text("garbage\n")  # the driver answered something unparsable
    assert not Ina2xxMeter(tmp_path).available()
    (hwmon / "power1_input").unlink()
    (hwmon / "power1_input").mkdir()  # unreadable, for root too
    assert not Ina2xxMeter(tmp_path).available()


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
