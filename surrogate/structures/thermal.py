"""Thermal disorder: rattled copies (for potential training). Frozen phonons for images are
drawn inside the simulation (:class:`surrogate.simulate.SimulationSettings.frozen_phonons`)."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from surrogate.structures.identity import tag

__all__ = ["rattle"]


def rattle(atoms: Atoms, stdev: float = 0.05, seed: int = 0) -> Atoms:
    """Copy of ``atoms`` with Gaussian displacements of standard deviation ``stdev`` [Å]."""
    out = atoms.copy()
    out.info = {k: v for k, v in atoms.info.items() if k in ("zone_axis", "upward")}
    rng = np.random.default_rng(seed)
    out.positions = out.positions + rng.normal(0.0, stdev, out.positions.shape)
    params = {
        "material": (atoms.info.get("params") or {}).get("material", atoms.get_chemical_formula()),
        "parent": atoms.info.get("config_id"),
        "parent_family": atoms.info.get("family"),
        "parent_params": atoms.info.get("params"),
        "stdev": stdev,
        "seed": seed,
    }
    return tag(out, "rattled", params, zone_axis=atoms.info.get("zone_axis"))
