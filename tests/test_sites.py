"""Sites and their datasets: determinism, caching, splits, export, shipped link budgets, user sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgejoule.errors import EdgejouleError
from edgejoule.plugins.sites.geometric import GeometricGenerator
from edgejoule.sites import get_site, list_sites, load_dataset
from edgejoule.sites.dataset import cache_dir, user_positions
from edgejoule.tasks.precoding import average_snr_db
from tests.conftest import run_cli


class CountingGenerator(GeometricGenerator):
    """The real geometric generator, counting how often it is asked to generate."""

    calls = 0

    def generate(self, site, positions, progress=None):
        type(self).calls += 1
        return super().generate(site, positions, progress)


def test_positions_follow_the_paper_geometry():
    site = get_site("urban-nlos")
    anchors = site.anchor_points()
    assert anchors.shape == (252, 3)
    radii = np.hypot(anchors[:, 0], anchors[:, 1])
    assert sorted(set(np.round(radii).astype(int))) == [50, 100, 150, 200, 250, 300, 350]
    positions = user_positions(site)
    assert len(positions) == 252 * site.positions_per_anchor
    assert len(np.unique(np.round(positions, 6), axis=0)) == len(positions)  # all distinct
    offsets = np.linalg.norm(positions - np.repeat(anchors, site.positions_per_anchor, axis=0), axis=1)
    assert offsets.max() <= site.jitter_m + 1e-9


def test_dataset_is_deterministic_and_seed_dependent():
    site = get_site("urban-nlos").with_overrides(n_samples=200)
    a = load_dataset(site, GeometricGenerator(), use_cache=False)
    b = load_dataset(site, GeometricGenerator(), use_cache=False)
    c = load_dataset(site.with_overrides(seed=1), GeometricGenerator(), use_cache=False)
    np.testing.assert_array_equal(a.H(), b.H())
    assert not np.allclose(a.H(), c.H())


def test_dataset_is_cached_by_config(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEJOULE_CACHE", str(tmp_path))
    site = get_site("campus-los").with_overrides(n_samples=100)
    CountingGenerator.calls = 0
    first = load_dataset(site, CountingGenerator())
    second = load_dataset(site, CountingGenerator())
    assert CountingGenerator.calls == 1
    np.testing.assert_array_equal(first.H(), second.H())
    assert len(list(cache_dir().glob("campus-los-*.npz"))) == 1
    load_dataset(site.with_overrides(excess_loss_db=30.0), CountingGenerator())
    assert CountingGenerator.calls == 2  # a changed config is never served the old dataset


def test_corrupt_cache_file_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEJOULE_CACHE", str(tmp_path))
    site = get_site("campus-los").with_overrides(n_samples=50)
    good = load_dataset(site, GeometricGenerator())
    path = next(cache_dir().glob("campus-los-*.npz"))
    path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(load_dataset(site, GeometricGenerator()).H(), good.H())


def test_splits_are_disjoint_and_cover_all_samples(small_site):
    ds = load_dataset(small_site)
    parts = [ds.splits[k] for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == small_site.n_samples
    assert len(np.unique(np.concatenate(parts))) == small_site.n_samples
    assert len(parts[0]) == int(round(0.8 * small_site.n_samples))
    users = ds.users
    assert all(len(set(row)) == small_site.n_users for row in users)  # distinct users per sample
    H = ds.H("test")
    assert H.dtype == np.complex64 and H.shape == (len(parts[2]), 4, 64)


@pytest.mark.parametrize("name, low, high", [("urban-nlos", 13.5, 16.5), ("campus-los", 27.0, 30.0)])
def test_shipped_sites_have_the_papers_snr(name, low, high):
    site = get_site(name)
    ds = load_dataset(site)
    assert low < average_snr_db(ds.H(), ds.p_max, ds.noise_power) < high


def test_export_npz(tmp_path):
    out = tmp_path / "nlos.npz"
    result = run_cli("sites", "export", "urban-nlos", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with np.load(out) as f:
        H = f["H"]
        assert H.dtype == np.complex64 and H.shape == (6000, 4, 64)
        assert f["noise_power"].shape == (6000,) and f["p_max"].shape == (6000,)
        assert np.all(f["p_max"] == 20.0)
        idx = np.concatenate([f["train_idx"], f["val_idx"], f["test_idx"]])
        assert sorted(idx) == list(range(6000))
        assert json.loads(str(f["site"]))["name"] == "urban-nlos"


def test_user_sites_from_a_directory(tmp_path, monkeypatch):
    site = get_site("urban-nlos").model_dump(mode="json") | {"name": "my-rooftop", "excess_loss_db": 0.0}
    (tmp_path / "my-rooftop.json").write_text(json.dumps(site))
    monkeypatch.setenv("EDGEJOULE_SITES", str(tmp_path))
    assert "my-rooftop" in list_sites() and get_site("my-rooftop").excess_loss_db == 0.0
    (tmp_path / "broken.json").write_text(json.dumps({"name": "broken", "n_users": 0}))
    with pytest.raises(EdgejouleError, match="broken.json is not a valid site config"):
        list_sites()


def test_unknown_site_lists_the_known_ones():
    with pytest.raises(EdgejouleError, match="unknown site 'atlantis'; known sites: .*urban-nlos"):
        get_site("atlantis")


@pytest.mark.parametrize("xdg, expected", [("/srv/cache", "/srv/cache/edgejoule/datasets"),
                                           ("relative/cache", "~/.cache/edgejoule/datasets"),
                                           (None, "~/.cache/edgejoule/datasets")])
def test_the_cache_follows_xdg_unless_edgejoule_cache_is_set(monkeypatch, xdg, expected):
    monkeypatch.delenv("EDGEJOULE_CACHE")
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert cache_dir() == Path(expected).expanduser()
    monkeypatch.setenv("EDGEJOULE_CACHE", "/data/ej")
    assert cache_dir() == Path("/data/ej/datasets")
