"""Pareto utilities shared by the search (multi-objective GA, basin hopping) and inference ranking
(the fit / energy front): every objective minimised."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from surrogate.errors import ConfigError

__all__ = ["pareto_front", "non_dominated_sort", "crowding_distance"]


def _points(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ConfigError(f"objective values must be (n_points, n_objectives), got shape {p.shape}")
    return p


def pareto_front(points: ArrayLike) -> np.ndarray:
    """Mask of the non-dominated points (all objectives minimised).

    A point is dominated when another is no worse in every objective and better in at least one.
    Equal points do not dominate each other (both stay). Points with a NaN are never on the front
    and dominate nothing.

    Parameters
    ----------
    points
        (n, k) objective values.

    Returns
    -------
    numpy.ndarray
        (n,) bool, True for points on the front.
    """
    p = _points(points)
    valid = ~np.isnan(p).any(axis=1)
    front = valid.copy()
    q = p[valid]
    idx = np.flatnonzero(valid)
    for a, i in enumerate(idx):
        dominated = (q <= q[a]).all(axis=1) & (q < q[a]).any(axis=1)
        front[i] = not dominated.any()
    return front


def non_dominated_sort(points: ArrayLike) -> np.ndarray:
    """Pareto rank of every point: 0 = on the front, 1 = on the front once rank 0 is removed, ...

    Points with a NaN get the largest rank + 1.
    """
    p = _points(points)
    rank = np.full(len(p), -1, dtype=int)
    valid = ~np.isnan(p).any(axis=1)
    remaining = np.flatnonzero(valid)
    r = 0
    while len(remaining):
        mask = pareto_front(p[remaining])
        rank[remaining[mask]] = r
        remaining = remaining[~mask]
        r += 1
    rank[~valid] = r
    return rank


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance of points (of one front): larger = more isolated; extremes inf."""
    p = _points(points)
    n, k = p.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(p[:, j], kind="stable")
        span = p[order[-1], j] - p[order[0], j]
        d[order[0]] = d[order[-1]] = np.inf
        if span > 0:
            d[order[1:-1]] += (p[order[2:], j] - p[order[:-2], j]) / span
    return d
