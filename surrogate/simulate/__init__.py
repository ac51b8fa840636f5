"""abTEM image simulation: STEM (HAADF/ABF/BF; multislice, PRISM), HRTEM, fast incoherent mode, noise."""

from surrogate.simulate.conditions import METHODS, MODES, ImagingConditions, sample_conditions, wavelength
from surrogate.simulate.images import (
    SimulationSettings,
    max_simulated_angle,
    memory_limit_bytes,
    render,
    smatrix_bytes,
    to_canonical,
)
from surrogate.simulate.noise import apply_dose

__all__ = [
    "MODES",
    "METHODS",
    "ImagingConditions",
    "sample_conditions",
    "wavelength",
    "SimulationSettings",
    "max_simulated_angle",
    "render",
    "to_canonical",
    "memory_limit_bytes",
    "smatrix_bytes",
    "apply_dose",
]
