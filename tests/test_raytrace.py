"""The Sionna RT generator on a small built-in scene: paths found, roofs and path-less positions dropped,
channels through load_dataset into the cache."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sionna.rt")

from edgejoule import plugin_manager  # noqa: E402
from edgejoule.plugins.precoding.wmmse import wmmse, wmmse_per_sample  # noqa: E402
from edgejoule.plugins.precoding.zf import zf_precoder  # noqa: E402
from edgejoule.plugins.sites.raytrace import RayTracer, _sionna, ground_mask  # noqa: E402
from edgejoule.sites import load_dataset  # noqa: E402
from edgejoule.sites.config import SiteConfig  # noqa: E402
from edgejoule.sites.dataset import generate, user_positions  # noqa: E402
from edgejoule.tasks.precoding import average_snr_db, sum_rate, total_power  # noqa: E402

pytestmark = pytest.mark.raytrace

CANYON = SiteConfig(name="canyon-test", generator="raytrace", scene="simple_street_canyon", bs_position_m=(0.0, 0.0, 20.0),
                    radii_m=(20.0, 40.0), angle_step_deg=45.0, positions_per_anchor=2, jitter_m=2.0, n_samples=40,
                    excess_loss_db=0.0)


def test_generator_is_registered():
    assert plugin_manager.get_manager().provider("channel_generators", "raytrace") == "raytrace"


def test_ground_mask_tells_streets_from_roofs():
    rt = _sionna()
    scene = rt.load_scene(rt.scene.simple_street_canyon, merge_shapes=True)
    bbox = scene.mi_scene.bbox()
    far_outside = np.array([[float(bbox.max[0]) + 50.0, 0.0, 0.0]])
    assert not ground_mask(scene, far_outside)[0]  # nothing below: not a place for a user
    grid = np.array([[x, y, 0.0] for x in range(-40, 41, 10) for y in range(-40, 41, 10)])
    mask = ground_mask(scene, grid)
    assert mask.any() and not mask.all()  # streets and buildings both exist in a street canyon


def test_channels_of_a_small_site():
    positions = user_positions(CANYON)
    result = RayTracer(max_depth=2, samples_per_src=10**5).generate(CANYON, positions)
    assert result.channels.shape == (len(positions), 64) and result.channels.dtype == np.complex64
    assert result.valid.any()
    assert np.all(np.abs(result.channels[result.valid]).max(axis=1) > 0)
    assert np.all(result.channels[~result.valid] == 0)
    # received power falls with distance on average (free-space spreading)
    dist = np.linalg.norm(positions[:, :2] - np.asarray(CANYON.bs_position_m[:2]), axis=1)
    power = np.sum(np.abs(result.channels) ** 2, axis=1)
    near, far = result.valid & (dist < 30), result.valid & (dist > 30)
    if near.any() and far.any():
        assert power[near].mean() > power[far].mean()


def test_ray_traced_dataset_goes_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEJOULE_CACHE", str(tmp_path))
    ds = load_dataset(CANYON, RayTracer(max_depth=1, samples_per_src=10**5))
    assert ds.H("train").shape[1:] == (4, 64)
    # positions on roofs or without a path are not in the dataset: every kept channel is nonzero
    assert len(ds.positions) < len(user_positions(CANYON))
    assert np.all(np.abs(ds.channels).max(axis=1) > 0)
    again = load_dataset(CANYON)  # from the cache: no second trace, same arrays
    np.testing.assert_array_equal(again.H(), ds.H())


def test_shipped_ray_traced_sites_stand_in_the_open():
    from edgejoule.sites.catalog import BUILTIN_SITES

    rt = _sionna()
    sites = [s for s in BUILTIN_SITES.values() if s.generator == "raytrace"]
    assert {s.propagation for s in sites} >= {"los", "nlos"}
    for site in sites:
        scene = rt.load_scene(getattr(rt.scene, site.scene), merge_shapes=True)
        bs = np.array([site.bs_position_m])
        assert ground_mask(scene, bs)[0], f"{site.name}: BS stands on a roof or inside a building"
        # most of the site's circles must be open ground, or its dataset holds too few positions
        assert ground_mask(scene, site.anchor_points()).mean() > 0.5, site.name


def test_wmmse_beats_zf_on_ray_traced_channels():
    # 55 dB of excess loss brings the canyon's 20-40 m links to the NLOS regime (~15 dB) of the shipped sites
    site = CANYON.with_overrides(excess_loss_db=55.0, n_samples=100)
    ds = generate(site, RayTracer(max_depth=2, samples_per_src=10**5))
    H = ds.H()
    assert 5 < average_snr_db(H, ds.p_max, ds.noise_power) < 25
    V, iterations, history = wmmse(H, ds.noise_power, ds.p_max, tol=1e-5, init="zf", trace=True)[:3]
    rates = sum_rate(H, V, ds.noise_power)
    assert rates.mean() >= sum_rate(H, zf_precoder(H, ds.p_max), ds.noise_power).mean()
    assert np.diff(np.stack(history), axis=0).min() >= -1e-9
    assert np.all(total_power(V) <= ds.p_max * (1 + 1e-6))
    for i in range(2):
        v, its = wmmse_per_sample(H[i], ds.noise_power, ds.p_max, tol=1e-5)
        assert its == iterations[i]
        assert sum_rate(H[i : i + 1], v[None], ds.noise_power)[0] == pytest.approx(rates[i], rel=1e-6)
