"""The KD temperature x weight sweep of issue 21 on a CPU: one student size distilled from a saved teacher with
every (T, alpha) of ``--configs`` and trained from scratch beside them, all from the same initialization on the
same batches of one seed (one teacher pass per batch for all), then scored on that seed's test slots.

One call trains one seed (run several side by side, one per core); a call killed and started again goes on from
``resume.pt`` in its run folder (saved every ``--checkpoint-every`` steps). Each run folder holds a
``results.json`` in the form of ``edgejoule distill``'s, so the seeds are summarized with
``benchmarks/research/kd_seeds.py`` (every distilled variant paired with its seed's scratch twin):

    .venv/bin/python benchmarks/research/kd_sweep.py --teacher runs/kd21/teacher32x6-24k.pt --seed 0 \\
        --out runs/kd21/sweep16x3-s0
    .venv/bin/python benchmarks/research/kd_seeds.py runs/kd21/sweep16x3-s0 runs/kd21/sweep16x3-s1 ...

The scenario is docs/RECEIVER.md's KD scenario (``kd_gpu.Plan``); the training and scoring are
``kd_gpu.students_job``'s, so this is the GPU run's sweep phase, on every seed instead of one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from edgejoule.files import write_atomic
from kd_gpu import Plan, reference_entries, snr_arg, students_job


def _pair(text: str, cast=int, sep: str = "x") -> tuple:
    try:
        a, b = text.split(sep)
        return cast(a), cast(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form A{sep}B") from None


def _configs(text: str) -> list[tuple[float, float]]:
    return [_pair(c, float, ":") for c in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's saved state dict")
    parser.add_argument("--teacher-size", type=_pair, default="32x6")
    parser.add_argument("--student", type=_pair, default="16x3")
    parser.add_argument("--configs", type=_configs, default="1:0.5,1:0.9,2:0.5,2:0.7,2:0.9,4:0.5,4:0.9",
                        help="the distilled variants, T:alpha each (2:0.7 is edgejoule distill's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sinr", type=snr_arg, default="20,25,30,35,40", help="test SINRs (dB)")
    parser.add_argument("--eval-slots", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    student = args.student
    plan = Plan(teacher=args.teacher_size, students=[student], sweep_student=student, student_steps=args.steps,
                seeds=[args.seed], batch=args.batch, sinr_db=args.sinr,
                eval_slots=args.eval_slots, checkpoint_every=args.checkpoint_every, job_loader_workers=0,
                device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.out / "teacher.pt").exists():
        shutil.copyfile(args.teacher, args.out / "teacher.pt")
    specs = [(student, t, a) for t, a in args.configs] + [(student, 1.0, 0.0)]
    entries = students_job(plan, args.out, args.seed, "distilled", specs, checkpoint=args.out / "resume.pt")
    for e in entries:  # kd_seeds pairs "distilled SIZE ..." with "scratch SIZE" of the same seed
        e["label"] = (f"distilled {e['size']} T={e['temperature']:g} a={e['alpha']:g}" if e["role"] == "distilled"
                      else f"scratch {e['size']}")
    refs = reference_entries(plan, args.out, args.seed)
    refs[0]["label"], refs[1]["label"] = "LS+LMMSE", f"teacher {args.teacher_size[0]}x{args.teacher_size[1]}"
    request = plan.request(args.seed, students=[student], teacher_from=args.teacher)
    result = {"request": request.model_dump(mode="json"), "sinr_db": plan.sinr_db, "receivers": refs + entries,
              "configs": [f"{t:g}:{a:g}" for t, a in args.configs]}
    write_atomic(args.out / "results.json", json.dumps(result, indent=1), mode=0o644)
    (args.out / "resume.pt").unlink(missing_ok=True)
    print(f"{args.out}/results.json: " + ", ".join(f"{e['label']} {e['ber'][-1]:.2e}" for e in refs + entries))


if __name__ == "__main__":
    main()
