"""The detection experiment behind ``edgejoule detect``: train FP unfolded detectors, quantize their
activations with KAQ, LSQ and PTQ at each bit width, and compare BER vs SNR and estimated energy per detection
with the ZF, LMMSE and ML baselines. BER points are counted to 100 errors (or the ``eval_samples`` cap) with 95 %
Clopper-Pearson intervals, and with ``coded`` the coded BLER too (:mod:`edgejoule.tasks.error_rate`,
:func:`edgejoule.tasks.detection.coded_error_rates`). Writes ``results.json``, ``table.md`` and one
``ber-<model>.png``.

Energy per detection under both countings (:mod:`edgejoule.energy.counting`): ``energy_uj`` is the
``implemented`` one (the classical detectors' operations read from their code, the unfolded nets' eqs. 7-11 on
their layers plus their counted projections), ``energy_uj_by_counting`` holds it beside the ``paper`` one (the
detectors' formulas, eqs. 7-11 on the described layers); the tables name the counting of each column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from edgejoule import plugin_manager
from edgejoule.energy import baseline_energy
from edgejoule.energy.counting import COUNTINGS, operations_energy
from edgejoule.plugins.detection.detectors import ML_MAX_CANDIDATES
from edgejoule.plugins.detection.kaq_core import policy_operations, quantize_activations
from edgejoule.plugins.detection.soft_linear import linear_soft
from edgejoule.plugins.detection.soft_ml import ml_soft
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.plugins.detection.unfolded_net import TrainConfig, detector, train
from edgejoule.tasks.detection import ChannelSource, channel_source, coded_error_rates, constellation, error_rates
from edgejoule.tasks.error_rate import MIN_ERRORS, SnrDb, format_rate, snr_at_ber

FP_BITS = 16  # "full precision" on the accelerator model: 16-bit weights and activations, as the baselines


class DetectRequest(BaseModel):
    site: str = "rayleigh"
    models: list[Literal["pgd", "admm"]] = ["pgd", "admm"]
    quantizers: list[Literal["kaq", "lsq", "ptq"]] = ["kaq", "lsq", "ptq"]
    bits: list[int] = [2, 3, 4, 8]
    n_r: int = Field(8, ge=1)
    n_u: int = Field(4, ge=1)
    modulation: Literal["qpsk", "16qam"] = "qpsk"
    layers: int = Field(5, ge=1)
    samples: int = Field(10_000, ge=128, description="training draws per epoch")
    epochs: int = Field(30, ge=1, description="FP training epochs")
    qat_epochs: int = Field(30, ge=1, description="KAQ/LSQ fine-tuning epochs")
    snr_db: list[SnrDb] = [0, 2, 4, 6, 8, 10, 12, 14, 16]
    eval_samples: int = Field(20_000, ge=100, description="cap on detections per SNR point")
    min_errors: int = Field(MIN_ERRORS, ge=1, description="bit (block) errors counted per point before it stops")
    coded: str | None = Field(None, description="also coded BLER with this code (edgejoule.tasks.coded)")
    eval_blocks: int = Field(2000, ge=1, description="cap on code blocks per SNR point")
    policy: str = "learned"
    mmd_weight: float = 1.0
    mmd_schedule: Literal["linear", "constant"] = "linear"
    mmd_target: Literal["output", "decisions", "activations"] = "output"
    mmd_teacher: Literal["frozen", "along"] = "frozen"
    seed: int = 0


class Curve(BaseModel):
    name: str
    model: str | None
    quantizer: str | None
    bits: int
    ber: list[float]
    ser: list[float]
    snr_at_1e3: float | None
    snr_at_1e2: float | None
    energy_uj: float = Field(description="per detection, the `implemented` counting")
    energy_uj_by_counting: dict[str, float] = Field(default_factory=dict, description="implemented and paper")
    ber_points: list[dict] = Field(description="per SNR: errors counted, 95 % interval (edgejoule.tasks.error_rate)")
    bler_points: list[dict] | None = None


class DetectResult(BaseModel):
    request: DetectRequest
    snr_db: list[float]
    curves: list[Curve]


def _curve(name, model, quantizer, bits, scored: tuple[list, list[dict] | None], energy: dict[str, float]) -> Curve:
    rates, bler = scored
    snr = np.array([r.snr_db for r in rates])
    ber = np.array([r.ber for r in rates])
    return Curve(
        name=name, model=model, quantizer=quantizer, bits=bits, ber=ber.tolist(), ser=[r.ser for r in rates],
        snr_at_1e3=snr_at_ber(snr, ber, 1e-3), snr_at_1e2=snr_at_ber(snr, ber, 1e-2), energy_uj=energy["implemented"],
        energy_uj_by_counting=energy,
        ber_points=[r.ber_point for r in rates], bler_points=bler,
    )


def run_detect(req: DetectRequest, out: Path, progress: Callable[[int], None] | None = None,
               export: Path | None = None) -> DetectResult:
    """``export``: also write each trained FP net as a model package ``export/<site>-<kind>-fp``
    (:mod:`edgejoule.plugins.detection.export`, parity-checked against torch)."""
    torch.manual_seed(req.seed)
    const = constellation(req.modulation)
    train_src = channel_source(req.site, req.n_r, req.n_u, "train")
    test_src: ChannelSource = channel_source(req.site, req.n_r, req.n_u, "test")

    def evaluate(detect, llrs=None) -> tuple[list, list[dict] | None]:
        rates = error_rates(detect, test_src, const, req.snr_db, req.eval_samples, seed=req.seed + 1,
                            min_errors=req.min_errors)
        if req.coded is None:
            return rates, None
        return rates, coded_error_rates(detect, test_src, const, req.snr_db, req.coded, req.eval_blocks,
                                        seed=req.seed + 1, min_errors=req.min_errors, llrs=llrs)

    n, m = 2 * req.n_r, 2 * req.n_u
    curves = []
    for name in ("zf-detector", "lmmse-detector", "ml-detector"):
        if name == "ml-detector" and const.order**req.n_u > ML_MAX_CANDIDATES:
            continue
        base = plugin_manager.get("baselines", name)
        energy = {"implemented": operations_energy(base.operations(n=n, m=m, order=const.order), FP_BITS).total_uj,
                  "paper": baseline_energy(base.op_count(n=n, m=m, order=const.order), FP_BITS).total_uj}
        # coded, each classical detector decodes from its own soft output: ML's max-log LLRs over all candidates
        # (its decisions are hard; the reference), ZF's and LMMSE's with each stream's post-detection SINR
        soft = ml_soft(const) if name == "ml-detector" else linear_soft(const, regularized=name == "lmmse-detector")
        rates = evaluate(lambda b, base=base: base.run(b.H, b.y, b.noise_var, const=const).output, soft)
        curves.append(_curve(name, None, None, FP_BITS, rates, energy))
    family = plugin_manager.get("models", "unfolded")
    fp_cfg = TrainConfig(samples=req.samples, epochs=req.epochs, seed=req.seed)
    qat_cfg = TrainConfig(samples=req.samples, epochs=req.qat_epochs, seed=req.seed + 1)
    for kind in req.models:
        arch = UnfoldedArch(kind=kind, layers=req.layers, n_r=req.n_r, n_u=req.n_u, modulation=req.modulation)
        fp = family.build(arch)
        train(fp, train_src, const, fp_cfg, progress=progress)
        if export is not None:
            from edgejoule.plugins.detection.export import export_detector

            export_detector(fp, arch, req.site, test_src, export / f"{req.site}-{kind}-fp", seed=req.seed)
        curves.append(_curve(f"{kind}-fp", kind, None, FP_BITS, evaluate(detector(fp)),
                             net_energy(family, arch, FP_BITS)))
        for bits in req.bits:
            for quantizer in req.quantizers:
                energy = net_energy(family, arch, bits, req.policy if quantizer == "kaq" else None)
                net = quantize_activations(
                    fp, quantizer, bits, train_src, qat_cfg, policy=req.policy, mmd_weight=req.mmd_weight,
                    mmd_schedule=req.mmd_schedule, mmd_target=req.mmd_target, mmd_teacher=req.mmd_teacher,
                    progress=progress,
                )
                rates = evaluate(detector(net))
                curves.append(_curve(f"{kind}-{quantizer}{bits}", kind, quantizer, bits, rates, energy))
    result = DetectResult(request=req, snr_db=req.snr_db, curves=curves)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.model_dump(), indent=2))
    (out / "table.md").write_text(table(result))
    for kind in req.models:
        plot(result, kind, out / f"ber-{kind}.png")
    return result


def net_energy(family, arch: UnfoldedArch, bits: int, kaq_policy: str | None = None) -> dict[str, float]:
    """uJ per detection of the unfolded net with ``bits``-bit weights and activations, under each counting; a KAQ
    net's ``implemented`` energy adds its step policy's own work (reading the channel condition per detection,
    :func:`edgejoule.plugins.detection.kaq_core.policy_operations`), which the paper's counting leaves out."""
    energy = {c: family.energy(arch, [bits] * arch.layers, bits, counting=c).total_uj for c in COUNTINGS}
    if kaq_policy is not None:
        energy["implemented"] += operations_energy(policy_operations(arch, kaq_policy)).total_uj
    return energy


