"""The ``edgejoule distill --task ofdm`` experiment: a deeprx teacher, distilled and scratch students, the
LS+LMMSE baseline; BER vs SINR with errors counted and Clopper-Pearson intervals
(:mod:`edgejoule.tasks.error_rate`), optionally coded BLER (:mod:`edgejoule.tasks.coded`), SINR at the target
BER, MACs and energy per inference (accelerator model) under both countings of :mod:`edgejoule.energy.counting`:
``energy_uj`` is the ``implemented`` one (LS+LMMSE's operations read from its code; a deeprx net's eqs. 7-11 on
its weight layers plus its numpy features and residual additions as they run), ``energy_uj_by_counting`` holds
it beside the ``paper`` one (the receiver's formula; eqs. 7-11 on ``describe``, features by formula)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from edgejoule import plugin_manager
from edgejoule.energy import baseline_energy
from edgejoule.energy.counting import COUNTINGS, operations_energy
from edgejoule.errors import EdgejouleError
from edgejoule.plugins.reception.deeprx_arch import DeepRxArch
from edgejoule.plugins.reception.deeprx_net import DeepRx, inputs
from edgejoule.plugins.reception.distill_resume import RunState, student_key
from edgejoule.plugins.reception.kd_core import (
    KdOptions,
    KdRequest,
    KdWeight,
    KnowledgeDistillation,
    Temperature,
    train_logit_model,
)
from edgejoule.plugins.reception.ofdm_receiver import receive
from edgejoule.tasks.coded import block_errors, ldpc_code
from edgejoule.tasks.error_rate import MIN_ERRORS, SnrDb, count_errors, format_rate, snr_at_ber
from edgejoule.tasks.ofdm import OfdmConfig, simulate, slot_bit_errors

EVAL_CHUNK = 50  # slots per draw of the stopping rule: small, so a point stops soon after its 100th error


class DistillRequest(BaseModel):
    teacher: tuple[int, int] = Field((32, 6), description="(width, blocks) of the teacher")
    students: list[tuple[int, int]] = Field([(8, 2), (16, 3)], description="(width, blocks) per student size")
    n_sc: int = 24
    modulation: str = "qpsk"
    doppler_hz: float = 300.0
    channel: str = Field("exponential", description="power-delay profile (OfdmConfig.channel)")
    delay_spread_ns: float = 300.0
    pilot_symbols: tuple[int, ...] = Field((2, 11), description="OFDM symbols that carry pilots")
    batch: int = 32
    teacher_steps: int = 1500
    student_steps: int = 800
    lr: float = 3e-3
    alpha: KdWeight = 0.7
    temperature: Temperature = 2.0
    train_sinr_db: tuple[SnrDb, SnrDb] = (0.0, 40.0)
    sinr_db: list[SnrDb] = Field(default_factory=lambda: [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0])
    eval_slots: int = Field(500, description="cap on slots per SINR point (it stops earlier once it has counted "
                            "min_errors errors over min_eval_slots slots)")
    min_errors: int = Field(MIN_ERRORS, ge=1, description="errors counted per point before it stops")
    min_eval_slots: int = Field(500, ge=1, description="slots drawn per point at least: a slot's bit errors are "
                                "correlated, so 100 errors in a few slots would sample few channels")
    coded: str | None = Field(None, description="also coded BLER with this code (edgejoule.tasks.coded): ldpc-r1/2")
    target_ber: float = 1e-3
    seed: int = 0
    teacher_from: Path | None = Field(None, description="a saved teacher state dict to use instead of training one")
    checkpoint_every: int = Field(1000, ge=1, description="teacher steps between checkpoints (teacher.pt in the run)")

    @property
    def cfg(self) -> OfdmConfig:
        return OfdmConfig(n_sc=self.n_sc, modulation=self.modulation, doppler_hz=self.doppler_hz, channel=self.channel,
                          delay_spread_ns=self.delay_spread_ns, pilot_symbols=self.pilot_symbols)

    def arch(self, width_blocks: tuple[int, int]) -> DeepRxArch:
        cfg = self.cfg
        return DeepRxArch(width=width_blocks[0], blocks=width_blocks[1], bits_per_symbol=cfg.bits_per_symbol,
                          n_sym=cfg.n_sym, n_sc=cfg.n_sc, pilot_symbols=cfg.pilot_symbols)


def progress_units(req: DistillRequest) -> int:
    return (0 if req.teacher_from else req.teacher_steps) + 2 * req.student_steps * len(req.students)


def batches(req: DistillRequest):
    """``batch(step)``: fresh slots per step (seeded by step), SINR uniform over the training range."""
    cfg = req.cfg
    mask = torch.from_numpy(cfg.data_mask)[None, :, :, None]

    def batch(step: int):
        rng = np.random.default_rng((req.seed, 0, step))  # training and evaluation slots never share a seed
        slot = simulate(cfg, rng.uniform(*req.train_sinr_db, req.batch), rng)
        return inputs(cfg, slot), torch.from_numpy(slot.bits), mask

    return batch


def error_curves(req: DistillRequest, receiver) -> dict[str, list[dict]]:
    """Per SINR point, the BER (and with ``req.coded`` the coded BLER) of ``receiver(slot) -> logits``, counted
    until ``min_errors`` errors and ``min_eval_slots`` slots, or ``eval_slots`` slots: ``report()`` dicts of
    :mod:`edgejoule.tasks.error_rate`, the BER's with its interval over slots. Every receiver sees the same slots
    (one seeded stream per point)."""
    cfg = req.cfg
    code = ldpc_code(req.coded, int(cfg.data_mask.sum()) * cfg.bits_per_symbol, req.seed) if req.coded else None
    metrics = ("ber", "bler") if code else ("ber",)
    curves: dict[str, list[dict]] = {m: [] for m in metrics}
    for i, sinr in enumerate(req.sinr_db):
        for metric in metrics:
            coded = (code, np.random.default_rng((req.seed, 2, i))) if metric == "bler" else None
            draw = _draw(cfg, receiver, sinr, np.random.default_rng((req.seed, 1, i)), coded)
            least = min(req.min_eval_slots, req.eval_slots) if metric == "ber" else 0
            curves[metric].append(count_errors(draw, req.eval_slots, EVAL_CHUNK, req.min_errors, least).report())
    return curves


def _draw(cfg: OfdmConfig, receiver, sinr: float, rng: np.random.Generator, coded=None):
    """``draw(n) -> (errors, trials)`` over n fresh slots: bit errors per slot, or with ``coded`` = (code, rng)
    block errors of the code carried on each slot's data bits."""
    mask = cfg.data_mask

    def draw(n: int) -> tuple[int | np.ndarray, int]:
        slot = simulate(cfg, sinr, rng, n=n)
        logits = receiver(slot)
        if coded is None:
            return slot_bit_errors(cfg, logits, slot.bits)
        code, code_rng = coded
        return block_errors(code, logits[:, mask].reshape(n, -1), slot.bits[:, mask].reshape(n, -1), code_rng)

    return draw


