"""Coded BLER: the LDPC code, its BP decoder on LLRs, and coded evaluation of receivers and detectors (issue 21,
item 5)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgejoule import plugin_manager
from edgejoule.errors import EdgejouleError
from edgejoule.plugins.reception.ofdm_receiver import receive
from edgejoule.tasks.coded import block_errors, check_code, ldpc_code
from edgejoule.tasks.detection import ChannelSource, coded_error_rates, constellation
from edgejoule.tasks.detection import simulate as simulate_detection
from edgejoule.tasks.ofdm import OfdmConfig, simulate


def test_code_is_a_code_and_decodes_a_noiseless_block() -> None:
    code = ldpc_code("ldpc-r1/2", 312, seed=0)
    assert code.n == 312 and 156 <= code.k <= 160
    assert not ((code.H.astype(int) @ code.G.T.astype(int)) % 2).any()  # every generator row satisfies every check
    u = np.random.default_rng(0).integers(0, 2, (5, code.k)).astype(np.uint8)
    c = code.encode(u)
    assert np.array_equal(c[:, code.info_cols], u)  # systematic
    assert np.array_equal(code.decode(20.0 * (2.0 * c - 1.0)), u)
    bits = np.random.default_rng(1).integers(0, 2, (5, 312))
    assert block_errors(code, 20.0 * (2.0 * bits - 1.0), bits, np.random.default_rng(2)) == (0, 5)


def _bpsk_blocks(snr_db: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    bits = rng.integers(0, 2, (n, 312))
    var = 10 ** (-snr_db / 10)
    y = 2.0 * bits - 1.0 + np.sqrt(var) * rng.standard_normal(bits.shape)
    return 2 * y / var, bits


def test_coding_gain_on_awgn_and_failure_far_below_capacity() -> None:
    code = ldpc_code("ldpc-r1/2", 312)
    rng = np.random.default_rng(3)
    llr, bits = _bpsk_blocks(4.0, 300, rng)  # raw BER ~1.3 %: some bit of every 312-bit block is wrong
    uncoded = np.mean(np.any((llr > 0) != bits, axis=1))
    errors, blocks = block_errors(code, llr, bits, rng)
    assert uncoded > 0.9 and errors / blocks < 0.02, (uncoded, errors / blocks)
    llr, bits = _bpsk_blocks(-5.0, 100, rng)
    assert block_errors(code, llr, bits, rng)[0] >= 97


def test_coded_ofdm_receiver_beats_its_uncoded_blocks() -> None:
    """LS+LMMSE logits of static slots (noise only, a wide band and long delay spread: many independent fades per
    codeword, close to AWGN) through the code of a slot."""
    cfg = OfdmConfig(n_sc=48, delay_spread_ns=1000.0, doppler_hz=0.0, interference_share=0.0)
    mask = cfg.data_mask
    code = ldpc_code("ldpc-r1/2", int(mask.sum()) * 2)
    rng = np.random.default_rng(4)
    result = {}
    for sinr in (16.0, -8.0):
        slot = simulate(cfg, sinr, rng, n=150)
        llr, bits = receive(cfg, slot)[:, mask].reshape(150, -1), slot.bits[:, mask].reshape(150, -1)
        result[sinr] = (np.mean(np.any((llr > 0) != bits, axis=1)), block_errors(code, llr, bits, rng)[0] / 150)
    # measured: 78 % of the uncoded slots have a bit error, 0.7 % of the coded ones
    assert result[16.0][0] > 0.5 and result[16.0][1] < result[16.0][0] / 10, result
    assert result[-8.0][1] > 0.95, result


def test_coded_detection_follows_snr() -> None:
    const = constellation("qpsk")
    lmmse = plugin_manager.get("baselines", "lmmse-detector")
    detect = lambda b: lmmse.run(b.H, b.y, b.noise_var, const=const).output  # noqa: E731
    low, high = coded_error_rates(detect, ChannelSource(4, 4), const, [-10.0, 20.0], "ldpc-r1/2", max_blocks=60)
    assert low["errors"] >= 55 and low["draws"] == 60  # near 1, fewer than 100 errors: the cap and the bound
    assert high["errors"] == 0 and high["upper_bound"] is not None


def test_missing_ldpc_fails_in_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ldpc", None)
    with pytest.raises(EdgejouleError, match=r"pip install 'edgejoule\[research\]'"):
        check_code("ldpc-r1/2")
    with pytest.raises(EdgejouleError, match="unknown code"):
        check_code("turbo")


def test_max_log_ml_llrs_are_the_brute_force_ones_and_sign_the_ml_decision() -> None:
    from edgejoule.plugins.detection.soft_ml import ml_llrs

    for modulation, n_r, n_u in (("qpsk", 4, 2), ("16qam", 2, 1)):
        const = constellation(modulation)
        b = simulate_detection(ChannelSource(n_r, n_u).draw(40, np.random.default_rng(1)), const, 3.0,
                               np.random.default_rng(2))
        llr = ml_llrs(b.H, b.y, b.noise_var, const, chunk=7)  # chunks that do not divide the batch
        levels, bits = const.levels, const.gray  # [L], [L, bits_per_dim]
        L, m = len(levels), 2 * n_u
        for i in range(len(b.H)):
            best = {(k, j, v): np.inf for k in range(m) for j in range(const.bits_per_dim) for v in (0, 1)}
            for code in np.ndindex(*([L] * m)):  # every candidate, by its level indices
                d = float(np.sum((b.y[i] - b.H[i] @ levels[list(code)]) ** 2))
                for k in range(m):
                    for j in range(const.bits_per_dim):
                        key = (k, j, int(bits[code[k], j]))
                        best[key] = min(best[key], d)
            want = [[(best[k, j, 0] - best[k, j, 1]) / b.noise_var[i] for j in range(const.bits_per_dim)]
                    for k in range(m)]
            np.testing.assert_allclose(llr[i], want, rtol=1e-4, atol=1e-4)
        ml = plugin_manager.get("baselines", "ml-detector").run(b.H, b.y, b.noise_var, const=const).output
        decided = const.gray[np.rint(ml / const.scale + L - 1).astype(int) // 2]
        assert np.array_equal(llr > 0, decided.astype(bool))


def test_soft_ml_decodes_where_lmmse_and_hard_ml_decisions_fail() -> None:
    """The reference the learned detectors' coded BLER is read against: at -6 dB on Rayleigh 8x4, measured
    62/300 blocks lost with max-log ML LLRs, 102/297 with LMMSE's, 104/108 from hard ML decisions."""
    from edgejoule.plugins.detection.soft_ml import ml_soft

    const = constellation("qpsk")
    ml = plugin_manager.get("baselines", "ml-detector")
    lmmse = plugin_manager.get("baselines", "lmmse-detector")
    src = ChannelSource(8, 4)
    rate = {}
    for name, detect, llrs in (("soft", None, ml_soft(const)),
                               ("lmmse", lambda b: lmmse.run(b.H, b.y, b.noise_var, const=const).output, None),
                               ("hard", lambda b: ml.run(b.H, b.y, b.noise_var, const=const).output, None)):
        point = coded_error_rates(detect, src, const, [-6.0], "ldpc-r1/2", max_blocks=300, llrs=llrs)[0]
        rate[name] = point["errors"] / point["draws"]
    assert rate["soft"] < 0.7 * rate["lmmse"] and rate["lmmse"] < 0.5 * rate["hard"], rate


