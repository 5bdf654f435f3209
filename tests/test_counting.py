"""One counting rule (issue 17): the operations read from the code against hand counts, the paper counting
against Table I, and the strongest classical references (best-of-init WMMSE, textbook and equal-power RZF)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgejoule import plugin_manager
from edgejoule.energy.counting import DIVISION_PRICE, ROOT_PRICE, Counted, OperationCount, count_call, operations_energy
from edgejoule.plugins.precoding.wmmse import wmmse
from edgejoule.plugins.precoding.zf import rzf_equal_precoder, rzf_precoder
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.precoding import sum_rate, total_power
from tests.conftest import run_cli


def gauss_jordan(n: int, m: int) -> tuple[int, int]:
    """Per pivot: |p|^2 (2), conj(p)/|p|^2 (2 divisions), the row of n + m entries times it (4 each), every
    row's update (n rows x (n + m) entries, 4 each)."""
    return n * (2 + 4 * (n + m) + 4 * n * (n + m)), 2 * n


def linear(n_t: int, n_u: int, equal: bool) -> tuple[int, int, int]:
    """K = H H^H, Gauss-Jordan on [K | I], the column powers diag(X^H K X), the scaling, W = H^H X."""
    gj_mul, gj_div = gauss_jordan(n_u, n_u)
    powers = 4 * n_u**3 + 2 * n_u**2
    scaling = 2 * n_u**2
    mults = 4 * n_u**2 * n_t + gj_mul + powers + scaling + 4 * n_t * n_u**2
    return (mults, gj_div + (n_u if equal else 1), n_u if equal else 1)


@pytest.mark.parametrize("n_t, n_u", [(64, 4), (16, 3)])
def test_linear_counts_match_hand_counts(n_t, n_u):
    for method, equal in (("zf", False), ("rzf", False), ("rzf-equal", True)):
        ops = plugin_manager.get("baselines", method).operations(n_t, n_u)
        assert (ops.multiplications, ops.divisions, ops.roots) == linear(n_t, n_u, equal), method
    mrt = plugin_manager.get("baselines", "mrt").operations(n_t, n_u)
    # |H|_F^2 (2 per entry), P / |H|^2, its root, the scaling (2 per entry)
    assert (mrt.multiplications, mrt.divisions, mrt.roots) == (4 * n_t * n_u, 1, 1)


@pytest.mark.parametrize("n_t, n_u", [(64, 4), (16, 3)])
def test_implemented_wmmse_is_the_nu_by_nu_algorithm(n_t, n_u):
    I, B = 7, 20
    gj_mul, gj_div = gauss_jordan(n_u, n_u)
    receivers = (4 * n_u**3 + 2 * n_u**2 + 2 * n_u, 3 * n_u, n_u)  # K X, |G|^2, |direct|^2; u, w; log w
    system = (2 * n_u + 3 * n_u + 2 * n_u**2, 0, 0)  # w u, w |u|^2, D K
    coefficients = (n_u**2 + gj_mul + 4 * n_u**2, gj_div, 0)  # mu I, Gauss-Jordan on [D K + mu I | I], X = inv diag(c)
    # K X, Y = inv X, the power tr(X^H K X) and its slope -2 Re tr(Y^H K X)
    solve = (coefficients[0] + 8 * n_u**3 + 4 * n_u**2 + 1, gj_div, 0)
    # Newton from lo (2 P, P / P_max, its root, the product, the quotient), the secant on P^(-1/2) (a root and a
    # division at each end, the product, the quotient), the doubled Newton step, lo + RTOL/2 hi, the midpoint
    candidates = (2 + 1 + 1 + 1 + 1, 2 + 2 + 1, 1 + 2)
    step = (candidates[0] + 2 * solve[0] + 1, candidates[1] + 2 * solve[1], candidates[2])  # two points, bracket check
    bound = (2 * n_u + n_u + coefficients[0], 1 + coefficients[1], 1)  # the bound, X at the final upper end
    zf_start = linear(n_t, n_u, False)
    equal_start = linear(n_t, n_u, True)
    start = (4 * n_u**2 * n_t + zf_start[0] - 4 * n_u**2 * n_t - 4 * n_t * n_u**2 + equal_start[0]
             - 4 * n_u**2 * n_t - 4 * n_t * n_u**2 + 2 * receivers[0],
             2 * n_u**2 + zf_start[1] + equal_start[1] + 2 * receivers[1], zf_start[2] + equal_start[2] + 2 * receivers[2])
    finish = (4 * n_t * n_u**2, 2 * n_u**2, 0)  # X / sigma, H^H X
    expected = [start[i] + finish[i] + I * (system[i] + solve[i] + receivers[i]) + I * bound[i]
                + I * B * step[i] for i in range(3)]
    ops = plugin_manager.get("baselines", "wmmse").operations(n_t, n_u, iterations=I, bisection_steps=B)
    assert [ops.multiplications, ops.divisions, ops.roots] == expected


