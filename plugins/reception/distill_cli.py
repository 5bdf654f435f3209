"""The ``edgejoule distill`` command (typer; torch imported only when it runs)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from edgejoule.errors import EdgejouleError

TASKS = ("ofdm",)


def parse_arch(spec: str, option: str) -> tuple[int, int]:
    """'WIDTHxBLOCKS' (e.g. 32x6) -> (width, blocks)."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", spec)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise EdgejouleError(f"{option} must be WIDTHxBLOCKS with positive integers, e.g. 16x3; got '{spec}'")
    return int(m.group(1)), int(m.group(2))


def distill_command(
    task: str = typer.Option("ofdm", help="the task; ofdm (DeepRx-style receiver)"),
    teacher: str = typer.Option("32x6", help="teacher deeprx WIDTHxBLOCKS"),
    student: list[str] = typer.Option(["8x2", "16x3"], help="student deeprx WIDTHxBLOCKS (repeat the option)"),
    n_sc: int = typer.Option(24, "--n-sc", min=2, help="subcarriers of the grid (14 OFDM symbols)"),
    modulation: str = typer.Option("qpsk", help="qpsk or 16qam"),
    doppler: float = typer.Option(300.0, min=0.0, help="maximum Doppler shift in Hz (30 kHz subcarriers)"),
    channel: str = typer.Option("exponential", help="power-delay profile: exponential, tdl-a, tdl-b or tdl-c "
                                "(3GPP TR 38.901 Table 7.7.2-1..3)"),
    delay_spread_ns: float = typer.Option(300.0, "--delay-spread-ns", min=0.0, help="RMS delay spread of the profile"),
    pilots: str = typer.Option("2,11", help="OFDM symbols (0..13) that carry pilots, comma-separated; '2' is one "
                               "pilot symbol per slot"),
    teacher_steps: int = typer.Option(1500, "--teacher-steps", min=1, help="teacher training steps"),
    student_steps: int = typer.Option(800, "--student-steps", min=1, help="steps per student (distilled and scratch)"),
    batch: int = typer.Option(32, min=1, help="slots per step"),
    alpha: float = typer.Option(0.7, min=0.0, max=1.0, help="weight a of the distillation term"),
    temperature: float = typer.Option(2.0, min=0.01, max=100.0, help="distillation temperature T"),
    sinr: str = typer.Option("0,5,10,15,20,25,30,35,40", help="evaluation SINRs in dB, comma-separated"),
    eval_slots: int = typer.Option(500, "--eval-slots", min=1, help="at most this many slots per SINR point; a "
                                   "point stops once 100 bit errors are counted and --min-eval-slots drawn"),
    min_eval_slots: int = typer.Option(500, "--min-eval-slots", min=1, help="at least this many slots per SINR point "
                                       "(a slot's bit errors are correlated)"),
    coded: str = typer.Option(None, help="also coded BLER with this code: ldpc-r1/2 or ldpc-r3/4 (needs the "
                              "research extra)"),
    seed: int = typer.Option(0),
    teacher_from: Path = typer.Option(None, "--teacher-from", help="use this saved teacher state dict (teacher.pt of an "
                                      "earlier run, same --teacher and --n-sc) instead of training one"),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every", min=1, help="teacher steps between checkpoints "
                                         "(teacher.pt, teacher-STEP.pt and OUT/resume.pt: the same command run "
                                         "again goes on from the last one)"),
    export: Path = typer.Option(None, "--export", help="also write a LiteRT model package per distilled student here"),
    out: Path = typer.Option(None, help="output directory (default runs/distill-ofdm)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Distil a compact DeepRx-style receiver from a teacher; BER vs SINR, energy and MACs, table and plot."""
    from edgejoule.cli.output import console, errors, print_json, progress_bar
    from edgejoule.tasks.coded import check_code
    from edgejoule.tasks.error_rate import MIN_ERRORS, parse_snr_list
    from edgejoule.tasks.ofdm import OfdmConfig

    if task not in TASKS:
        raise EdgejouleError(f"--task must be one of {', '.join(TASKS)}; got '{task}'")
    sinrs = parse_snr_list(sinr, "--sinr")
    t_arch = parse_arch(teacher, "--teacher")
    try:
        pilot_symbols = tuple(int(p) for p in pilots.split(",") if p.strip())
    except ValueError:
        raise EdgejouleError(f"--pilots must be comma-separated OFDM symbol indices, got '{pilots}'") from None
    # a bad modulation, channel, pilot layout or code fails here, before torch loads and training starts
    OfdmConfig(n_sc=n_sc, modulation=modulation, channel=channel, pilot_symbols=pilot_symbols, doppler_hz=doppler,
               delay_spread_ns=delay_spread_ns)
    if coded:
        check_code(coded)
    s_archs = [parse_arch(s, "--student") for s in student]

    import torch

    from edgejoule.plugins.reception.distill_experiment import DistillRequest, progress_units, run_distill, table
    from edgejoule.plugins.reception.distill_resume import RunState

    torch.set_num_threads(1)
    req = DistillRequest(
        teacher=t_arch, students=s_archs, n_sc=n_sc, modulation=modulation, doppler_hz=doppler, channel=channel,
        delay_spread_ns=delay_spread_ns, pilot_symbols=pilot_symbols, coded=coded, batch=batch,
        teacher_steps=teacher_steps, student_steps=student_steps, alpha=alpha, temperature=temperature,
        sinr_db=sinrs, eval_slots=eval_slots, min_eval_slots=min_eval_slots, seed=seed, teacher_from=teacher_from,
        checkpoint_every=checkpoint_every,
    )
    out_dir = out or Path("runs") / f"distill-{task}"
    run = RunState(req, out_dir)  # refuses a directory another request's training wrote
    resuming = run.describe(req)
    if resuming and not as_json:
        errors.print(resuming, highlight=False)
    if not as_json:  # the README's example runs for minutes: say so before the first step, not after
        errors.print(f"training {progress_units(req)} steps ({0 if teacher_from else teacher_steps} of the teacher, "
                     f"{2 * student_steps} per student: distilled and from scratch), then up to {eval_slots} slots per "
                     f"SINR point (at least {min(min_eval_slots, eval_slots)}, then until {MIN_ERRORS} bit errors) "
                     f"for each receiver: minutes on a "
                     f"few CPU cores (the README's example takes over 3); --teacher-steps, --student-steps and "
                     f"--eval-slots make it shorter", highlight=False)
    with progress_bar("training (steps)", progress_units(req), enabled=not as_json) as advance:
        result = run_distill(req, out_dir, advance, run)
    packages = _export(out_dir, export) if export else []
    if as_json:
        print_json({**{k: v for k, v in result.items() if k != "loss_history"}, "packages": packages})
        return
    console.print(table(result))
    console.print(f"wrote {out_dir / 'table.md'}, {out_dir / 'results.json'} and {out_dir / 'ber.png'}")
    for p in packages:
        console.print(f"package {p['dir']}: {p['id']}")


def _export(run_dir: Path, export_dir: Path) -> list[dict]:
    from edgejoule.plugins.reception.distill_experiment import export_students

    return [{"dir": str(export_dir / f"distilled-{m.arch['width']}x{m.arch['blocks']}"), "id": m.id, "metrics": m.metrics}
            for m in export_students(run_dir, export_dir)]


def distill_export_command(
    run: Path = typer.Argument(..., help="a finished edgejoule distill output directory (results.json, *.pt)"),
    out: Path = typer.Option(..., help="where the packages go, one directory per distilled student"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Export the distilled students of a finished distill run to LiteRT model packages (with a parity check)."""
    from edgejoule.cli.output import console, print_json

    packages = _export(run, out)
    if as_json:
        print_json(packages)
        return
    for p in packages:
        console.print(f"package {p['dir']}: {p['id']} (LiteRT BER {p['metrics']['parity_ber_litert']:.2e}, "
                      f"torch {p['metrics']['parity_ber_torch']:.2e})")
