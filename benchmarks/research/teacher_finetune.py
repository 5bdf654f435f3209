"""A trained KD-scenario teacher trained on: more steps from its final weights, with a fresh training stream, a
learning rate of its own and a training SINR range of its own, then every checkpoint scored on the test slots of
docs/RECEIVER.md's teacher-vs-steps table (seed 0, SINRs 30 and 40 dB, the same slots as that table).

The question it answers (issue 21, item 1, a teacher clearly below 1e-3): is the converged 32x6 teacher's floor
set by what it was trained on (SINR uniform over 0..40 dB, most of it far below the 30-40 dB where the floor is
read) or by its size? A run over 20..40 dB and its control over 0..40 dB (same steps, rate and stream) tell
the two apart:

    .venv/bin/python benchmarks/research/teacher_finetune.py --teacher runs/kd21/teacher32x6-24k.pt \\
        --train-sinr 20,40 --out runs/kd21/finetune-20-40
    .venv/bin/python benchmarks/research/teacher_finetune.py --teacher runs/kd21/teacher32x6-24k.pt \\
        --train-sinr 0,40 --out runs/kd21/finetune-0-40

A call killed and started again goes on from ``resume.pt`` in its run folder; ``results.json`` holds the curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edgejoule.files import write_atomic
from edgejoule.plugins.reception.distill_experiment import batches, checkpoint_curve, load_net
from edgejoule.plugins.reception.kd_core import KdOptions, train_logit_model
from edgejoule.tasks.error_rate import format_rate
from kd_gpu import Plan, snr_arg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the trained teacher's state dict")
    parser.add_argument("--train-sinr", type=snr_arg, default="20,40", help="LOW,HIGH dB: the training SINRs, uniform")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, cosine-decayed to 0 over --steps")
    parser.add_argument("--stream-seed", type=int, default=5, help="the training slots' seed (the teacher's own "
                        "24,000 steps used seed 0's stream; a fresh one adds slots it has not seen)")
    parser.add_argument("--curve-sinr", type=snr_arg, default="30,40",
                        help="test SINRs (dB): 30,40 are the table's slots")
    parser.add_argument("--eval-slots", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if len(args.train_sinr) != 2:
        parser.error(f"--train-sinr must be LOW,HIGH; got {args.train_sinr}")
    plan = Plan(eval_slots=args.eval_slots)
    train_req = plan.request(args.stream_seed, train_sinr_db=tuple(args.train_sinr))
    test_req = plan.request(0, sinr_db=args.curve_sinr, coded=None)
    model = load_net(train_req, plan.teacher, args.teacher)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "resume.pt"
    resume = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None

    def after(done: int, state) -> None:
        if done % args.checkpoint_every == 0 or done == args.steps:
            torch.save(model.state_dict(), args.out / f"teacher-{done:06d}.pt")
            write_atomic(checkpoint, lambda f: torch.save(state(), f))

    if resume is None:
        torch.save(model.state_dict(), args.out / "teacher-000000.pt")
    train_logit_model(model, batches(train_req), KdOptions(steps=args.steps, lr=args.lr), after_step=after,
                      resume=resume)
    curve = checkpoint_curve(test_req, plan.teacher, sorted(args.out.glob("teacher-*.pt")))
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "curve_sinr_db": test_req.sinr_db, "curve": curve}
    write_atomic(args.out / "results.json", json.dumps(result, indent=1), mode=0o644)
    print("| steps | " + " | ".join(f"{s:g} dB" for s in test_req.sinr_db) + " |")
    for row in curve:
        print(f"| {row['steps']} | " + " | ".join(format_rate(p) for p in row["ber_points"]) + " |")


if __name__ == "__main__":
    main()
