"""Export to TFLite model packages with real parts: tiny precoders trained with LSQ, converted by litert-torch,
stored per layer by ai-edge-quantizer, and run by the LiteRT interpreter against torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")

import torch  # noqa: E402

from core.runtime import PrecoderRuntime, complex_of, load_interpreter  # noqa: E402
from core.schemas.manifest import ModelManifest  # noqa: E402
from core.sites import get_site, load_dataset  # noqa: E402
from core.tasks.precoding import scale_to_power, sum_rate  # noqa: E402
from plugins.export.tflite import ExportError, export_precoder  # noqa: E402
from plugins.precoder_cnn import PrecoderCNNFamily  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.fleet import make_chosen, start_registry  # noqa: E402

CONFIGS = {"float": [16, 16, 16, 16], "int8": [8, 8, 8, 8], "int4": [4, 4, 4, 4]}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, bits in CONFIGS.items():
        chosen = make_chosen(root / f"{name}-src", bits)
        out[name] = (chosen, export_precoder(chosen, root / name, model_id=f"tiny-{name}"), root / name)
    return out


def torch_model(chosen: Path):
    info = json.loads(chosen.read_text())
    model = PrecoderCNNFamily().build(info["arch"])
    model.load_state_dict(torch.load(chosen.parent / info["weights"], weights_only=True))
    return model.eval()


def weight_types(package: Path) -> list[str]:
    """dtypes of the multi-dimensional constant tensors (the layers' weights) in the .tflite file."""
    interpreter = load_interpreter(package / "model.tflite")
    return sorted(d["dtype"].__name__ for d in interpreter.get_tensor_details() if len(d["shape"]) >= 2
                  and "serving_default" not in d["name"] and "StatefulPartitioned" not in d["name"])


def test_float_package_matches_torch_within_1e4_of_the_output_scale(exported):
    chosen, manifest, package = exported["float"]
    assert manifest.runtime.endswith("(float compute)")  # no integer tensor, so no integer kernel
    ds = load_dataset(get_site("urban-nlos"))
    H = ds.H("test", 100)
    runtime = PrecoderRuntime(package / "model.tflite", manifest.normalization)
    model = torch_model(chosen)
    with torch.no_grad():
        x = torch.from_numpy(runtime.features(H))  # the agent's numpy normalization feeds torch too
        expected = model.forward_real(x).numpy()
        W_torch = model(torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power))), ds.p_max).numpy()
    got = runtime.raw(H)
    assert got.shape == (100, 2, 64, 4)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(runtime.precode(H), W_torch, atol=1e-4 * np.abs(W_torch).max())
    assert [layer.stored_type for layer in manifest.layers] == ["float32"] * 4


def test_serving_path_is_features_invoke_and_power_scaling(exported):
    """``serve`` (one buffer copy, one multiply from a strided view, the scale in place on LiteRT's output)
    gives what the plain formulas give: ``features``, ``invoke``, then ``scale_to_power`` (eq. 5)."""
    _, manifest, package = exported["int8"]
    H = load_dataset(get_site("urban-nlos")).H("test", 20)
    runtime = PrecoderRuntime(package / "model.tflite", manifest.normalization)
    raw = runtime.raw(H)
    expected = scale_to_power(complex_of(raw), manifest.normalization["p_max_w"])
    np.testing.assert_allclose(runtime.precode(H), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_array_equal(runtime.precode(H.astype(np.complex128)), runtime.precode(H))
    served = [runtime.serve(h) for h in H[:2]]
    assert served[0] is not served[1] and served[0].shape == (1, 2, 64, 4)  # the caller may keep each one

@pytest.mark.parametrize("name", ["int8", "int4"])
def test_quantized_package_keeps_the_sum_rate_of_the_fake_quantized_model(exported, name):
    chosen, manifest, package = exported[name]
    ds = load_dataset(get_site("urban-nlos"))
    H = ds.H("test", 200)
    model = torch_model(chosen)  # frozen LSQ weights: already on their grid, so torch is the fake-quantized model
    with torch.no_grad():
        rate_torch = float(sum_rate(H, model(torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power))), ds.p_max).numpy(),
                                    ds.noise_power).mean())
    runtime = PrecoderRuntime(package / "model.tflite", manifest.normalization)
    rate_lite = float(sum_rate(H, runtime.precode(H), ds.noise_power).mean())
    assert abs(rate_lite - rate_torch) <= 0.005 * rate_torch
    assert manifest.metrics["sum_rate_torch"] == pytest.approx(rate_torch, rel=1e-5)
    assert [layer.stored_type for layer in manifest.layers] == [name] * 4
    assert [layer.trained_bits for layer in manifest.layers] == CONFIGS[name]


