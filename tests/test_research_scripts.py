"""The prepared GPU run of issue 21 (benchmarks/research/kd_gpu.sh) on the CPU, at its smoke size: a session lent
the device gets one call, so the pipeline it runs is checked here, on every change, with the project's real
training, scoring and archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ldpc")

ROOT = Path(__file__).resolve().parents[1]


def kd_gpu(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "benchmarks/research/kd_gpu.sh"), "--smoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_gpu_run_at_smoke_size_sweeps_distils_and_reports_every_seed(tmp_path: Path) -> None:
    run = kd_gpu(tmp_path / "sweep")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "sweep/results.json").read_text())
    plan = result["plan"]
    sweep = {(e["temperature"], e["alpha"]) for e in result["sweep"]}
    assert sweep == {(t, a) for t in plan["temperatures"] for a in plan["alphas"]}
    assert tuple(result["best"]) in sweep
    by_role: dict[str, set] = {}
    for e in result["entries"]:
        by_role.setdefault(e["role"], set()).add((e["seed"], e["size"]))
        assert len(e["ber"]) == len(plan["sinr_db"]) and len(e["bler_points"]) == len(plan["sinr_db"])
        if e["role"] == "distilled":
            assert (e["temperature"], e["alpha"]) == tuple(result["best"])
    sizes = {f"{w}x{b}" for w, b in plan["students"]}
    assert by_role["distilled"] == by_role["scratch"] == {(s, z) for s in plan["seeds"] for z in sizes}
    gains = [r for r in result["summary"] if r["role"] == "kd gain"]
    assert {(r["size"], r["target"]) for r in gains} == {(z, t) for z in sizes for t in (1e-3, 1e-2)}
    assert [r["steps"] for r in result["teacher_curve"]] == [20, 40]
    with tarfile.open(tmp_path / "sweep/models.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"teacher.pt", "ckpt/teacher-000020.pt", "ckpt/teacher-000040.pt"} <= names
    t, a = result["best"]
    assert {f"models/scratch-{z}-s{s}.pt" for z in sizes for s in plan["seeds"]} <= names
    assert {f"models/distilled-{z}-s{s}-T{t:g}-a{a:g}.pt" for z in sizes for s in plan["seeds"]} <= names
    assert "| KD gain (scratch - distilled, dB)" in run.stdout


def test_the_gpu_run_can_skip_the_sweep_and_the_teacher(tmp_path: Path) -> None:
    first = kd_gpu(tmp_path / "first", "--kd", "2:0.7")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sweep" not in json.loads((tmp_path / "first/results.json").read_text())
    teacher = tmp_path / "first.work/teacher.pt"

    run = kd_gpu(tmp_path / "given", "--kd", "4:0.5", "--teacher-from", str(teacher))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "given/results.json").read_text())
    assert "sweep" not in result and result["teacher_curve"] == []
    assert result["teacher"]["from"] == str(teacher) and result["best"] == [4.0, 0.5]
    assert {(e["temperature"], e["alpha"]) for e in result["entries"] if e["role"] == "distilled"} == {(4.0, 0.5)}
    assert (tmp_path / "given.work/teacher.pt").read_bytes() == teacher.read_bytes()
    assert "KD: T = 4, alpha = 0.5, given (--kd; no sweep)" in (tmp_path / "given/report.md").read_text()

    # refused before any job starts, in one line: a teacher of another size, and a KD pair out of range
    wrong = kd_gpu(tmp_path / "wrong", "--teacher-from", str(ROOT / "benchmarks/research/kd_gpu.py"))
    assert wrong.returncode == 2, wrong.stdout  # kd_gpu.sh tees the script's output, errors too, to stdout
    assert "error: --teacher-from" in wrong.stdout and "Traceback" not in wrong.stdout
    bad = kd_gpu(tmp_path / "bad", "--kd", "inf:0.5")
    assert bad.returncode == 2 and "is not T:ALPHA" in bad.stdout and "Traceback" not in bad.stdout
