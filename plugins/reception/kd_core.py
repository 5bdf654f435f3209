r"""Compressor ``kd``: knowledge distillation of a logit model into a smaller one, with a scratch twin.

Distillation loss for per-bit logits (Hinton et al., 2015, adapted to binary outputs; the form of
REFERENCE.md section 5, used by the DeepRx case study, arXiv 2507.10409), over the masked outputs:

.. math::

    \mathcal{L} = a\,T^2\,\mathrm{BCE}\big(\sigma(z_s/T),\, \sigma(z_t/T)\big) + (1-a)\,\mathrm{BCE}\big(\sigma(z_s),\, b\big)

with student logits :math:`z_s`, teacher logits :math:`z_t`, bits b, temperature T (``temperature``) and
weight a (``alpha``); :math:`T^2` keeps the soft term's gradient scale independent of T. With a = 0 it is
plain BCE on the bits: that is how the **scratch** student is trained, from the same initialization, on the
same batches and for the same steps as the distilled one, so the two differ only in the loss.

Works for any model family whose forward pass returns logits: the request carries the teacher, an initial
student and a ``batch(step)`` callable returning (inputs, bits, mask) tensors; nothing here knows the task.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from edgejoule.interfaces import Progress

KdWeight = Annotated[float, Field(ge=0.0, le=1.0, description="weight a of the distillation term")]
# Bounded because the soft term is scaled by T^2 (an infinite T gives a NaN loss and a silently untrained student);
# distillation uses T of 1 to 20 (Hinton et al. 2015), so 100 refuses nothing a sweep would try.
Temperature = Annotated[float, Field(gt=0.0, le=100.0, description="temperature T of the soft targets")]


class KdOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    alpha: KdWeight = 0.7
    temperature: Temperature = 2.0
    steps: int = Field(1000, ge=1, description="optimizer steps (one batch each)")
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate (cosine-decayed to 0)")
    scratch: bool = Field(True, description="also train the same student from scratch (a = 0)")


class KdRequest(BaseModel):
    """What to distil: ``batch(step)`` returns (inputs, bits, mask or None) for one optimizer step."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    teacher: Any = Field(description="a trained torch module returning logits")
    student: Any = Field(description="the student at its initialization (left untouched)")
    batch: Callable[[int], tuple[Any, Any, Any]]
    options: KdOptions = KdOptions()


class KdResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    distilled: Any
    scratch: Any | None
    loss_history: dict[str, list[float]] = Field(description="mean loss per 1 % of the steps, per student")


def kd_loss(student_logits: Any, teacher_logits: Any, bits: Any, alpha: float, temperature: float, mask: Any = None) -> Any:
    """The loss of the module docstring; ``mask`` (bool, broadcastable) selects the outputs that count."""
    import torch
    import torch.nn.functional as F

    if mask is not None:
        mask = torch.broadcast_to(mask, student_logits.shape)
        student_logits, teacher_logits, bits = student_logits[mask], teacher_logits[mask], bits[mask]
    hard = F.binary_cross_entropy_with_logits(student_logits, bits.float())
    if alpha == 0.0:
        return hard
    soft_target = torch.sigmoid(teacher_logits.detach() / temperature)
    soft = F.binary_cross_entropy_with_logits(student_logits / temperature, soft_target)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def train_logit_model(
    model: Any, batch: Callable[[int], tuple[Any, Any, Any]], options: KdOptions, teacher: Any = None,
    progress: Progress | None = None, after_step: AfterStep | None = None, resume: dict | None = None,
) -> list[float]:
    """Trains ``model`` in place with :func:`kd_loss` (a = 0 when ``teacher`` is None); returns the loss curve.
    ``after_step`` and ``resume``: as for :func:`train_logit_models`."""
    return train_logit_models([model], batch, [options], teacher, progress, after_step, resume)[0]


# ``after_step(steps_done, state)``: ``state()`` is what :func:`train_logit_models` needs to resume there
AfterStep = Callable[[int, Callable[[], dict]], None]


def train_logit_models(
    models: list[Any], batch: Callable[[int], tuple[Any, Any, Any]], options: list[KdOptions], teacher: Any = None,
    progress: Progress | None = None, after_step: AfterStep | None = None, resume: dict | None = None,
) -> list[list[float]]:
    """:func:`train_logit_model` for several models at once, each with its options (the same ``steps``), on the
    same batches and one teacher forward pass per batch: what a sweep over sizes, a and T shares.

    ``after_step(steps_done, state)`` runs after every step; ``state()`` returns the weights, Adam's moments, the
    schedule's position and the loss windows (a dict for ``torch.save``). Passed back as ``resume``, training goes
    on after that step exactly as if it had not stopped: ``batch(step)`` depends on the step alone and nothing
    else here draws random numbers, so a run killed and resumed ends with the same weights as one never stopped."""
    import torch

    if len({o.steps for o in options}) != 1 or len(options) != len(models):
        raise ValueError("one KdOptions per model, all with the same steps")
    steps = options[0].steps
    opts = [torch.optim.Adam(m.parameters(), lr=o.lr) for m, o in zip(models, options)]
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) for opt in opts]
    histories: list[list[float]] = [[] for _ in models]
    windows: list[list[float]] = [[] for _ in models]
    start = 0
    if resume is not None:
        if resume["steps"] != steps or len(resume["models"]) != len(models):
            raise ValueError(f"the state to resume is of {len(resume['models'])} models trained for {resume['steps']} "
                             f"steps, not {len(models)} for {steps}")
        start = resume["done"]
        for model, opt, sched, m, o, s in zip(models, opts, scheds, *(resume[k] for k in ("models", "opts", "scheds"))):
            model.load_state_dict(m)
            opt.load_state_dict(o)
            sched.load_state_dict(s)
        histories, windows = resume["histories"], resume["windows"]
        if progress and start:
            progress(start)

    def state(done: int) -> dict:
        return {"steps": steps, "done": done, "models": [m.state_dict() for m in models],
                "opts": [o.state_dict() for o in opts], "scheds": [s.state_dict() for s in scheds],
                "histories": histories, "windows": windows}

    if teacher is not None:
        teacher.eval()
    for model in models:
        model.train()
    every = max(1, steps // 100)
    for step in range(start, steps):
        x, bits, mask = batch(step)
        z_t = None
        if teacher is not None:
            with torch.no_grad():
                z_t = teacher(x)
        for model, o, opt, sched, history, window in zip(models, options, opts, scheds, histories, windows):
            z_s = model(x)
            alpha = o.alpha if teacher is not None else 0.0
            loss = kd_loss(z_s, z_t if z_t is not None else z_s, bits, alpha, o.temperature, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            window.append(float(loss.detach()))
            if len(window) == every:
                history.append(sum(window) / every)
                window.clear()
        if progress:
            progress(1)
        if after_step:
            after_step(step + 1, lambda done=step + 1: state(done))
    for model in models:
        model.eval()
    return histories


class KnowledgeDistillation:
    name = "kd"

    def run(self, request: KdRequest, progress: Progress | None = None) -> KdResult:
        distilled = copy.deepcopy(request.student)
        history = {"distilled": train_logit_model(distilled, request.batch, request.options, request.teacher, progress)}
        scratch = None
        if request.options.scratch:
            scratch = copy.deepcopy(request.student)
            history["scratch"] = train_logit_model(scratch, request.batch, request.options, None, progress)
        return KdResult(distilled=distilled, scratch=scratch, loss_history=history)
