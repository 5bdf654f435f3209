"""One counting rule for detection and reception: the classical detectors' and the LS+LMMSE receiver's
operations read from their code, the unfolded nets' projections and the deeprx features counted as they run,
against hand counts; both countings in the experiments' reports."""

from __future__ import annotations

import numpy as np
import pytest

from edgejoule import plugin_manager
from edgejoule.energy.accelerator import dnn_energy
from edgejoule.energy.counting import OperationCount, count_call, count_operations, counted, operations_energy
from edgejoule.plugins.detection.detectors import linear_detect
from edgejoule.tasks.ofdm import OfdmConfig, simulate

torch = pytest.importorskip("torch")


def elimination(n: int, m: int) -> OperationCount:
    """Gram matrix H^T H (n m^2, m^2 words) and H^T y (n m, m words); per pivot k of the Gaussian elimination on
    [G | b] a reciprocal, the m-k-1 factors and the (m-k-1)(m-k) products of the update, then the subtraction;
    per back substitution step the m-k-1 products, their sum, the subtraction and the product by the
    reciprocal. Memory: 2 accesses per result word."""
    ops = OperationCount(multiplications=n * m * m + n * m, memory=2 * (m * m + m))
    for k in range(m):
        below = m - k - 1
        ops += OperationCount(multiplications=below + below * (below + 1), divisions=1,
                              memory=2 * (1 + below + 2 * below * (below + 1)))
        ops += OperationCount(multiplications=below + 1, memory=2 * (below + 3))
    return ops


@pytest.mark.parametrize("n, m", [(4, 2), (16, 8)])
def test_linear_detectors_count_what_their_code_does(n, m):
    zf = plugin_manager.get("baselines", "zf-detector").operations(n=n, m=m)
    lmmse = plugin_manager.get("baselines", "lmmse-detector").operations(n=n, m=m)
    assert zf == elimination(n, m)
    assert lmmse == elimination(n, m) + OperationCount(memory=2 * m * m)  # the diagonal loading: m^2 additions
    # the solve is (m^3 - m)/3 + m^2 products and m reciprocals: the paper's Cholesky m^3/3 + m^2, less m/3
    paper = plugin_manager.get("baselines", "zf-detector").op_count(n=n, m=m)
    assert zf.multiplications == pytest.approx(paper - m / 3) and zf.divisions == m


def test_the_counted_solve_computes_what_lapack_does():
    """linear_detect runs LAPACK (np.linalg.solve); on Counted arrays the same call runs the elimination written
    with ufuncs that prices it, which must give LAPACK's solution, so that what is counted is what runs."""
    rng = np.random.default_rng(3)
    H, y = rng.normal(size=(64, 16, 8)).astype(np.float32), rng.normal(size=(64, 16)).astype(np.float32)
    for nv in (None, rng.uniform(0.01, 1.0, 64)):
        with count_operations():
            as_counted = linear_detect(*counted(H, y), None if nv is None else counted(nv)[0])
        np.testing.assert_allclose(np.asarray(as_counted), linear_detect(H, y, nv), rtol=1e-5, atol=1e-6)
    A = rng.normal(size=(2, 5, 6, 6))
    gram, B = np.swapaxes(A, -1, -2) @ A + 0.1 * np.eye(6), rng.normal(size=(2, 5, 6, 3))
    np.testing.assert_allclose(np.asarray(np.linalg.solve(*counted(gram, B))), np.linalg.solve(gram, B), rtol=1e-9)


@pytest.mark.parametrize("m, rhs", [(1, 1), (4, 3), (8, 2)])
def test_the_counted_solve_prices_the_elimination(m, rhs):
    """Per pivot a reciprocal, the factors below it and the update of the rows below (right-hand sides included);
    per back substitution step the products with the known unknowns, their sum, the subtraction and the product
    by the pivot's reciprocal, for every right-hand side."""
    rng = np.random.default_rng(m)
    A = rng.normal(size=(1, m, m))
    gram, B = np.swapaxes(A, -1, -2) @ A + np.eye(m), rng.normal(size=(1, m, rhs))
    expected = OperationCount()
    for k in range(m):
        below = m - k - 1
        expected += OperationCount(multiplications=below + below * (below + rhs), divisions=1,
                                   memory=2 * (1 + below + 2 * below * (below + rhs)))
        expected += OperationCount(multiplications=below * rhs + rhs, memory=2 * (below * rhs + 3 * rhs))
    assert count_call(np.linalg.solve, gram, B) == expected


