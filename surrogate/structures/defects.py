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
    """The point near ``near_xy`` at the given depth that is farthest from every atom.

    Only atoms within 6 Å of the search box matter, so distances are taken to those (minimum image
    of the orthogonal cell): memory stays small for thick slabs."""
    lz = atoms.cell[2, 2]
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 17), np.linspace(-2, 2, 17), np.linspace(-1, 1, 9)), -1).reshape(
        -1, 3
    )
    centre = np.array([near_xy[0], near_xy[1], depth * lz])
    pts = grid + centre
    cell = atoms.cell.array
    if not np.allclose(cell, np.diag(np.diag(cell))):
        from ase.geometry import get_distances

        _, d = get_distances(pts, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        return pts[int(np.argmax(d.min(axis=1)))]
    lengths = np.diag(cell)
    periodic = np.asarray(atoms.pbc, bool)

    def mic(v):
        return v - np.where(periodic, np.round(v / lengths) * lengths, 0.0)

    rel = mic(atoms.positions - centre)
    near = rel[np.linalg.norm(rel, axis=1) < 6.0 + np.linalg.norm([2, 2, 1])]
    if len(near) == 0:
        return centre
    d = np.linalg.norm(mic(grid[:, None, :] - near[None, :, :]), axis=-1)
    return pts[int(np.argmax(d.min(axis=1)))]


def _spread(column: np.ndarray, n: int, depth: float, atoms: Atoms) -> list[int]:
    """``n`` atoms of a column spread evenly along it, the first at ``depth``."""
    n = int(min(max(n, 1), len(column)))
    z = atoms.positions[column, 2] / atoms.cell[2, 2]
    start = int(np.argmin(np.abs(z - depth)))
    step = len(column) / n
    return [int(column[(start + int(round(k * step))) % len(column)]) for k in range(n)]


def _profile_targets(atoms: Atoms, cols, spec, free) -> list[tuple[np.ndarray, int]]:
    """(column, atoms to change) of a segregation profile: a fraction peak * exp(-d / decay) of
    every column of the species at distance d [Å] from the plane x = ``x`` (fractional; default the
    boundary of a bicrystal, else the cell centre)."""
    prof = spec["profile"]
    lx = atoms.cell[0, 0]
    params = atoms.info.get("params") or {}
    x0 = float(prof["x"]) * lx if prof.get("x") is not None else float(params.get("boundary_x", lx / 2))
    peak, decay = float(prof.get("peak", 0.5)), float(prof.get("decay", 3.0))
    if not (0 < peak <= 1) or decay <= 0:
        raise StructureError(f"segregation profile peak {peak} must be in (0, 1] and decay {decay} > 0 [Å]")
    symbols = np.array(atoms.get_chemical_symbols())
    species = spec.get("species")
    out = []
    for c in cols:
        if not free(c) or (species is not None and symbols[c[0]] != species):
            continue
        d = abs(atoms.positions[c[0], 0] - x0)
        d = min(d, lx - d)  # periodic: the second boundary of the cell is at its edge
        n = int(round(peak * np.exp(-d / decay) * len(c)))
        if n:
            out.append((c, n))
    return out


def add_defects(atoms: Atoms, defects: Sequence[Mapping[str, Any]], seed: int = 0) -> Atoms:
    """Return a copy of ``atoms`` with point defects.

    Parameters
    ----------
    defects
        Each a mapping with ``kind`` (vacancy / antisite / substitution / interstitial), optional
        ``species`` (host species to act on), ``element`` (substituent or interstitial element),
        ``depth`` in [0, 1], ``position`` (fractional x, y of the column; random when absent; the
        nearest free column is taken, so specs sharing a position make a cluster), ``fraction``
        (the part of the column's atoms affected, spread evenly along it: a partly vacant or
        substituted column; default one atom), ``profile`` (``{x, peak, decay}``: a segregation
        profile, every column of ``species`` at distance d [Å] from the plane at fractional ``x``
        (default the boundary) has a fraction peak * exp(-d / decay) of its atoms affected).
    seed
        Seed for random column choice.

    Returns
    -------
    ase.Atoms
        Tagged configuration of family ``defect``; ``params`` records each defect (kind, host
        species, the position of its first atom, ``count`` = atoms affected).
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

    def free(c) -> bool:
        return not used.intersection(c.tolist())

    for spec in defects:
        kind = spec.get("kind")
        if kind not in DEFECT_KINDS:
            raise StructureError(f"unknown defect kind {kind!r}: choose one of {', '.join(DEFECT_KINDS)}")
        species = spec.get("species")
        if species is not None and species not in host_species:
            raise StructureError(f"defect species {species!r} is not in the host ({', '.join(host_species)})")
        depth = float(spec.get("depth", 0.5))
        if not 0.0 <= depth <= 1.0:
            raise StructureError(f"defect depth {depth} must be in [0, 1] (0 = entrance, 1 = exit surface)")
        fraction = spec.get("fraction")
        if (fraction is not None or spec.get("profile")) and kind == "interstitial":
            raise StructureError("interstitials are single atoms: drop fraction/profile for kind interstitial")
        if spec.get("profile"):
            targets = _profile_targets(out, cols, spec, free)
        else:
            col = _pick_column(out, [c for c in cols if free(c)], species, spec.get("position"), rng)
            n = 1 if fraction is None else int(round(float(fraction) * len(col)))
            if fraction is not None and not 0 < float(fraction) <= 1:
                raise StructureError(f"defect fraction {fraction} must be in (0, 1] (the part of the column affected)")
            targets = [(col, max(n, 1))]
        for col, n in targets:
            idxs = [_atom_at_depth(out, col, depth)] if n == 1 else _spread(col, n, depth, out)
            used.update(col.tolist())
            symbol = out[idxs[0]].symbol
            entry = {
                "kind": kind,
                "depth": depth,
                "host": symbol,
                "position": out.positions[idxs[0]].round(3).tolist(),
                "count": len(idxs),
            }
            if kind == "vacancy":
                to_delete.extend(idxs)
            elif kind == "antisite":
                others = [s for s in host_species if s != symbol]
                if not others:
                    raise StructureError("an antisite needs a compound host (e.g. CdTe); use substitution for elements")
                for i in idxs:
                    out[i].symbol = spec.get("element", others[0])
                entry["element"] = out[idxs[0]].symbol
            elif kind == "substitution":
                element = spec.get("element")
                if not element:
                    raise StructureError("a substitution needs an element (e.g. element: Se)")
                check_symbols([element])
                for i in idxs:
                    out[i].symbol = element
                entry["element"] = element
            else:  # interstitial
                element = spec.get("element") or symbol
                check_symbols([element])
                site = _interstitial_site(out, out.positions[idxs[0], :2], depth)
                added.append((element, site))
                entry.update(element=element, position=site.round(3).tolist())
            if spec.get("profile"):
                entry["profile"] = dict(spec["profile"])
            record.append(entry)
    if not record:
        raise StructureError("the defect specification changed no atom (a segregation peak too low for the columns?)")
    if to_delete:
        del out[to_delete]
    for element, site in added:
        out += Atoms(element, positions=[site])
    parent = atoms.info.get("params") or {}
    params = {
        "material": parent.get("material", atoms.get_chemical_formula()),
        "parent": atoms.info.get("config_id"),
        "parent_params": parent,
        "defects": record,
        "seed": seed,
    }
    if "boundary_x" in parent:
        params["boundary_x"] = parent["boundary_x"]
    return tag(out, "defect", params, zone_axis=atoms.info.get("zone_axis"))