def net_receiver(cfg: OfdmConfig, model: torch.nn.Module, device: str = "cpu"):
    """``receiver(slot) -> logits`` of a deeprx net on ``device`` (the model must already be there)."""
    def rx(slot) -> np.ndarray:
        with torch.no_grad():
            return model(inputs(cfg, slot).to(device)).cpu().numpy()

    return rx


def load_net(req: DistillRequest, arch: tuple[int, int], path: Path, device: str = "cpu") -> DeepRx:
    """A saved deeprx state dict of size ``arch`` on the grid of ``req``, on ``device``, in eval mode."""
    model = DeepRx(req.arch(arch))
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.to(device).eval()


def checkpoint_curve(req: DistillRequest, arch: tuple[int, int], paths: list[Path], device: str = "cpu") -> list[dict]:
    """The BER-vs-steps curve: each saved net (``teacher-STEP.pt``) on the test slots of ``req``, errors counted."""
    return [{"steps": int(path.stem.rsplit("-", 1)[1]),
             "ber_points": error_curves(req, net_receiver(req.cfg, load_net(req, arch, path, device), device))["ber"]}
            for path in sorted(paths)]


def receiver_cost(req: DistillRequest, arch: DeepRxArch | None) -> tuple[int, int, dict[str, float]]:
    """MACs (the ``paper`` count), weights and energy per slot in uJ under both countings
    (:mod:`edgejoule.energy.counting`) of LS+LMMSE (``arch`` None) or a deeprx net at 16 bits."""
    if arch is None:
        baseline = plugin_manager.get("baselines", "ls-lmmse")
        macs = baseline.op_count(req.cfg)
        return int(macs), 0, {"implemented": operations_energy(baseline.operations(req.cfg)).total_uj,
                              "paper": baseline_energy(macs).total_uj}
    family = plugin_manager.get("models", "deeprx")
    layers = family.describe(arch)
    energy = {c: family.energy(arch, [16] * (len(layers) - 1), counting=c).total_uj for c in COUNTINGS}
    return sum(layer.macs for layer in layers), sum(layer.weights for layer in layers), energy


