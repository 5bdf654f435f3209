"""Pareto fronts: energy efficiency (bit/s/Hz per uJ) against sum rate, both to be maximized."""

from __future__ import annotations

from typing import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (>= in both coordinates, > in one), by rising rate."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best_second = float("-inf")
    for i in order:
        if points[i][1] > best_second:
            front.append(i)
            best_second = points[i][1]
    return sorted(front, key=lambda i: points[i][0])
