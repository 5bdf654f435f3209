"""OFDM task and the LS+LMMSE baseline: grids, masks, channel statistics, BER behaviour."""

import numpy as np
import pytest

from edgejoule import plugin_manager
from edgejoule.errors import EdgejouleError
from edgejoule.plugins.reception.ofdm_receiver import op_count, receive
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, interpolate, ls_estimate, simulate, tdl_channel


@pytest.mark.parametrize("n_sc,step", [(12, 2), (36, 3)])
def test_slot_shapes_and_masks(n_sc: int, step: int) -> None:
    cfg = OfdmConfig(n_sc=n_sc, pilot_step=step, modulation="16qam")
    slot = simulate(cfg, [10.0, 20.0, 30.0], np.random.default_rng(0))
    assert slot.y.shape == slot.h_ls.shape == slot.h.shape == (3, 14, n_sc)
    assert slot.bits.shape == (3, 14, n_sc, 4)
    assert cfg.pilot_mask.sum() == 2 * len(range(0, n_sc, step))
    assert np.array_equal(cfg.pilot_mask[2], np.arange(n_sc) % step == 0)
    assert not cfg.pilot_mask[[0, 1, 3, 10, 12, 13]].any()
    assert np.all(slot.h_ls[:, cfg.data_mask] == 0) and np.all(slot.h_ls[:, cfg.pilot_mask] != 0)
    assert np.all(slot.bits[:, cfg.pilot_mask] == 0)
    assert np.allclose(np.abs(cfg.pilots[cfg.pilot_mask]), 1.0)


def test_noiseless_ls_is_exact_at_pilots_and_channel_has_unit_power() -> None:
    cfg = OfdmConfig(interference_share=0.0)
    slot = simulate(cfg, 300.0, np.random.default_rng(1), n=4)
    assert np.allclose(slot.h_ls[:, cfg.pilot_mask], slot.h[:, cfg.pilot_mask], atol=1e-4)
    h = tdl_channel(cfg, 4000, np.random.default_rng(2))
    assert abs(np.mean(np.abs(h) ** 2) - 1.0) < 0.05
    static = tdl_channel(cfg.model_copy(update={"doppler_hz": 0.0}), 3, np.random.default_rng(3))
    assert np.allclose(static, static[:, :1], atol=1e-5)  # no Doppler: constant over the slot


def test_ls_estimate_divides_by_pilots() -> None:
    cfg = OfdmConfig(n_sc=12)
    y = np.random.default_rng(4).standard_normal((2, 14, 12)).astype(np.complex64)
    est = ls_estimate(cfg, y)
    assert np.allclose(est[:, cfg.pilot_mask], y[:, cfg.pilot_mask] / cfg.pilots[cfg.pilot_mask])


def test_interpolation_recovers_a_linear_channel() -> None:
    cfg = OfdmConfig(n_sc=12)
    t, f = np.meshgrid(np.arange(14), np.arange(12), indexing="ij")
    h = (1 + 0.05 * t + 0.02j * f)[None].astype(np.complex64)
    est = interpolate(cfg, np.where(cfg.pilot_mask, h, 0))
    # inside the pilot span the linear channel is exact; the last subcarrier is held flat
    assert np.allclose(est[0, :, :11], h[0, :, :11], atol=1e-5)


def test_baseline_ber_falls_with_sinr_and_is_registered() -> None:
    cfg = OfdmConfig(n_sc=12)
    base = plugin_manager.get("baselines", "ls-lmmse")
    bers = []
    for s in (0.0, 15.0, 35.0):
        slot = simulate(cfg, s, np.random.default_rng(5), n=200)
        res = base.run(cfg, slot)
        e, n = bit_errors(cfg, res.output, slot.bits)
        bers.append(e / n)
        assert res.macs_per_sample[0] == op_count(cfg) == base.op_count(cfg)
    assert bers[0] > 0.15 and bers[0] > 5 * bers[1] > 5 * bers[2] and bers[2] < 5e-3


def test_genie_channel_beats_ls_estimate() -> None:
    cfg = OfdmConfig(n_sc=24)
    slot = simulate(cfg, 30.0, np.random.default_rng(6), n=200)
    genie = slot.model_copy(update={"h_ls": np.where(cfg.pilot_mask, slot.h, 0)})
    e_ls, n = bit_errors(cfg, receive(cfg, slot), slot.bits)
    e_gen, _ = bit_errors(cfg, receive(cfg, genie), slot.bits)
    assert e_gen < e_ls  # noiseless pilots help: the LS estimate's noise is part of the error floor


def test_bad_pilot_symbols_are_refused() -> None:
    with pytest.raises(EdgejouleError):
        OfdmConfig(pilot_symbols=(20,))


def test_channel_parameters_outside_the_model_are_refused() -> None:
    from pydantic import ValidationError

    # an infinite Doppler gave NaN channels and a BER table of 0.45 everywhere, without a word
    with pytest.raises(ValidationError):
        OfdmConfig(doppler_hz=float("inf"))
    with pytest.raises(EdgejouleError, match="a tenth of the subcarrier spacing"):
        OfdmConfig(doppler_hz=3001.0)
    assert OfdmConfig(doppler_hz=3000.0).doppler_hz == 3000.0
    with pytest.raises(ValidationError):
        OfdmConfig(delay_spread_ns=1e12)