def _expected_and_observed_bit_errors(llr: np.ndarray, bits: np.ndarray) -> tuple[float, int]:
    """What calibrated LLRs predict (a bit with LLR l is wrong with probability 1 / (1 + e^|l|)) and what happened."""
    return float(np.sum(1.0 / (1.0 + np.exp(np.abs(llr.astype(np.float64)))))), int(np.sum((llr > 0) != bits))


def test_zf_llrs_with_each_stream_s_snr_are_calibrated_and_the_common_variance_is_not() -> None:
    """QPSK after ZF is each bit plus Gaussian noise of variance (sigma^2 / 2) M_ii: with that variance the max-log
    LLR is the exact one, so the errors it predicts are the errors made. With the noise variance for every stream
    (the nets' rule), a stream of an ill-conditioned channel looks as reliable as a good one: far fewer errors
    predicted than made."""
    from edgejoule.plugins.detection.soft_linear import linear_llrs
    from edgejoule.tasks.detection import maxlog_llrs

    const = constellation("qpsk")
    rng = np.random.default_rng(5)
    b = simulate_detection(ChannelSource(4, 4).draw(20_000, rng), const, 8.0, rng)
    bits = const.gray[b.idx].astype(bool)
    zf = plugin_manager.get("baselines", "zf-detector").run(b.H, b.y, b.noise_var).output
    expected, observed = _expected_and_observed_bit_errors(linear_llrs(b.H, b.y, b.noise_var, const, False), bits)
    assert observed > 1000 and abs(expected / observed - 1) < 0.1, (expected, observed)
    common, observed_common = _expected_and_observed_bit_errors(maxlog_llrs(const, zf, b.noise_var[:, None]), bits)
    assert observed_common == observed and common < 0.5 * observed, (common, observed)  # same signs, overconfident