def test_paper_counting_reproduces_table_i():
    def energy(*args):
        result = run_cli("energy", "baseline", "--counting", "paper", "--nt", "64", "--nu", "4", "--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["energy_uj"]

    assert round(energy("--method", "zf"), 5) == 0.00809
    assert round(energy("--method", "wmmse", "--iterations", "92.8"), 1) == 258.6
    dnn = run_cli("energy", "dnn", "--cout", "64", "--dfcl", "1024", "--bits", "16,16,16,16", "--counting", "paper",
                  "--json")
    assert round(json.loads(dnn.stdout)["energy"]["total_uj"], 2) == 51.73


def test_divisions_and_roots_are_priced():
    ops = OperationCount(multiplications=10, divisions=2, roots=3, memory=0)
    assert ops.priced_multiplications == 10 + 2 * DIVISION_PRICE + 3 * ROOT_PRICE
    assert operations_energy(ops).total_uj == pytest.approx(0.86e-6 * ops.priced_multiplications * (1 + 1 / 8))


def test_an_uncountable_operation_is_refused():
    with pytest.raises(TypeError, match="cannot be counted"):
        count_call(np.linalg.inv, np.eye(3)[None] + 0j)
    assert isinstance(np.ones((1, 2)).view(Counted) * 2, Counted)


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "known for precoding: mrt, rzf, rzf-equal, wmmse, zf"), (["--method", "zf", "--counting", "folk"], "known: implemented, paper"),
    (["--method", "wmmse", "--iterations", "0"], "--iterations must be at least 1"),
    (["--method", "wmmse", "--iterations", "5", "--bisection-steps", "0.5"], "--bisection-steps must be at least 1")])
def test_bad_energy_input_is_one_line_and_exit_2(args, message):
    result = run_cli("energy", "baseline", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_rzfs_match_hand_implementations():
    rng = np.random.default_rng(3)
    H = rng.normal(size=(6, 4, 16)) + 1j * rng.normal(size=(6, 4, 16))
    noise, p = 0.3, 2.0
    for i in range(len(H)):
        h = H[i]
        V = np.conj(h.T) @ np.linalg.inv(h @ np.conj(h.T) + 4 * noise / p * np.eye(4))
        textbook = V * np.sqrt(p) / np.linalg.norm(V)
        equal = V / np.linalg.norm(V, axis=0) * np.sqrt(p / 4)
        np.testing.assert_allclose(rzf_precoder(H, noise, p)[i], textbook, atol=1e-12)
        np.testing.assert_allclose(rzf_equal_precoder(H, noise, p)[i], equal, atol=1e-12)


def test_best_of_init_wmmse_is_never_below_the_zf_started_one():
    for site in ("campus-los", "urban-nlos"):
        ds = load_dataset(get_site(site))
        H = ds.H("test", 40)
        best = wmmse(H, ds.noise_power, ds.p_max)
        from_zf = wmmse(H, ds.noise_power, ds.p_max, init="zf")
        rate_best = sum_rate(H, best.precoders, ds.noise_power)
        assert np.all(rate_best >= sum_rate(H, from_zf.precoders, ds.noise_power) - 1e-9)
        assert np.all(total_power(best.precoders) <= ds.p_max * (1 + 1e-6))
        assert np.all(best.bisection_steps >= best.bisections)


def test_baseline_run_reports_both_countings():
    result = run_cli("baseline", "run", "--site", "urban-nlos", "--method", "wmmse", "--tol", "1e-2", "--limit", "30", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    energies = report["energy_uj_by_counting"]
    assert set(energies) == {"implemented", "paper"} and energies["implemented"] < energies["paper"]
    assert report["energy_uj"] == energies["implemented"] and report["bisection_steps_mean"] >= report["iterations_mean"]
