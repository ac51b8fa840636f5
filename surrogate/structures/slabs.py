"""Zone-axis slabs: a crystal oriented with the beam along z, sized to a field of view."""

from __future__ import annotations

from fractions import Fraction
from math import ceil

import numpy as np
from ase import Atoms
from ase.build import cut

from surrogate.errors import StructureError
from surrogate.structures.identity import tag

__all__ = ["DEFAULT_UPWARD", "orient", "zone_axis_slab", "lattice_period"]

#: Default upward (image y) direction for the common zone axes of cubic crystals.
DEFAULT_UPWARD = {
    (1, 1, 0): (0, 0, 1),
    (1, 0, 0): (0, 0, 1),
    (0, 0, 1): (0, 1, 0),
    (1, 1, 1): (1, 1, -2),
    (1, 1, 2): (1, 1, -1),
}

_FRACTIONS = sorted({Fraction(k, n) for n in range(1, 7) for k in range(1, n + 1)})


def _as_direction(v, name: str) -> np.ndarray:
    d = np.asarray(v, dtype=int)
    if d.shape != (3,) or not d.any():
        raise StructureError(f"impossible {name} {list(np.asarray(v).ravel())}: give three integers, not all zero")
    g = np.gcd.reduce(np.abs(d[d != 0]))
    return d // g


def _is_translation(atoms: Atoms, shift_frac: np.ndarray, tol: float = 1e-3) -> bool:
    """True if translating the crystal by ``shift_frac`` (scaled coordinates) maps it onto itself."""
    frac = atoms.get_scaled_positions(wrap=True)
    moved = frac + shift_frac
    for z in np.unique(atoms.numbers):
        a = frac[atoms.numbers == z]
        b = moved[atoms.numbers == z]
        diff = b[:, None, :] - a[None, :, :]
        diff -= np.round(diff)
        cart = diff @ atoms.cell.array
        if not (np.linalg.norm(cart, axis=-1).min(axis=1) < tol * 10).all():
            return False
    return True


def lattice_period(atoms: Atoms, direction) -> Fraction:
    """Smallest fraction t such that t * direction (scaled coordinates) is a lattice translation."""
    d = np.asarray(direction, dtype=float)
    for t in _FRACTIONS:
        if _is_translation(atoms, float(t) * d):
            return t
    return Fraction(1)


def _integer_direction(frac: np.ndarray, max_index: int = 12) -> np.ndarray | None:
    """Smallest integer vector parallel to ``frac`` (None if none with indices <= max_index)."""
    frac = frac / np.abs(frac).max()
    for m in range(1, max_index + 1):
        v = frac * m
        if np.allclose(v, np.round(v), atol=1e-4 * m):
            d = np.round(v).astype(int)
            return d // np.gcd.reduce(np.abs(d[d != 0]))
    return None


def orient(unit: Atoms, zone_axis=(1, 1, 0), upward=None) -> Atoms:
    """Smallest orthogonal cell of ``unit`` with the beam (``zone_axis``) along z and ``upward`` along y.

    Parameters
    ----------
    unit
        Periodic bulk cell (conventional cell for cubic crystals; zone axes refer to its basis).
    zone_axis
        Projection direction [uvw] in the basis of ``unit``.
    upward
        Direction [uvw] that points up in the image (y); default from :data:`DEFAULT_UPWARD`.
    """
    z = _as_direction(zone_axis, "zone axis")
    if upward is None:
        key = (int(z[0]), int(z[1]), int(z[2]))
        upward = DEFAULT_UPWARD.get(key)
        if upward is None:  # any lattice direction perpendicular to z
            cands = [np.array(c) for c in np.ndindex(5, 5, 5)]
            cands = [c - 2 for c in cands]
            cart_z = z @ unit.cell.array
            perp = [c for c in cands if c.any() and abs(np.dot(c @ unit.cell.array, cart_z)) < 1e-6]
            if not perp:
                raise StructureError(f"impossible zone axis {z.tolist()}: no lattice direction perpendicular to it")
            upward = min(perp, key=lambda c: np.linalg.norm(c @ unit.cell.array))
    y = _as_direction(upward, "upward direction")
    cell = unit.cell.array
    cz, cy = z @ cell, y @ cell
    if abs(np.dot(cz, cy)) > 1e-6 * np.linalg.norm(cz) * np.linalg.norm(cy):
        raise StructureError(
            f"impossible zone axis {z.tolist()} with upward {y.tolist()}: they are not perpendicular; "
            "choose an upward direction perpendicular to the zone axis"
        )
    cx = np.cross(cy, cz)
    x = _integer_direction(cx @ np.linalg.inv(cell))
    if x is None:
        raise StructureError(
            f"impossible zone axis {z.tolist()}: no orthogonal periodic cell with upward {y.tolist()}; "
            "choose low-index directions"
        )
    vecs = [float(lattice_period(unit, d)) * d for d in (x, y, z)]
    try:
        oriented = cut(unit, a=vecs[0], b=vecs[1], c=vecs[2], tolerance=1e-4)
    except Exception as exc:
        raise StructureError(f"impossible zone axis {z.tolist()}: {exc}") from None
    # rotate so that a -> x, b -> y, c -> z (the cell is orthogonal by construction)
    lengths = np.linalg.norm(oriented.cell.array, axis=1)
    rot = oriented.cell.array / lengths[:, None]
    pos = oriented.positions @ rot.T
    out = Atoms(oriented.numbers, positions=pos, cell=np.diag(lengths), pbc=True)
    out.wrap(eps=1e-6)
    out.info["zone_axis"] = z.tolist()
    out.info["upward"] = y.tolist()
    return out


def zone_axis_slab(
    unit: Atoms,
    zone_axis=(1, 1, 0),
    upward=None,
    fov: tuple[float, float] = (25.6, 25.6),
    thickness: float = 50.0,
    material: str | None = None,
) -> Atoms:
    """A slab of ``unit`` viewed along ``zone_axis`` covering the field of view.

    Parameters
    ----------
    fov
        Lateral field of view (x, y) [Å]; the cell is the smallest whole number of periods that
        covers it.
    thickness
        Specimen thickness along the beam [Å]; rounded to a whole number of periods (at least one),
        so the slab is periodic along the beam.

    Returns
    -------
    ase.Atoms
        Tagged configuration of family ``bulk``.
    """
    if min(fov) <= 0 or thickness <= 0:
        raise StructureError(f"field of view {fov} and thickness {thickness} must be positive [Å]")
    cell = orient(unit, zone_axis, upward)
    lx, ly, lz = np.diag(cell.cell.array)
    reps = (max(1, ceil(fov[0] / lx - 1e-6)), max(1, ceil(fov[1] / ly - 1e-6)), max(1, round(thickness / lz)))
    slab = cell.repeat(reps)
    params = {
        "material": material or unit.get_chemical_formula(),
        "zone_axis": cell.info["zone_axis"],
        "upward": cell.info["upward"],
        "fov": list(fov),
        "thickness": float(thickness),
        "repeats": list(reps),
    }
    return tag(slab, "bulk", params, zone_axis=cell.info["zone_axis"])