def progress_units(req: DetectRequest) -> int:
    """Progress ticks of :func:`run_detect`: one per training epoch."""
    qat = sum(req.qat_epochs for q in req.quantizers if q != "ptq")
    return len(req.models) * (req.epochs + len(req.bits) * qat)


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(result: DetectResult) -> str:
    """Markdown: SNR at BER 1e-3 and 1e-2, the gap to the FP net at 1e-3, energy per detection under each counting."""
    fp = {c.model: c for c in result.curves if c.quantizer is None and c.model}
    rows = ["| detector | bits | SNR @ BER 1e-3 (dB) | SNR @ BER 1e-2 (dB) | gap to FP @ 1e-3 (dB) | "
            + " | ".join(f"energy (uJ, {c})" for c in COUNTINGS) + " |", "|---|---|---|---|---|---|---|"]
    for c in result.curves:
        ref = fp.get(c.model) if c.model else None
        gap = (c.snr_at_1e3 - ref.snr_at_1e3) if ref and c.snr_at_1e3 is not None and ref.snr_at_1e3 is not None else None
        energy = " | ".join(_uj(c.energy_uj_by_counting.get(counting)) for counting in COUNTINGS)
        rows.append(f"| {c.name} | {c.bits} | {_db(c.snr_at_1e3)} | {_db(c.snr_at_1e2)} | {_db(gap)} | {energy} |")
    rows += _points_table(result, "ber_points", f"BER [95 % interval]; '<=': fewer than {result.request.min_errors} "
                          "errors, the interval's upper bound")
    if result.request.coded:
        rows += _points_table(result, "bler_points", f"coded BLER, {result.request.coded} (ml-detector: from its "
                              "max-log LLRs over all candidates, the soft-output reference; zf and lmmse: LLRs "
                              "with each stream's post-detection SINR; the nets: with the noise variance as "
                              "every stream's)")
    req = result.request
    head = (f"site {req.site}, {req.n_r}x{req.n_u} {req.modulation}, K={req.layers}, FP {req.epochs} epochs, "
            f"QAT {req.qat_epochs} epochs, {req.samples} draws/epoch, {req.eval_samples} detections/SNR; KAQ policy "
            f"{req.policy}, MMD w {req.mmd_weight} ({req.mmd_schedule}, on {req.mmd_target}, {req.mmd_teacher} teacher)\n\n")
    return head + "\n".join(rows) + "\n"


def _uj(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _points_table(result: DetectResult, key: str, title: str) -> list[str]:
    rows = ["", title, "", "| detector | " + " | ".join(f"{s:g} dB" for s in result.snr_db) + " |",
            "|---|" + "---|" * len(result.snr_db)]
    return rows + [f"| {c.name} | " + " | ".join(format_rate(p) for p in getattr(c, key)) + " |" for c in result.curves]


def plot(result: DetectResult, kind: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"kaq": "-", "lsq": "--", "ptq": ":"}
    for c in result.curves:
        if c.model not in (None, kind):
            continue
        ber = np.where(np.array(c.ber) > 0, c.ber, np.nan)
        style = "-" if c.quantizer is None else styles[c.quantizer]
        width = 2.5 if c.quantizer is None else 1.2
        ax.semilogy(result.snr_db, ber, style, lw=width, marker="o" if c.model is None else None, ms=3,
                    label=f"{c.name} ({c.energy_uj:.3g} uJ, implemented)")
    ax.set_xlabel("SNR per user and receive antenna (dB)")
    ax.set_ylabel("BER")
    ax.set_title(f"{kind.upper()}-Net on {result.request.site}, {result.request.n_r}x{result.request.n_u} "
                 f"{result.request.modulation}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
