"""Energies that compare across structures: grain-boundary energy per area, point-defect formation
energies, and the relaxation of a candidate.

A periodic bicrystal's energy per atom mixes bulk and boundary (and the cell holds two boundaries),
so it can only rank boundaries of one kind against each other. The excess energy over the bulk
crystal, per unit boundary area, compares a twin with a tilt boundary:

.. math::

    \\gamma = \\frac{E_\\mathrm{bicrystal} - \\sum_i n_i \\mu_i}{2 A}, \\qquad A = L_y L_z,

where :math:`n_i` is the number of atoms of element *i* in the cell, :math:`\\mu_i` its chemical
potential and :math:`A` the area of one boundary. Our bicrystals
(:func:`surrogate.structures.bicrystal`) put the boundary plane normal to x (grain 1 left, grain 2
right); the cell is periodic along x, so it holds two boundaries (the second at the cell edge), and
each has the area of the cell's y-z face (cell height along y x thickness along the beam, z).

**Bulk reference.** The chemical potentials come from the bulk crystal computed with the *same*
calculator, on the zone-axis cell of the same material at the *same* lattice constant as the
structure (read from its period along the beam), so a lattice constant that differs from the
potential's own equilibrium cancels. For an elemental crystal (Si) :math:`\\mu` is the bulk energy
per atom and :math:`\\gamma` is unambiguous. For a compound :math:`A_pB_q` only
:math:`p\\mu_A + q\\mu_B = E_\\mathrm{bulk}` per formula unit is fixed; a cell that is not
stoichiometric (atoms removed at collisions) depends on the split, set by ``condition``:

``"A-rich"``  (e.g. ``"Cd-rich"``) :math:`\\mu_A` = the elemental solid of A (same calculator)
``"B-rich"``  (``"Te-rich"``) :math:`\\mu_B` = the elemental solid of B
``"mid"``     the midpoint of the two limits (default)

or an explicit ``mu={element: eV}``. The results record the chemical potentials used, the range of
:math:`\\gamma` between the two limits and the excess atoms. Elemental solids: Cd (hcp), Te and Se
(trigonal), Si and Ge (diamond), at their experimental c/a, volume minimised by the calculator.

**Point defects** (neutral, no charge states): :math:`E_f = E_\\mathrm{defect} - \\sum_i n_i \\mu_i`,
which for a stoichiometric host equals :math:`E_\\mathrm{defect} - E_\\mathrm{host} + \\sum_i
\\Delta n_i \\mu_i` (atoms removed go to the reservoir at :math:`\\mu_i`). A substituent without a
built-in elemental solid (Cl) needs ``mu``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from surrogate.errors import ConfigError, StructureError

__all__ = [
    "EV_PER_A2_IN_MJ_PER_M2",
    "BulkReference",
    "BoundaryEnergy",
    "FormationEnergy",
    "RelaxResult",
    "bulk_reference",
    "elemental_energy",
    "chemical_potentials",
    "boundary_area",
    "boundary_energy",
    "boundary_energy_details",
    "formation_energy",
    "formation_energy_details",
    "relax_candidate",
]

#: 1 eV/Å² in mJ/m².
EV_PER_A2_IN_MJ_PER_M2 = 16021.766208

#: Elemental solids for the rich limits: (ASE builder kind, lattice parameters [Å], internal x).
_ELEMENTAL = {
    "Cd": ("hcp", 2.979, 5.619, None),
    "Zn": ("hcp", 2.665, 4.947, None),
    "Te": ("trigonal", 4.457, 5.929, 0.2636),
    "Se": ("trigonal", 4.366, 4.954, 0.2254),
    "Si": ("diamond", 5.431, None, None),
    "Ge": ("diamond", 5.658, None, None),
    "Cu": ("fcc", 3.615, None, None),
    "Au": ("fcc", 4.078, None, None),
    "Ag": ("fcc", 4.086, None, None),
    "Al": ("fcc", 4.050, None, None),
}

# per calculator: {key: value}; weak so that a dropped calculator frees its cache
_CACHE: "weakref.WeakKeyDictionary[Calculator, dict]" = weakref.WeakKeyDictionary()


def _cache(calculator: Calculator) -> dict:
    try:
        return _CACHE.setdefault(calculator, {})
    except TypeError:  # not weak-referenceable: no cache
        return {}


def _energy(atoms: Atoms, calculator: Calculator) -> float:
    work = atoms.copy()
    work.calc = calculator
    e = float(work.get_potential_energy())
    work.calc = None
    if not math.isfinite(e):
        raise ConfigError(f"the calculator returned a non-finite energy ({e}) for {atoms.get_chemical_formula()}")
    return e


def _elemental_cell(symbol: str, scale: float) -> Atoms:
    from ase.build import bulk

    kind, a, c, x = _ELEMENTAL[symbol]
    a = a * scale
    assert c is not None  # every entry has its c; x only the trigonal ones
    if kind == "hcp":
        return bulk(symbol, "hcp", a=a, c=c * scale)
    if kind == "trigonal":  # A8 (P3_121): three atoms at (x,0,1/3), (0,x,2/3), (-x,-x,0)
        assert x is not None
        cell = [[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c * scale]]
        return Atoms(symbol * 3, scaled_positions=[(x, 0, 1 / 3), (0, x, 2 / 3), (-x, -x, 0)], cell=cell, pbc=True)
    return bulk(symbol, kind, a=a, cubic=True)


def elemental_energy(symbol: str, calculator: Calculator) -> float:
    """Energy per atom [eV] of the elemental solid of ``symbol`` with ``calculator`` (cached).

    The solid (Cd hcp, Te/Se trigonal, Si/Ge diamond, Cu/Au/Ag/Al fcc) is kept at its experimental
    axial ratio and internal coordinate; its volume is minimised on a grid of isotropic scalings
    (0.90-1.12, refined by a parabola through the three lowest points).
    """
    if symbol not in _ELEMENTAL:
        raise ConfigError(
            f"no built-in elemental solid for {symbol}: pass its chemical potential, e.g. mu={{'{symbol}': -1.8}} [eV]"
        )
    cache = _cache(calculator)
    key = ("elemental", symbol)
    if key not in cache:
        scales = np.linspace(0.90, 1.12, 12)
        energies = np.array([_energy(_elemental_cell(symbol, s), calculator) for s in scales])
        n = len(_elemental_cell(symbol, 1.0))
        k = int(np.clip(np.argmin(energies), 1, len(scales) - 2))
        coef = np.polyfit(scales[k - 1 : k + 2], energies[k - 1 : k + 2], 2)
        best = float(energies.min())
        if coef[0] > 0:
            s0 = -coef[1] / (2 * coef[0])
            if scales[k - 1] <= s0 <= scales[k + 1]:
                best = min(best, _energy(_elemental_cell(symbol, float(s0)), calculator))
        cache[key] = best / n
    return cache[key]


@dataclass(frozen=True)
class BulkReference:
    """The bulk crystal a structure is compared with.

    Attributes
    ----------
    composition
        Atoms per formula unit, e.g. ``{"Cd": 1, "Te": 1}`` or ``{"Si": 1}``.
    energy_per_formula_unit
        Bulk energy [eV] per formula unit, from the same calculator.
    lattice_scale
        Lattice constant of the reference relative to the material's built-in value (matched to
        the structure's period along the beam).
    material
        Name of the material.
    """

    composition: dict
    energy_per_formula_unit: float
    lattice_scale: float = 1.0
    material: str = ""


def _material_of(atoms: Atoms) -> str | None:
    params = atoms.info.get("params") or {}
    if isinstance(params, str):
        import json

        try:
            params = json.loads(params)
        except ValueError:
            params = {}
    return params.get("material") or (params.get("parent_params") or {}).get("material")


def bulk_reference(
    atoms: Atoms, calculator: Calculator, bulk: Atoms | BulkReference | str | None = None
) -> BulkReference:
    """The bulk reference of ``atoms``: energy per formula unit of its crystal with ``calculator``.

    Parameters
    ----------
    atoms
        A configuration from the builders (``info["params"]["material"]`` and ``info["zone_axis"]``
        name the crystal), or any structure when ``bulk`` is given.
    bulk
        ``None``: the built-in crystal named in ``atoms.info`` (:func:`surrogate.structures.crystal`),
        oriented along the structure's zone axis and scaled to its period along the beam; a
        material name; a periodic bulk cell (used as is); or a :class:`BulkReference` (returned).

    Returns
    -------
    BulkReference
        Cached per calculator, material, zone axis and lattice scale.
    """
    if isinstance(bulk, BulkReference):
        return bulk
    if isinstance(bulk, Atoms):
        if not bulk.pbc.all():
            raise ConfigError("the bulk reference must be periodic along x, y and z")
        return _reference_of_cell(bulk, calculator, 1.0, bulk.get_chemical_formula())
    from surrogate.structures import crystal, orient

    material = bulk or _material_of(atoms)
    if not material:
        raise ConfigError("no material recorded in atoms.info['params']: pass bulk= (a bulk cell or a material name)")
    try:
        unit = crystal(material)
    except StructureError as exc:
        raise ConfigError(
            f"cannot build the bulk reference of {material!r} ({exc}); pass bulk= a periodic bulk cell"
        ) from None
    zone_axis = atoms.info.get("zone_axis") or [1, 1, 0]
    oriented = orient(unit, zone_axis)
    az, cz = float(oriented.cell[2, 2]), float(atoms.cell.lengths()[2])
    nz = max(1, round(cz / az))
    scale = cz / (nz * az)
    if abs(scale - 1) > 0.05:  # not a zone-axis cell of this crystal: use the built-in lattice constant
        scale = 1.0
    key = ("bulk", material, tuple(int(v) for v in zone_axis), round(scale, 7))
    cache = _cache(calculator)
    if key not in cache:
        cell = oriented.copy()
        cell.set_cell(cell.cell.array * scale, scale_atoms=True)
        reps = [max(1, math.ceil(6.0 / L)) for L in cell.cell.lengths()]  # a few Å of bulk each way
        cache[key] = _reference_of_cell(cell.repeat(reps), calculator, scale, material)
    return cache[key]


def _reference_of_cell(cell: Atoms, calculator: Calculator, scale: float, material: str) -> BulkReference:
    from ase.formula import Formula

    reduced, nfu = Formula(cell.get_chemical_formula()).reduce()
    composition = dict(reduced.count())
    return BulkReference(composition, _energy(cell, calculator) / nfu, float(scale), str(material))


def chemical_potentials(
    reference: BulkReference,
    calculator: Calculator,
    condition: str = "mid",
    mu: Mapping[str, float] | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, float]:
    """Chemical potentials [eV/atom] consistent with the bulk reference.

    Parameters
    ----------
    condition
        ``"<element>-rich"`` (that element at its elemental solid), or ``"mid"`` (midpoint of the
        two limits of a binary compound); ignored for an elemental crystal.
    mu
        Explicit chemical potentials; they win over ``condition``. For a compound, giving one of its
        two elements fixes the other through the bulk energy.
    extra
        Elements outside the reference (substituents): their elemental solid, unless in ``mu``.
    """
    mu = dict(mu or {})
    comp = reference.composition
    elements = sorted(comp)
    out: dict[str, float] = {}
    if len(elements) == 1:
        (el,) = elements
        out[el] = mu.get(el, reference.energy_per_formula_unit / comp[el])
    elif len(elements) == 2:
        a, b = elements
        e = reference.energy_per_formula_unit
        if a in mu or b in mu:
            given = a if a in mu else b
            other = b if given == a else a
            out[given] = float(mu[given])
            out[other] = (e - comp[given] * out[given]) / comp[other]
        else:
            limits = {}
            for rich, other in ((a, b), (b, a)):
                m_rich = elemental_energy(rich, calculator)
                limits[rich] = {rich: m_rich, other: (e - comp[rich] * m_rich) / comp[other]}
            cond = condition.replace("_", "-").lower()
            if cond == "mid":
                out = {el: 0.5 * (limits[a][el] + limits[b][el]) for el in (a, b)}
            else:
                match = [el for el in (a, b) if cond == f"{el.lower()}-rich"]
                if not match:
                    raise ConfigError(f"unknown condition {condition!r}: use mid, {a}-rich or {b}-rich")
                out = dict(limits[match[0]])
    else:
        missing = [el for el in elements if el not in mu]
        if missing:
            raise ConfigError(f"a reference of {len(elements)} elements needs explicit mu for {', '.join(missing)}")
        out = {el: float(mu[el]) for el in elements}
    for el in extra:
        if el not in out:
            out[el] = float(mu[el]) if el in mu else elemental_energy(el, calculator)
    return out


def _limits(reference: BulkReference, calculator: Calculator, mu, extra) -> dict[str, dict[str, float]]:
    """Chemical potentials at each rich limit of a binary compound (empty otherwise or with mu)."""
    if len(reference.composition) != 2 or mu:
        return {}
    return {
        f"{el}-rich": chemical_potentials(reference, calculator, f"{el}-rich", None, extra)
        for el in sorted(reference.composition)
    }


def _counts(atoms: Atoms) -> dict[str, int]:
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    return {str(s): int(n) for s, n in zip(symbols, counts)}


def _excess(energy: float, counts: Mapping[str, int], mu: Mapping[str, float]) -> float:
    return float(energy - sum(n * mu[el] for el, n in counts.items()))


def _nonstoichiometry(counts: Mapping[str, int], reference: BulkReference) -> dict[str, float]:
    """Atoms of each element beyond the largest whole number of formula units in the cell."""
    comp = reference.composition
    nfu = min(counts.get(el, 0) / n for el, n in comp.items())
    return {
        el: float(counts.get(el, 0) - nfu * comp.get(el, 0))
        for el in sorted(set(counts) | set(comp))
        if abs(counts.get(el, 0) - nfu * comp.get(el, 0)) > 1e-9
    }


def boundary_area(atoms: Atoms) -> float:
    """Area [Å^2] of one boundary of a periodic bicrystal: the cell's y-z face, |b x c|.

    The boundary plane of :func:`surrogate.structures.bicrystal` is normal to x and contains the
    beam (z): its area is the cell height along y times the thickness along z.
    """
    area = float(np.linalg.norm(np.cross(atoms.cell[1], atoms.cell[2])))
    if area <= 0:
        raise StructureError("the bicrystal has no cell: its boundary area is zero; give a periodic cell")
    return area


@dataclass
class BoundaryEnergy:
    """Boundary energy of a periodic bicrystal and what it was computed from.

    Attributes
    ----------
    gamma
        Boundary energy [mJ/m^2] at the chosen chemical potentials.
    gamma_limits
        ``{"Cd-rich": mJ/m^2, "Te-rich": mJ/m^2}`` for a compound (equal when stoichiometric).
    energy
        Energy of the bicrystal [eV].
    area
        Area of one boundary [Å^2]; the cell holds ``n_boundaries`` (2).
    mu
        Chemical potentials used [eV/atom]; ``condition`` names them.
    excess_atoms
        Atoms beyond whole formula units (e.g. ``{"Te": 1.0}``).
    periodic_y
        False when the builder found no common period along y: the energy then also holds the
        seam at the cell's y edge.
    """

    gamma: float
    energy: float
    area: float
    mu: dict
    condition: str
    excess_atoms: dict = field(default_factory=dict)
    gamma_limits: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    n_boundaries: int = 2
    periodic_y: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve(calculator):
    """An ASE calculator from a calculator, an EnergyModel or a checkpoint path."""
    if hasattr(calculator, "get_potential_energy") or isinstance(calculator, Calculator):
        return calculator
    from surrogate.potential.energy import resolve_calculator

    return resolve_calculator(calculator).calculator


class _ExcessTerms(NamedTuple):
    excess: float  # E - sum_i n_i mu_i [eV] at the chosen chemical potentials
    energy: float  # E [eV]
    mu: dict  # the chemical potentials used [eV/atom]
    limits: dict  # the excess at each rich limit [eV]
    excess_atoms: dict
    reference: dict


def _excess_terms(
    atoms: Atoms, calculator, bulk, energy: float | None, condition: str, mu: Mapping[str, float] | None
) -> _ExcessTerms:
    """What boundary and formation energies share: the cell's energy over its bulk reference at the
    chosen chemical potentials and at each rich limit."""
    calc = _resolve(calculator)
    ref = bulk_reference(atoms, calc, bulk)
    counts = _counts(atoms)
    extra = tuple(el for el in counts if el not in ref.composition)
    potentials = chemical_potentials(ref, calc, condition, mu, extra)
    e = _energy(atoms, calc) if energy is None else float(energy)
    limits = {name: _excess(e, counts, m) for name, m in _limits(ref, calc, mu, extra).items()}
    return _ExcessTerms(
        _excess(e, counts, potentials), e, potentials, limits, _nonstoichiometry(counts, ref), asdict(ref)
    )


def boundary_energy_details(
    atoms: Atoms,
    calculator,
    bulk: Atoms | BulkReference | str | None = None,
    *,
    energy: float | None = None,
    condition: str = "mid",
    mu: Mapping[str, float] | None = None,
    n_boundaries: int = 2,
) -> BoundaryEnergy:
    """Boundary energy of a periodic bicrystal, with its chemical potentials, limits and area.

    Parameters
    ----------
    atoms
        Periodic bicrystal, boundary planes normal to x (:func:`surrogate.structures.bicrystal`).
    calculator
        ASE calculator (or :class:`surrogate.potential.energy.EnergyModel`, or a checkpoint path).
    bulk
        Bulk reference (see :func:`bulk_reference`); default: the crystal named in ``atoms.info``.
    energy
        Energy of ``atoms`` [eV] if already computed (e.g. after a relaxation); else computed.
    condition, mu
        Chemical potentials for a compound (see :func:`chemical_potentials`).
    n_boundaries
        Boundaries in the cell (2 for a periodic bicrystal).
    """
    x = _excess_terms(atoms, calculator, bulk, energy, condition, mu)
    area = boundary_area(atoms)
    to_mj = EV_PER_A2_IN_MJ_PER_M2 / (n_boundaries * area)
    params = atoms.info.get("params") or {}
    periodic_y = params.get("periodic_y") if isinstance(params, dict) else None
    return BoundaryEnergy(
        gamma=x.excess * to_mj,
        energy=x.energy,
        area=area,
        mu=x.mu,
        condition="mu" if mu else condition,
        excess_atoms=x.excess_atoms,
        gamma_limits={k: v * to_mj for k, v in x.limits.items()},
        reference=x.reference,
        n_boundaries=n_boundaries,
        periodic_y=periodic_y,
    )


def boundary_energy(atoms: Atoms, calculator, bulk: Atoms | BulkReference | str | None = None, **kwargs) -> float:
    """Grain-boundary energy [mJ/m^2] of a periodic bicrystal: (E - sum_i n_i mu_i) / (2 A).

    ``A`` = cell y-length x thickness along z (boundary planes normal to x, two per periodic cell);
    ``mu_i`` from the bulk crystal with the same calculator (:func:`bulk_reference`; for a compound
    the midpoint between its rich limits unless ``condition`` or ``mu`` say otherwise). Keywords go
    to :func:`boundary_energy_details`.
    """
    return boundary_energy_details(atoms, calculator, bulk, **kwargs).gamma


@dataclass
class FormationEnergy:
    """Formation energy of a (neutral) point defect cell.

    Attributes
    ----------
    energy_formation
        E_defect - sum_i n_i mu_i [eV] at the chosen chemical potentials.
    limits
        The same at each rich limit of a binary host [eV].
    """

    energy_formation: float
    energy: float
    mu: dict
    condition: str
    excess_atoms: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def formation_energy_details(
    atoms: Atoms,
    calculator,
    bulk: Atoms | BulkReference | str | None = None,
    *,
    energy: float | None = None,
    condition: str = "mid",
    mu: Mapping[str, float] | None = None,
) -> FormationEnergy:
    """Formation energy of the point defects in a periodic cell, with the chemical potentials used.

    ``E_f = E_defect - sum_i n_i mu_i``: for a stoichiometric host this is ``E_defect - E_host +
    sum_i dn_i mu_i`` with ``dn_i`` the atoms removed (vacancy: +1, interstitial: -1). Several
    defects in one cell give their summed formation energy (plus their interaction). Neutral
    defects only; no finite-size or charge correction.
    """
    x = _excess_terms(atoms, calculator, bulk, energy, condition, mu)
    return FormationEnergy(
        energy_formation=x.excess,
        energy=x.energy,
        mu=x.mu,
        condition="mu" if mu else condition,
        excess_atoms=x.excess_atoms,
        limits=x.limits,
        reference=x.reference,
    )


def formation_energy(atoms: Atoms, calculator, bulk: Atoms | BulkReference | str | None = None, **kwargs) -> float:
    """Point-defect formation energy [eV]: E_defect - sum_i n_i mu_i (see :func:`formation_energy_details`)."""
    return formation_energy_details(atoms, calculator, bulk, **kwargs).energy_formation


@dataclass
class RelaxResult:
    """A relaxed candidate.

    Attributes
    ----------
    atoms
        Relaxed copy (the lowest-energy configuration the optimiser visited), with its energy and
        forces attached as a single-point calculator.
    energy_before, energy_after
        Potential energy before and after [eV]; ``energy_after <= energy_before`` always.
    energy_drop
        ``energy_before - energy_after`` [eV] (>= 0).
    max_displacement
        Largest displacement of an atom (minimum image) [Å].
    converged
        Max force <= ``fmax`` at the returned configuration.
    steps
        Optimiser steps taken.
    max_force
        Largest force on an atom of the returned configuration [eV/Å].
    stopped
        ``converged``, ``steps`` (step limit) or ``short_contact`` (two atoms came closer than
        ``min_distance``; the last configuration before that is returned).
    min_distance
        The short-contact limit used [Å].
    """

    atoms: Atoms
    energy_before: float
    energy_after: float
    energy_drop: float
    max_displacement: float
    converged: bool
    steps: int
    max_force: float
    stopped: str = "steps"
    min_distance: float = 0.0

    @property
    def energy_drop_per_atom(self) -> float:
        return self.energy_drop / max(1, len(self.atoms))

    def summary(self) -> dict[str, Any]:
        """The numbers (no Atoms), JSON-ready."""
        return {
            "energy_before": self.energy_before,
            "energy_after": self.energy_after,
            "energy_drop": self.energy_drop,
            "energy_drop_per_atom": self.energy_drop_per_atom,
            "max_displacement": self.max_displacement,
            "converged": self.converged,
            "steps": self.steps,
            "max_force": self.max_force,
            "stopped": self.stopped,
            "min_distance": self.min_distance,
        }


class _ShortContact(Exception):
    pass


def _nearest_neighbour_distance(atoms: Atoms) -> float:
    """Median over atoms of the distance to the nearest neighbour [Å] (the bulk bond in a crystal)."""
    from ase.neighborlist import neighbor_list

    i, d = neighbor_list("id", atoms, 4.0)
    if len(i) == 0:
        return float("inf")
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, i, d)
    return float(np.median(nearest[np.isfinite(nearest)]))


def relax_candidate(
    atoms: Atoms,
    calculator,
    fmax: float = 0.05,
    steps: int = 200,
    fix_cell_along_boundary: bool = True,
    optimizer: str = "FIRE",
    min_distance: float | None = None,
) -> RelaxResult:
    """Relax a candidate structure with an :mod:`ase.optimize` optimiser.

    Parameters
    ----------
    atoms
        Structure (not modified).
    calculator
        ASE calculator (or an EnergyModel / checkpoint path).
    fmax
        Force criterion [eV/Å].
    steps
        Largest number of optimiser steps.
    fix_cell_along_boundary
        True (default): the whole cell is fixed and only positions relax, so the relaxed structure
        keeps the image's projected lattice and the bulk reference of :func:`boundary_energy`
        still applies. False: the cell length normal to the boundary (x) relaxes too (the
        boundary's excess volume; needs stress from the calculator), y and z stay fixed.
    optimizer
        ``FIRE``, ``BFGS``, ``LBFGS`` or ``BFGSLineSearch``.
    min_distance
        Stop when two atoms come closer than this [Å] (default: 0.85 x the structure's median
        nearest-neighbour distance, 2.39 Å in CdTe, 2.0 Å in Si); a pair that starts closer may
        move apart but not closer. A learned potential has no
        repulsion below the shortest distances of its training data (2.11 Å Cd-Te, 2.16 Cd-Cd,
        2.30 Te-Te in our CdTe set): an optimiser that reaches them can fall into an unphysical
        hole of tens of eV. ``0`` switches the guard off.

    Returns
    -------
    RelaxResult
        The lowest-energy configuration visited that respects ``min_distance``, so the energy never
        rises; ``stopped`` says why the optimiser ended (``converged``, ``steps``, ``short_contact``).
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.geometry import find_mic
    from ase.neighborlist import neighbor_list

    from surrogate.potential.energy import _optimizer

    if fmax <= 0 or steps < 0:
        raise ConfigError(f"fmax must be > 0 [eV/Å] and steps >= 0, got fmax={fmax}, steps={steps}")
    calc = _resolve(calculator)
    work = atoms.copy()
    work.calc = calc
    e0 = float(work.get_potential_energy())
    best = {
        "e": e0,
        "pos": work.positions.copy(),
        "cell": work.cell.array.copy(),
        "forces": np.asarray(work.get_forces()).copy(),
    }
    target = work
    if not fix_cell_along_boundary:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(work, mask=[True, False, False, False, False, False])

    limit = 0.85 * _nearest_neighbour_distance(atoms) if min_distance is None else float(min_distance)

    def short_pairs(a: Atoms) -> dict:
        i, j, d, shift = neighbor_list("ijdS", a, limit)
        return {(int(p), int(q), *map(int, sh)): float(x) for p, q, x, sh in zip(i, j, d, shift)}

    # pairs already shorter than the limit may stay, but not come closer; no new short pair
    start = short_pairs(atoms) if limit > 0 else {}

    def observe():
        if limit > 0:
            for key, d in short_pairs(work).items():
                if d < start.get(key, limit) - 0.02:
                    raise _ShortContact
        e = float(work.get_potential_energy())
        if math.isfinite(e) and e < best["e"]:
            best.update(
                e=e, pos=work.positions.copy(), cell=work.cell.array.copy(), forces=np.asarray(work.get_forces()).copy()
            )

    n, stopped = 0, "steps"
    if steps > 0:
        opt = _optimizer(optimizer)(target, logfile=None)
        opt.attach(observe, interval=1)
        try:
            stopped = "converged" if opt.run(fmax=fmax, steps=steps) else "steps"
        except _ShortContact:
            stopped = "short_contact"
        n = int(opt.nsteps)
    work.calc = None
    out = atoms.copy()
    out.set_cell(best["cell"], scale_atoms=False)
    out.positions = best["pos"]
    out.calc = SinglePointCalculator(out, energy=best["e"], forces=best["forces"])
    disp, _ = find_mic(best["pos"] - atoms.positions, atoms.cell, atoms.pbc)
    fmax_now = float(np.sqrt((best["forces"] ** 2).sum(1)).max(initial=0.0))
    return RelaxResult(
        atoms=out,
        energy_before=e0,
        energy_after=best["e"],
        energy_drop=e0 - best["e"],
        max_displacement=float(np.linalg.norm(disp, axis=1).max(initial=0.0)),
        converged=bool(fmax_now <= fmax),
        steps=n,
        max_force=fmax_now,
        stopped=stopped,
        min_distance=limit,
    )
