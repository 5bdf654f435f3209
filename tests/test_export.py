"""Export to TFLite model packages with real parts: tiny precoders trained with LSQ, converted by litert-torch,
stored per layer by ai-edge-quantizer, and run by the LiteRT interpreter against torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")

import torch  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from edgejoule.edge_agent.packages import PackageStore  # noqa: E402
from edgejoule.errors import EdgejouleError  # noqa: E402
from edgejoule.plugins.export.tflite import (  # noqa: E402
    ExportError,
    convert,
    export_precoder,
    precoder_graph,
    quantize_file,
    sha256_file,
)
from edgejoule.plugins.precoding.precoder_cnn import PrecoderCNNFamily  # noqa: E402
from edgejoule.runtime import PrecoderRuntime, complex_of, load_interpreter  # noqa: E402
from edgejoule.schemas.manifest import ModelManifest, PrecoderNormalization  # noqa: E402
from edgejoule.sites import get_site, load_dataset  # noqa: E402
from edgejoule.tasks.precoding import scale_to_power, sum_rate  # noqa: E402
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
    assert runtime.normalization.in_graph
    with torch.no_grad():
        W_torch = torch_model(chosen)(torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power))), ds.p_max).numpy()
    got = runtime.raw(H)  # the graph's own output: W's planes, normalized and power-scaled inside the graph
    assert got.shape == (100, 2, 64, 4)
    expected = np.stack([W_torch.real, W_torch.imag], 1)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(runtime.precode(H), W_torch, atol=1e-4 * np.abs(W_torch).max())
    assert [layer.stored_type for layer in manifest.layers] == ["float32"] * 4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_package_output_meets_the_power_constraint_exactly(exported, name):
    """The graph maps raw channel planes to W with ||W||_F^2 = P_max (eq. 5 with equality), whatever the
    channel's scale, and ``serve`` returns that output untouched."""
    _, manifest, package = exported[name]
    H = load_dataset(get_site("urban-nlos")).H("test", 50)
    runtime = PrecoderRuntime(package / "model.tflite", manifest.normalization)
    for scale in (1.0, 1e-3, 1e3):
        W = runtime.precode(H * scale)
        power = np.sum(np.abs(W.astype(np.complex128)) ** 2, axis=(1, 2))
        np.testing.assert_allclose(power, manifest.normalization["p_max_w"], rtol=2e-6)
    served = [runtime.serve(h) for h in H[:2]]
    np.testing.assert_array_equal(served[0], runtime.invoke(runtime.features(H[:1])))
    assert served[0] is not served[1] and served[0].shape == (1, 2, 64, 4)  # the caller may keep each one
    np.testing.assert_array_equal(runtime.precode(H.astype(np.complex128)), runtime.precode(H))


def test_an_all_zero_network_output_stays_zero_in_the_graph(exported, tmp_path):
    """The power scaling's floor: an output with no power comes out zero, not NaN (0 * 1/0)."""
    chosen, manifest, _ = exported["float"]
    model = torch_model(chosen)
    with torch.no_grad():
        model.fc3.weight.zero_()
        model.fc3.bias.zero_()
    norm = PrecoderNormalization.model_validate(manifest.normalization)
    convert(precoder_graph(model, norm), (torch.zeros(1, 2, 4, 64),), tmp_path / "zero.tflite")
    runtime = PrecoderRuntime(tmp_path / "zero.tflite", norm)
    W = runtime.serve(load_dataset(get_site("urban-nlos")).H("test", 1)[0])
    assert np.all(W == 0)


