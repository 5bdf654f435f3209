"""The ``edgejoule distill --task ofdm`` experiment: a deeprx teacher, distilled and scratch students, the
LS+LMMSE baseline; BER vs SINR, SINR at the target BER, MACs and energy per inference (accelerator model)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from edgejoule import plugin_manager
from edgejoule.energy import baseline_energy
from edgejoule.errors import EdgejouleError
from edgejoule.plugins.reception.deeprx_arch import DeepRxArch, describe
from edgejoule.plugins.reception.deeprx_net import DeepRx, inputs
from edgejoule.plugins.reception.kd_core import KdOptions, KdRequest, KnowledgeDistillation, train_logit_model
from edgejoule.plugins.reception.ofdm_receiver import op_count, receive
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, simulate, snr_at_ber

EVAL_CHUNK = 250


class DistillRequest(BaseModel):
    teacher: tuple[int, int] = Field((32, 6), description="(width, blocks) of the teacher")
    students: list[tuple[int, int]] = Field([(8, 2), (16, 3)], description="(width, blocks) per student size")
    n_sc: int = 24
    modulation: str = "qpsk"
    doppler_hz: float = 300.0
    batch: int = 32
    teacher_steps: int = 1500
    student_steps: int = 800
    lr: float = 3e-3
    alpha: float = 0.7
    temperature: float = 2.0
    train_sinr_db: tuple[float, float] = (0.0, 40.0)
    sinr_db: list[float] = Field(default_factory=lambda: [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0])
    eval_slots: int = 500
    target_ber: float = 1e-3
    seed: int = 0
    teacher_from: Path | None = Field(None, description="a saved teacher state dict to use instead of training one")
    checkpoint_every: int = Field(1000, ge=1, description="teacher steps between checkpoints (teacher.pt in the run)")

    @property
    def cfg(self) -> OfdmConfig:
        return OfdmConfig(n_sc=self.n_sc, modulation=self.modulation, doppler_hz=self.doppler_hz)

    def arch(self, width_blocks: tuple[int, int]) -> DeepRxArch:
        cfg = self.cfg
        return DeepRxArch(width=width_blocks[0], blocks=width_blocks[1], bits_per_symbol=cfg.bits_per_symbol,
                          n_sym=cfg.n_sym, n_sc=cfg.n_sc)


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


def _ber_curve(req: DistillRequest, receiver) -> list[float]:
    cfg, out = req.cfg, []
    for i, s in enumerate(req.sinr_db):
        rng = np.random.default_rng((req.seed, 1, i))  # the same slots for every receiver
        errors = total = 0
        for start in range(0, req.eval_slots, EVAL_CHUNK):
            slot = simulate(cfg, s, rng, n=min(EVAL_CHUNK, req.eval_slots - start))
            e, n = bit_errors(cfg, receiver(slot), slot.bits)
            errors, total = errors + e, total + n
        out.append(errors / total)
    return out


def _net_receiver(cfg: OfdmConfig, model: torch.nn.Module):
    def rx(slot) -> np.ndarray:
        with torch.no_grad():
            return model(inputs(cfg, slot)).numpy()

    return rx


def _entry(req: DistillRequest, label: str, role: str, arch: DeepRxArch | None, ber: list[float], seconds: float | None) -> dict:
    if arch is None:
        macs = op_count(req.cfg)
        energy = baseline_energy(macs).total_uj
        weights = 0
    else:
        layers = describe(arch)
        macs = sum(layer.macs for layer in layers)
        weights = sum(layer.weights for layer in layers)
        energy = plugin_manager.get("energy_estimators", "accelerator").estimate(layers, [16] * len(layers)).total_uj
    return {
        "label": label, "role": role, "arch": arch.model_dump(include={"width", "blocks"}) if arch else None,
        "macs": int(macs), "weights": int(weights), "energy_uj": energy, "ber": ber,
        "sinr_at_target_db": snr_at_ber(np.array(req.sinr_db), np.array(ber), req.target_ber),
        "train_s_per_100_steps": seconds,
    }


def _teacher(req: DistillRequest, batch, out_dir: Path, advance) -> tuple[DeepRx, float | None, list[float]]:
    """The trained teacher and its seconds per 100 steps: loaded from ``teacher_from``, or trained with a
    checkpoint (``teacher.pt``) every ``checkpoint_every`` steps so a long run that is stopped leaves one."""
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

    def checkpoint(done: int) -> None:
        if done % req.checkpoint_every == 0 or done == req.teacher_steps:
            torch.save(teacher.state_dict(), out_dir / "teacher.pt")

    options = KdOptions(steps=req.teacher_steps, lr=req.lr)
    t0 = time.perf_counter()
    hist = train_logit_model(teacher, batch, options, None, advance, after_step=checkpoint)
    return teacher, 100 * (time.perf_counter() - t0) / req.teacher_steps, hist


def run_distill(req: DistillRequest, out_dir: Path, advance=None) -> dict:
    cfg, batch = req.cfg, batches(req)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(req.seed)
    t_arch = req.arch(req.teacher)
    teacher, t_speed, t_hist = _teacher(req, batch, out_dir, advance)
    entries = [
        _entry(req, "LS+LMMSE", "baseline", None, _ber_curve(req, lambda s: receive(cfg, s)), None),
        _entry(req, f"teacher {t_arch.width}x{t_arch.blocks}", "teacher", t_arch, _ber_curve(req, _net_receiver(cfg, teacher)), t_speed),
    ]
    histories = {"teacher": t_hist}
    for i, wb in enumerate(req.students):
        arch = req.arch(wb)
        torch.manual_seed(req.seed + 1 + i)
        init = DeepRx(arch)
        options = KdOptions(alpha=req.alpha, temperature=req.temperature, steps=req.student_steps, lr=req.lr)
        t0 = time.perf_counter()
        result = KnowledgeDistillation().run(KdRequest(teacher=teacher, student=init, batch=batch, options=options), advance)
        speed = 100 * (time.perf_counter() - t0) / (2 * req.student_steps)
        for role, model in (("distilled", result.distilled), ("scratch", result.scratch)):
            label = f"{role} {arch.width}x{arch.blocks}"
            entries.append(_entry(req, label, role, arch, _ber_curve(req, _net_receiver(cfg, model)), speed))
            histories[label] = result.loss_history[role]
            torch.save(model.state_dict(), out_dir / f"{role}-{arch.width}x{arch.blocks}.pt")
    result = {"request": req.model_dump(mode="json"), "sinr_db": req.sinr_db, "receivers": entries, "loss_history": histories}
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    (out_dir / "table.md").write_text(markdown_table(result))
    plot(result, out_dir / "ber.png")
    return result


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
        rows.append([e["label"], f"{s:.1f}" if s is not None else "not reached", f"{e['macs']:,}", f"{e['weights']:,}",
                     f"{e['energy_uj']:.3f}", f"{min(e['ber']):.2e}"])
    return rows


HEADER = ["receiver", "SINR at target BER (dB)", "MACs", "weights", "energy (uJ)", "lowest BER"]


def markdown_table(result: dict) -> str:
    target = result["request"]["target_ber"]
    lines = [f"target BER {target:g}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    lines += ["", "| receiver | " + " | ".join(f"{s:g} dB" for s in result["sinr_db"]) + " |",
              "|---|" + "---|" * len(result["sinr_db"])]
    lines += ["| " + e["label"] + " | " + " | ".join(f"{b:.2e}" for b in e["ber"]) + " |" for e in result["receivers"]]
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
        ax.semilogy(result["sinr_db"], ber, styles[e["role"]], label=f"{e['label']} ({e['energy_uj']:.2f} uJ)")
    ax.axhline(result["request"]["target_ber"], color="grey", lw=0.5)
    ax.set_xlabel("SINR (dB)")
    ax.set_ylabel("uncoded BER")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