def receiver_entry(req: DistillRequest, label: str, role: str, arch: DeepRxArch | None,
                   curves: dict[str, list[dict]], seconds: float | None) -> dict:
    """One receiver's row of ``results.json``: ``macs`` (the ``paper`` count), its energy per slot under both
    countings (``energy_uj``: ``implemented``; :mod:`edgejoule.energy.counting`), its error rates."""
    macs, weights, energy = receiver_cost(req, arch)
    ber = [p["rate"] for p in curves["ber"]]
    return {
        "label": label, "role": role, "arch": arch.model_dump(include={"width", "blocks"}) if arch else None,
        "macs": macs, "weights": weights, "energy_uj": energy["implemented"], "energy_uj_by_counting": energy,
        "ber": ber, "ber_points": curves["ber"], "bler_points": curves.get("bler"),
        "sinr_at_target_db": snr_at_ber(np.array(req.sinr_db), np.array(ber), req.target_ber),
        "train_s_per_100_steps": seconds,
    }


def _teacher(req: DistillRequest, batch, out_dir: Path, advance, run: RunState
             ) -> tuple[DeepRx, float | None, list[float]]:
    """The trained teacher and its seconds per 100 steps: loaded from ``teacher_from``, or trained with a
    checkpoint every ``checkpoint_every`` steps (``teacher.pt`` and ``teacher-STEP.pt``, kept for the
    BER-vs-steps curve, and the training state in ``resume.pt``), resumed from ``resume.pt`` if a run of the
    same request stopped before the end."""
    teacher = DeepRx(req.arch(req.teacher))
    if req.teacher_from is not None:
        try:
            teacher.load_state_dict(torch.load(req.teacher_from, weights_only=True))
        except (OSError, RuntimeError) as exc:
            raise EdgejouleError(
                f"cannot load teacher {req.teacher_from} as deeprx {req.teacher[0]}x{req.teacher[1]} on 14 x {req.n_sc} "
                f"({str(exc).splitlines()[0]}); pass the --teacher size and --n-sc it was trained with"
            ) from None
        return teacher.eval(), None, []

    def checkpoint(done: int, state) -> None:
        if done % req.checkpoint_every == 0 or done == req.teacher_steps:
            torch.save(teacher.state_dict(), out_dir / f"teacher-{done:06d}.pt")
            torch.save(teacher.state_dict(), out_dir / "teacher.pt")
            run.save_teacher(state())  # last: a kill before it resumes from the previous checkpoint

    options = KdOptions(steps=req.teacher_steps, lr=req.lr)
    resume = run.teacher
    t0 = time.perf_counter()
    hist = train_logit_model(teacher, batch, options, None, advance, after_step=checkpoint, resume=resume)
    trained = req.teacher_steps - (resume["done"] if resume else 0)
    seconds = 100 * (time.perf_counter() - t0) / trained if trained else resume.get("s_per_100_steps")
    if trained:
        run.save_teacher({**run.teacher, "s_per_100_steps": seconds})
    return teacher, seconds, hist


def run_distill(req: DistillRequest, out_dir: Path, advance=None, run: RunState | None = None) -> dict:
    """Train (or resume, from ``run``: the CLI reads it first to say what it picks up) and score the receivers."""
    cfg, batch = req.cfg, batches(req)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(req.seed)
    t_arch = req.arch(req.teacher)
    run = run or RunState(req, out_dir)
    teacher, t_speed, t_hist = _teacher(req, batch, out_dir, advance, run)
    entries = [
        receiver_entry(req, "LS+LMMSE", "baseline", None, error_curves(req, lambda s: receive(cfg, s)), None),
        receiver_entry(req, f"teacher {t_arch.width}x{t_arch.blocks}", "teacher", t_arch,
                       error_curves(req, net_receiver(cfg, teacher)), t_speed),
    ]
    histories = {"teacher": t_hist}
    for i, wb in enumerate(req.students):
        arch = req.arch(wb)
        key = student_key(i, wb)
        if key not in run.students:
            run.save_student(key, _train_students(req, i, arch, teacher, batch, advance))
        elif advance:
            advance(2 * req.student_steps)
        pair = run.students[key]
        for role in ("distilled", "scratch"):
            model = DeepRx(arch)
            model.load_state_dict(pair[role])
            model.eval()
            label = f"{role} {arch.width}x{arch.blocks}"
            entries.append(receiver_entry(req, label, role, arch, error_curves(req, net_receiver(cfg, model)),
                                          pair["s_per_100_steps"]))
            histories[label] = pair["loss_history"][role]
            torch.save(model.state_dict(), out_dir / f"{role}-{arch.width}x{arch.blocks}.pt")
    result = {"request": req.model_dump(mode="json"), "sinr_db": req.sinr_db, "receivers": entries, "loss_history": histories}
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    (out_dir / "table.md").write_text(markdown_table(result))
    plot(result, out_dir / "ber.png")
    return result


