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

from ase import Atoms

from surrogate.inference.misorientation import GrainMeasurement
from surrogate.inference.rank import Candidate
from surrogate.library import Library

__all__ = ["measured_recipes", "build_candidates", "WithBuilt"]


def measured_recipes(m: GrainMeasurement, material: dict[str, Any], thickness: float, fov) -> list[dict[str, Any]]:
    """Recipes (:func:`surrogate.structures.recipes.build_structure`) of the boundaries a measurement
    names: every symmetric CSL boundary of its Σ about its zone axis, or (low-angle, general) the
    symmetric tilt boundary at its misorientation."""
    from surrogate.structures.recipes import boundary_recipes

    if m.n_grains != 2 or m.misorientation is None:
        return []
    axis = [int(c) for c in m.zone_axis]
    if m.sigma is not None:
        spec = {"generate": "csl", "axes": [axis], "sigmas": [int(m.sigma)], "max_sigma": max(int(m.sigma), 3)}
    else:
        spec = {"generate": "low_angle", "axes": [axis], "angles": [round(float(m.misorientation), 2)]}
    return boundary_recipes(spec, material, float(thickness), [float(v) for v in fov])


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


def build_candidates(
    library, m: GrainMeasurement, top: Candidate, max_built: int = 2, max_atoms: int = 6000
) -> list[tuple[Candidate, Atoms]]:
    """At most ``max_built`` configurations of the boundary ``m`` names, as candidates placed with
    ``top`` (its distance, window and library image, whose imaging conditions refinement starts
    from). Recipes that fail to build (a period too long for the field) or exceed ``max_atoms`` are
    skipped; an empty list when none builds."""
    from surrogate.errors import StructureError
    from surrogate.structures.identity import config_id
    from surrogate.structures.recipes import build_structure

    rec = library.structures().get(top.config_id)
    params = (rec.params if rec is not None else {}) or {}
    material = params.get("material") or (rec.material if rec is not None else m.material)
    mat = dict(material) if isinstance(material, dict) else {"name": str(material or m.material)}
    shape = library.manifest.get("image_shape", [128, 128])
    side = float(library.sampling) * float(max(shape))
    fov = params.get("fov") or [side, side]
    thickness = float(params.get("thickness") or 20.0)
    out: list[tuple[Candidate, Atoms]] = []
    for recipe in measured_recipes(m, mat, thickness, fov):
        if len(out) >= max_built:
            break
        try:
            atoms = build_structure(recipe)
        except (StructureError, ValueError, RuntimeError):
            continue
        if len(atoms) > max_atoms:
            continue
        atoms.info["recipe"] = recipe
        atoms.info["source"] = "built"
        cid = config_id(atoms)
        if any(cid == c.config_id for c, _ in out):
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
        out.append((c, atoms))
    return out


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
