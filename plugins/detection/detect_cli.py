"""The ``edgejoule detect`` command (typer; torch imported only when it runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgejoule.errors import EdgejouleError

MODELS = ("pgd", "admm")
QUANTIZERS = ("kaq", "lsq", "ptq")


def _choices(values: list[str], allowed: tuple[str, ...], option: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise EdgejouleError(f"{option} must be one of {', '.join(allowed)}; got {', '.join(bad)}")
    return values


def detect_command(
    site: str = typer.Option("rayleigh", help="a site name (edgejoule sites list) or 'rayleigh'"),
    model: list[str] = typer.Option(list(MODELS), help="pgd and/or admm (repeat the option)"),
    quantizer: list[str] = typer.Option(list(QUANTIZERS), help="kaq, lsq and/or ptq (repeat the option)"),
    bits: list[int] = typer.Option([2, 3, 4, 8], help="activation bit widths (repeat the option)"),
    n_r: int = typer.Option(8, "--n-r", min=1, help="receive antennas (the site BS's first N_R antennas)"),
    n_u: int = typer.Option(4, "--n-u", min=1, help="users (the site's first N_U users)"),
    modulation: str = typer.Option("qpsk", help="qpsk or 16qam"),
    layers: int = typer.Option(5, min=1, help="K unfolded layers"),
    samples: int = typer.Option(10_000, min=128, help="training draws per epoch (paper: 5e4)"),
    epochs: int = typer.Option(30, min=1, help="FP training epochs (paper: 50)"),
    qat_epochs: int = typer.Option(30, "--qat-epochs", min=1, help="KAQ/LSQ fine-tuning epochs (paper: 50)"),
    snr: str = typer.Option("0,2,4,6,8,10,12,14,16", help="evaluation SNRs in dB, comma-separated"),
    eval_samples: int = typer.Option(20_000, "--eval-samples", min=100, help="at most this many detections per SNR "
                                     "point; a point stops once 100 bit errors are counted"),
    coded: str = typer.Option(None, help="also coded BLER with this code: ldpc-r1/2 or ldpc-r3/4 (needs the research "
                              "extra); one codeword per 576 bits of consecutive detections"),
    policy: str = typer.Option("learned", help="KAQ step-size policy: learned, noise-enhancement, noise-level or "
                               "static"),
    mmd_weight: float = typer.Option(1.0, "--mmd-weight", min=0.0, help="weight w of the MMD^2 term"),
    mmd_schedule: str = typer.Option("linear", "--mmd-schedule", help="MMD weight over QAT: linear (to 0) or constant"),
    mmd_target: str = typer.Option(
        "output", "--mmd-target",
        help="what the KAQ MMD compares: output (the last layer's soft estimate), decisions or activations",
    ),
    mmd_teacher: str = typer.Option(
        "frozen", "--mmd-teacher",
        help="the MMD's teacher: frozen (the FP net as QAT starts) or along (the quantized net in FP arithmetic)",
    ),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="output directory (default runs/detect-SITE)"),
    export: Path = typer.Option(None, help="also export each FP net as a LiteRT model package DIR/SITE-MODEL-fp"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train PGD-/ADMM-Net detectors, quantize them (KAQ, LSQ, PTQ), write BER-vs-SNR table, plot and energy."""
    from edgejoule.cli.output import console, print_json, progress_bar
    from edgejoule.plugins.detection.kaq_options import MMD_SCHEDULES, MMD_TARGETS, MMD_TEACHERS, POLICY_NAMES
    from edgejoule.tasks.error_rate import parse_snr_list

    if policy not in POLICY_NAMES:
        raise EdgejouleError(f"--policy must be one of {', '.join(POLICY_NAMES)}; got {policy}")
    if mmd_schedule not in MMD_SCHEDULES:
        raise EdgejouleError(f"--mmd-schedule must be one of {', '.join(MMD_SCHEDULES)}; got {mmd_schedule}")
    if mmd_target not in MMD_TARGETS:
        raise EdgejouleError(f"--mmd-target must be one of {', '.join(MMD_TARGETS)}; got {mmd_target}")
    if mmd_teacher not in MMD_TEACHERS:
        raise EdgejouleError(f"--mmd-teacher must be one of {', '.join(MMD_TEACHERS)}; got {mmd_teacher}")
    if modulation not in ("qpsk", "16qam"):
        raise EdgejouleError(f"--modulation must be qpsk or 16qam; got {modulation}")
    if coded:
        from edgejoule.tasks.coded import check_code

        check_code(coded)
    if any(b < 1 or b > 16 for b in bits):
        raise EdgejouleError("--bits must be between 1 and 16")
    snrs = parse_snr_list(snr, "--snr")
    if site != "rayleigh":
        from edgejoule.sites import list_sites

        if site not in list_sites():
            raise EdgejouleError(f"unknown site '{site}'; use 'rayleigh' or one of {', '.join(list_sites())}")

    import torch

    from edgejoule.plugins.detection.detect_experiment import DetectRequest, progress_units, run_detect

    torch.set_num_threads(1)
    req = DetectRequest(
        site=site, models=_choices(model, MODELS, "--model"), quantizers=_choices(quantizer, QUANTIZERS, "--quantizer"),
        bits=bits, n_r=n_r, n_u=n_u, modulation=modulation, layers=layers, samples=samples, epochs=epochs,
        qat_epochs=qat_epochs, snr_db=snrs, eval_samples=eval_samples, policy=policy, mmd_weight=mmd_weight,
        mmd_schedule=mmd_schedule, mmd_target=mmd_target, mmd_teacher=mmd_teacher, seed=seed, coded=coded,
    )
    out_dir = out or Path("runs") / f"detect-{site}"
    with progress_bar("training detectors (epochs)", progress_units(req), enabled=not as_json) as advance:
        result = run_detect(req, out_dir, advance, export=export)
    if as_json:
        print_json(result)
        return
    from edgejoule.plugins.detection.detect_experiment import table

    console.print(table(result))
    console.print(f"wrote {out_dir / 'table.md'}, {out_dir / 'results.json'} and ber-<model>.png")
