"""Structural moves of a configuration, for basin hopping and mutation.

Every move keeps the composition and the periodic cell (except ``translate``, which may expand the
cell normal to a grain boundary), so energies of the states a search visits compare directly:

``rattle``       Gaussian displacement of every atom [Å] (escape to a neighbouring basin)
``swap``         exchange two atoms of different species (creates or moves antisites)
``vacancy_hop``  an atom of the vacancy's sublattice next to a vacant site jumps into it
``translate``    rigid translation of grain 2 of a bicrystal (atoms tagged 2): along the boundary
                 (y) and the beam (z), and an expansion normal to it (x; the cell grows with it)

Search state that the atoms alone do not hold lives in ``atoms.info["search"]``: the vacant sites
(``vacancies``: ``[{position, host}]``) and the accumulated grain translation (``translation``).
:func:`search_info` initialises it from the builders' ``params``.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError

__all__ = ["MOVES", "search_info", "applicable_moves", "propose"]

MOVES = ("rattle", "swap", "vacancy_hop", "translate")


def _defects_of(params: Mapping[str, Any]) -> list[dict]:
    """Defect records of a configuration's params, following ``parent_params`` (rattled copies)."""
    while params:
        if params.get("defects"):
            return list(params["defects"])
        params = params.get("parent_params") or {}
    return []


def search_info(atoms: Atoms, vacancies=None) -> dict[str, Any]:
    """The search state of ``atoms`` (a copy of ``info["search"]``, or one built from ``params``).

    Parameters
    ----------
    vacancies
        Vacant sites ``[{position: [x, y, z], host: "Te"}]``; default: the vacancies recorded by
        :func:`surrogate.structures.add_defects` in ``info["params"]``.
    """
    if "search" in atoms.info and vacancies is None:
        return copy.deepcopy(dict(atoms.info["search"]))
    params = atoms.info.get("params") or {}
    if vacancies is None:
        vacancies = [
            {"position": [float(v) for v in d["position"]], "host": d.get("host")}
            for d in _defects_of(params)
            if d.get("kind") == "vacancy"
        ]
    translation = (
        [float(v) for v in params.get("translation", [0.0, 0.0, 0.0])]
        if atoms.info.get("family") == "gb"
        else [0.0, 0.0, 0.0]
    )
    return {
        "vacancies": [dict(v) for v in vacancies],
        "translation": translation,
        "boundary_x": float(params.get("boundary_x", atoms.cell[0, 0] / 2)),
    }


def applicable_moves(atoms: Atoms) -> list[str]:
    """Moves that can change this configuration."""
    info = search_info(atoms)
    tags = atoms.get_tags()
    out = ["rattle"]
    if len(set(atoms.numbers)) > 1:
        out.append("swap")
    if info["vacancies"]:
        out.append("vacancy_hop")
    if (tags == 1).any() and (tags == 2).any():
        out.append("translate")
    return out


def _rattle(atoms: Atoms, rng: np.random.Generator, stdev: float) -> None:
    atoms.positions = atoms.positions + rng.normal(0.0, stdev, atoms.positions.shape)


def _swap(atoms: Atoms, rng: np.random.Generator) -> None:
    i = int(rng.integers(len(atoms)))
    others = np.flatnonzero(atoms.numbers != atoms.numbers[i])
    j = int(others[rng.integers(len(others))])
    atoms.numbers[[i, j]] = atoms.numbers[[j, i]]


def _vacancy_hop(atoms: Atoms, rng: np.random.Generator, info: dict, hop_factor: float = 1.25) -> None:
    from ase.geometry import get_distances

    k = int(rng.integers(len(info["vacancies"])))
    vac = info["vacancies"][k]
    host = vac.get("host")
    same = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == host) if host else np.arange(len(atoms))
    if len(same) == 0:
        same = np.arange(len(atoms))
    _, d = get_distances(np.asarray(vac["position"])[None], atoms.positions[same], cell=atoms.cell, pbc=atoms.pbc)
    d = d[0]
    near = same[d <= hop_factor * d.min() + 1e-6]  # the vacancy's nearest sites of its own sublattice
    i = int(near[rng.integers(len(near))])
    old = atoms.positions[i].copy()
    atoms.positions[i] = vac["position"]
    info["vacancies"][k] = {"position": [float(v) for v in old], "host": atoms[i].symbol}


def _translate(atoms: Atoms, rng: np.random.Generator, info: dict, step: float) -> None:
    dx, dy, dz = rng.uniform(-step, step, 3)
    grain2 = atoms.get_tags() == 2
    lx = atoms.cell[0, 0]
    pos = atoms.positions
    x = pos[grain2, 0]
    # grain 2 sits in [boundary_x, lx) (+ its translation); atoms relaxed across the cell edge are unwrapped
    x = np.where(x < info["boundary_x"] - 0.5 * (lx - info["boundary_x"]), x + lx, x)
    pos[grain2] = np.column_stack([x + dx, pos[grain2, 1] + dy, pos[grain2, 2] + dz])
    cell = atoms.cell.array.copy()
    cell[0, 0] = lx + dx
    atoms.set_cell(cell, scale_atoms=False)
    atoms.positions = pos
    atoms.wrap()
    info["translation"] = [float(a + b) for a, b in zip(info["translation"], (dx, dy, dz))]


def propose(
    atoms: Atoms,
    rng: np.random.Generator,
    weights: Mapping[str, float] | None = None,
    rattle: float = 0.1,
    translate: float = 0.3,
    min_distance: float = 0.5,
    max_tries: int = 50,
) -> tuple[Atoms, str]:
    """A moved copy of ``atoms`` (its ``info["search"]`` updated) and the name of the move.

    Parameters
    ----------
    weights
        Relative probability of each move (:data:`MOVES`); moves that cannot change this
        configuration are left out. Default: equal weights.
    rattle
        Standard deviation of the rattle [Å].
    translate
        Largest step of each component of the grain translation [Å].
    min_distance
        A proposal with two atoms closer than this [Å] is redrawn.

    Raises
    ------
    ConfigError
        For an unknown move name, or when no allowed move applies.
    """
    from surrogate.structures.crystals import shortest_distance

    weights = dict(weights or {m: 1.0 for m in MOVES})
    unknown = set(weights) - set(MOVES)
    if unknown:
        raise ConfigError(f"unknown move(s) {sorted(unknown)}: choose from {', '.join(MOVES)}")
    names = [m for m in applicable_moves(atoms) if weights.get(m, 0.0) > 0]
    if not names:
        raise ConfigError(f"none of the moves {sorted(weights)} applies to this configuration: allow rattle")
    p = np.array([weights[m] for m in names], float)
    p /= p.sum()
    for _ in range(max_tries):
        name = names[int(rng.choice(len(names), p=p))]
        out = atoms.copy()
        info = search_info(atoms)
        if name == "rattle":
            _rattle(out, rng, rattle)
        elif name == "swap":
            _swap(out, rng)
        elif name == "vacancy_hop":
            _vacancy_hop(out, rng, info)
        else:
            _translate(out, rng, info, translate)
        out.info["search"] = info
        if shortest_distance(out) >= min_distance:
            out.calc = None
            return out, name
    raise ConfigError(f"no move without atoms closer than {min_distance} Å in {max_tries} tries: lower the step sizes")
