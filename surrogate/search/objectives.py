"""Objectives of the search: image mismatch against a target image, and Pareto fronts.

A candidate's image objective is ``1 - SSIM`` between its simulated image (noise-free, the given
imaging conditions, the fast incoherent HAADF model by default) and the target image, both
standardised (zero mean, unit variance) so that the score ignores the overall intensity scale.
Both must have the same sampling [Å/px] and shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, cast

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.pareto import crowding_distance, non_dominated_sort, pareto_front  # re-exported

if TYPE_CHECKING:
    from surrogate.simulate import ImagingConditions, SimulationSettings

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
    conditions: ImagingConditions | Mapping[str, Any] | None = None
    settings: SimulationSettings | Mapping[str, Any] | None = None
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
        # __post_init__ made both the dataclasses
        conditions, settings = cast("ImagingConditions", self.conditions), cast("SimulationSettings", self.settings)
        return render(atoms, [conditions], (self.target.shape[0], self.target.shape[1]), settings, noise=False)[0]

    def __call__(self, atoms: Atoms) -> float:
        """``1 - SSIM`` of the simulated image of ``atoms`` against the target; NaN when it cannot
        be simulated (a cell smaller than the field of view, overlapping atoms)."""
        from surrogate.errors import SimulationError

        try:
            image = self.simulate(atoms)
        except SimulationError:
            return float("nan")
        return image_mismatch(image, self.target)
