"""Channel datasets of a site: generated once per (config, seed), cached on disk, split train/val/test.

A dataset holds the channel of every user position once (``channels`` [P, N_T]) and samples as index
tuples of N_U distinct positions (``users`` [S, N_U]); ``H(split)`` gathers them into the
``[S, N_U, N_T]`` arrays the tasks use. The cache file is named by the site config's content hash, so a
changed config can never be served a stale dataset.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from edgejoule.errors import EdgejouleError
from edgejoule.files import write_atomic
from edgejoule.settings import Settings
from edgejoule.sites.config import SiteConfig

if TYPE_CHECKING:  # edgejoule.interfaces imports edgejoule.sites: a runtime import here would be circular
    from edgejoule.interfaces import ChannelGenerator, Progress

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def cache_dir() -> Path:
    """Where datasets are cached: ``$EDGEJOULE_CACHE/datasets``, else ``edgejoule/datasets`` in the XDG cache
    directory (``$XDG_CACHE_HOME``, ``~/.cache`` where it is unset or not absolute)."""
    if (root := Settings().cache) is not None:
        return root / "datasets"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "edgejoule" / "datasets"


@dataclass(frozen=True)
class ChannelDataset:
    site: SiteConfig
    positions: np.ndarray  # float [P, 3]
    channels: np.ndarray  # complex64 [P, N_T]
    users: np.ndarray  # int [S, N_U]
    splits: dict[str, np.ndarray]  # split name -> sample indices

    @property
    def noise_power(self) -> float:
        return self.site.noise_power_w

    @property
    def p_max(self) -> float:
        return self.site.tx_power_w

    def indices(self, split: Split | None = None, limit: int | None = None) -> np.ndarray:
        if split is not None and split not in self.splits:
            raise EdgejouleError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        idx = np.arange(len(self.users)) if split is None else self.splits[split]
        return idx if limit is None else idx[:limit]

    def H(self, split: Split | None = None, limit: int | None = None) -> np.ndarray:
        """Channels ``[S, N_U, N_T]`` complex64 of a split (all samples if None), first ``limit`` only."""
        return self.channels[self.users[self.indices(split, limit)]]

    def export_npz(self, path: Path) -> Path:
        """Write ``H``, ``noise_power``, ``p_max`` and the split indices for use outside edgejoule."""
        n = len(self.users)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            H=self.H().astype(np.complex64),
            noise_power=np.full(n, self.noise_power),
            p_max=np.full(n, self.p_max),
            positions=self.positions[self.users],
            site=json.dumps(self.site.model_dump(mode="json")),
            **{f"{name}_idx": idx for name, idx in self.splits.items()},
        )
        return path


def user_positions(site: SiteConfig) -> np.ndarray:
    """Anchor points jittered into ``positions_per_anchor`` distinct positions each, on the ground plane."""
    rng = np.random.default_rng([site.seed, 1])
    anchors = np.repeat(site.anchor_points(), site.positions_per_anchor, axis=0)
    radius = site.jitter_m * np.sqrt(rng.uniform(size=len(anchors)))
    angle = rng.uniform(0, 2 * np.pi, size=len(anchors))
    offset = np.stack([radius * np.cos(angle), radius * np.sin(angle), np.zeros_like(radius)], -1)
    offset[:: site.positions_per_anchor] = 0.0  # each anchor itself stays on its circle
    return anchors + offset


def draw_samples(site: SiteConfig, n_positions: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """N_U distinct positions per sample, and a random train/val/test split of the samples."""
    if n_positions < site.n_users:
        raise EdgejouleError(
            f"site '{site.name}' has only {n_positions} positions with a path, fewer than its {site.n_users} users"
        )
    rng = np.random.default_rng([site.seed, 2])
    # argpartition of random keys draws N_U distinct positions per sample without a Python loop
    keys = rng.random((site.n_samples, n_positions), dtype=np.float32)
    users = np.argpartition(keys, site.n_users - 1, axis=1)[:, : site.n_users].astype(np.int32)
    order = rng.permutation(site.n_samples)
    n_train = int(round(site.split[0] * site.n_samples))
    n_val = int(round(site.split[1] * site.n_samples))
    splits = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return users, {k: np.sort(v) for k, v in splits.items()}


def generate(site: SiteConfig, generator: ChannelGenerator, progress: Progress | None = None) -> ChannelDataset:
    positions = user_positions(site)
    result = generator.generate(site, positions, progress)
    keep = np.asarray(result.valid, dtype=bool)
    positions, channels = positions[keep], np.asarray(result.channels, dtype=np.complex64)[keep]
    users, splits = draw_samples(site, len(positions))
    return ChannelDataset(site, positions, channels, users, splits)


def _cache_path(site: SiteConfig) -> Path:
    return cache_dir() / f"{site.name}-{site.cache_key()[:16]}.npz"


def _save(ds: ChannelDataset, path: Path) -> None:
    """Cache ``ds`` at ``path``, replaced whole (a killed run never leaves half an entry). The cache only saves
    time: where it cannot be written (a read-only or full disk) the run goes on with the dataset it generated."""
    arrays = {"format_version": FORMAT_VERSION, "positions": ds.positions, "channels": ds.channels, "users": ds.users,
              **{f"split_{k}": v for k, v in ds.splits.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda out: np.savez(out, **arrays), mode=0o644)
    except OSError as exc:
        log.warning("could not cache the dataset in %s: %s", path, exc.strerror or exc)


def _load(site: SiteConfig, path: Path) -> ChannelDataset | None:
    try:
        with np.load(path) as f:
            if int(f["format_version"]) != FORMAT_VERSION:
                return None
            return ChannelDataset(
                site, f["positions"], f["channels"], f["users"], {k: f[f"split_{k}"] for k in ("train", "val", "test")}
            )
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from another format: regenerate


def cached(site: SiteConfig) -> bool:
    return _cache_path(site).exists()


def load_dataset(
    site: SiteConfig,
    generator: ChannelGenerator | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> ChannelDataset:
    """The site's dataset, from the cache if present, else generated (and cached)."""
    path = _cache_path(site)
    if use_cache and path.exists():
        ds = _load(site, path)
        if ds is not None:
            return ds
    if generator is None:
        from edgejoule import plugin_manager

        generator = plugin_manager.get("channel_generators", site.generator)
    ds = generate(site, generator, progress)
    if use_cache:
        _save(ds, path)
    return ds
