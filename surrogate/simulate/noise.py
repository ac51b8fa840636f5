"""Detector noise: electron counting statistics at a given dose."""

from __future__ import annotations

import numpy as np

__all__ = ["apply_dose"]


def apply_dose(image: np.ndarray, dose: float, sampling: float, seed: int = 0, mode: str = "haadf") -> np.ndarray:
    """Poisson counting noise at ``dose`` [e/Å²].

    ``image`` is the fraction of the beam reaching the detector (STEM) or the incident-normalised
    intensity (HRTEM). Each pixel receives ``dose * sampling**2`` electrons; the result is returned
    in the same units (counts divided by the electrons per pixel), so its mean is unchanged.
    """
    electrons = dose * sampling**2
    rng = np.random.default_rng(seed)
    lam = np.clip(image, 0, None) * electrons
    return (rng.poisson(lam) / electrons).astype(np.float32)
