"""MIMO detection task and the classical detectors (numpy, real components throughout)."""

from __future__ import annotations

import numpy as np
import pytest

from edgejoule import plugin_manager
from edgejoule.errors import EdgejouleError
from edgejoule.plugins.detection.detectors import linear_detect, ml_detect
from edgejoule.sites import load_dataset
from edgejoule.tasks.detection import (
    ChannelSource,
    constellation,
    error_counts,
    error_rates,
    rayleigh_channels,
    real_channel,
    simulate,
    site_channels,
)
from edgejoule.tasks.error_rate import snr_at_ber


@pytest.mark.parametrize("name", ["qpsk", "16qam"])
def test_constellation_has_unit_energy_and_gray_labels(name):
    c = constellation(name)
    # E|x|^2 = 2 E[pam^2] = 1 for the complex symbol
    assert 2 * np.mean(c.levels**2) == pytest.approx(1.0)
    assert np.all(np.sum(np.abs(np.diff(c.gray, axis=0)), axis=1) == 1)  # neighbours differ in one bit
    assert len({tuple(g) for g in c.gray}) == c.levels_per_dim


def test_real_equivalent_model_matches_the_complex_one():
    rng = np.random.default_rng(0)
    G = rayleigh_channels(3, 4, 2, rng)
    x = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    y = np.einsum("bij,bj->bi", G, x)
    y_r = np.einsum("bij,bj->bi", real_channel(G), np.concatenate([x.real, x.imag], -1))
    np.testing.assert_allclose(y_r, np.concatenate([y.real, y.imag], -1), atol=1e-5)


def test_simulated_noise_has_the_requested_snr():
    rng = np.random.default_rng(1)
    b = simulate(rayleigh_channels(20000, 4, 2, rng), constellation("16qam"), 10.0, rng)
    noise = b.y - np.einsum("bij,bj->bi", b.H, b.x)
    assert np.mean(noise**2) * 2 == pytest.approx(0.1, rel=0.03)  # complex sigma^2 = 10^-1
    assert np.mean(b.x**2) * 2 == pytest.approx(1.0, rel=0.03)


def test_error_counts_count_gray_bits_and_symbols():
    rng = np.random.default_rng(2)
    c = constellation("16qam")
    b = simulate(rayleigh_channels(5, 4, 2, rng), c, 30.0, rng)
    x_hat = b.x.copy()
    assert error_counts(x_hat, b, c)[0::2] == (0, 0)
    x_hat[0, 0] = c.levels[(b.idx[0, 0] + 1) % 4 if b.idx[0, 0] < 3 else 2]  # one neighbouring PAM level
    bit_err, bits, sym_err, symbols = error_counts(x_hat, b, c)
    assert (bit_err, sym_err) == (1, 1) and bits == 5 * 4 * 2 and symbols == 10


def test_zf_inverts_a_noiseless_channel_and_ml_beats_linear_detectors():
    rng = np.random.default_rng(3)
    c = constellation("qpsk")
    b = simulate(rayleigh_channels(50, 4, 4, rng), c, 200.0, rng)
    np.testing.assert_allclose(linear_detect(b.H, b.y, None), b.x, atol=1e-3)
    src = ChannelSource(4, 4)
    ber = {
        name: error_rates(f, src, c, [8.0], 3000)[0].ber
        for name, f in {
            "zf": lambda b: linear_detect(b.H, b.y, None),
            "lmmse": lambda b: linear_detect(b.H, b.y, b.noise_var),
            "ml": lambda b: ml_detect(b.H, b.y, c),
        }.items()
    }
    assert ber["ml"] < ber["lmmse"] <= ber["zf"]


def test_detector_baselines_are_registered_with_op_counts():
    zf, lmmse, ml = (plugin_manager.get("baselines", n) for n in ("zf-detector", "lmmse-detector", "ml-detector"))
    assert lmmse.op_count(n=16, m=8) > zf.op_count(n=16, m=8) > 16 * 64
    assert ml.op_count(n=16, m=8, order=4) == 4**4 * (16 * 8 + 16)
    rng = np.random.default_rng(4)
    b = simulate(rayleigh_channels(7, 8, 4, rng), constellation("qpsk"), 10.0, rng)
    result = ml.run(b.H, b.y, b.noise_var, const=constellation("qpsk"))
    assert result.output.shape == (7, 8) and result.macs_per_sample[0] == ml.op_count(n=16, m=8, order=4)
    with pytest.raises(EdgejouleError, match="too large"):
        ml.run(b.H, b.y, b.noise_var, const=constellation("16qam"))


def test_snr_at_ber_interpolates_log_linearly():
    snr, ber = np.array([0.0, 10.0]), np.array([1e-1, 1e-3])
    assert snr_at_ber(snr, ber, 1e-2) == pytest.approx(5.0)
    assert snr_at_ber(snr, ber, 1e-4) is None


def test_site_channels_are_the_uplink_of_the_site(small_site):
    ds = load_dataset(small_site)
    H = ds.H("test")
    G = site_channels(H, 8, 4)
    assert G.shape == (len(H), 8, 4)
    np.testing.assert_allclose(np.sum(np.abs(G) ** 2, 1), 8, rtol=1e-4)  # per-user power control
    # reciprocity: user u's uplink column is the conjugate of its downlink row, up to the frame's scale
    ratio = G[:, :, 0] / np.conj(H[:, 0, :8])
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 8)), rtol=1e-3)
    with pytest.raises(EdgejouleError, match="at most"):
        site_channels(H, 8, 5)


@pytest.mark.parametrize("name, n_r, n_u, snr", [("qpsk", 8, 4, 2.0), ("16qam", 4, 3, 8.0)])
def test_sphere_decoder_equals_exhaustive_ml(name, n_r, n_u, snr):
    rng = np.random.default_rng(3)
    const = constellation(name)
    b = simulate(rayleigh_channels(200, n_r, n_u, rng), const, snr, rng)
    sphere = plugin_manager.get("baselines", "sphere-detector").run(b.H, b.y, b.noise_var, const=const)
    np.testing.assert_array_equal(sphere.output, ml_detect(b.H, b.y, const))
    exhaustive = plugin_manager.get("baselines", "ml-detector").op_count(n=2 * n_r, m=2 * n_u, order=const.order)
    assert sphere.macs_per_sample.mean() < exhaustive  # pruning visits a fraction of the tree


def test_sphere_decoder_runs_where_exhaustive_ml_cannot_and_prunes_more_at_high_snr():
    rng = np.random.default_rng(4)
    const = constellation("16qam")  # 8x8 16-QAM: 16^8 = 4.3e9 candidates
    G = rayleigh_channels(100, 8, 8, rng)
    with pytest.raises(EdgejouleError):
        ml_detect(real_channel(G), np.zeros((100, 16), np.float32), const)
    sphere = plugin_manager.get("baselines", "sphere-detector")
    ops = {}
    for snr in (12.0, 24.0):
        b = simulate(G, const, snr, rng)
        res = sphere.run(b.H, b.y, b.noise_var, const=const)
        ops[snr] = np.median(res.macs_per_sample)  # the mean is heavy-tailed: ill-conditioned channels
        x_true_dist = np.sum((b.y - np.einsum("bij,bj->bi", b.H, b.x)) ** 2, -1)
        x_hat_dist = np.sum((b.y - np.einsum("bij,bj->bi", b.H, res.output)) ** 2, -1)
        assert np.all(x_hat_dist <= x_true_dist + 1e-4)  # never farther than the transmitted vector
    assert ops[24.0] < ops[12.0] < sphere.op_count(n=16, m=16, order=16)
