"""The DNN families' weightless operations under the ``implemented`` counting (issue 17, item 1): read from the
exported graph's computation by ``edgejoule.plugins.energy.op_counter``, against hand counts."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from edgejoule import plugin_manager  # noqa: E402
from edgejoule.energy.accelerator import dnn_energy  # noqa: E402
from edgejoule.energy.counting import OperationCount, operations_energy  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

SIZES = [(64, 4), (32, 3)]


def scalings(n_t: int, n_u: int) -> OperationCount:
    """The exported graph around the net: the input planes times s_in/sigma (2 N_U N_T products), then
    out * out (2 N_T N_U), its sum (memory only), the floor (a comparison), one reciprocal square root, the
    amplitude times it (1) and the output times that (2 N_T N_U). Memory: 2 accesses per result word."""
    x, w = 2 * n_u * n_t, 2 * n_t * n_u
    return OperationCount(multiplications=x + 2 * w + 1, roots=1, memory=2 * (x + 2 * w) + 2 * 4)


def structure(n_t: int, n_u: int) -> OperationCount:
    """STRUCT as written (precoder_structured_net.optimal_structure), by hand, with its input divided by
    input_scale (one division per plane entry)."""
    u, x = n_u, 2 * n_u * n_t
    ops = OperationCount(divisions=x, memory=2 * x)  # x / input_scale
    ops += OperationCount(roots=2 * u, divisions=2, multiplications=2 * u, memory=2 * 2 * u)  # two softmaxes of N_U
    ops += OperationCount(multiplications=u, memory=2 * u)  # q = q_total * softmax
    # G = H H^H: four real N_U x N_T x N_U products, one addition and one subtraction
    ops += OperationCount(multiplications=4 * u * u * n_t, memory=6 * 2 * u * u)
    # I + q G (real part: product and addition; imaginary part: product)
    ops += OperationCount(multiplications=2 * u * u, memory=3 * 2 * u * u)
    # Gauss-Jordan on [M | I] (N_U x 2 N_U complex), per pivot: |p|^2 (2 products, a sum); the pivot row's
    # 2 N_U entries times conj(p) (4 products, 2 sums) over |p|^2 (2 divisions); the factor column M_jk - 1
    # (a subtraction); every row's update (4 products and 4 sums or differences per complex entry)
    pivot = OperationCount(multiplications=2 + 4 * 2 * u + 4 * u * 2 * u, divisions=2 * 2 * u,
                           memory=2 * 3 + 2 * 8 * 2 * u + 2 * u + 2 * 8 * u * 2 * u)
    ops += pivot * u
    # V = H^H X: four real N_T x N_U x N_U products, an addition and a subtraction
    ops += OperationCount(multiplications=4 * n_t * u * u, memory=6 * 2 * n_t * u)
    # column norms |v_k|^2 (2 products and a sum per entry, then the column sums), p / norm, sqrt
    ops += OperationCount(multiplications=2 * n_t * u, memory=3 * 2 * n_t * u + 2 * u)
    ops += OperationCount(divisions=u, roots=u, memory=2 * 2 * u)
    ops += OperationCount(multiplications=2 * n_t * u, memory=2 * 2 * n_t * u)  # W = V scale
    return ops


@pytest.mark.parametrize("n_t, n_u", SIZES)
def test_structured_family_counts_struct_and_the_scalings(n_t, n_u):
    family = plugin_manager.get("models", "precoder_structured")
    counted = family.weightless_operations({"c_out": 2, "d_fcl": 16, "n_t": n_t, "n_u": n_u})
    assert counted == structure(n_t, n_u) + scalings(n_t, n_u)


@pytest.mark.parametrize("n_t, n_u", SIZES)
def test_template_family_counts_only_the_scalings(n_t, n_u):
    """Everything inside the weight layers (conv, linear, batch norm, ReLU, dropout) is eqs. 7-11's."""
    family = plugin_manager.get("models", "precoder_cnn")
    assert family.weightless_operations({"c_out": 2, "d_fcl": 16, "n_t": n_t, "n_u": n_u}) == scalings(n_t, n_u)


@pytest.mark.parametrize("name", ["precoder_cnn", "precoder_structured"])
def test_implemented_energy_is_the_weight_layers_plus_the_counted_ops(name):
    family = plugin_manager.get("models", name)
    arch, bits = {"c_out": 8, "d_fcl": 64, "n_t": 64, "n_u": 4}, [2, 4, 8, 16]
    weight_layers = family.describe(arch)[:4]
    expected = dnn_energy(weight_layers, bits).total_uj + operations_energy(family.weightless_operations(arch)).total_uj
    implemented = family.energy(arch, bits, counting="implemented")
    assert implemented.total_uj == pytest.approx(expected)
    assert [e.name for e in implemented.layers] == ["CONV", "FCL1", "FCL2", "FCL3", "weightless"]
    assert family.energy(arch, bits).total_uj == pytest.approx(family.energy(arch, bits, counting="paper").total_uj)


def test_the_counted_map_is_the_one_exported():
    """served() (what the exporter converts and the counter runs) is the torch model with its scalings."""
    family = plugin_manager.get("models", "precoder_structured")
    with torch.random.fork_rng():  # leave the global generator as the other tests find it
        torch.manual_seed(0)
        model = family.build({"c_out": 2, "d_fcl": 16, "n_t": 16, "n_u": 2}).eval()
        H = torch.randn(3, 2, 16, dtype=torch.complex64) * 1e-3
    model.calibrate(0.5, 100.0)
    noise, p_max = 1e-6, 2.0
    with torch.no_grad():
        W = model(H / math.sqrt(noise), p_max)
        planes = torch.stack([H.real, H.imag], 1)
        served = model.served(planes, 0.5 / math.sqrt(noise), math.sqrt(p_max))
    reference = torch.stack([W.real, W.imag], 1)
    # the export's float parity bound (plugins/export/tflite.py): 1e-4 of the output scale
    assert float((served - reference).abs().max()) <= 1e-4 * float(reference.abs().max())


def test_cli_names_the_counting_and_the_weightless_ops():
    result = run_cli("energy", "dnn", "--model", "precoder_structured", "--cout", "8", "--dfcl", "512",
                     "--bits", "2,2,2,2", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["counting"] == "implemented"
    assert [layer["name"] for layer in out["layers"]] == ["CONV", "FCL1", "FCL2", "FCL3"]
    assert out["weightless"]["operations"] == (structure(64, 4) + scalings(64, 4)).model_dump()
    layers_pj = sum(e["total_pj"] for e in out["energy"]["layers"]) + out["weightless"]["energy"]["total_pj"]
    assert out["energy"]["total_uj"] == pytest.approx(layers_pj / 1e6)
