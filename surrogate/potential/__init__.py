"""Neural interatomic potential: model, extxyz data, Lightning training and an ASE calculator.

Heavy modules (torch, lightning) are imported on first use of their names.
"""

from __future__ import annotations

from surrogate.lazy import lazy_attributes
from surrogate.potential.errors import PotentialError

__all__ = [
    "PotentialError",
    "Potential",
    "PotentialCalculator",
    "load_calculator",
    "load_potential",
    "read_frames",
    "PotentialDataModule",
    "PotentialModule",
]

_LAZY = {
    "Potential": "surrogate.potential.model",
    "PotentialCalculator": "surrogate.potential.calculator",
    "load_calculator": "surrogate.potential.calculator",
    "load_potential": "surrogate.potential.checkpoint",
    "read_frames": "surrogate.potential.data",
    "PotentialDataModule": "surrogate.potential.data",
    "PotentialModule": "surrogate.potential.module",
}


__getattr__ = lazy_attributes(_LAZY)
