"""Long distill runs resume from their checkpoints (issue 21): a run killed with SIGKILL and run again ends with
the weights of a run never stopped; a directory another request wrote is refused; evaluation settings and new
students reuse what is trained."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from edgejoule.plugins.reception.deeprx_arch import DeepRxArch
from edgejoule.plugins.reception.deeprx_net import DeepRx, inputs
from edgejoule.plugins.reception.kd_core import KdOptions, train_logit_model
from edgejoule.tasks.ofdm import OfdmConfig, simulate

torch.set_num_threads(1)
CMD = [sys.executable, "-m", "edgejoule.cli.app", "distill", "--teacher", "8x2", "--student", "4x1", "--n-sc", "12",
       "--batch", "8", "--teacher-steps", "240", "--checkpoint-every", "40", "--student-steps", "6",
       "--eval-slots", "10", "--min-eval-slots", "10", "--sinr", "20"]


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def _batches(cfg: OfdmConfig):
    mask = torch.from_numpy(cfg.data_mask)[None, :, :, None]

    def batch(step: int):
        rng = np.random.default_rng((7, step))
        slot = simulate(cfg, rng.uniform(0, 40, 8), rng)
        return inputs(cfg, slot), torch.from_numpy(slot.bits), mask

    return batch


def test_training_resumed_from_a_state_ends_with_the_weights_of_an_unstopped_run() -> None:
    cfg = OfdmConfig(n_sc=12)
    options = KdOptions(steps=30, lr=3e-3)
    torch.manual_seed(0)
    init = DeepRx(DeepRxArch(width=4, blocks=1, n_sc=12)).state_dict()
    whole = DeepRx(DeepRxArch(width=4, blocks=1, n_sc=12))
    whole.load_state_dict(init)
    saved = {}

    def keep(done: int, state) -> None:
        if done == 12:  # through torch.save, as the resume file does
            buffer = io.BytesIO()
            torch.save(state(), buffer)
            saved["state"] = buffer.getvalue()

    curve = train_logit_model(whole, _batches(cfg), options, after_step=keep)
    resumed = DeepRx(DeepRxArch(width=4, blocks=1, n_sc=12))
    state = torch.load(io.BytesIO(saved["state"]), weights_only=True)
    seen = []
    curve2 = train_logit_model(resumed, _batches(cfg), options, progress=seen.append, resume=state)
    assert seen[0] == 12 and len(seen) == 1 + 30 - 12  # the progress bar starts where the run stopped
    assert curve2 == curve
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    # without the optimizer's and schedule's state the same weights are not reached: the test can fail
    partial = DeepRx(DeepRxArch(width=4, blocks=1, n_sc=12))
    partial.load_state_dict(state["models"][0])
    train_logit_model(partial, _batches(cfg), KdOptions(steps=18, lr=3e-3))
    assert not torch.equal(partial.out.weight, whole.out.weight)
    with pytest.raises(ValueError, match="trained for 30 steps"):
        train_logit_model(resumed, _batches(cfg), KdOptions(steps=31), resume=state)


def test_a_distill_killed_during_the_teacher_resumes_and_ends_as_an_unstopped_run(tmp_path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = _cli([*CMD, "--out", str(whole), "--json"])
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([*CMD, "--out", str(killed), "--json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # teacher-000120.pt is written after resume.pt holds step 80: at least two checkpoints in, before the end
    while not (killed / "teacher-000120.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "teacher-000240.pt").exists()
    again = _cli([*CMD, "--out", str(killed)])
    assert again.returncode == 0, again.stderr
    step = int(again.stderr.split("the teacher at step ")[1].split(" ")[0])
    assert 80 <= step < 240 and step % 40 == 0, again.stderr
    for name in ("teacher.pt", "distilled-4x1.pt", "scratch-4x1.pt"):
        a, b = torch.load(whole / name, weights_only=True), torch.load(killed / name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    scored = [[{k: v for k, v in r.items() if k != "train_s_per_100_steps"}  # timings differ, nothing else
               for r in json.loads((d / "results.json").read_text())["receivers"]] for d in (whole, killed)]
    assert scored[0] == scored[1]


def test_a_finished_run_is_scored_again_and_given_a_student_without_training_twice(tmp_path) -> None:
    out = tmp_path / "run"
    first = _cli([*CMD, "--out", str(out), "--json"])
    assert first.returncode == 0, first.stderr
    teacher = (out / "teacher.pt").read_bytes()
    rescored = _cli([*CMD[:-1], "10,30", "--student", "6x1", "--out", str(out)])
    assert rescored.returncode == 0, rescored.stderr
    assert f"resuming {out}: the teacher, trained and 1 of 2 student pairs, trained" in rescored.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["sinr_db"] == [10.0, 30.0]
    assert [r["label"] for r in result["receivers"]] == ["LS+LMMSE", "teacher 8x2", "distilled 4x1", "scratch 4x1",
                                                         "distilled 6x1", "scratch 6x1"]
    assert (out / "teacher.pt").read_bytes() == teacher


@pytest.mark.parametrize("change,named", [(["--teacher-steps", "200"], "teacher_steps: 40 -> 200"),
                                          (["--batch", "16"], "batch: 8 -> 16"),
                                          (["--doppler", "1000"], "doppler_hz: 300.0 -> 1000.0")])
def test_a_directory_another_request_trained_is_refused_in_one_line(tmp_path, change, named) -> None:
    out = tmp_path / "run"
    base = [*CMD, "--teacher-steps", "40", "--out", str(out)]  # the last of a repeated option counts
    assert _cli(base).returncode == 0
    ours = (out / "resume.pt").read_bytes()
    res = _cli(base + change)
    assert res.returncode == 2, res.stderr
    assert named in res.stderr and "Traceback" not in res.stderr and res.stderr.count("\n") <= 4, res.stderr
    assert (out / "resume.pt").read_bytes() == ours  # the other run's state is left as it was


def test_an_unreadable_resume_file_is_one_line_not_a_traceback(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "resume.pt").write_bytes(b"\x80\x02truncated")
    res = _cli([*CMD, "--out", str(out)])
    assert res.returncode == 2 and "cannot read" in res.stderr and "remove it" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_run_logged_to_a_file_says_how_far_it_is(tmp_path) -> None:
    """Off a terminal a progress bar draws nothing: a run of hours must still say in its log how far it is."""
    res = _cli([*CMD, "--teacher-steps", "40", "--out", str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("training (steps): ")]
    assert lines[0] == "training (steps): 0/52 after 0 s", res.stderr
    assert lines[-1].startswith("training (steps): 52/52 after ") and lines[-1].endswith("about 0 s left"), lines
    assert len(lines) <= 2 + 1  # the start, the end and a line per 15 s at most, not one per step
    again = _cli([*CMD, "--teacher-steps", "40", "--out", str(tmp_path / "run")])
    said = [line for line in again.stderr.splitlines() if line.startswith("training (steps): ")]
    assert again.stderr.startswith(f"resuming {tmp_path / 'run'}: the teacher, trained and 1 of 1 student pairs")
    assert [line.split(" after")[0] for line in said] == ["training (steps): 0/52", "training (steps): 52/52"]