def _train_students(req: DistillRequest, index: int, arch: DeepRxArch, teacher: DeepRx, batch, advance) -> dict:
    """One student size distilled and from scratch (same initialization, batches and steps)."""
    torch.manual_seed(req.seed + 1 + index)
    init = DeepRx(arch)
    options = KdOptions(alpha=req.alpha, temperature=req.temperature, steps=req.student_steps, lr=req.lr)
    t0 = time.perf_counter()
    result = KnowledgeDistillation().run(KdRequest(teacher=teacher, student=init, batch=batch, options=options), advance)
    seconds = 100 * (time.perf_counter() - t0) / (2 * req.student_steps)
    return {"distilled": result.distilled.state_dict(), "scratch": result.scratch.state_dict(),
            "loss_history": result.loss_history, "s_per_100_steps": seconds}


def export_students(run_dir: Path, export_dir: Path, roles: tuple[str, ...] = ("distilled",)) -> list:
    """Model packages (``edgejoule.plugins.reception.export``) of a finished run's students, one directory per student."""
    from edgejoule.plugins.reception.export import export_receiver

    try:
        result = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgejouleError(f"{run_dir} is not a finished distill run ({exc}); run edgejoule distill first") from None
    req = DistillRequest.model_validate(result["request"])
    manifests = []
    for e in result["receivers"]:
        if e["role"] not in roles:
            continue
        arch = req.arch((e["arch"]["width"], e["arch"]["blocks"]))
        name = f"{e['role']}-{arch.width}x{arch.blocks}"
        model = DeepRx(arch)
        model.load_state_dict(torch.load(run_dir / f"{name}.pt", weights_only=True))
        metrics = {"ber_min": min(e["ber"]), "target_ber": req.target_ber}
        if e["sinr_at_target_db"] is not None:
            metrics["sinr_db_at_target_ber"] = e["sinr_at_target_db"]
        manifests.append(export_receiver(model, arch, req.cfg, export_dir / name, site=f"tdl-{req.doppler_hz:g}hz",
                                         metrics=metrics, seed=req.seed))
    return manifests


def _rows(result: dict) -> list[list[str]]:
    rows = []
    for e in result["receivers"]:
        s = e["sinr_at_target_db"]
        # a run from before both countings were reported has no energy_uj_by_counting: its energy was eqs.-only
        by_counting = e.get("energy_uj_by_counting", {"paper": e["energy_uj"]})
        energy = [f"{by_counting[c]:.3f}" if c in by_counting else "-" for c in COUNTINGS]
        rows.append([e["label"], f"{s:.1f}" if s is not None else "not reached", f"{e['macs']:,}", f"{e['weights']:,}",
                     *energy, f"{min(e['ber']):.2e}"])
    return rows


HEADER = ["receiver", "SINR at target BER (dB)", "MACs (paper)", "weights",
          *(f"energy (uJ, {c})" for c in COUNTINGS), "lowest BER"]


def _curve_table(result: dict, key: str, title: str) -> list[str]:
    lines = ["", title, "", "| receiver | " + " | ".join(f"{s:g} dB" for s in result["sinr_db"]) + " |",
             "|---|" + "---|" * len(result["sinr_db"])]
    return lines + ["| " + e["label"] + " | " + " | ".join(format_rate(p) for p in e[key]) + " |"
                    for e in result["receivers"]]


def markdown_table(result: dict) -> str:
    """The summary table, then BER (and coded BLER) per SINR with 95 % Clopper-Pearson intervals, or the upper
    bound where fewer than ``min_errors`` errors were counted."""
    req = result["request"]
    lines = [f"target BER {req['target_ber']:g}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    lines += _curve_table(result, "ber_points", "uncoded BER [95 % Clopper-Pearson, bits as independent] / [95 % "
                          f"over slots]; '<=': fewer than {req['min_errors']} errors, the Clopper-Pearson upper bound")
    if req.get("coded"):
        lines += _curve_table(result, "bler_points", f"coded BLER [95 % Clopper-Pearson], {req['coded']}")
    return "\n".join(lines) + "\n"


def table(result: dict):
    from rich.table import Table

    t = Table(title=f"OFDM reception, target BER {result['request']['target_ber']:g}")
    for h in HEADER:
        t.add_column(h)
    for r in _rows(result):
        t.add_row(*r)
    return t


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"baseline": "k--", "teacher": "k-", "distilled": "-o", "scratch": ":s"}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for e in result["receivers"]:
        ber = np.maximum(np.array(e["ber"]), 1e-7)
        ax.semilogy(result["sinr_db"], ber, styles[e["role"]],
                    label=f"{e['label']} ({e['energy_uj']:.2f} uJ, implemented)")
    ax.axhline(result["request"]["target_ber"], color="grey", lw=0.5)
    ax.set_xlabel("SINR (dB)")
    ax.set_ylabel("uncoded BER")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
