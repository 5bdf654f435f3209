"""Precoder compression: the CNN's layer description, LSQ and PTQ on the grid, training, Pareto fronts,
and the MPQ search (resume after a kill, Dask equals the local pool, readable errors)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgejoule import plugin_manager  # noqa: E402
from edgejoule.plugins.precoding.precoder_cnn import PrecoderCNNFamily  # noqa: E402
from edgejoule.plugins.precoding.precoder_training import (  # noqa: E402
    TrainConfig,
    evaluate,
    input_scale,
    train,
    training_combinations,
    unit_noise_channels,
)
from edgejoule.plugins.quantization.lsq import LsqFakeQuant, freeze, lsq_fake_quant, quant_range, weight_steps  # noqa: E402
from edgejoule.plugins.search import worker  # noqa: E402
from edgejoule.plugins.search.pareto import pareto_front  # noqa: E402
from edgejoule.plugins.search.search import SearchRequest, run_search  # noqa: E402
from edgejoule.plugins.search.space import SearchSpace  # noqa: E402
from edgejoule.sites import get_site, load_dataset  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

torch.set_num_threads(1)
TINY = {"c_out": 4, "d_fcl": 32, "n_t": 64, "n_u": 4}


@pytest.mark.parametrize("arch", [TINY, {"c_out": 64, "d_fcl": 1024, "n_t": 64, "n_u": 4}])
def test_describe_matches_the_real_module(arch):
    family = PrecoderCNNFamily()
    model = family.build(arch)
    layers = family.describe(arch)
    for spec, module in zip(layers, model.layers()):
        assert spec.weights == sum(p.numel() for p in module.parameters())
    # MACs and activations by running the module with hooks
    counted = {}

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs = output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        else:
            macs = module.in_features * module.out_features
        counted[module] = (macs, output[0].numel())

    for module in model.layers():
        module.register_forward_hook(hook)
    model.eval()
    model(torch.randn(1, 4, 64, dtype=torch.complex64))
    for spec, module in zip(layers, model.layers()):
        assert (spec.macs, spec.activations) == counted[module]


def test_lsq_quantizes_onto_its_grid_with_gradients_to_the_step():
    v = torch.randn(1000, requires_grad=True)
    step = torch.tensor(0.3, requires_grad=True)
    out = lsq_fake_quant(v, step, 3)
    levels = (out / step).detach()
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    assert levels.min() >= -4 and levels.max() <= 3
    out.sum().backward()
    assert step.grad is not None and step.grad != 0 and v.grad is not None
    assert quant_range(2) == (2, 1) and quant_range(4, signed=False) == (0, 15)
    fq = LsqFakeQuant(4)
    fq(torch.randn(100))
    assert float(fq.step.detach()) > 0 and bool(fq.initialized)


@pytest.mark.parametrize("bits,signed", [(2, True), (4, True), (3, False)])
def test_lsq_gradients_equal_the_composite_formulas(bits, signed):
    """The fused autograd function against LSQ written as composite ops (STE round, gradient-scale trick)."""
    torch.manual_seed(bits)
    v = (torch.randn(5000) * 2).requires_grad_()
    step = torch.tensor(0.4, requires_grad=True)
    weights = torch.randn(5000)
    (lsq_fake_quant(v, step, bits, signed) * weights).sum().backward()
    q_n, q_p = quant_range(bits, signed)
    g = 1.0 / math.sqrt(v.numel() * q_p)
    v2, step2 = v.detach().clone().requires_grad_(), step.detach().clone().requires_grad_()
    s = (step2 - step2 * g).detach() + step2 * g
    x = torch.clamp(v2 / s, -q_n, q_p)
    ref = ((x.round() - x).detach() + x) * s
    (ref * weights).sum().backward()
    torch.testing.assert_close(lsq_fake_quant(v, step, bits, signed), ref)
    torch.testing.assert_close(v.grad, v2.grad)
    torch.testing.assert_close(step.grad, step2.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one step per tensor"):
        lsq_fake_quant(v, torch.ones(3), bits)


def test_lsq_model_freezes_to_plain_weights_on_the_grid():
    model = PrecoderCNNFamily().build(TINY)
    plugin_manager.get("quantizers", "lsq").quantize(model, [2, 4, 8, 16])
    model.eval()
    H = torch.randn(8, 4, 64, dtype=torch.complex64)
    before = model(H, 1.0)
    steps = weight_steps(model)
    frozen, bits = freeze(model)
    assert bits == [2, 4, 8, 16]
    assert not any(torch.nn.utils.parametrize.is_parametrized(layer) for layer in frozen.layers())
    torch.testing.assert_close(frozen(H, 1.0), before)
    for layer, b, s in zip(frozen.layers(), bits, steps):
        q_n, q_p = quant_range(b)
        levels = layer.weight.detach() / s
        assert torch.allclose(levels, levels.round(), atol=1e-3)
        assert levels.min() >= -q_n - 1e-3 and levels.max() <= q_p + 1e-3


def test_ptq_rounds_to_few_levels():
    model = PrecoderCNNFamily().build(TINY)
    plugin_manager.get("quantizers", "ptq").quantize(model, [2, 2, 2, 2])
    for layer in model.layers():
        assert len(torch.unique(layer.weight)) <= 4


def test_training_combinations_are_fresh_draws_of_the_training_positions():
    ds = load_dataset(get_site("urban-nlos").with_overrides(n_samples=600))
    train_set = training_combinations(ds)
    pool = np.unique(ds.users[ds.splits["train"]])
    assert len(train_set.channels) == len(pool) and train_set.size == len(ds.splits["train"])
    first = train_set.epoch(torch.Generator().manual_seed(1))
    assert first.shape == (train_set.size, ds.site.n_users, ds.site.n_antennas)
    # every user of every sample is one of the training positions (unit noise), N_U distinct ones per sample
    H_pool = ds.channels[pool] / np.float32(np.sqrt(ds.noise_power))
    match = np.abs(first.numpy()[:, :, None, :] - H_pool[None, None]).max(-1) < 1e-6
    which = match.argmax(-1)
    assert match.any(-1).all()
    assert all(len(set(row)) == ds.site.n_users for row in which)
    assert torch.equal(first, train_set.epoch(torch.Generator().manual_seed(1)))
    assert not torch.equal(first, train_set.epoch(torch.Generator().manual_seed(2)))
    assert input_scale(train_set) == pytest.approx(input_scale(unit_noise_channels(ds, "train")), rel=0.1)


@pytest.mark.parametrize("fresh", [False, True])
def test_training_improves_the_sum_rate(fresh):
    ds = load_dataset(get_site("urban-nlos").with_overrides(n_samples=600))
    H_train = training_combinations(ds) if fresh else unit_noise_channels(ds, "train")
    H_val = unit_noise_channels(ds, "val")
    torch.manual_seed(0)
    model = PrecoderCNNFamily().build(TINY)
    model.input_scale.fill_(input_scale(H_train))
    before = evaluate(model, H_val, ds.p_max).mean()
    result = train(model, H_train, H_val, ds.p_max, TrainConfig(epochs=15, batch_size=100, patience=15))
    after = evaluate(model, H_val, ds.p_max).mean()
    assert after > before + 0.5
    assert result.best_val_sum_rate == pytest.approx(after)


def test_fine_tuning_without_selection_ends_with_the_weights_a_selecting_run_picks():
    """QAT of a candidate is a few steps inside one epoch: a run that validates and keeps the best epoch ends
    with the very weights of one that skips validation (``select_best=False``, what the MPQ workers use)."""
    ds = load_dataset(get_site("urban-nlos").with_overrides(n_samples=600))
    H_train, H_val = unit_noise_channels(ds, "train"), unit_noise_channels(ds, "val")
    runs = []
    for select in (True, False):
        torch.manual_seed(0)
        model = PrecoderCNNFamily().build(TINY)
        result = train(model, H_train, H_val, ds.p_max, TrainConfig(epochs=10**6, patience=10**6, batch_size=100,
                                                                     max_steps=3, select_best=select))
        assert (result.steps, result.epochs_run, len(result.history)) == (3, 1, 1 if select else 0)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][name], runs[1][name]) for name in runs[0])


def test_pareto_front():
    points = [(1.0, 5.0), (2.0, 4.0), (1.5, 3.0), (3.0, 1.0), (2.0, 4.0), (0.5, 5.0)]
    assert pareto_front(points) == [0, 1, 3]


SMALL = dict(space=SearchSpace(c_out=(4,), d_fcl=(32,), bits=(2, 16)), budget="smoke")


def test_search_writes_every_candidate_and_resumes(tmp_path):
    request = SearchRequest(site="urban-nlos", out_dir=tmp_path, workers=1, **SMALL)
    rows = run_search(request)
    assert len(rows) == 16 and len({r["key"] for r in rows}) == 16
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 16
    energies = {tuple(r["bits"]): r["energy_uj"] for r in rows}
    assert energies[(2, 2, 2, 2)] < energies[(16, 16, 16, 16)]
    again = run_search(request)  # nothing left to do: no line is added
    assert len(again) == 16 and (tmp_path / "results.jsonl").read_text().splitlines() == lines
    # rows of an edgejoule that priced DNNs by eqs. 7-11 alone get both countings, as a new search would have
    old = [{k: v for k, v in r.items() if k != "energy_uj_by_counting"} for r in rows]
    filled = worker.with_both_countings(old, request.family, request.resolved_site())
    assert [r["energy_uj_by_counting"] for r in filled] == [r["energy_uj_by_counting"] for r in rows]


def test_fp_pretraining_runs_the_largest_architecture_first(tmp_path):
    """With one worker the FP units run in the order they are submitted: largest first, so that on two
    workers the last one to finish is a small one and neither worker waits long for the other."""
    space = SearchSpace(c_out=(2, 8), d_fcl=(16, 32), bits=(16,))
    run_search(SearchRequest(site="urban-nlos", out_dir=tmp_path, workers=1, space=space, budget="smoke"))
    written = sorted((tmp_path / "fp").glob("*.pt"), key=lambda f: f.stat().st_mtime_ns)
    assert [f.stem for f in written] == ["c8-d32-s0", "c8-d16-s0", "c2-d32-s0", "c2-d16-s0"]


def test_killed_search_resumes_without_redoing_finished_candidates(tmp_path):
    exe = Path(sys.executable).parent / "edgejoule"
    args = [str(exe), "compress", "--site", "urban-nlos", "--budget", "smoke", "--c-out", "4", "--d-fcl", "32",
            "--bits", "2,4,16", "--workers", "1", "--out", str(tmp_path), "--json"]
    results = tmp_path / "results.jsonl"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 5):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {json.loads(line)["key"]: line for line in results.read_text().splitlines() if line.endswith("}")}
    assert 5 <= len(finished) < 81
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == 81
    for key, line in finished.items():  # the finished ones were kept as they were, not recomputed
        assert keys.count(key) == 1 and line in results.read_text()
    summary = json.loads(done.stdout)
    assert summary["candidates"] == 81 and Path(summary["chosen_files"]["weights"]).exists()
    # every classical method at both countings, and the chosen model's standing, also in chosen.json for export
    assert {e["method"].split()[0] for e in summary["frontier"]} == {"zf", "rzf", "rzf-equal", "mrt", "wmmse", "chosen"}
    assert all(set(e["energy_uj"]) == {"implemented", "paper"} for e in summary["frontier"])
    chosen = json.loads(Path(summary["chosen_files"]["info"]).read_text())
    assert chosen["dominated"] == summary["dominated"] and chosen["family"] == "precoder_structured"
    assert (summary["dominated"] is None) == (summary["frontier"][-1]["dominated_by"] is None)


def test_compress_says_what_it_does_when_its_output_is_not_a_terminal(tmp_path):
    """Piped or logged, compress prints a line per step (a bar draws nothing there), says that it resumes what an
    earlier run left in the directory and on how many test samples it evaluates, and does not set a small network
    beside the paper's 64x1024 Table II."""
    space = SearchSpace(c_out=(4,), d_fcl=(32,), bits=(16,))
    run_search(SearchRequest(site="urban-nlos", out_dir=tmp_path, workers=1, space=space, budget="smoke"))
    result = run_cli("compress", "--site", "urban-nlos", "--budget", "smoke", "--c-out", "4", "--d-fcl", "32",
                     "--bits", "8,16", "--workers", "1", "--out", str(tmp_path), env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())  # a table's title wraps to the table's width
    assert f"resuming {tmp_path}: 1 of 16 candidates are done there already" in out
    assert "candidates: 16/16" in out and "WMMSE reference curve on 200 test samples" in out
    assert out.count("candidates: ") < 8  # its start, its end and one line per 15 s, not one per candidate
    assert "4x32 (the paper's Table II is 64x1024: not comparable)" in out
    assert "cf. paper Table II" not in out and "paper energy" not in out
    assert ("sum rates on 200 test samples of urban-nlos (budget smoke); edgejoule baseline run uses the whole test "
            "split") in out


