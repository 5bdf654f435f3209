"""deeprx family: describe() matches the torch module; shapes for two grid sizes; the CLI end to end with export
to a LiteRT model package (real LiteRT inference on the exported student)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgejoule import plugin_manager
from edgejoule.plugins.export.tflite import ExportError, sha256_file
from edgejoule.plugins.reception.deeprx_arch import DeepRxArch, features
from edgejoule.plugins.reception.deeprx_net import DeepRx, inputs
from edgejoule.plugins.reception.export import ReceiverRuntime, export_receiver
from edgejoule.schemas.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, simulate

torch.set_num_threads(1)


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgejoule.cli.app", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("n_sc,modulation,width,blocks", [(12, "qpsk", 8, 2), (36, "16qam", 16, 5)])
def test_describe_matches_module_and_shapes(n_sc: int, modulation: str, width: int, blocks: int) -> None:
    cfg = OfdmConfig(n_sc=n_sc, modulation=modulation)
    arch = {"width": width, "blocks": blocks, "bits_per_symbol": cfg.bits_per_symbol, "n_sc": n_sc}
    family = plugin_manager.get("models", "deeprx")
    model = family.build(arch).eval()
    layers = family.describe(arch)
    assert sum(l.weights for l in layers) == sum(p.numel() for p in model.parameters())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    n = 14 * n_sc
    assert sum(l.macs for l in layers if l.kind not in ("bn", "features")) == sum(
        n * m.weight.numel() for m in convs
    )
    slot = simulate(cfg, 20.0, np.random.default_rng(0), n=3)
    x = inputs(cfg, slot)
    assert x.shape == (3, 9, 14, n_sc)
    assert model(x).shape == (3, 14, n_sc, cfg.bits_per_symbol)
    # receptive field: radius 1 (input conv) + 2 * sum of dilations; (0,0) -> (13,10) needs 13 in time
    reach_t = 1 + 2 * sum(DeepRxArch().dilation(b)[0] for b in range(blocks))
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    changed = bool(torch.any(model(x)[:, 13, 10] != model(x2)[:, 13, 10]))  # tiny at init: compare exactly
    assert changed == (reach_t >= 13)


def test_distill_cli_end_to_end_with_export_to_litert(tmp_path) -> None:
    out, packages = tmp_path / "run", tmp_path / "packages"
    res = _cli([
        "distill", "--task", "ofdm", "--teacher", "8x2", "--student", "4x1", "--n-sc", "12", "--teacher-steps", "20",
        "--student-steps", "10", "--eval-slots", "20", "--sinr", "10,30", "--out", str(out), "--json",
        "--export", str(packages),
    ])
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)  # the converter's log must not reach --json output
    assert [p["dir"] for p in printed["packages"]] == [str(packages / "distilled-4x1")]
    result = json.loads((out / "results.json").read_text())
    roles = [e["role"] for e in result["receivers"]]
    assert roles == ["baseline", "teacher", "distilled", "scratch"]
    assert all(len(e["ber"]) == 2 for e in result["receivers"])
    teacher, student = result["receivers"][1], result["receivers"][2]
    assert student["macs"] < teacher["macs"] and 0 < student["energy_uj"] < teacher["energy_uj"]
    assert (out / "ber.png").stat().st_size > 1000 and "| LS+LMMSE |" in (out / "table.md").read_text()

    # the package: manifest, file hash, and real LiteRT logits equal to the torch student's on fresh slots
    pkg = packages / "distilled-4x1"
    manifest = ModelManifest.model_validate_json((pkg / MANIFEST_FILE).read_text())
    assert manifest.task == "ofdm" and manifest.family == "deeprx" and manifest.arch["width"] == 4
    assert manifest.sha256 == sha256_file(pkg / MODEL_FILE) and manifest.size_bytes == (pkg / MODEL_FILE).stat().st_size
    # the manifest's energy is the implemented counting, as a precoder's (what the registry compares methods by)
    assert manifest.metrics["parity_decision_mismatch"] <= 1e-3 and manifest.energy.total_uj == pytest.approx(
        student["energy_uj_by_counting"]["implemented"], rel=1e-6)
    assert manifest.energy.counting == "implemented"
    assert student["energy_uj"] == student["energy_uj_by_counting"]["implemented"]
    assert "energy (uJ, implemented) | energy (uJ, paper)" in (out / "table.md").read_text()
    cfg = OfdmConfig(n_sc=12)
    model = DeepRx(DeepRxArch(width=4, blocks=1, n_sc=12))
    model.load_state_dict(torch.load(out / "distilled-4x1.pt", weights_only=True))
    slot = simulate(cfg, 15.0, np.random.default_rng(123), n=8)
    with torch.no_grad():
        z_torch = model.eval()(inputs(cfg, slot)).numpy()
    z_lite = ReceiverRuntime(pkg / MODEL_FILE).logits(features(cfg, slot))
    assert z_lite.shape == z_torch.shape == (8, 14, 12, 2)
    assert np.abs(z_lite - z_torch).max() <= 1e-4 * np.abs(z_torch).max()
    assert bit_errors(cfg, z_lite, slot.bits) == bit_errors(cfg, z_torch, slot.bits)

    # exporting again from the finished run gives the same file; a wrong grid is refused before converting
    again = _cli(["distill-export", str(out), "--out", str(tmp_path / "again"), "--json"])
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["id"] == manifest.id
    with pytest.raises(ExportError, match="grid"):
        export_receiver(model, DeepRxArch(width=4, blocks=1, n_sc=12), OfdmConfig(n_sc=24), tmp_path / "bad")
    missing = _cli(["distill-export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert missing.returncode == 2 and "not a finished distill run" in missing.stderr


def test_distill_says_how_long_it_will_train_before_it_starts(tmp_path) -> None:
    res = _cli(["distill", "--teacher", "4x1", "--student", "4x1", "--n-sc", "12", "--teacher-steps", "2",
                "--student-steps", "1", "--eval-slots", "2", "--sinr", "10", "--out", str(tmp_path)])
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("training 4 steps (2 of the teacher, 2 per student: distilled and from scratch), "
                                 "then up to 2 slots per SINR point (at least 2, then until 100 bit errors)"), \
        res.stderr
    assert "--teacher-steps, --student-steps and --eval-slots make it shorter" in res.stderr


@pytest.mark.parametrize("args", [["--teacher", "32"], ["--task", "mimo"], ["--sinr", "a,b"], ["--modulation", "8psk"],
                                  ["--channel", "tdl-x"], ["--pilots", "20"], ["--pilots", "a"], ["--coded", "turbo"]])
def test_distill_cli_refuses_bad_input(args: list[str]) -> None:
    res = _cli(["distill", *args])
    assert res.returncode == 2 and res.stderr.count("\n") <= 12, res.stderr
