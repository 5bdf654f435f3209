"""PGD-Net and ADMM-Net: layer description, projection, and a short training run that improves BER."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgejoule import plugin_manager
from edgejoule.energy import dnn_energy
from edgejoule.plugins.detection.detectors import linear_detect
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch
from edgejoule.plugins.detection.unfolded_net import SoftProjection, TrainConfig, detector, train
from edgejoule.tasks.detection import ChannelSource, constellation, error_rates

torch.set_num_threads(1)


@pytest.mark.parametrize("kind,params", [("pgd", 2), ("admm", 5)])
def test_description_matches_the_built_network(kind, params):
    family = plugin_manager.get("models", "unfolded")
    arch = UnfoldedArch(kind=kind, layers=5, n_r=8, n_u=4)
    layers = family.describe(arch)
    net = family.build(arch)
    assert len(layers) == 5
    assert sum(layer.weights for layer in layers) == sum(p.numel() for p in net.parameters()) == 5 * params
    # PGD: the step; ADMM: lambda, alpha, gamma, 1 - gamma, beta
    assert layers[1].macs == 2 * 16 * 8 + (1 if kind == "pgd" else 5) * 8
    assert layers[0].activations == layers[1].activations + 16 * 8 + 16  # layer 1 also loads H and y
    fp, q4 = dnn_energy(layers, [16] * 5, 16).total_uj, dnn_energy(layers, [4] * 5, 4).total_uj
    assert 0 < q4 < fp / 8


@pytest.mark.parametrize("name", ["qpsk", "16qam"])
def test_soft_projection_approaches_the_slicer(name):
    c = constellation(name)
    proj = SoftProjection(c)
    with torch.no_grad():
        proj.log_t.fill_(np.log(1e-3))
        v = torch.linspace(-2, 2, 101)
        nearest = torch.tensor(c.levels, dtype=torch.float32)[(v[:, None] - torch.tensor(c.levels)).abs().argmin(1)]
        far = ((v[:, None] - torch.tensor(c.levels)).abs().min(1).values - c.scale).abs() > 0.01
        torch.testing.assert_close(proj(v)[far], nearest[far])


@pytest.mark.parametrize("kind", ["pgd", "admm"])
def test_short_training_improves_ber(kind):
    const = constellation("qpsk")
    src = ChannelSource(8, 4)
    net = plugin_manager.get("models", "unfolded").build(UnfoldedArch(kind=kind, n_r=8, n_u=4))

    def ber(detect):
        return error_rates(detect, src, const, [3.0], 4000, seed=5)[0].ber

    before = ber(detector(net))
    history = train(net, src, const, TrainConfig(samples=2560, epochs=8, seed=1))
    after = ber(detector(net))
    assert history[-1] < history[0]
    assert after < 0.7 * before
    if kind == "pgd":  # even this short run beats ZF where ZF is noise-limited (ADMM-Net needs the full budget)
        assert after < ber(lambda b: linear_detect(b.H, b.y, None))


def test_exported_detector_runs_in_litert_like_torch(tmp_path):
    from edgejoule.plugins.detection.export import DetectorRuntime, export_detector
    from edgejoule.plugins.detection.kaq_core import quantize_activations
    from edgejoule.plugins.export.tflite import ExportError, sha256_file
    from edgejoule.schemas.manifest import ModelManifest
    from edgejoule.tasks.detection import simulate

    const = constellation("qpsk")
    arch = UnfoldedArch(kind="admm", n_r=8, n_u=4)
    net = plugin_manager.get("models", "unfolded").build(arch)
    train(net, ChannelSource(8, 4), const, TrainConfig(samples=512, epochs=2))
    manifest = export_detector(net, arch, "rayleigh", ChannelSource(8, 4), tmp_path / "pkg")
    assert ModelManifest.model_validate_json((tmp_path / "pkg" / "manifest.json").read_text()) == manifest
    assert manifest.sha256 == sha256_file(tmp_path / "pkg" / "model.tflite")
    # the energy the registry compares it by: the implemented counting, its counted projections included
    family = plugin_manager.get("models", "unfolded")
    assert manifest.energy.counting == "implemented" and manifest.energy.total_uj == pytest.approx(
        family.energy(arch, [16] * arch.layers, 16, counting="implemented").total_uj)
    assert manifest.energy.total_uj > family.energy(arch, [16] * arch.layers, 16, counting="paper").total_uj

    rng = np.random.default_rng(7)
    b = simulate(ChannelSource(8, 4).draw(50, rng), const, 6.0, rng)
    x_lite = DetectorRuntime(tmp_path / "pkg" / "model.tflite").detect(b)
    with torch.no_grad():
        x_torch = net(torch.from_numpy(b.H), torch.from_numpy(b.y), torch.from_numpy(b.noise_var)).numpy()
    np.testing.assert_allclose(x_lite, x_torch, atol=1e-4)
    assert manifest.metrics["parity_max_abs_error"] <= 1e-4

    kaq = quantize_activations(net, "ptq", 4, ChannelSource(8, 4), TrainConfig(samples=256, epochs=1))
    with pytest.raises(ExportError, match="only full-precision"):
        export_detector(kaq, arch, "rayleigh", ChannelSource(8, 4), tmp_path / "kaq")
    assert not (tmp_path / "kaq").exists()
