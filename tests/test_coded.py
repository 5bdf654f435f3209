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