def ops(package: Path) -> list[dict]:
    interpreter = load_interpreter(package / "model.tflite")
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    # LiteRT's Python interpreter lists ops only through this private call (the flatbuffer holds the same)
    return [{**op, "tensors": [tensors[i] for i in [*op["inputs"], *op["outputs"]] if i >= 0]}
            for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_only_the_layers_weights_are_quantized_the_normalization_stays_float(exported, name):
    _, _, package = exported[name]
    graph = ops(package)
    layers = [op for op in graph if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(layers) == 4 and all(any(t["dtype"] == np.int8 for t in op["tensors"]) for op in layers)
    normalization = [op for op in graph if op["op_name"] in ("MUL", "SUM", "MAXIMUM", "RSQRT")]
    assert sorted(op["op_name"] for op in normalization) == ["MAXIMUM", "MUL", "MUL", "MUL", "MUL", "RSQRT", "SUM"]
    for op in normalization:
        for t in op["tensors"]:
            assert t["dtype"] in (np.float32, np.int32) and not len(t["quantization_parameters"]["scales"]), (op, t)
    integer = {t["name"] for op in graph for t in op["tensors"] if t["dtype"] == np.int8}
    assert integer == {t["name"] for op in layers for t in op["tensors"] if t["dtype"] == np.int8}


def export_old_style(chosen: Path, bits: list[int], out: Path) -> ModelManifest:
    """A package as the exporter wrote them before the graph normalized: ``forward_real`` alone, and a
    manifest whose ``normalization`` has no ``in_graph`` (what agents in the field still receive)."""
    new = export_precoder(chosen, out / "new", model_id="new-style")

    class Core(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_real(x)

    convert(Core(torch_model(chosen)), (torch.zeros(1, 2, 4, 64),), out / "float.tflite")
    (out / "old").mkdir()
    quantize_file(out / "float.tflite", bits, "integer", out / "old" / "model.tflite")
    norm = {k: new.normalization[k] for k in ("noise_power_w", "input_scale", "p_max_w")}
    norm.update(input="stack(real, imag) of H / sqrt(noise_power_w), times input_scale",
                output="W = out[:, 0] + 1j out[:, 1], scaled to total power p_max_w")
    data = out / "old" / "model.tflite"
    old = new.model_copy(update={"id": "old-style", "normalization": norm, "sha256": sha256_file(data),
                                 "size_bytes": data.stat().st_size, "schema_version": 1})
    (out / "old" / "manifest.json").write_text(old.to_json())
    return old


def test_an_old_style_package_still_serves_as_before(exported, tmp_path):
    """Manifests without ``in_graph`` (packages published before it) are normalized and power-scaled in numpy
    around the invoke, as they always were, and serve what the same weights serve as a new package."""
    chosen, _, _ = exported["int8"]
    old = export_old_style(chosen, CONFIGS["int8"], tmp_path)
    assert "in_graph" not in json.loads((tmp_path / "old" / "manifest.json").read_text())["normalization"]
    H = load_dataset(get_site("urban-nlos")).H("test", 20)
    runtime = PrecoderRuntime(tmp_path / "old" / "model.tflite", old.normalization)
    assert not runtime.normalization.in_graph
    raw = runtime.raw(H)  # the numpy features, then the core alone
    expected = scale_to_power(complex_of(raw), old.normalization["p_max_w"])
    np.testing.assert_allclose(runtime.precode(H), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    new = PrecoderRuntime(tmp_path / "new" / "model.tflite", json.loads((tmp_path / "new" / "manifest.json").read_text())["normalization"])
    np.testing.assert_allclose(runtime.precode(H), new.precode(H), rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    installed = PackageStore(tmp_path / "agent").install(old, tmp_path / "old" / "model.tflite")  # self-test included
    np.testing.assert_array_equal(installed.runtime.precode(H), runtime.precode(H))


def test_a_normalization_field_the_runtime_does_not_know_is_refused(exported):
    """A runtime that ignored a field like ``in_graph`` would normalize twice without an error: refuse instead."""
    _, manifest, package = exported["int8"]
    with pytest.raises(EdgejouleError, match="layout"):
        PrecoderRuntime(package / "model.tflite", {**manifest.normalization, "layout": "interleaved"})


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
    assert norm["in_graph"] is True and on_disk.schema_version == 2
    with pytest.raises(ValidationError, match="needs manifest schema 2"):  # schema-1 readers would normalize twice
        ModelManifest.model_validate({**on_disk.model_dump(by_alias=True), "schema": 1})
    assert norm["noise_power_w"] == pytest.approx(site.noise_power_w) and norm["p_max_w"] == pytest.approx(site.tx_power_w)
    assert on_disk.energy.total_uj == pytest.approx(on_disk.energy.compute_uj + on_disk.energy.weights_uj
                                                    + on_disk.energy.activations_uj)
    assert on_disk.plugins == ["precoder_cnn"] and on_disk.training_energy_j == 12.5


def test_exporting_over_a_package_replaces_it_file_by_file_the_manifest_last(exported, tmp_path, monkeypatch):
    """A package exported over an old one: the model file, then the manifest, each replaced whole. Killed between the
    two (here: the manifest's write fails), the folder holds the new model and the old manifest, a pair whose sha256
    differs and which the registry refuses; before, the model was copied in place and the manifest rewritten in
    place, so a kill could leave either file cut short."""
    import edgejoule.plugins.export.tflite as tflite

    _, _, float_package = exported["float"]
    target = tmp_path / "pkg"
    shutil.copytree(float_package, target)
    old_manifest = (target / "manifest.json").read_text()
    written = []
    real_write = tflite.write_atomic

    def write_then_die_before_the_manifest(path, content, **kw):
        if path.name == "manifest.json":
            raise OSError(28, "No space left on device")
        written.append(path.name)
        real_write(path, content, **kw)

    monkeypatch.setattr(tflite, "write_atomic", write_then_die_before_the_manifest)
    int8_chosen = exported["int8"][0]
    with pytest.raises(OSError, match="No space"):
        export_precoder(int8_chosen, target, model_id="tiny-int8-again")
    assert written == ["model.tflite"] and (target / "manifest.json").read_text() == old_manifest
    assert ModelManifest.model_validate_json(old_manifest).sha256 != sha256_file(target / "model.tflite")

    monkeypatch.setattr(tflite, "write_atomic", real_write)
    manifest = export_precoder(int8_chosen, target, model_id="tiny-int8-again")
    assert manifest.sha256 == sha256_file(target / "model.tflite") and manifest.energy.counting == "implemented"
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "model.tflite"]  # no temporaries
    assert all((target / name).stat().st_mode & 0o777 == 0o644 for name in ("manifest.json", "model.tflite"))


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
        assert f"published {manifest.id} to {server.url} (site {manifest.site}" in result.stdout
        other = tmp_path / "other"
        shutil.copytree(package, other)
        (other / "manifest.json").write_text(manifest.model_copy(update={"id": "other"}).to_json())
        as_json = run_cli("publish", str(other), "--registry", server.url, "--token", server.admin_token, "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == {"id": "other", "site": manifest.site, "task": "precoding",
                                              "version": 2, "sha256": manifest.sha256}
        # the server's variable is enough for the client too
        again = run_cli("publish", str(package), "--registry", server.url,
                        env={"EDGEJOULE_REGISTRY_ADMIN_TOKEN": server.admin_token, "EDGEJOULE_ADMIN_TOKEN": ""})
        assert again.returncode == 2 and "Traceback" not in again.stderr and "{" not in again.stderr
        assert f"{manifest.id} is already in the registry" in again.stderr and "new --id" in again.stderr
        wrong = run_cli("publish", str(package), "--registry", server.url, "--token", "not-the-admin-token")
        assert wrong.returncode == 2 and "refused" in wrong.stderr + wrong.stdout
    finally:
        server.stop()


def test_a_dominated_model_is_refused_in_one_line_unless_allowed(exported, tmp_path):
    """compress writes into chosen.json what dominates the chosen model; export refuses it with exit 2."""
    chosen, _, _ = exported["int8"]
    shutil.copytree(chosen.parent, tmp_path / "src")
    info = json.loads(chosen.read_text())
    info["dominated"] = ("the chosen model is dominated: rzf-equal reaches 11.631 bit/s/Hz at 0.01696 uJ "
                         "(implemented), more than the model's 11.2 bit/s/Hz at 0.38 uJ")
    (tmp_path / "src" / "chosen.json").write_text(json.dumps(info))
    args = ("export", "--from", str(tmp_path / "src" / "chosen.json"), "--out", str(tmp_path / "pkg"))
    refused = run_cli(*args)
    assert refused.returncode == 2 and info["dominated"] in refused.stderr and "--allow-dominated" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "pkg").exists()
    allowed = run_cli(*args, "--allow-dominated")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "pkg" / "manifest.json").exists()


def test_export_runs_from_the_command_line(exported, tmp_path):
    """The converter's chatter (some forty lines, a failed .so load among them) goes to OUT/convert.log, which
    the command names; the package id is on the last line, or in the JSON with --json."""
    chosen, _, _ = exported["int8"]
    result = run_cli("export", "--from", str(chosen), "--out", str(tmp_path / "pkg"), "--id", "cli-int8")
    assert result.returncode == 0, result.stderr
    manifest = ModelManifest.model_validate_json((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest.id == "cli-int8" and "sum rate LiteRT" in result.stdout
    assert manifest.size_bytes == (tmp_path / "pkg" / "model.tflite").stat().st_size
    log = tmp_path / "pkg" / "convert.log"
    assert log.stat().st_size > 0 and f"converter output: {log}" in result.stdout
    assert len(result.stdout.splitlines()) == 3 and result.stdout.splitlines()[-1].startswith(
        f"wrote {tmp_path / 'pkg'}: package cli-int8 (")
    assert result.stderr.strip() == "", result.stderr  # nothing of the converter on the terminal
    as_json = run_cli("export", "--from", str(chosen), "--out", str(tmp_path / "pkg2"), "--id", "cli-json", "--json")
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["package"] == str(tmp_path / "pkg2") and answer["log"] == str(tmp_path / "pkg2" / "convert.log")
    assert ModelManifest.model_validate(answer["manifest"]).id == "cli-json"
