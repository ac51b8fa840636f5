"""Physics checks of a potential on a cubic crystal (Si, CdTe, ...): lattice constant, bulk modulus,
vacancy and antisite formation energies, the coherent Σ3 (111) twin and a Σ9 [110] tilt boundary.

Every function takes any ASE calculator (ours, or a universal potential), so one benchmark can put
models side by side (``benchmarks/potential_universal.py``). Conventions:

- **Equation of state**: the conventional cubic cell (:func:`surrogate.structures.crystal`) scaled
  isotropically over ``±strain``, a Birch-Murnaghan fit (:class:`ase.eos.EquationOfState`);
  ``a0`` is the cube root of the fitted volume.
- **Point defects**: a ``repeat``-times repeated conventional cell at the model's own ``a0``, one
  atom removed (vacancy) or swapped (antisite), positions relaxed at fixed cell
  (:func:`surrogate.potential.interfaces.relax_candidate`); the formation energy is
  :func:`surrogate.potential.interfaces.formation_energy_details` against the perfect supercell,
  so for a compound it is given at both rich limits and the midpoint (neutral defects, no
  finite-size correction).
- **Boundaries**: periodic bicrystals at the model's ``a0`` (two boundaries per cell), boundary
  energy per area by :func:`surrogate.potential.interfaces.boundary_energy_details`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.potential.interfaces import (
    boundary_energy_details,
    formation_energy_details,
    relax_candidate,
)

__all__ = [
    "SIGMA9_110",
    "EquationOfStateResult",
    "DefectEnergy",
    "equation_of_state",
    "lattice_constant",
    "bulk_modulus",
    "vacancy_energy",
    "antisite_energy",
    "twin_energy",
    "tilt_boundary_energy",
]

#: The Σ9 [110] symmetric tilt boundary (grains tilted by ∓19.47° about [110], (2-21) planes).
SIGMA9_110: tuple[dict[str, Any], dict[str, Any]] = (
    {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": -19.47},
    {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 19.47},
)


def _energy(atoms: Atoms, calculator) -> float:
    work = atoms.copy()
    work.calc = calculator
    return float(work.get_potential_energy())


@dataclass(frozen=True)
class EquationOfStateResult:
    """Birch-Murnaghan fit of the conventional cell.

    Attributes
    ----------
    a0
        Equilibrium lattice constant [Å].
    bulk_modulus
        Bulk modulus [GPa].
    energy_per_atom
        Energy at the minimum [eV/atom].
    """

    a0: float
    bulk_modulus: float
    energy_per_atom: float
    material: str


def equation_of_state(
    calculator, material: str, a: float | None = None, strain: float = 0.03, points: int = 9
) -> EquationOfStateResult:
    """Equilibrium lattice constant and bulk modulus of ``material``'s conventional cubic cell.

    Parameters
    ----------
    material
        A built-in cubic crystal (``Si``, ``CdTe``, ...).
    a
        Centre of the scan [Å]; default the built-in lattice constant.
    strain, points
        Isotropic linear strains ``linspace(-strain, strain, points)``.
    """
    from ase.eos import EquationOfState
    from ase.units import GPa

    from surrogate.structures import crystal

    if points < 5 or not 0 < strain < 0.2:
        raise ConfigError(f"the EOS needs points >= 5 and 0 < strain < 0.2, got points={points}, strain={strain}")
    unit = crystal(material, a=a)
    lengths = unit.cell.lengths()
    if not (np.allclose(lengths, lengths[0]) and np.allclose(unit.cell.angles(), 90.0)):
        raise ConfigError(f"{material} is not a cubic crystal: the EOS here scales a cubic conventional cell")
    volumes, energies = [], []
    for s in np.linspace(-strain, strain, points):
        cell = unit.copy()
        cell.set_cell(unit.cell.array * (1 + s), scale_atoms=True)
        volumes.append(cell.get_volume())
        energies.append(_energy(cell, calculator))
    v0, e0, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return EquationOfStateResult(float(np.cbrt(v0)), float(b / GPa), float(e0) / len(unit), material)


def lattice_constant(calculator, material: str, **kwargs) -> float:
    """Equilibrium lattice constant [Å] (:func:`equation_of_state`)."""
    return equation_of_state(calculator, material, **kwargs).a0


def bulk_modulus(calculator, material: str, **kwargs) -> float:
    """Bulk modulus [GPa] (:func:`equation_of_state`)."""
    return equation_of_state(calculator, material, **kwargs).bulk_modulus


@dataclass
class DefectEnergy:
    """A relaxed point defect.

    Attributes
    ----------
    defect
        ``V_Cd`` (vacancy on a Cd site), ``Cd_Te`` (Cd on a Te site), ...
    energy_formation
        Formation energy [eV] at ``condition`` (elemental host: unambiguous).
    limits
        Formation energy at each rich limit of a compound host [eV].
    unrelaxed
        The same for the unrelaxed (ideal-site) cell [eV].
    relax
        :meth:`surrogate.potential.interfaces.RelaxResult.summary`.
    """

    defect: str
    atoms: int
    a0: float
    energy_formation: float
    condition: str
    limits: dict = field(default_factory=dict)
    unrelaxed: float = float("nan")
    unrelaxed_limits: dict = field(default_factory=dict)
    relax: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host(material: str, a0: float, repeat: int) -> Atoms:
    from surrogate.structures import crystal

    return crystal(material, a=a0).repeat(repeat)


def _defect(
    calculator, host: Atoms, cell: Atoms, name: str, a0: float, relax: bool, fmax: float, steps: int, condition: str
) -> DefectEnergy:
    before = formation_energy_details(cell, calculator, host, condition=condition)
    out = DefectEnergy(
        name,
        len(cell),
        a0,
        before.energy_formation,
        condition,
        dict(before.limits),
        before.energy_formation,
        dict(before.limits),
    )
    if relax:
        work = cell.copy()
        work.rattle(0.02, seed=0)  # off the symmetric saddle
        r = relax_candidate(work, calculator, fmax=fmax, steps=steps)
        after = formation_energy_details(r.atoms, calculator, host, energy=r.energy_after, condition=condition)
        out.energy_formation, out.limits, out.relax = after.energy_formation, dict(after.limits), r.summary()
    return out


def _site(host: Atoms, species: str | None) -> int:
    symbols = host.get_chemical_symbols()
    if species is None:
        return 0
    if species not in symbols:
        raise ConfigError(f"no {species} site in {host.get_chemical_formula()}: pick one of {sorted(set(symbols))}")
    # the site nearest the cell centre (away from the periodic images' defects equally)
    idx = [i for i, s in enumerate(symbols) if s == species]
    centre = host.cell.array.sum(0) / 2
    return min(idx, key=lambda i: float(np.linalg.norm(host.positions[i] - centre)))


def vacancy_energy(
    calculator,
    material: str,
    species: str | None = None,
    a0: float | None = None,
    repeat: int = 2,
    relax: bool = True,
    fmax: float = 0.02,
    steps: int = 200,
    condition: str = "mid",
) -> DefectEnergy:
    """Formation energy of a vacancy on a ``species`` site (default: the first site), relaxed at
    fixed cell in a ``repeat``-times repeated conventional cell at ``a0`` (default: the model's own,
    :func:`lattice_constant`)."""
    a0 = lattice_constant(calculator, material) if a0 is None else float(a0)
    host = _host(material, a0, repeat)
    i = _site(host, species)
    cell = host.copy()
    name = f"V_{cell[i].symbol}"
    del cell[i]
    return _defect(calculator, host, cell, name, a0, relax, fmax, steps, condition)


def antisite_energy(
    calculator,
    material: str,
    species: str,
    a0: float | None = None,
    repeat: int = 2,
    relax: bool = True,
    fmax: float = 0.02,
    steps: int = 200,
    condition: str = "mid",
) -> DefectEnergy:
    """Formation energy of a ``species`` atom on a site of the other sublattice of a binary compound
    (``species="Cd"`` in CdTe: Cd_Te), relaxed as in :func:`vacancy_energy`."""
    a0 = lattice_constant(calculator, material) if a0 is None else float(a0)
    host = _host(material, a0, repeat)
    others = sorted(set(host.get_chemical_symbols()) - {species})
    if len(others) != 1 or species not in host.get_chemical_symbols():
        raise ConfigError(
            f"an antisite needs a binary compound containing {species}, got {host.get_chemical_formula()}"
        )
    i = _site(host, others[0])
    cell = host.copy()
    cell[i].symbol = species
    return _defect(calculator, host, cell, f"{species}_{others[0]}", a0, relax, fmax, steps, condition)


def twin_energy(
    calculator, material: str, a0: float | None = None, fov: tuple[float, float] = (16.0, 8.0), thickness: float = 4.0
) -> float:
    """Coherent Σ3 (111) twin boundary energy [mJ/m^2] of the ideal (unrelaxed, stoichiometric,
    four-fold coordinated) twin of :func:`surrogate.structures.coherent_twin` at ``a0``."""
    from surrogate.structures import coherent_twin, crystal

    a0 = lattice_constant(calculator, material) if a0 is None else float(a0)
    unit = crystal(material)
    # built at the built-in lattice constant and scaled: coherent_twin's coordination check rejects
    # some other lattice constants (CdTe at 6.59 Å) although the scaled cell is the same twin
    twin = coherent_twin(unit, fov=fov, thickness=thickness, material=material)
    twin.set_cell(twin.cell.array * (a0 / float(unit.cell.lengths()[0])), scale_atoms=True)
    return boundary_energy_details(twin, calculator).gamma


def tilt_boundary_energy(
    calculator,
    material: str,
    a0: float | None = None,
    grains: tuple[dict[str, Any], dict[str, Any]] = SIGMA9_110,
    fov: tuple[float, float] = (20.0, 12.0),
    thickness: float = 4.0,
    relax: bool = True,
    fmax: float = 0.05,
    steps: int = 150,
) -> dict[str, Any]:
    """Σ9 [110] symmetric tilt boundary energy [mJ/m^2] (``grains`` for another), unrelaxed and
    after a fixed-cell relaxation, at the mid chemical potentials of a compound (the rich limits
    alongside)."""
    from surrogate.structures import bicrystal, crystal

    a0 = lattice_constant(calculator, material) if a0 is None else float(a0)
    gb = bicrystal(crystal(material, a=a0), grains[0], grains[1], fov=fov, thickness=thickness, material=material)
    before = boundary_energy_details(gb, calculator)
    out: dict[str, Any] = {
        "atoms": len(gb),
        "a0": a0,
        "excess_atoms": before.excess_atoms,
        "unrelaxed_mj": before.gamma,
        "limits_unrelaxed_mj": before.gamma_limits,
    }
    if relax:
        r = relax_candidate(gb, calculator, fmax=fmax, steps=steps)
        after = boundary_energy_details(r.atoms, calculator, energy=r.energy_after)
        out.update(relaxed_mj=after.gamma, limits_relaxed_mj=after.gamma_limits, relax=r.summary())
    return out
