"""The resume file of an ``edgejoule distill`` run (``OUT/resume.pt``): a run killed at any moment goes on
where its last checkpoint left it when the same command is run again, so long CPU runs can span sessions.

It holds the teacher's training state at its last checkpoint (weights, Adam's moments, the cosine schedule's
position, the loss windows: :func:`edgejoule.plugins.reception.kd_core.train_logit_models` resumes from it
with the same weights an unstopped run would reach) and each finished student pair (distilled and scratch
weights, loss curves, time per step). It belongs to the training its request describes: evaluation settings
(SINRs, slots, the code) and the list of students may change between runs, so a finished run can be scored
again or given another student without training anything twice; anything else that shapes training (sizes,
steps, channel, batch, learning rate, seed, the teacher file) must be the same, or the run refuses rather than
overwrite another run's state. Written whole to a temporary file and renamed into place, so a kill during the
write leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from edgejoule.errors import EdgejouleError
from edgejoule.files import write_atomic

RESUME_FILE = "resume.pt"
# what a run may change and still resume: how it is scored, and which students it adds
NOT_TRAINING = {"sinr_db", "eval_slots", "min_errors", "min_eval_slots", "coded", "target_ber", "students",
                "checkpoint_every", "teacher_from"}


def fingerprint(req: Any) -> dict:
    """The request's fields that shape training, with the teacher file by content rather than by name."""
    fields = req.model_dump(mode="json", exclude=NOT_TRAINING)
    if req.teacher_from is not None:
        try:
            fields["teacher_from_sha256"] = hashlib.sha256(Path(req.teacher_from).read_bytes()).hexdigest()
        except OSError as exc:
            raise EdgejouleError(f"cannot read --teacher-from {req.teacher_from}: {exc.strerror or exc}") from None
    return fields


def student_key(index: int, arch: tuple[int, int]) -> str:
    """A student pair's key: its place in the list seeds its initialization, so it is part of the key."""
    return f"{index}:{arch[0]}x{arch[1]}"


class RunState:
    """``OUT/resume.pt`` of one distill request: read (and checked) at start, rewritten at every checkpoint."""

    def __init__(self, req: Any, out_dir: Path) -> None:
        self.path = out_dir / RESUME_FILE
        self.fields = fingerprint(req)
        self.teacher: dict | None = None
        self.students: dict[str, dict] = {}
        if not self.path.exists():
            return
        try:
            saved = torch.load(self.path, weights_only=True)
            fields, teacher, students = saved["fields"], saved["teacher"], saved["students"]
        except Exception as exc:  # a truncated or foreign file: torch raises many kinds
            raise EdgejouleError(f"cannot read {self.path} ({str(exc).splitlines()[0][:200]}); remove it to train "
                                 "this run from the start") from None
        changed = sorted(k for k in set(fields) | set(self.fields) if fields.get(k) != self.fields.get(k))
        if changed:
            diff = ", ".join(f"{k}: {fields.get(k)} -> {self.fields.get(k)}" for k in changed)
            raise EdgejouleError(f"{out_dir} holds a distill run trained with other settings ({diff}); pass another "
                                 f"--out, or remove {self.path} to train from the start")
        self.teacher, self.students = teacher, students

    def describe(self, req: Any) -> str | None:
        """What a rerun will pick up, or None when it starts from the beginning."""
        parts = []
        if self.teacher is not None and req.teacher_from is None:
            done = self.teacher["done"]
            parts.append("the teacher, trained" if done == self.teacher["steps"] else
                         f"the teacher at step {done:,} of {self.teacher['steps']:,}")
        keys = [student_key(i, a) for i, a in enumerate(req.students)]
        finished = sum(k in self.students for k in keys)
        if finished:
            parts.append(f"{finished} of {len(keys)} student pairs, trained")
        return f"resuming {self.path.parent}: " + " and ".join(parts) if parts else None

    def save_teacher(self, state: dict) -> None:
        self.teacher = state
        self._write()

    def save_student(self, key: str, pair: dict) -> None:
        self.students[key] = pair
        self._write()

    def _write(self) -> None:
        data = {"fields": self.fields, "teacher": self.teacher, "students": self.students}
        try:
            write_atomic(self.path, lambda out: torch.save(data, out))
        except OSError as exc:
            raise EdgejouleError(f"cannot write the checkpoint {self.path}: {exc.strerror or exc}") from None
