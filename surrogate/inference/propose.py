"""Build the boundary the grains measured when the library holds none like it.

A library is a finite list; a microscopist's boundary need not be on it. When the grain check
(:mod:`surrogate.inference.misorientation`) measures two grains whose misorientation no retrieved
library boundary has, the deterministic builders make the candidate the measurement names: the
coincidence-site boundaries of that Σ about the zone axis (:func:`surrogate.structures.csl.csl_boundaries`,
symmetric planes; the coherent Σ3 (111) as the ideal twin), or a low-angle / general tilt boundary
at the measured angle (:func:`surrogate.structures.csl.low_angle_boundaries`), in the top candidate's
material, slab thickness and field of view. Each built configuration becomes a :class:`Candidate`
(``source="built"``) imaged under the top candidate's library conditions, so refinement fits it like
any other; :class:`WithBuilt` lets the stages that read structures from the library see it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms

from surrogate.inference.misorientation import GrainMeasurement
from surrogate.inference.rank import Candidate
from surrogate.library import Library

__all__ = ["measured_recipes", "build_candidates", "built_fov", "polarity_agreement", "WithBuilt"]


def measured_recipes(m: GrainMeasurement, material: dict[str, Any], thickness: float, fov) -> list[dict[str, Any]]:
    """Recipes (:func:`surrogate.structures.recipes.build_structure`) of the boundaries a measurement
    names: the CSL boundaries of its Σ about its zone axis on the measured plane families (every
    symmetric one when the planes were not measured or none matches; the coherent Σ3 (111) as the
    ideal twin), or (low-angle, general) the symmetric tilt boundary at its misorientation. A
    compound's boundaries come in both polarities (grain 2's species flipped or not)."""
    from surrogate.inference.misorientation import PLANE_TOLERANCE
    from surrogate.structures.recipes import boundary_recipes

    if m.n_grains != 2 or m.misorientation is None:
        return []
    axis = [int(c) for c in m.zone_axis]
    if m.sigma is None:
        tilt = {"generate": "low_angle", "axes": [axis], "angles": [round(float(m.misorientation), 2)]}
        return boundary_recipes(
            {**tilt, "polarities": [True, False]}, material, float(thickness), [float(v) for v in fov]
        )
    asymmetric = m.planes is not None and m.planes[0] != m.planes[1]
    spec: dict[str, Any] = {
        "generate": "csl",
        "axes": [axis],
        "sigmas": [int(m.sigma)],
        "max_sigma": max(int(m.sigma), 3),
        "planes": "all" if asymmetric else "symmetric",
        "polarities": [True, False],
    }
    recipes = boundary_recipes(spec, material, float(thickness), [float(v) for v in fov])
    if m.normals is None:
        return recipes
    if asymmetric:  # also the symmetric ones: a trace a few degrees off makes a symmetric boundary look asymmetric
        recipes += boundary_recipes(
            {**spec, "planes": "symmetric"}, material, float(thickness), [float(v) for v in fov]
        )

    def off(r) -> float:
        x = m.plane_mismatch(_recipe_planes(r))
        return 180.0 if x is None else x

    recipes.sort(key=lambda r: (off(r) > PLANE_TOLERANCE, off(r)))
    return recipes


def _recipe_planes(recipe: dict[str, Any]) -> tuple[str, str] | None:
    from surrogate.inference.misorientation import candidate_planes

    if recipe.get("kind") == "twin":
        return ("111", "111")
    return candidate_planes(recipe)


def _record(cid: str, atoms: Atoms):
    from surrogate.library.store import StructureRecord, kind_of
    from surrogate.structures.labels import labels_of

    info = dict(atoms.info)
    params = info.get("params") or {}
    family = str(info.get("family", "gb"))
    lab = labels_of(atoms)
    return StructureRecord(
        config_id=cid,
        family=family,
        formula=atoms.get_chemical_formula(mode="metal", empirical=True),
        kind=kind_of(family, params),
        material=str(lab.material),
        zone_axis=str(params.get("zone_axis", lab.zone_axis)),
        params=params,
        info=info,
    )


def built_fov(m: GrainMeasurement, library_fov) -> list[float]:
    """Field of view a built boundary is made for: at least the library's, and wide enough that each
    grain spans the measured field (one boundary in the field: the periodic cell's second boundary
    lies outside it), or, for a measured lamella (``band``), grains as wide as the band."""
    fov = [float(v) for v in library_fov]
    if m.field is None:
        return fov
    side = float(max(m.field))
    if m.layout == "band" and m.band_width:
        width = 2.0 * float(m.band_width)
    else:
        width = 2.0 * side
    return [max(fov[0], width), max(fov[1], side)]


def polarity_agreement(m: GrainMeasurement, atoms: Atoms, mode: str | None) -> float | None:
    """Share of the measured columns matched by ``atoms``'s projected columns with the same species
    (species of the measured columns from their HAADF intensity ranking), after the best rigid
    alignment: which polarity of a compound boundary the image shows. None where the image cannot
    tell (not HAADF, one species, too few columns)."""
    from surrogate.inference.columns import match_columns, projected_columns

    if mode != "haadf" or m.columns is None or len(m.columns) < 20 or len(set(atoms.get_chemical_symbols())) < 2:
        return None
    try:
        return float(match_columns(m.columns, projected_columns(atoms), tolerance=0.6, species=True).fraction)
    except Exception:  # an alignment that finds nothing: no evidence either way
        return None


def build_candidates(
    library,
    m: GrainMeasurement,
    top: Candidate,
    max_built: int = 2,
    max_atoms: int = 6000,
    mode: str | None = None,
    max_recipes: int = 8,
) -> list[tuple[Candidate, Atoms]]:
    """At most ``max_built`` configurations of the boundary ``m`` names, as candidates placed with
    ``top`` (its distance, window and library image, whose imaging conditions refinement starts
    from). Up to ``max_recipes`` recipes are built (both polarities of each plane) at the measured
    field (:func:`built_fov`); each gets its energy per atom and boundary energy from the library's
    potentials; they are ordered by the image's polarity evidence (:func:`polarity_agreement`, HAADF)
    and then by boundary energy, and the best ``max_built`` kept. Recipes that fail to build (a
    period too long for the field) or exceed ``max_atoms`` are skipped; an empty list when none
    builds."""
    from surrogate.errors import StructureError
    from surrogate.inference.misorientation import PLANE_TOLERANCE
    from surrogate.structures.identity import config_id
    from surrogate.structures.recipes import build_structure

    records = library.structures()
    rec = records.get(top.config_id)
    if m.material and (rec is None or rec.material != m.material):  # the measured lattice's material decides
        rec = next((records[c] for c in _by_material(records, m.material, m.zone_axis)), rec)
    params = (rec.params if rec is not None else {}) or {}
    material = params.get("material") if rec is not None and rec.material == (m.material or rec.material) else None
    material = material or m.material or (rec.material if rec is not None else "")
    mat = dict(material) if isinstance(material, dict) else {"name": str(material or m.material)}
    shape = library.manifest.get("image_shape", [128, 128])
    side = float(library.sampling) * float(max(shape))
    lib_fov = params.get("fov") or [side, side]
    fov = built_fov(m, lib_fov)
    thickness = float(params.get("thickness") or 20.0)
    made: list[tuple[Candidate, Atoms, float | None]] = []
    for recipe in measured_recipes(m, mat, thickness, fov)[:max_recipes]:
        try:
            atoms = build_structure(recipe)
            for _ in range(4):  # a wide field: as wide as max_atoms allows (widths come in lattice periods)
                if len(atoms) <= max_atoms or recipe["fov"][0] <= float(lib_fov[0]):
                    break
                width = max(float(lib_fov[0]), 0.85 * max_atoms / len(atoms) * float(recipe["fov"][0]))
                recipe = {**recipe, "fov": [width, recipe["fov"][1]]}
                atoms = build_structure(recipe)
        except (StructureError, ValueError, RuntimeError):
            continue
        if len(atoms) > max_atoms:
            continue
        atoms.info["recipe"] = recipe
        atoms.info["source"] = "built"
        cid = config_id(atoms)
        if any(cid == c.config_id for c, _, _ in made):
            continue
        r = _record(cid, atoms)
        c = Candidate(
            config_id=cid,
            distance=float(top.distance),
            window=top.window,
            entry=top.entry,
            family=r.family,
            formula=r.formula,
            kind=r.kind,
            lattice_mismatch=top.lattice_mismatch,
            source="built",
        )
        made.append((c, atoms, polarity_agreement(m, atoms, mode)))
    _energies(library, made)
    decisive = [p for _, _, p in made if p is not None]
    margin = (max(decisive) - min(decisive)) if len(decisive) > 1 else 0.0

    def key(t):
        c, atoms, p = t
        off = m.plane_mismatch(_recipe_planes(atoms.info["recipe"]))
        evidence = -(p or 0.0) if margin >= POLARITY_MARGIN else 0.0
        return (off is not None and off > PLANE_TOLERANCE, evidence, c.gb_energy if c.gb_energy is not None else np.inf)

    made.sort(key=key)
    for c, atoms, p in made:
        atoms.info["polarity_agreement"] = p
    return [(c, a) for c, a, _ in made[:max_built]]


def _by_material(records, material: str, zone: str) -> list[str]:
    """Library configurations of ``material`` along ``zone`` (boundaries first): where a built
    boundary takes its thickness and field from when the top candidate is another material."""
    same = [cid for cid, r in records.items() if r.material == material and str(r.zone_axis) == str(zone)]
    return sorted(same, key=lambda cid: records[cid].family not in ("gb", "twin"))


#: the image decides a compound boundary's polarity when its variants' species agreement differs by this
POLARITY_MARGIN = 0.05


def _energies(library, made) -> None:
    """Energy per atom [eV/atom] and boundary energy [mJ/m²] of each built candidate, with the
    potentials that gave the library its energies (none: left None)."""
    from surrogate.library.energies import calculator_for, library_calculators
    from surrogate.potential.interfaces import boundary_energy_details

    try:
        calculators = library_calculators(library.root)
    except Exception:  # a missing or unreadable checkpoint: the candidates keep no energy
        return
    for c, atoms, _ in made:
        calc = calculator_for(calculators, atoms)
        if calc is None:
            continue
        try:
            a = atoms.copy()
            a.calc = calc
            e = float(a.get_potential_energy())
            c.energy = e / len(a)
            c.gb_energy = float(boundary_energy_details(atoms, calc, energy=e).gamma)
        except Exception:  # noqa: BLE001 - an energy that cannot be computed is reported as missing
            continue


class WithBuilt:
    """A library seen with extra, built configurations: ``atoms`` and ``structures`` know them;
    everything else (images, conditions, manifest) is the library's."""

    def __init__(self, library, built: dict[str, Atoms]):
        self._library = library
        self.built = dict(built)
        self._records = {cid: _record(cid, a) for cid, a in self.built.items()}

    def __getattr__(self, name):
        return getattr(self._library, name)

    def atoms(self, config_id: str) -> Atoms:
        if config_id in self.built:
            return self.built[config_id].copy()
        return self._library.atoms(config_id)

    def structures(self):
        return {**self._library.structures(), **self._records}

    groups = Library.groups  # over this view's structures(), built ones included