def test_lmmse_llrs_are_unbiased_and_roughly_calibrated() -> None:
    """LMMSE's estimate shrinks each stream by mu_i; the LLRs scale it back and use SINR_i = mu_i / (1 - mu_i),
    residual interference taken as Gaussian: the predicted errors are near the observed ones (within 20 %), and
    the decisions are LMMSE's."""
    from edgejoule.plugins.detection.soft_linear import linear_llrs

    const = constellation("qpsk")
    rng = np.random.default_rng(6)
    b = simulate_detection(ChannelSource(4, 4).draw(20_000, rng), const, 4.0, rng)
    bits = const.gray[b.idx].astype(bool)
    llr = linear_llrs(b.H, b.y, b.noise_var, const, True)
    lmmse = plugin_manager.get("baselines", "lmmse-detector").run(b.H, b.y, b.noise_var).output
    assert np.array_equal(llr[..., 0] > 0, lmmse > 0)
    expected, observed = _expected_and_observed_bit_errors(llr, bits)
    assert observed > 1000 and abs(expected / observed - 1) < 0.2, (expected, observed)


def test_detect_decodes_each_detector_from_its_soft_output(tmp_path) -> None:
    """`detect --coded`: ML's coded row is the max-log reference (from hard decisions it lost 104 of 108 blocks
    at -6 dB, more than LMMSE's 102 of 297), and LMMSE's decodes its per-stream LLRs (measured at -6 dB on
    Rayleigh 8x4: 104 of 432 blocks lost, against 102 of 297 with the noise variance for every stream)."""
    import json
    import subprocess

    res = subprocess.run(
        [sys.executable, "-m", "edgejoule.cli.app", "detect", "--site", "rayleigh", "--model", "pgd", "--quantizer",
         "lsq", "--bits", "4", "--samples", "256", "--epochs", "1", "--qat-epochs", "1", "--snr=-6",
         "--eval-samples", "200", "--coded", "ldpc-r1/2", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    bler = {c["name"]: c["bler_points"][0] for c in json.loads(res.stdout)["curves"]}
    rate = {k: p["errors"] / p["draws"] for k, p in bler.items()}
    assert rate["ml-detector"] < 0.7 * rate["zf-detector"], rate
    const, lmmse = constellation("qpsk"), plugin_manager.get("baselines", "lmmse-detector")
    request = json.loads(res.stdout)["request"]
    common = coded_error_rates(lambda b: lmmse.run(b.H, b.y, b.noise_var).output, ChannelSource(8, 4), const,
                               [-6.0], "ldpc-r1/2", request["eval_blocks"], seed=request["seed"] + 1)[0]
    assert rate["lmmse-detector"] < 0.85 * common["errors"] / common["draws"], (rate, common)
    table = (tmp_path / "table.md").read_text()
    assert "max-log LLRs over all candidates" in table and "post-detection SINR" in table
