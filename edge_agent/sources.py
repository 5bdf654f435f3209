"""Where the agent's channel inputs come from: a replay of the site's test split (demos), or .npz files
(an array ``H`` [samples, N_U, N_T] each) written by the base station."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from core.errors import EdgejouleError


def replay(site: str) -> Iterator[np.ndarray]:
    from core.sites import get_site, load_dataset

    H = load_dataset(get_site(site)).H("test")
    while True:
        yield from H


def npz_files(path: Path) -> Iterator[np.ndarray]:
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise EdgejouleError(f"no .npz files in {path}")
    for file in files:
        with np.load(file) as data:
            if "H" not in data:
                raise EdgejouleError(f"{file} has no array 'H' [samples, N_U, N_T]")
            yield from data["H"]


def open_source(spec: str, site: str) -> Iterator[np.ndarray]:
    if spec == "replay":
        return replay(site)
    if spec.startswith("npz:"):
        return npz_files(Path(spec[4:]))
    raise EdgejouleError(f"unknown source '{spec}': use replay or npz:PATH")
