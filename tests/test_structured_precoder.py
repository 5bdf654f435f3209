"""The structured precoder family (``precoder_structured``): the optimal beamforming structure as the output
layer of the Fig. 1 template, its energy description, its search and its export, and the RZF baseline it
starts from."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgejoule import plugin_manager  # noqa: E402
from edgejoule.energy.accelerator import dnn_energy, layer_energy  # noqa: E402
from edgejoule.plugins.precoding.precoder_structured import structure_ops  # noqa: E402
from edgejoule.plugins.precoding.precoder_structured_net import complex_inverse, optimal_structure  # noqa: E402
from edgejoule.plugins.precoding.precoder_training import (  # noqa: E402
    TrainConfig,
    evaluate,
    input_scale,
    train,
    training_combinations,
    unit_noise_channels,
)
from edgejoule.plugins.precoding.wmmse import wmmse  # noqa: E402
from edgejoule.plugins.precoding.zf import rzf_equal_precoder  # noqa: E402
from edgejoule.plugins.search.search import SearchRequest, run_search  # noqa: E402
from edgejoule.plugins.search.space import SearchSpace  # noqa: E402
from edgejoule.sites import get_site, load_dataset  # noqa: E402
from edgejoule.tasks.precoding import sum_rate, total_power  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

torch.set_num_threads(1)
TINY = {"c_out": 4, "d_fcl": 32, "n_t": 64, "n_u": 4}
FAMILY = plugin_manager.get("models", "precoder_structured")


@pytest.fixture(scope="module")
def site_data():
    ds = load_dataset(get_site("urban-nlos").with_overrides(n_samples=600))
    return ds, unit_noise_channels(ds, "test", 60)


def planes(H: torch.Tensor) -> torch.Tensor:
    return torch.stack([H.real, H.imag], 1)


def test_gauss_jordan_inverts_what_the_structure_inverts(site_data):
    """I + diag(q) H H^H over the site's channels, q from tiny to far above the budget."""
    _, H = site_data
    G = (H @ H.mH).to(torch.complex128)
    draws = torch.Generator().manual_seed(0)  # its own draws: what ran before it cannot change them
    for q_scale in (1e-3, 1.0, 20.0, 1e3):
        q = torch.rand(len(H), 4, dtype=torch.float64, generator=draws) * q_scale
        M = torch.eye(4, dtype=torch.complex128) + q[:, :, None] * G
        xr, xi = complex_inverse(M.real, M.imag, torch.eye(4, dtype=torch.float64))
        inverse = torch.complex(xr, xi)
        assert torch.allclose(M @ inverse, torch.eye(4, dtype=torch.complex128).expand_as(M), atol=1e-9)


def test_equal_logits_give_rzf_with_equal_powers(site_data):
    ds, H = site_data
    W = optimal_structure(planes(H), torch.zeros(len(H), 8), torch.tensor(float(ds.p_max)), torch.eye(4))
    W = torch.complex(W[:, 0], W[:, 1]).to(torch.complex128).numpy()
    # p = 1/N_U of a unit budget: W at P_max is sqrt(P_max) W
    rzf = rzf_equal_precoder(H.numpy(), 1.0, ds.p_max)
    np.testing.assert_allclose(np.sqrt(ds.p_max) * W, rzf, atol=1e-4 * np.abs(rzf).max())
    # the column powers are set in the span of the channels (diag X^H K X): exact to ~1e-6 when K is ill-conditioned
    np.testing.assert_allclose(np.sum(np.abs(rzf) ** 2, -2), ds.p_max / 4, rtol=1e-5)


def test_rzf_lies_between_zf_and_wmmse_on_the_nlos_site(site_data):
    ds, _ = site_data
    H, noise = ds.H("test"), ds.noise_power
    rates = {name: float(sum_rate(H, plugin_manager.get("baselines", name).run(H, noise, ds.p_max).output, noise).mean())
             for name in ("zf", "rzf-equal")}
    rates["wmmse"] = float(sum_rate(H, wmmse(H, noise, ds.p_max, tol=1e-5)[0], noise).mean())
    assert rates["zf"] < rates["rzf-equal"] < rates["wmmse"]
    assert plugin_manager.get("baselines", "rzf-equal").op_count(n_t=64, n_u=4) > plugin_manager.get("baselines", "zf").op_count(n_t=64, n_u=4)


