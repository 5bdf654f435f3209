"""Knowledge distillation on the KD scenario of docs/RECEIVER.md ("A scenario for the KD question (issue 21)"),
sized for one H200 in about 10 minutes; ``--smoke`` runs the same pipeline on a CPU in under a minute.

Phases (every phase rewrites ``results.json`` and ``report.md`` under ``--out``, so a run cut short keeps what
it finished; checkpoints and models go to ``--work``, then into one ``models.tar.gz`` under ``--out``: the device
hands back at most 8 files):
1. the teacher (32x6), a checkpoint every ``--checkpoint-every`` steps, its batches made by DataLoader workers
   (the numpy channel simulation, not the GPU, bounds a step); meanwhile the scratch students train in a pool of
   processes sharing the GPU, one job per seed training every size at once on the same batches
   (``train_logit_models``: a batch is simulated once for all the models that use it); ``--teacher-from FILE``
   uses a trained teacher instead (no BER-vs-steps curve then);
2. the teacher's BER-vs-steps curve (every checkpoint on the test slots at the top SINRs), and the KD sweep:
   temperature x alpha on the middle student size, seed 0, one job (one teacher pass per batch for all), each
   scored on validation slots (a stream of its own, not the test slots). The seed paper (arXiv 2507.10409)
   sweeps the temperature and the student and teacher sizes without printing a grid; the grid is ours;
3. distilled students of every size and seed with the sweep's best (T, alpha), one job per seed;
   ``--kd T:ALPHA`` skips the sweep and uses that pair (the CPU sweep over five seeds found no pair better than
   the default 2:0.7, docs/RECEIVER.md), leaving the device's minutes to longer student training;
4. BER vs SINR with errors counted and 95 % intervals for all (LS+LMMSE and the teacher too), the SINR at BER
   1e-3 and 1e-2 per size and role with its t-interval over seeds, and the paired KD gain (scratch minus
   distilled crossing, per seed) with its t-interval; coded BLER with ``--coded``.

Everything uses the project's own code: edgejoule.plugins.reception (DeepRx, kd_core, distill_experiment) and
edgejoule.tasks (OFDM task, error_rate, coded). Run: bash benchmarks/research/kd_gpu.sh [--smoke].
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from edgejoule.errors import EdgejouleError
from edgejoule.files import write_atomic
from edgejoule.plugins.reception.deeprx_net import DeepRx
from edgejoule.plugins.reception.distill_experiment import (
    DistillRequest,
    batches,
    checkpoint_curve,
    error_curves,
    load_net,
    net_receiver,
    receiver_entry,
)
from edgejoule.plugins.reception.kd_core import KdOptions, train_logit_model, train_logit_models
from edgejoule.plugins.reception.ofdm_receiver import receive, true_channel_receive
from edgejoule.tasks.error_rate import format_rate, parse_snr_list, snr_at_target, t_interval

VALIDATION_SEED = 1000  # the sweep's validation slots: a stream no test curve uses (those are seeded 0, 1, 2)
TARGETS = (1e-3, 1e-2)


class Plan(BaseModel):
    """Everything one run does: the scenario (fixed, the doc's) and the budget (per machine)."""

    channel: str = "tdl-c"
    delay_spread_ns: float = 300.0
    pilot_symbols: tuple[int, ...] = (2,)
    doppler_hz: float = 300.0
    n_sc: int = 12
    teacher: tuple[int, int] = (32, 6)
    teacher_steps: int = 24_000
    checkpoint_every: int = 2000
    students: list[tuple[int, int]] = [(8, 2), (12, 3), (16, 3)]
    sweep_student: tuple[int, int] = (12, 3)
    kd: tuple[float, float] | None = None  # (T, alpha) of every distilled student, given: no sweep
    teacher_from: Path | None = None  # a trained teacher's state dict: no teacher training, no BER-vs-steps curve
    student_steps: int = 6000
    seeds: list[int] = [0, 1, 2]
    temperatures: list[float] = [1.0, 2.0, 4.0]
    alphas: list[float] = [0.5, 0.9]
    batch: int = 64
    lr: float = 3e-3
    sinr_db: list[float] = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
    curve_sinr_db: list[float] = [30.0, 40.0]
    validation_sinr_db: list[float] = [20.0, 30.0, 40.0]
    eval_slots: int = 3000
    coded: str | None = None
    workers: int = 8
    loader_workers: int = 6
    job_loader_workers: int = 2
    device: str = "cuda"

    def request(self, seed: int, **update) -> DistillRequest:
        return DistillRequest(
            teacher=self.teacher, students=self.students, n_sc=self.n_sc, channel=self.channel,
            delay_spread_ns=self.delay_spread_ns, pilot_symbols=self.pilot_symbols, doppler_hz=self.doppler_hz,
            batch=self.batch, lr=self.lr, sinr_db=self.sinr_db, eval_slots=self.eval_slots, coded=self.coded,
            seed=seed, teacher_steps=self.teacher_steps, student_steps=self.student_steps,
            checkpoint_every=self.checkpoint_every,
        ).model_copy(update=update)


SMOKE = dict(teacher=(8, 2), teacher_steps=40, checkpoint_every=20, students=[(4, 1), (6, 1)], sweep_student=(4, 1),
             student_steps=20, seeds=[0, 1], temperatures=[2.0], alphas=[0.5, 0.9], batch=8,
             sinr_db=[0.0, 20.0, 40.0], eval_slots=20, workers=2, loader_workers=0, job_loader_workers=0)


def _name(arch: tuple[int, int]) -> str:
    return f"{arch[0]}x{arch[1]}"


class StepBatches(torch.utils.data.Dataset):
    """Batch ``start + i`` of a request's training stream (``distill_experiment.batches``), for DataLoader workers."""

    def __init__(self, req: DistillRequest, steps: int, start: int = 0) -> None:
        self.req, self.steps, self.start = req, steps, start

    def __len__(self) -> int:
        return self.steps - self.start

    def __getitem__(self, i: int):
        return batches(self.req)(self.start + i)


def stream(req: DistillRequest, steps: int, workers: int, device: str, start: int = 0):
    """``batch(step)`` on ``device`` for steps start, start + 1, ... in order, simulated ahead by ``workers``
    processes."""
    extra = dict(prefetch_factor=8, multiprocessing_context="spawn") if workers else {}
    loader = iter(torch.utils.data.DataLoader(StepBatches(req, steps, start), batch_size=None, num_workers=workers,
                                              pin_memory=device == "cuda", **extra))
    return lambda step: tuple(t.to(device, non_blocking=True) for t in next(loader))


def snr_arg(text: str) -> list[float]:
    """argparse type of the research scripts' SINR lists: checked as the CLIs check theirs."""
    try:
        return parse_snr_list(text, "SINRs")
    except EdgejouleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kd_pair(text: str) -> tuple[float, float]:
    try:
        t, a = (float(v) for v in text.split(":"))
        options = KdOptions(temperature=t, alpha=a)
    except ValueError:  # pydantic's ValidationError too
        raise argparse.ArgumentTypeError(f"{text!r} is not T:ALPHA with 0 < T <= 100 and 0 <= ALPHA <= 1") from None
    return options.temperature, options.alpha


def _setup_worker() -> None:
    torch.set_num_threads(1)


def train_teacher(plan: Plan, work: Path) -> dict:
    """Phase 1: the teacher, checkpoints ``ckpt/teacher-STEP.pt``; its batches come from DataLoader workers.
    With ``plan.teacher_from``, that teacher instead (``main`` has checked that it loads)."""
    req = plan.request(0)
    (work / "ckpt").mkdir(parents=True, exist_ok=True)
    if plan.teacher_from is not None:
        shutil.copyfile(plan.teacher_from, work / "teacher.pt")
        return {"seconds": 0.0, "loss": [], "from": str(plan.teacher_from)}
    torch.manual_seed(0)
    model = DeepRx(req.arch(plan.teacher)).to(plan.device)

    def after(done: int, _state) -> None:
        if done % plan.checkpoint_every == 0 or done == plan.teacher_steps:
            torch.save(model.state_dict(), work / "ckpt" / f"teacher-{done:06d}.pt")

    t0 = time.perf_counter()
    batch = stream(req, plan.teacher_steps, plan.loader_workers, plan.device)
    loss = train_logit_model(model, batch, KdOptions(steps=plan.teacher_steps, lr=plan.lr), after_step=after)
    torch.save(model.state_dict(), work / "teacher.pt")
    return {"seconds": time.perf_counter() - t0, "loss": loss}


def teacher_curve(plan: Plan, work: Path) -> list[dict]:
    """Phase 2: BER at ``curve_sinr_db`` of every teacher checkpoint, on the test slots of seed 0."""
    _setup_worker()
    req = plan.request(0, sinr_db=plan.curve_sinr_db, coded=None)
    return checkpoint_curve(req, plan.teacher, list((work / "ckpt").glob("teacher-*.pt")), plan.device)


def rescore(run: Path, curve_sinr_db: list[float]) -> str:
    """``--rescore RUN``: a finished ``edgejoule distill`` run's receivers on its test slots with the current
    counting rule (the CPU experiment of docs/RECEIVER.md): LS+LMMSE, the true-channel bound, the final teacher
    and students over the run's SINRs, then every teacher checkpoint at ``curve_sinr_db``."""
    req = DistillRequest.model_validate(json.loads((run / "results.json").read_text())["request"])
    req = req.model_copy(update={"coded": None})
    cfg = req.cfg
    nets = [(f"teacher {_name(req.teacher)}", req.teacher, run / "teacher.pt")]
    nets += [(path.stem.replace("-", " "), tuple(int(v) for v in path.stem.split("-")[1].split("x")), path)
             for path in sorted(run.glob("distilled-*.pt")) + sorted(run.glob("scratch-*.pt"))]
    rows = [("LS+LMMSE", error_curves(req, lambda s: receive(cfg, s))["ber"]),
            ("true channel at every RE", error_curves(req, lambda s: true_channel_receive(cfg, s))["ber"])]
    rows += [(label, error_curves(req, net_receiver(cfg, load_net(req, arch, path)))["ber"])
             for label, arch, path in nets]
    steps_req = req.model_copy(update={"sinr_db": curve_sinr_db})
    steps = checkpoint_curve(steps_req, req.teacher, list(run.glob("teacher-*.pt")))
    return (_table(req.sinr_db, rows) + f"\nteacher {_name(req.teacher)} over its training steps\n\n"
            + _table(curve_sinr_db, [(f"{r['steps']} steps", r["ber_points"]) for r in steps]))


def survey(sinr_db: list[float]) -> str:
    """``--survey``: how the scenario was chosen. LS+LMMSE and the true-channel bound on the plan's channel with
    two pilot symbols (the default) and one, at 100 to 1000 Hz, on the test slots of seed 0."""
    rows = []
    for pilots in ((2, 11), (2,)):
        for doppler in (100.0, 300.0, 500.0, 1000.0):
            req = Plan().request(0, pilot_symbols=pilots, doppler_hz=doppler, sinr_db=sinr_db, coded=None)
            cfg = req.cfg
            for label, rx in (("LS+LMMSE", lambda s, cfg=cfg: receive(cfg, s)),
                              ("true channel", lambda s, cfg=cfg: true_channel_receive(cfg, s))):
                rows.append((f"pilots {pilots}, {doppler:g} Hz: {label}", error_curves(req, rx)["ber"]))
    return _table(sinr_db, rows)


def _table(sinr_db: list[float], rows: list[tuple[str, list[dict]]]) -> str:
    head = ["| receiver | " + " | ".join(f"{s:g} dB" for s in sinr_db) + " |", "|---|" + "---|" * len(sinr_db)]
    return "\n".join(head + [f"| {label} | " + " | ".join(format_rate(p) for p in points) + " |"
                             for label, points in rows]) + "\n"


def students_job(plan: Plan, work: Path, seed: int, role: str, specs: list[tuple[tuple[int, int], float, float]],
                 validate: bool = False, checkpoint: Path | None = None) -> list[dict]:
    """Trains students (``role`` distilled or scratch; ``specs``: (size, T, alpha) each, alpha 0 a scratch twin
    among distilled ones) together on the batches of ``seed`` and scores each on its seed's test slots (and, for
    the sweep, on the validation slots). With ``checkpoint``, the training state is saved there every
    ``plan.checkpoint_every`` steps and a job started again goes on from it (the same weights as one never
    stopped: ``train_logit_models``)."""
    _setup_worker()
    req = plan.request(seed)
    models = []
    for arch, _, _ in specs:  # one init per size and seed: distilled and scratch twins start from the same weights
        torch.manual_seed(seed * 1000 + arch[0] * 10 + arch[1])
        models.append(DeepRx(req.arch(arch)).to(plan.device))
    teacher = load_net(req, plan.teacher, work / "teacher.pt", plan.device) if role == "distilled" else None
    options = [KdOptions(steps=plan.student_steps, lr=plan.lr, alpha=a, temperature=t) for _, t, a in specs]
    resume = torch.load(checkpoint, weights_only=True) if checkpoint and checkpoint.exists() else None

    def after(done: int, state) -> None:
        if checkpoint and (done % plan.checkpoint_every == 0 or done == plan.student_steps):
            write_atomic(checkpoint, lambda f: torch.save(state(), f))

    t0 = time.perf_counter()
    start = resume["done"] if resume else 0
    losses = train_logit_models(models, stream(req, plan.student_steps, plan.job_loader_workers, plan.device, start),
                                options, teacher, after_step=after, resume=resume)
    seconds = time.perf_counter() - t0
    (work / "models").mkdir(exist_ok=True)
    entries = []
    for (arch, t, a), model, loss in zip(specs, models, losses):
        kind = "distilled" if role == "distilled" and a > 0 else "scratch"
        tag = f"{kind}-{_name(arch)}-s{seed}" + (f"-T{t:g}-a{a:g}" if kind == "distilled" else "")
        torch.save(model.state_dict(), work / "models" / f"{tag}.pt")
        rx = net_receiver(req.cfg, model, plan.device)
        entry = receiver_entry(req, tag, kind, req.arch(arch), error_curves(req, rx), 100 * seconds
                               / max(plan.student_steps - start, 1))  # the job's time per step, all its models
        entry.update(seed=seed, size=_name(arch), temperature=t, alpha=a, loss_last=loss[-1] if loss else None)
        if validate:
            val = plan.request(VALIDATION_SEED, sinr_db=plan.validation_sinr_db, coded=None)
            entry["validation_ber"] = [p["rate"] for p in error_curves(val, rx)["ber"]]
        entries.append(entry)
    return entries


def reference_entries(plan: Plan, work: Path, seed: int) -> list[dict]:
    """LS+LMMSE and the final teacher on the test slots of ``seed``."""
    _setup_worker()
    req = plan.request(seed)
    cfg = req.cfg
    teacher = load_net(req, plan.teacher, work / "teacher.pt", plan.device)
    base = receiver_entry(req, f"LS+LMMSE-s{seed}", "baseline", None, error_curves(req, lambda s: receive(cfg, s)),
                          None)
    t = receiver_entry(req, f"teacher-{_name(plan.teacher)}-s{seed}", "teacher", req.arch(plan.teacher),
                       error_curves(req, net_receiver(cfg, teacher, plan.device)), None)
    for e in (base, t):
        e.update(seed=seed, size=None if e is base else _name(plan.teacher))
    return [base, t]


def summarize(plan: Plan, entries: list[dict]) -> list[dict]:
    """Per (role, size): the SINR at each target over seeds (t-interval); for students, the paired KD gain."""
    rows = []
    groups = sorted({(e["role"], e["size"]) for e in entries}, key=str)
    for role, size in groups:
        runs = sorted((e for e in entries if e["role"] == role and e["size"] == size), key=lambda e: e["seed"])
        row = {"role": role, "size": size, "seeds": [e["seed"] for e in runs], "energy_uj": runs[0]["energy_uj"],
               "macs": runs[0]["macs"]}
        for target in TARGETS:
            row[f"at_{target:g}"] = snr_at_target(plan.sinr_db, [e["ber"] for e in runs], target).model_dump()
        rows.append(row)
    for size in {e["size"] for e in entries if e["role"] == "distilled"}:
        by = {role: {e["seed"]: e["ber"] for e in entries if e["role"] == role and e["size"] == size}
              for role in ("distilled", "scratch")}
        seeds = sorted(set(by["distilled"]) & set(by["scratch"]))
        for target in TARGETS:
            d = snr_at_target(plan.sinr_db, [by["distilled"][s] for s in seeds], target)
            s = snr_at_target(plan.sinr_db, [by["scratch"][s] for s in seeds], target)
            gains = [None if a is None or b is None else b - a for a, b in zip(d.per_seed, s.per_seed)]
            rows.append({"role": "kd gain", "size": size, "target": target, "per_seed": gains,
                         **_t_interval([g for g in gains if g is not None], len(gains))})
    return rows


def _t_interval(x: list[float], n: int) -> dict:
    if len(x) < 2 or len(x) < n:
        return {"mean": float(np.mean(x)) if len(x) == n and x else None, "ci_low": None, "ci_high": None}
    mean, low, high = t_interval(x)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _interval(r: dict) -> str:
    return f"{_db(r['mean'])} [{_db(r['ci_low'])}, {_db(r['ci_high'])}]"


def report(plan: Plan, state: dict) -> str:
    lines = [f"# KD on {plan.channel} {plan.delay_spread_ns:g} ns, pilots {plan.pilot_symbols}, {plan.doppler_hz:g} Hz",
             "", f"plan: `{plan.model_dump_json()}`", "", f"timings (s): {json.dumps(state.get('timings', {}))}", ""]
    if state.get("teacher_curve"):
        lines += ["## Teacher BER vs steps (test slots of seed 0)", "",
                  "| steps | " + " | ".join(f"{s:g} dB" for s in plan.curve_sinr_db) + " |",
                  "|---|" + "---|" * len(plan.curve_sinr_db)]
        lines += [f"| {r['steps']} | " + " | ".join(format_rate(p) for p in r["ber_points"]) + " |"
                  for r in state["teacher_curve"]]
    if state.get("sweep"):
        lines += ["", f"## KD sweep ({_name(plan.sweep_student)}, seed 0; validation BER at "
                      f"{plan.validation_sinr_db} dB)", "", "| T | alpha | validation BER |", "|---|---|---|"]
        lines += [f"| {e['temperature']:g} | {e['alpha']:g} | " + ", ".join(f"{b:.2e}" for b in e["validation_ber"])
                  + " |" for e in state["sweep"]]
        lines += ["", f"best: T = {state['best'][0]:g}, alpha = {state['best'][1]:g}"]
    elif plan.kd is not None:
        lines += ["", f"## KD: T = {plan.kd[0]:g}, alpha = {plan.kd[1]:g}, given (--kd; no sweep)"]
    if state.get("summary"):
        lines += ["", "## SINR at target BER over seeds (mean [95 % t-interval]; '-' where a seed never reaches it)",
                  "", "| receiver | seeds | energy (uJ) | " + " | ".join(f"SINR @ {t:g}" for t in TARGETS) + " |",
                  "|---|---|---|" + "---|" * len(TARGETS)]
        for r in state["summary"]:
            if r["role"] == "kd gain":
                continue
            cells = [_interval(r[f"at_{t:g}"]) for t in TARGETS]
            label = f"{r['role']} {r['size'] or ''}".strip()
            lines.append(f"| {label} | {r['seeds']} | {r['energy_uj']:.3f} | " + " | ".join(cells) + " |")
        lines += ["", "| KD gain (scratch - distilled, dB) | target | per seed | mean [95 % t-interval] |",
                  "|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['target']:g} | {r['per_seed']} | {_interval(r)} |"
                  for r in state["summary"] if r["role"] == "kd gain"]
    if state.get("entries"):
        lines += ["", "## BER per receiver [95 % Clopper-Pearson] / [95 % over slots]; '<=': under 100 errors, the "
                      "Clopper-Pearson upper bound", "",
                  "| receiver | " + " | ".join(f"{s:g} dB" for s in plan.sinr_db) + " |",
                  "|---|" + "---|" * len(plan.sinr_db)]
        lines += [f"| {e['label']} | " + " | ".join(format_rate(p) for p in e["ber_points"]) + " |"
                  for e in state["entries"]]
        if plan.coded:
            lines += ["", f"## Coded BLER, {plan.coded}", "",
                      "| receiver | " + " | ".join(f"{s:g} dB" for s in plan.sinr_db) + " |",
                      "|---|" + "---|" * len(plan.sinr_db)]
            lines += [f"| {e['label']} | " + " | ".join(format_rate(p) for p in e["bler_points"]) + " |"
                      for e in state["entries"]]
    return "\n".join(lines) + "\n"


def save(plan: Plan, out: Path, state: dict) -> None:
    # replaced whole: a run killed while writing keeps the phases it had finished
    results = json.dumps({"plan": plan.model_dump(mode="json"), **state}, indent=1)
    write_atomic(out / "results.json", results, mode=0o644)
    write_atomic(out / "report.md", report(plan, state), mode=0o644)


def plot(plan: Plan, out: Path, state: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    styles = {"baseline": "k--", "teacher": "k-", "distilled": "-", "scratch": ":"}
    for e in state["entries"]:
        if e["seed"] == plan.seeds[0]:
            ax.semilogy(plan.sinr_db, np.maximum(e["ber"], 1e-7), styles[e["role"]], label=e["label"])
    ax.axhline(1e-3, color="grey", lw=0.5)
    ax.set(xlabel="SINR (dB)", ylabel="uncoded BER", title=f"seed {plan.seeds[0]}")
    ax.legend(fontsize=6)
    for i, s in enumerate(plan.curve_sinr_db):
        curve = state.get("teacher_curve", [])
        bx.semilogy([r["steps"] for r in curve], [max(r["ber_points"][i]["rate"], 1e-7) for r in curve], "-o",
                    label=f"teacher {s:g} dB")
    bx.set(xlabel="teacher steps", ylabel="BER", title="teacher BER vs steps")
    bx.legend(fontsize=7)
    for a in (ax, bx):
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ber.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/kd-gpu")))
    parser.add_argument("--work", type=Path, help="checkpoints and models (default: OUT.work, beside --out)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and steps, on the CPU: under a minute")
    parser.add_argument("--coded", default=None, help="also coded BLER (ldpc-r1/2; needs the ldpc package)")
    parser.add_argument("--teacher-steps", type=int)
    parser.add_argument("--student-steps", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--kd", type=_kd_pair, help="T:ALPHA for every distilled student instead of the sweep's "
                        "choice (phase 2's sweep is skipped)")
    parser.add_argument("--teacher-from", type=Path, help="a trained teacher's state dict (of --teacher's size) "
                        "instead of training one")
    parser.add_argument("--rescore", type=Path, help="instead: score a finished edgejoule distill run (its receivers "
                        "and teacher checkpoints) with the current counting rule")
    parser.add_argument("--curve-sinr", type=snr_arg, default="20,30,40", help="SINRs (dB) of --rescore's "
                        "teacher-vs-steps table and of --survey")
    parser.add_argument("--survey", action="store_true", help="instead: LS+LMMSE and the true-channel bound over "
                        "pilot layouts and Doppler (how the scenario was chosen)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.rescore or args.survey:
        print(rescore(args.rescore, args.curve_sinr) if args.rescore else survey(args.curve_sinr))
        return
    overrides = {k: v for k, v in (("teacher_steps", args.teacher_steps), ("student_steps", args.student_steps),
                                   ("workers", args.workers), ("coded", args.coded), ("kd", args.kd),
                                   ("teacher_from", args.teacher_from)) if v is not None}
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    plan = Plan(**{**(SMOKE if args.smoke else {}), **overrides, "device": device})
    if plan.teacher_from is not None:  # before any job starts: a wrong file would fail them all, late
        try:
            load_net(plan.request(0), plan.teacher, plan.teacher_from)
        except Exception as exc:  # noqa: BLE001 - torch.load and load_state_dict raise many kinds on a wrong file
            parser.error(f"--teacher-from {plan.teacher_from}: not a {_name(plan.teacher)} teacher's state dict "
                         f"({str(exc).splitlines()[0]})")
    out, work = args.out, args.work or args.out.with_name(args.out.name + ".work")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    state: dict = {"timings": {}, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    t0 = time.perf_counter()
    pool = cf.ProcessPoolExecutor(plan.workers, mp_context=mp.get_context("spawn"))
    scratch = [pool.submit(students_job, plan, work, s, "scratch", [(a, 1.0, 0.0) for a in plan.students])
               for s in plan.seeds]
    state["teacher"] = train_teacher(plan, work)
    state["timings"]["teacher"] = time.perf_counter() - t0
    save(plan, out, state)
    curve = pool.submit(teacher_curve, plan, work)
    refs = [pool.submit(reference_entries, plan, work, s) for s in plan.seeds]
    if plan.kd is None:
        grid = [(plan.sweep_student, t, a) for t in plan.temperatures for a in plan.alphas]
        state["sweep"] = pool.submit(students_job, plan, work, plan.seeds[0], "distilled", grid, True).result()
        best = min(state["sweep"], key=lambda e: float(np.mean(np.log10(np.maximum(e["validation_ber"], 1e-7)))))
        state["best"] = (best["temperature"], best["alpha"])
        state["timings"]["sweep"] = time.perf_counter() - t0
    else:
        state["best"] = plan.kd
    save(plan, out, state)
    t_best, a_best = state["best"]
    distilled = [pool.submit(students_job, plan, work, s, "distilled", [(a, t_best, a_best) for a in plan.students])
                 for s in plan.seeds]
    state["teacher_curve"] = curve.result()
    entries = [e for f in refs + scratch + distilled for e in f.result()]
    pool.shutdown()
    state["entries"] = sorted(entries, key=lambda e: (e["seed"], e["role"], e["size"] or ""))
    state["summary"] = summarize(plan, state["entries"])
    state["timings"]["total"] = time.perf_counter() - t0
    save(plan, out, state)
    plot(plan, out, state)
    with tarfile.open(out / "models.tar.gz", "w:gz") as tar:  # few files come back from the device: one archive
        for name in ("teacher.pt", "models", "ckpt"):
            tar.add(work / name, arcname=name)
    print(report(plan, state))


if __name__ == "__main__":
    main()