def test_dask_gives_the_local_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        dask_rows = run_search(SearchRequest(site="urban-nlos", out_dir=tmp_path / "dask", executor="dask",
                                             scheduler=cluster.scheduler_address, **SMALL))
    local_rows = run_search(SearchRequest(site="urban-nlos", out_dir=tmp_path / "local", workers=2, **SMALL))
    by_key = {r["key"]: r for r in local_rows}
    assert len(dask_rows) == len(local_rows) == 16
    for row in dask_rows:
        assert row["sum_rate"] == by_key[row["key"]]["sum_rate"]


@pytest.mark.parametrize("args, message", [
    (["--site", "atlantis"], "unknown site 'atlantis'"),
    (["--site", "urban-nlos", "--bits", "2,3"], "bit widths must be in {2,4,8,16}"),
    (["--site", "urban-nlos", "--c-out", ""], "search space is empty"),
    (["--site", "urban-nlos", "--budget", "huge"], "unknown budget 'huge'"),
    (["--site", "urban-nlos", "--executor", "dask"], "needs --scheduler"),
])
def test_compress_rejects_bad_input_in_one_line(args, message, tmp_path):
    result = run_cli("compress", *args, "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _classical(method, tol, sum_rate, implemented, paper):
    from edgejoule.plugins.search.report import ClassicalPoint

    return ClassicalPoint(method=method, tol=tol, sum_rate=sum_rate, energy_uj=implemented,
                          energy_uj_by_counting={"implemented": implemented, "paper": paper}, iterations=None)


def test_the_report_says_who_wins_even_when_it_is_not_the_dnn():
    from edgejoule.plugins.search.report import Point, dominated_line, frontier, gain_at_equal_rate, verdict

    reference = [_classical("zf", None, 8.0, 0.0168, 0.0081), _classical("rzf-equal", None, 11.6, 0.0170, 0.0091),
                 _classical("wmmse", 1e-2, 11.8, 0.5, 100.0), _classical("wmmse", 1e-5, 11.9, 6.8, 489.0)]
    dnn = Point(c_out=8, d_fcl=512, bits=[2, 2, 2, 2], sum_rate=11.5, sum_rate_std=0.0, energy_uj=0.4, seeds=1)
    entries = frontier(dnn, reference)
    assert {e["method"]: e["dominated_by"] for e in entries} == {
        "zf": None, "rzf-equal": None, "wmmse (tol 0.01)": None, "wmmse (tol 1e-05)": None, "chosen DNN": "rzf-equal"}
    line = dominated_line(entries[-1], entries)
    assert line.startswith("the chosen model is dominated: rzf-equal reaches 11.600") and "\n" not in line
    told = verdict(dnn, reference)
    # against WMMSE the DNN wins (the loose tolerance is WMMSE's most efficient point reaching 11.5) ...
    assert told["wmmse"]["method"] == "wmmse (tol 0.01)"
    assert told["wmmse"]["efficiency_gain"]["implemented"] == pytest.approx((11.5 / 0.4) / (11.8 / 0.5))
    assert told["wmmse"]["efficiency_gain"]["paper"] == pytest.approx((11.5 / 0.4) / (11.8 / 100.0))
    # ... against the most efficient classical method reaching its sum rate it loses, and says so in words
    best = told["most_efficient_classical"]
    assert best["method"] == "rzf-equal" and best["efficiency_gain"]["implemented"] < 1
    assert "LESS energy-efficient" in best["words"] and "classical method wins" in best["words"]
    rows = gain_at_equal_rate([dnn], reference)
    assert [r["dnn"] is not None for r in rows] == [False, False]  # 11.5 reaches neither WMMSE point
    beyond = Point(c_out=8, d_fcl=512, bits=[16] * 4, sum_rate=11.95, sum_rate_std=0.0, energy_uj=0.4, seeds=1)
    assert frontier(beyond, reference)[-1]["dominated_by"] is None
    assert verdict(beyond, reference)["wmmse"]["words"].startswith("no classical method of this kind reaches")
