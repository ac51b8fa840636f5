"""Point defects in zone-axis slabs: vacancies, antisites, substitutions, interstitials.

A defect sits in an atomic column (a set of atoms sharing x, y); its depth along the beam is a
parameter in [0, 1] (0 = entrance surface, 1 = exit surface), since the depth of a heavy or
missing atom changes its column's HAADF intensity through channelling.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms

from surrogate.errors import StructureError
from surrogate.structures.crystals import check_symbols
from surrogate.structures.identity import tag

__all__ = ["DEFECT_KINDS", "columns", "add_defects"]

DEFECT_KINDS = ("vacancy", "antisite", "substitution", "interstitial")


def columns(atoms: Atoms, tol: float = 0.1) -> list[np.ndarray]:
    """Atom indices grouped by projected (x, y) position, each group sorted by z."""
    xy = atoms.get_positions(wrap=True)[:, :2]
    key = np.round(xy / tol).astype(np.int64)
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    groups = [np.flatnonzero(inverse.ravel() == g) for g in range(inverse.max() + 1)]
    z = atoms.positions[:, 2]
    return [g[np.argsort(z[g])] for g in groups]


def _pick_column(atoms: Atoms, cols, species: str | None, position, rng) -> np.ndarray:
    symbols = np.array(atoms.get_chemical_symbols())
    cand = [c for c in cols if species is None or symbols[c[0]] == species]
    if not cand:
        raise StructureError(f"no column of {species!r} in this structure: choose a species it contains")
    if position is None:
        return cand[int(rng.integers(len(cand)))]
    target = np.asarray(position, float) * np.diag(atoms.cell)[:2]
    d = [np.linalg.norm(atoms.positions[c[0], :2] - target) for c in cand]
    return cand[int(np.argmin(d))]


def _atom_at_depth(atoms: Atoms, column: np.ndarray, depth: float) -> int:
    if not 0.0 <= depth <= 1.0:
        raise StructureError(f"defect depth {depth} must be in [0, 1] (0 = entrance, 1 = exit surface)")
    z = atoms.positions[column, 2]
    lz = atoms.cell[2, 2]
    return int(column[np.argmin(np.abs(z - depth * lz))])


def _interstitial_site(atoms: Atoms, near_xy: np.ndarray, depth: float) -> np.ndarray:
    """The point near ``near_xy`` at the given depth that is farthest from every atom."""
    from ase.geometry import get_distances

    lz = atoms.cell[2, 2]
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 17), np.linspace(-2, 2, 17), np.linspace(-1, 1, 9)), -1).reshape(-1, 3)
    pts = grid + np.array([near_xy[0], near_xy[1], depth * lz])
    _, d = get_distances(pts, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return pts[int(np.argmax(d.min(axis=1)))]


def add_defects(atoms: Atoms, defects: Sequence[Mapping[str, Any]], seed: int = 0) -> Atoms:
    """Return a copy of ``atoms`` with point defects.

    Parameters
    ----------
    defects
        Each a mapping with ``kind`` (vacancy / antisite / substitution / interstitial), optional
        ``species`` (host species to act on), ``element`` (substituent or interstitial element),
        ``depth`` in [0, 1], ``position`` (fractional x, y of the column; random when absent).
    seed
        Seed for random column choice.

    Returns
    -------
    ase.Atoms
        Tagged configuration of family ``defect``; ``params`` records each defect with the index of
        its atom and its actual position.
    """
    if not defects:
        raise StructureError("no defects given: list at least one {kind: vacancy|antisite|substitution|interstitial}")
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    out.info = {k: v for k, v in atoms.info.items() if k in ("zone_axis", "upward")}
    host_species = sorted(set(out.get_chemical_symbols()))
    cols = columns(out)
    used: set[int] = set()
    to_delete: list[int] = []
    added: list[tuple[str, np.ndarray]] = []
    record = []
    for spec in defects:
        kind = spec.get("kind")
        if kind not in DEFECT_KINDS:
            raise StructureError(f"unknown defect kind {kind!r}: choose one of {', '.join(DEFECT_KINDS)}")
        species = spec.get("species")
        if species is not None and species not in host_species:
            raise StructureError(f"defect species {species!r} is not in the host ({', '.join(host_species)})")
        depth = float(spec.get("depth", 0.5))
        free_cols = [c for c in cols if not used.intersection(c.tolist())]
        col = _pick_column(out, free_cols, species, spec.get("position"), rng)
        idx = _atom_at_depth(out, col, depth)
        used.update(col.tolist())
        symbol = out[idx].symbol
        entry = {"kind": kind, "depth": depth, "host": symbol, "position": out.positions[idx].round(3).tolist()}
        if kind == "vacancy":
            to_delete.append(idx)
        elif kind == "antisite":
            others = [s for s in host_species if s != symbol]
            if not others:
                raise StructureError("an antisite needs a compound host (e.g. CdTe); use substitution for elements")
            out[idx].symbol = spec.get("element", others[0])
            entry["element"] = out[idx].symbol
        elif kind == "substitution":
            element = spec.get("element")
            if not element:
                raise StructureError("a substitution needs an element (e.g. element: Se)")
            check_symbols([element])
            out[idx].symbol = element
            entry["element"] = element
        else:  # interstitial
            element = spec.get("element") or symbol
            check_symbols([element])
            site = _interstitial_site(out, out.positions[idx, :2], depth)
            added.append((element, site))
            entry.update(element=element, position=site.round(3).tolist())
        record.append(entry)
    if to_delete:
        del out[to_delete]
    for element, site in added:
        out += Atoms(element, positions=[site])
    parent = atoms.info.get("params") or {}
    params = {"material": parent.get("material", atoms.get_chemical_formula()), "parent": atoms.info.get("config_id"),
              "parent_params": parent, "defects": record, "seed": seed}
    return tag(out, "defect", params, zone_axis=atoms.info.get("zone_axis"))
