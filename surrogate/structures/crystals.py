"""Bulk crystals: the built-in materials (CdTe zincblende, Si diamond), any ASE bulk, any CIF."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
from ase import Atoms
from ase.build import bulk as ase_bulk
from ase.data import atomic_numbers

from surrogate.errors import StructureError

__all__ = ["BUILTIN", "crystal", "check_symbols", "check_overlaps", "shortest_distance", "MIN_DISTANCE"]

#: Atoms closer than this [Å] are treated as overlapping (no bond is this short).
MIN_DISTANCE = 0.5

#: Built-in materials: ASE ``bulk`` arguments with experimental lattice constants [Å].
BUILTIN: dict[str, dict] = {
    "CdTe": {"name": "CdTe", "crystalstructure": "zincblende", "a": 6.481},
    "Si": {"name": "Si", "crystalstructure": "diamond", "a": 5.431},
    "Ge": {"name": "Ge", "crystalstructure": "diamond", "a": 5.658},
    "CdSe": {"name": "CdSe", "crystalstructure": "zincblende", "a": 6.077},
    "GaAs": {"name": "GaAs", "crystalstructure": "zincblende", "a": 5.653},
}


def check_symbols(symbols) -> None:
    """Raise :class:`StructureError` for any chemical symbol that is not an element."""
    for s in symbols:
        if s not in atomic_numbers or s == "X":
            raise StructureError(f"unknown element {s!r}: use a chemical symbol such as 'Cd', 'Te', 'Si'")


def crystal(
    material: str | None = None,
    crystalstructure: str | None = None,
    a: float | None = None,
    c: float | None = None,
    cif: str | None = None,
) -> Atoms:
    """Conventional unit cell of a bulk crystal.

    Parameters
    ----------
    material
        A built-in name (``CdTe``, ``Si``, ...) or any formula ASE's ``bulk`` understands together
        with ``crystalstructure`` and ``a``.
    crystalstructure
        ASE crystal structure name (``zincblende``, ``diamond``, ``fcc``, ``rocksalt``, ...).
    a, c
        Lattice constants [Å]; defaults to the built-in value or ASE's reference data.
    cif
        Path to a CIF file; when given, ``material`` is ignored and the file's cell is used.

    Returns
    -------
    ase.Atoms
        Periodic conventional cell.
    """
    if cif:
        path = Path(cif)
        if not path.is_file():
            raise StructureError(f"CIF file not found: {path}; give an existing path in structures.crystal.cif")
        from ase.io import read

        try:
            atoms = cast(Atoms, read(path))  # the last frame (no index given)
        except Exception as exc:  # ase raises many types for malformed files
            raise StructureError(f"cannot read CIF {path}: {exc}; check the file is a valid CIF") from None
        atoms.pbc = True
        return atoms
    if not material:
        raise StructureError("no material given: set structures.crystal.material (e.g. CdTe, Si) or a cif path")
    kwargs = dict(BUILTIN.get(material, {"name": material}))
    if crystalstructure:
        kwargs["crystalstructure"] = crystalstructure
    if a:
        kwargs["a"] = float(a)
    if c:
        kwargs["c"] = float(c)
    from ase.symbols import string2symbols

    try:
        symbols = string2symbols(material)
    except Exception:
        raise StructureError(f"unknown formula {material!r}: use a formula such as 'CdTe' or 'Si'") from None
    check_symbols(symbols)
    try:
        return ase_bulk(
            cubic=kwargs.get("crystalstructure")
            in {"zincblende", "diamond", "fcc", "bcc", "rocksalt", "sc", "fluorite", "cesiumchloride"},
            **kwargs,
        )
    except Exception as exc:
        raise StructureError(
            f"cannot build bulk {material!r} ({exc}); give crystalstructure and a lattice constant a, or a cif"
        ) from None


def shortest_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance [Å] including periodic images (inf for < 2 atoms)."""
    from ase.neighborlist import neighbor_list

    if len(atoms) < 2 and not atoms.pbc.any():
        return float("inf")
    d = neighbor_list("d", atoms, 6.0)
    return float(d.min()) if len(d) else float("inf")


def check_overlaps(atoms: Atoms, min_distance: float = MIN_DISTANCE) -> None:
    """Raise :class:`StructureError` if two atoms are closer than ``min_distance`` [Å]."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, min_distance)
    if len(i):
        k = int(np.argmin(d))
        raise StructureError(
            f"overlapping atoms: {atoms[i[k]].symbol}{i[k]} and {atoms[j[k]].symbol}{j[k]} are {d[k]:.3f} Å apart "
            f"(< {min_distance} Å); remove duplicates or enable collision removal"
        )