def test_the_structure_holds_wmmse_solutions(site_data):
    """The network only picks (p, q); with them chosen per channel by gradient ascent the structure reaches
    WMMSE's sum rate: the family's ceiling is WMMSE's, not the 84-92 % of the plain template."""
    ds, H = site_data
    H = H[:30]
    logits = torch.zeros(len(H), 8, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(150):
        W = optimal_structure(planes(H), logits, torch.tensor(float(ds.p_max)), torch.eye(4))
        loss = -sum_rate(H, float(np.sqrt(ds.p_max)) * torch.complex(W[:, 0], W[:, 1]), 1.0, xp=torch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reference = sum_rate(H.numpy(), wmmse(H.numpy(), 1.0, ds.p_max, tol=1e-5)[0], 1.0).mean()
    assert -loss.item() > 0.995 * reference


def test_network_output_spends_the_budget_exactly(site_data):
    ds, H = site_data
    model = FAMILY.build(TINY).eval()
    model.calibrate(input_scale(H), ds.p_max)
    with torch.no_grad():
        W = model(H, ds.p_max)
    np.testing.assert_allclose(total_power(W.numpy()), ds.p_max, rtol=1e-5)


def test_describe_matches_the_module_and_prices_the_structure_at_16_bits():
    model = FAMILY.build(TINY)
    layers = FAMILY.describe(TINY)
    assert [spec.name for spec in layers] == ["CONV", "FCL1", "FCL2", "FCL3", "STRUCT"]
    for spec, module in zip(layers, model.layers()):
        assert spec.weights == sum(p.numel() for p in module.parameters())
    assert model.fc3.out_features == 8 and layers[3].activations == 8
    struct = layers[-1]
    assert (struct.weights, struct.activations, struct.macs) == (0, 2 * 64 * 4, structure_ops(64, 4))
    energy = FAMILY.energy(TINY, [2, 2, 2, 2])
    assert energy.layers[-1].bits == 16
    assert energy.layers[-1].total_pj == pytest.approx(layer_energy(struct, 16).total_pj)
    assert energy.total_uj == pytest.approx(dnn_energy(layers, [2, 2, 2, 2, 16]).total_uj)


def test_training_leaves_rzf_behind():
    """The net starts near equal powers (RZF) and learns per-channel powers that beat it."""
    ds = load_dataset(get_site("urban-nlos").with_overrides(n_samples=1200))
    H_train, H_val = training_combinations(ds), unit_noise_channels(ds, "val")
    torch.manual_seed(0)
    model = FAMILY.build({"c_out": 8, "d_fcl": 128, "n_t": 64, "n_u": 4})
    model.calibrate(input_scale(H_train), ds.p_max)
    train(model, H_train, H_val, ds.p_max, TrainConfig(epochs=20, batch_size=100, patience=20))
    H_test = unit_noise_channels(ds, "test")
    rzf = sum_rate(H_test.numpy(), rzf_equal_precoder(H_test.numpy(), 1.0, ds.p_max), 1.0).mean()
    assert evaluate(model, H_test, ds.p_max).mean() > rzf + 0.05


def test_search_of_the_structured_family(tmp_path):
    request = SearchRequest(site="urban-nlos", family="precoder_structured", out_dir=tmp_path, workers=1,
                            space=SearchSpace(c_out=(4,), d_fcl=(32,), bits=(2, 16)), budget="smoke")
    rows = run_search(request)
    assert len(rows) == 16
    energies = {tuple(r["bits"]): r["energy_uj"] for r in rows}
    assert energies[(16, 16, 16, 16)] == pytest.approx(FAMILY.energy(TINY, [16] * 4).total_uj)
    assert json.loads((tmp_path / "request.json").read_text())["family"] == "precoder_structured"
    # the directory now belongs to this family: a search of another family is refused, in one line
    result = run_cli("compress", "--site", "urban-nlos", "--budget", "smoke", "--c-out", "4", "--d-fcl", "32",
                     "--bits", "2,16", "--family", "precoder_cnn", "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "holds a search with family 'precoder_structured'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("family, message", [
    ("precoder_bnn", "unknown model 'precoder_bnn'; known:"),
    ("unfolded", "model family 'unfolded' is not a precoder"),
])
def test_compress_rejects_a_family_that_is_not_a_precoder(family, message, tmp_path):
    out = tmp_path / "search"
    result = run_cli("compress", "--site", "urban-nlos", "--family", family, "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing written that a corrected rerun would then refuse


@pytest.mark.parametrize("bits", [[16, 16, 16, 16], [4, 4, 8, 2]])
def test_export_runs_the_structure_in_litert(bits, tmp_path):
    """The whole map, Gauss-Jordan included, converts to LiteRT ops and serves on the edge runtime as torch does."""
    pytest.importorskip("litert_torch")
    from edgejoule.plugins.export.tflite import export_precoder
    from edgejoule.runtime import PrecoderRuntime
    from tests.fleet import TINY_ARCH, make_chosen

    chosen = make_chosen(tmp_path / "src", bits, family="precoder_structured")
    manifest = export_precoder(chosen, tmp_path / "pkg", model_id="tiny-structured")
    assert (manifest.family, manifest.plugins) == ("precoder_structured", ["precoder_structured"])
    assert manifest.energy.counting == "implemented"
    assert manifest.energy.total_uj == pytest.approx(FAMILY.energy(TINY_ARCH, bits, counting="implemented").total_uj)
    ds = load_dataset(get_site("urban-nlos"))
    H = ds.H("test", 100)
    W = PrecoderRuntime(tmp_path / "pkg" / "model.tflite", manifest.normalization).precode(H)
    np.testing.assert_allclose(total_power(W), ds.p_max, rtol=1e-4)
    model = FAMILY.build(TINY_ARCH)
    model.load_state_dict(torch.load(chosen.parent / "chosen.pt", weights_only=True))
    with torch.no_grad():
        W_torch = model.eval()(torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power))), ds.p_max).numpy()
    rates = [sum_rate(H, w, ds.noise_power).mean() for w in (W, W_torch)]
    assert rates[0] == pytest.approx(rates[1], rel=5e-3)
    if bits == [16] * 4:
        np.testing.assert_allclose(W, W_torch, atol=1e-4 * np.abs(W_torch).max())


def test_a_search_directory_from_before_families_belongs_to_the_template(tmp_path):
    """request.json written before --family existed has no family: it was a precoder_cnn search."""
    request = SearchRequest(site="urban-nlos", out_dir=tmp_path, budget="smoke")
    legacy = json.loads(request.model_dump_json())
    del legacy["family"]
    (tmp_path / "request.json").write_text(json.dumps(legacy))
    result = run_cli("compress", "--site", "urban-nlos", "--budget", "smoke", "--family", "precoder_structured",
                     "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "holds a search with family 'precoder_cnn', not 'precoder_structured'" in result.stderr