def test_storage_follows_the_trained_bits(exported):
    sizes = {name: package.joinpath("model.tflite").stat().st_size for name, (_, _, package) in exported.items()}
    assert sizes["int4"] < sizes["int8"] < sizes["float"]
    assert "int8" not in weight_types(exported["float"][2])
    assert weight_types(exported["int8"][2]).count("int8") >= 4  # conv, fc1, fc2, fc3


def test_manifest_describes_the_package(exported):
    _, manifest, package = exported["int8"]
    on_disk = ModelManifest.model_validate_json((package / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk.inputs[0].shape == [1, 2, 4, 64] and on_disk.outputs[0].shape == [1, 2, 64, 4]
    norm = on_disk.normalization
    site = get_site("urban-nlos")
    assert norm["noise_power_w"] == pytest.approx(site.noise_power_w) and norm["p_max_w"] == pytest.approx(site.tx_power_w)
    assert on_disk.energy.total_uj == pytest.approx(on_disk.energy.compute_uj + on_disk.energy.weights_uj
                                                    + on_disk.energy.activations_uj)
    assert on_disk.plugins == ["precoder_cnn"] and on_disk.training_energy_j == 12.5


def test_weights_off_their_grid_fail_the_export_loudly_and_write_nothing(tmp_path):
    """Float weights labelled 2-bit: storing them as INT4 would change the model, so the export refuses."""
    chosen = make_chosen(tmp_path / "src", [16, 16, 16, 16])
    info = json.loads(chosen.read_text())
    info["bits"] = [2, 2, 2, 2]
    chosen.write_text(json.dumps(info))
    with pytest.raises(ExportError, match="not on the grid"):
        export_precoder(chosen, tmp_path / "out", compute="float")
    assert not (tmp_path / "out").exists()


def test_cli_export_errors_are_one_line(tmp_path):
    result = run_cli("export", "--from", str(tmp_path / "missing.json"), "--out", str(tmp_path / "pkg"))
    assert result.returncode == 2 and "edgejoule compress" in result.stderr + result.stdout
    result = run_cli("publish", str(tmp_path), "--registry", "http://127.0.0.1:9", "--token", "t")
    assert result.returncode == 2 and "not a model package" in result.stderr + result.stdout


def test_cli_publish_uploads_to_the_real_registry(exported, tmp_path):
    _, manifest, package = exported["int4"]
    server = start_registry(tmp_path / "registry", None)
    try:
        result = run_cli("publish", str(package), "--registry", server.url, "--token", server.admin_token)
        assert result.returncode == 0, result.stderr
        with server.admin() as admin:
            models = admin.get("/models").json()
            assert [m["id"] for m in models] == [manifest.id]
            assert admin.get(f"/models/{manifest.id}/package").content == (package / "model.tflite").read_bytes()
        wrong = run_cli("publish", str(package), "--registry", server.url, "--token", "not-the-admin-token")
        assert wrong.returncode == 2 and "refused" in wrong.stderr + wrong.stdout
    finally:
        server.stop()


def test_export_runs_from_the_command_line(exported, tmp_path):
    chosen, _, _ = exported["int8"]
    result = run_cli("export", "--from", str(chosen), "--out", str(tmp_path / "pkg"), "--id", "cli-int8")
    assert result.returncode == 0, result.stderr
    manifest = ModelManifest.model_validate_json((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest.id == "cli-int8" and "sum rate LiteRT" in result.stdout
    assert manifest.size_bytes == (tmp_path / "pkg" / "model.tflite").stat().st_size
