"""Objectives of the search: image mismatch against a target image, and Pareto fronts.

A candidate's image objective is ``1 - SSIM`` between its simulated image (noise-free, the given
imaging conditions, the fast incoherent HAADF model by default) and the target image, both
standardised (zero mean, unit variance) so that the score ignores the overall intensity scale.
Both must have the same sampling [Å/px] and shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError

__all__ = ["image_mismatch", "ImageObjective", "pareto_front", "non_dominated_sort", "crowding_distance"]


def image_mismatch(image: np.ndarray, target: np.ndarray) -> float:
    """``1 - SSIM`` of two standardised images of the same shape (0 = identical, up to 2)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(image, np.float64)
    b = np.asarray(target, np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"image shapes differ ({a.shape} vs {b.shape}): render at the target's shape")
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 1.0
    a = (a - a.mean()) / sa
    b = (b - b.mean()) / sb
    rng = float(max(np.ptp(a), np.ptp(b)))
    return float(1.0 - structural_similarity(a, b, data_range=rng))


@dataclass
class ImageObjective:
    """Mismatch between a candidate's simulated image and a target image.

    Parameters
    ----------
    target
        Target image (H, W), at ``conditions.sampling`` [Å/px] (e.g. an experimental image
        resampled to the canonical sampling, or a library image).
    conditions
        Imaging conditions of the simulation (:class:`surrogate.simulate.ImagingConditions`);
        default: incoherent HAADF at 0.2 Å/px.
    settings
        :class:`surrogate.simulate.SimulationSettings` (default settings).
    """

    target: np.ndarray
    conditions: object = None
    settings: object = None
    calls: int = field(default=0, init=False)

    def __post_init__(self):
        from surrogate.simulate import ImagingConditions, SimulationSettings

        self.target = np.asarray(self.target, np.float32)
        if self.target.ndim != 2 or min(self.target.shape) < 8:
            raise ConfigError(f"target image must be 2-D and at least 8 px wide, got shape {self.target.shape}")
        if self.conditions is None:
            self.conditions = ImagingConditions()
        elif isinstance(self.conditions, dict):
            self.conditions = ImagingConditions.from_dict(self.conditions)
        if self.settings is None:
            self.settings = SimulationSettings()
        elif isinstance(self.settings, dict):
            self.settings = SimulationSettings(**self.settings)

    def simulate(self, atoms: Atoms) -> np.ndarray:
        """Noise-free image of ``atoms`` at the target's shape and sampling."""
        from surrogate.simulate import render

        self.calls += 1
        return render(atoms, [self.conditions], tuple(self.target.shape), self.settings, noise=False)[0]

    def __call__(self, atoms: Atoms) -> float:
        """``1 - SSIM`` of the simulated image of ``atoms`` against the target; NaN when it cannot
        be simulated (a cell smaller than the field of view, overlapping atoms)."""
        from surrogate.errors import SimulationError

        try:
            image = self.simulate(atoms)
        except SimulationError:
            return float("nan")
        return image_mismatch(image, self.target)


def _points(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ConfigError(f"objective values must be (n_points, n_objectives), got shape {p.shape}")
    return p


def pareto_front(points: Sequence[Sequence[float]]) -> np.ndarray:
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


def non_dominated_sort(points: Sequence[Sequence[float]]) -> np.ndarray:
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


def crowding_distance(points: Sequence[Sequence[float]]) -> np.ndarray:
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
