"""Error rates with errors counted: Clopper-Pearson intervals, the stopping rule, crossings over seeds (issue 21,
item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from edgejoule import plugin_manager
from edgejoule.errors import EdgejouleError
from edgejoule.tasks.detection import ChannelSource, constellation, error_rates
from edgejoule.tasks.error_rate import clopper_pearson, count_errors, format_rate, parse_snr_list, snr_at_target


def test_clopper_pearson_covers_p_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    for p, n in ((0.01, 2000), (0.2, 50)):
        k = rng.binomial(n, p, 2000)
        covered = np.mean([lo <= p <= hi for lo, hi in (clopper_pearson(int(x), n) for x in k)])
        # exact intervals are conservative: at least 95 %, and not far above for these n
        assert 0.94 <= covered <= 0.995, (p, n, covered)
    assert clopper_pearson(0, 100)[0] == 0.0 and clopper_pearson(100, 100)[1] == 1.0
    assert clopper_pearson(0, 1000)[1] == pytest.approx(1 - 0.025 ** (1 / 1000))  # the k = 0 bound in closed form


def test_stopping_rule_stops_at_the_first_chunk_with_100_errors() -> None:
    rng = np.random.default_rng(1)
    calls = []

    def draw(n: int) -> tuple[int, int]:
        errors = int(rng.binomial(n * 100, 0.01))
        calls.append(errors)
        return errors, n * 100

    count = count_errors(draw, max_draws=10_000, chunk=10)
    assert count.errors >= 100 and count.errors - calls[-1] < 100  # not one chunk earlier, not one later
    assert count.draws == 10 * len(calls) < 10_000 and not count.bounded
    report = count.report()
    assert report["upper_bound"] is None and report["ci_low"] < count.rate < report["ci_high"]


def test_too_few_errors_are_reported_as_the_upper_bound() -> None:
    count = count_errors(lambda n: (0, n * 50), max_draws=1000, chunk=100)
    assert count.draws == 1000 and count.errors == 0 and count.bounded
    report = count.report()
    assert report["upper_bound"] == pytest.approx(clopper_pearson(0, 50_000)[1])
    assert format_rate(report).startswith("<= 7.4e-05 (0 err)")
    fixed = count_errors(lambda n: (n, n * 10), max_draws=500, chunk=100, min_errors=None)
    assert fixed.draws == 500 and fixed.errors == 500  # a fixed budget draws everything


def test_detection_error_rates_stop_at_100_errors() -> None:
    const = constellation("qpsk")
    lmmse = plugin_manager.get("baselines", "lmmse-detector")
    detect = lambda b: lmmse.run(b.H, b.y, b.noise_var, const=const).output  # noqa: E731
    low, high = error_rates(detect, ChannelSource(8, 4), const, [-3.0, 30.0], 20_000, batch=500, min_errors=100)
    assert 100 <= low.ber_point["errors"] < 100 + 500 * 8 and low.bits < 20_000 * 8  # stopped after one batch or so
    # 8x4 at 30 dB: no 100 errors in the cap, so every detection is drawn and the bound is what is stated
    assert high.bits == 20_000 * 8 and high.ber_point["upper_bound"] is not None


def test_crossing_over_seeds_with_a_t_interval() -> None:
    snr = [0.0, 5.0, 10.0, 15.0]
    shifts = [0.0, 1.0, 2.0]
    # BER 10^(-(x - s)/5): crosses 1e-2 at x = 10 + s exactly (linear in log-BER)
    curves = [[10 ** (-(x - s) / 5) for x in snr] for s in shifts]
    crossing = snr_at_target(snr, curves, 1e-2)
    assert crossing.per_seed == pytest.approx([10.0, 11.0, 12.0])
    assert crossing.mean == pytest.approx(11.0)
    half = 4.302653 * 1.0 / np.sqrt(3)  # t_{0.975, 2} * s / sqrt(3), s = 1
    assert (crossing.ci_low, crossing.ci_high) == pytest.approx((11.0 - half, 11.0 + half), rel=1e-5)
    never = snr_at_target(snr, curves + [[0.5] * 4], 1e-2)
    assert never.per_seed[-1] is None and never.mean is None


def test_clustered_errors_widen_the_interval_over_draws() -> None:
    """Errors that come in whole draws (a slot in a deep fade) make the draws, not the bits, the sample."""
    rng = np.random.default_rng(5)
    count = count_errors(lambda n: (rng.binomial(1, 0.02, n) * 300, n * 300), max_draws=2000, chunk=50,
                         min_draws=2000)
    low, high = count.interval
    over_low, over_high = count.draw_interval
    assert count.rate == pytest.approx(0.02, rel=0.3)
    # the binomial interval of 600,000 "independent" bits is ~20x narrower than the truth over 2000 draws
    assert (over_high - over_low) > 10 * (high - low) and over_low < 0.02 < over_high
    assert format_rate(count.report()).count("[") == 2


def test_operating_points_are_finite_and_in_range_at_every_boundary() -> None:
    from pydantic import ValidationError

    assert parse_snr_list("16, 0,8", "--snr") == [0.0, 8.0, 16.0]  # sorted: crossings are read left to right
    for bad in ("inf", "nan", "-1e300", "101", "-51", "x"):
        with pytest.raises(EdgejouleError, match="--snr must be comma-separated finite numbers"):
            parse_snr_list(f"0,{bad}", "--snr")
    # the requests themselves refuse them too, for callers that bypass the CLI
    torch = pytest.importorskip("torch")  # noqa: F841
    from edgejoule.plugins.detection.detect_experiment import DetectRequest
    from edgejoule.plugins.reception.distill_experiment import DistillRequest

    for bad in (float("inf"), float("nan"), 1e30):
        with pytest.raises(ValidationError):
            DetectRequest(snr_db=[0.0, bad])
        with pytest.raises(ValidationError):
            DistillRequest(sinr_db=[bad])
        with pytest.raises(ValidationError):
            DistillRequest(train_sinr_db=(0.0, bad))
    with pytest.raises(ValidationError):
        DistillRequest(temperature=float("inf"))