def test_a_numpy_function_without_a_price_still_raises():
    H, y = np.ones((1, 4, 2)), np.ones((1, 4))
    with pytest.raises(TypeError, match="cannot be counted"):
        count_call(lambda H, y: np.linalg.inv(np.swapaxes(H, -1, -2) @ H), H, y)
    with pytest.raises(TypeError, match="cannot be counted"):
        count_call(lambda H, y: np.einsum("bij,bi->bj", H, y), H, y)
    with pytest.raises(TypeError, match="b of shape"):  # a vector right-hand side: numpy 2 reads it two ways
        count_call(lambda H, y: np.linalg.solve(np.swapaxes(H, -1, -2) @ H, y[:, :2]), H, y)


@pytest.mark.parametrize("n, m, order", [(4, 2, 4), (8, 4, 4), (4, 2, 16)])
def test_ml_counts_its_candidate_search(n, m, order):
    """Every candidate's Hx (n m products) and squared distance (n), the distances' sums; the arg min is comparisons."""
    candidates = order ** (m // 2)
    ops = plugin_manager.get("baselines", "ml-detector").operations(n=n, m=m, order=order)
    words = candidates * n * 3 + candidates  # Hx, y - Hx, its square; the sums
    assert ops == OperationCount(multiplications=candidates * (n * m + n), memory=2 * words)


def receiver(cfg: OfdmConfig) -> OperationCount:
    """LS+LMMSE by hand (plugins/reception/ofdm_receiver.py): a complex division per pilot (6 products, 2
    divisions), the frequency pass (two complex-by-real taps per pilot symbol's subcarrier), the time pass (two
    taps per RE, one with a single pilot symbol), then per RE |h|^2 (2), its reciprocal (1 division), conj(h) y
    (4) times it (2), the precision |h|^2 / sigma^2 (1, and one division per slot), and per dimension L squared
    distances and one product per bit."""
    n_p, s, n = int(cfg.pilot_mask.sum()), len(cfg.pilot_symbols), cfg.n_sym * cfg.n_sc
    levels, k = cfg.const.levels_per_dim, cfg.const.bits_per_dim
    mults = 6 * n_p + 4 * s * cfg.n_sc + 2 * min(2, s) * n + n * (2 + 4 + 2 + 1 + 2 * levels + 2 * k)
    return OperationCount(multiplications=mults, divisions=2 * n_p + n + 1)


def features(cfg: OfdmConfig) -> OperationCount:
    """deeprx's features by hand: the LS, interpolation, |h|^2 and conj(h) y of :func:`receiver`, over a real."""
    n_p, s, n = int(cfg.pilot_mask.sum()), len(cfg.pilot_symbols), cfg.n_sym * cfg.n_sc
    mults = 6 * n_p + 4 * s * cfg.n_sc + 2 * min(2, s) * n + n * (2 + 4)
    return OperationCount(multiplications=mults, divisions=2 * n_p + 2 * n)


def _arith(ops: OperationCount) -> OperationCount:
    return OperationCount(multiplications=ops.multiplications, divisions=ops.divisions, roots=ops.roots)


GRIDS = [OfdmConfig(n_sc=4, n_sym=3, pilot_symbols=(1,)), OfdmConfig(n_sc=6, n_sym=4, pilot_symbols=(0, 3)),
         OfdmConfig(n_sc=24, modulation="16qam")]


@pytest.mark.parametrize("cfg", GRIDS)
def test_receiver_counts_what_its_code_does(cfg):
    base = plugin_manager.get("baselines", "ls-lmmse")
    ops = base.operations(cfg)
    assert _arith(ops) == receiver(cfg) and ops.memory > 0
    result = base.run(cfg, simulate(cfg, 10.0, np.random.default_rng(0), n=3))
    assert np.array_equal(result.operations, np.tile(ops.as_row(), (3, 1)))


def test_the_two_tap_interpolation_is_the_weight_matrices():
    from edgejoule.tasks.ofdm import interpolate, interpolation_weights

    for cfg in GRIDS + [OfdmConfig(n_sc=24, pilot_symbols=(2, 7, 11))]:
        slot = simulate(cfg, 20.0, np.random.default_rng(1), n=4)
        w_f, w_t = interpolation_weights(cfg)
        sym = sorted(cfg.pilot_symbols)
        rows = slot.h_ls[:, sym][:, :, np.nonzero(cfg.pilot_mask[sym[0]])[0]]
        dense = np.einsum("bsp,pf,st->btf", rows, w_f, w_t)
        np.testing.assert_allclose(interpolate(cfg, slot.h_ls), dense, rtol=0, atol=1e-6)


@pytest.mark.parametrize("width, blocks", [(4, 1), (16, 3)])
def test_deeprx_implemented_is_weight_layers_plus_features_and_residuals(width, blocks):
    from edgejoule.plugins.reception.deeprx_arch import DeepRxArch, feature_operations, grid

    family = plugin_manager.get("models", "deeprx")
    arch = DeepRxArch(width=width, blocks=blocks, n_sc=12)
    cfg = grid(arch)
    assert _arith(feature_operations(cfg)) == features(cfg)
    residuals = OperationCount(memory=blocks * 2 * arch.n_sym * arch.n_sc * width)  # x + block(x), K times
    assert family.weightless_operations(arch) == feature_operations(cfg) + residuals
    layers = family.describe(arch)
    bits = [8] * (len(layers) - 1)
    expected = dnn_energy(layers[1:], bits).total_uj + operations_energy(feature_operations(cfg) + residuals).total_uj
    implemented = family.energy(arch, bits)
    assert implemented.total_uj == pytest.approx(expected)
    assert implemented.layers[-1].name == "weightless" and all(e.name != "features" for e in implemented.layers)
    paper = family.energy(arch, bits, counting="paper")
    assert paper.total_uj == pytest.approx(dnn_energy(layers, [16, *bits]).total_uj)
    assert implemented.total_uj > paper.total_uj


@pytest.mark.parametrize("kind", ["pgd", "admm"])
@pytest.mark.parametrize("modulation, thresholds", [("qpsk", 1), ("16qam", 3)])
def test_unfolded_nets_add_their_projections_to_the_described_layers(kind, modulation, thresholds):
    """describe() lists each iteration's products with H and H^T and its step scalings; the projection
    psi_t(v) = offset + a sum_j (1 + tanh((v - c_j)/t)) is not there. Per layer: exp(log t) (a root), per entry
    and threshold a subtraction, a division by t, a tanh (an exponential and a division) and 1 + ., the sum
    over thresholds, the product by a and the offset."""
    family = plugin_manager.get("models", "unfolded")
    arch = {"kind": kind, "layers": 3, "n_r": 4, "n_u": 2, "modulation": modulation}
    m, per = 4, 4 * thresholds
    layer = OperationCount(multiplications=m, divisions=2 * per, roots=1 + per,
                           memory=2 * (1 + 4 * per + 3 * m))
    assert family.weightless_operations(arch) == layer * 3
    bits = [4] * 3
    paper = family.energy(arch, bits, 4, counting="paper")
    assert paper.total_uj == pytest.approx(dnn_energy(family.describe(arch), bits, 4).total_uj)
    implemented = family.energy(arch, bits, 4)
    assert implemented.total_uj == pytest.approx(paper.total_uj + operations_energy(layer * 3).total_uj)


@pytest.mark.parametrize("kind", ["pgd", "admm"])
def test_described_macs_are_the_products_each_iteration_runs(kind):
    """describe() is eqs. 7-11's input, so it must list every product of an iteration: the net run under the op
    counter with its projections skipped (counted apart, above) performs exactly the described MACs. ADMM-Net's
    relaxation (1 - gamma) z was missing (4m scalings listed, 5m run)."""
    from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch, describe
    from edgejoule.plugins.detection.unfolded_net import build_net
    from edgejoule.plugins.energy.op_counter import OperationCounter

    arch = UnfoldedArch(kind=kind, layers=3, n_r=4, n_u=2)
    net = build_net(arch).eval()
    H, y, noise_var = torch.randn(1, 8, 4), torch.randn(1, 8), torch.ones(1)
    with torch.no_grad(), OperationCounter(list(net.proj)) as counter:
        net(H, y, noise_var)
    assert counter.count.multiplications == sum(layer.macs for layer in describe(arch))


def test_a_torch_inverse_is_priced_as_the_numpy_solve():
    """One price for a linear solve in both backends: A^-1 under the op counter costs what np.linalg.solve(A, I)
    costs on Counted arrays (LAPACK's LU with the identity as right-hand sides)."""
    from edgejoule.plugins.energy.op_counter import OperationCounter

    A = torch.eye(6) + 0.1 * torch.randn(1, 6, 6)
    with torch.no_grad(), OperationCounter([]) as counter:
        torch.linalg.inv(A)
    assert counter.count == count_call(np.linalg.solve, np.eye(6)[None], np.eye(6)[None])
    assert counter.count.divisions == 6


@pytest.mark.parametrize("policy", ["learned", "noise-enhancement"])
def test_kaq_pays_for_reading_the_channel(policy):
    """KAQ's step follows the frame's ZF error std, the mean of every detection's sigma^2/2 mean diag (H^T H)^-1:
    per detection a Gram matrix (n m^2 products) and an m x m inverse, more than a ZF detection itself. It was
    not counted (a KAQ net cost what an LSQ net of its bits costs); now its implemented energy carries it, and
    the paper's counting, which has no such term, does not."""
    from edgejoule.plugins.detection.detect_experiment import net_energy
    from edgejoule.plugins.detection.kaq_core import policy_operations
    from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch

    n, m = 16, 8
    inverse = count_call(np.linalg.solve, np.eye(m)[None], np.eye(m)[None])
    one, three = (policy_operations(UnfoldedArch(layers=k), policy) for k in (1, 3))
    per_layer = {f: (getattr(three, f) - getattr(one, f)) / 2 for f in ("multiplications", "divisions", "roots")}
    frame = {f: getattr(one, f) - per_layer[f] for f in per_layer}
    assert frame["multiplications"] >= n * m * m + inverse.multiplications and frame["divisions"] >= m
    assert sum(per_layer.values()) <= 8  # a few scalars per layer
    assert policy_operations(UnfoldedArch(layers=3), "static") == OperationCount()
    zf = plugin_manager.get("baselines", "zf-detector").operations(n=n, m=m)
    assert frame["multiplications"] > zf.multiplications
    family, arch = plugin_manager.get("models", "unfolded"), UnfoldedArch(layers=3)
    kaq, lsq = net_energy(family, arch, 3, policy), net_energy(family, arch, 3)
    assert kaq["paper"] == lsq["paper"]
    assert kaq["implemented"] == pytest.approx(lsq["implemented"] + operations_energy(three).total_uj)


def test_an_aten_op_without_a_price_still_raises():
    from edgejoule.plugins.energy.op_counter import OperationCounter

    with pytest.raises(TypeError, match="no price for the aten op 'sigmoid'"):
        with torch.no_grad(), OperationCounter([]):
            torch.sigmoid(torch.zeros(1, 3))


def test_the_reports_name_their_counting():
    from edgejoule.plugins.detection.detect_experiment import Curve, DetectRequest, DetectResult, table
    from edgejoule.plugins.reception.distill_experiment import DistillRequest, markdown_table, receiver_entry

    point = {"errors": 1, "trials": 100, "rate": 0.01, "ci_low": 0.0, "ci_high": 0.05, "upper_bound": None}
    curve = Curve(name="zf-detector", model=None, quantizer=None, bits=16, ber=[0.01], ser=[0.02], snr_at_1e3=None,
                  snr_at_1e2=None, energy_uj=2.0, energy_uj_by_counting={"implemented": 2.0, "paper": 1.0},
                  ber_points=[point])
    detect = table(DetectResult(request=DetectRequest(snr_db=[0.0]), snr_db=[0.0], curves=[curve]))
    assert "| energy (uJ, implemented) | energy (uJ, paper) |" in detect and "| 2 | 1 |" in detect
    req = DistillRequest(n_sc=12, sinr_db=[10.0])
    entry = receiver_entry(req, "LS+LMMSE", "baseline", None, {"ber": [point]}, None)
    base = plugin_manager.get("baselines", "ls-lmmse")
    assert entry["energy_uj"] == entry["energy_uj_by_counting"]["implemented"] == pytest.approx(
        operations_energy(base.operations(req.cfg)).total_uj)
    distill = markdown_table({"request": req.model_dump(mode="json"), "sinr_db": [10.0], "receivers": [entry]})
    assert "| energy (uJ, implemented) | energy (uJ, paper) |" in distill
