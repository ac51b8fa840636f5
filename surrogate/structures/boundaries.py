"""Tilt grain boundaries and twins about the beam axis, as periodic bicrystals.

Each grain is a zone-axis crystal (its projection and upward directions), rotated in the image
plane by its tilt angle about the beam (z). Grain 1 fills the left half of the cell and grain 2 the
right half; the boundary plane (normal x) contains the beam, and the cell is periodic in x (a second
boundary sits at the cell edge, as in every periodic bicrystal), periodic along the beam, and
periodic in y when both rotated grains have a common period along y within ``max_strain``
(coincidence-site boundaries; low-angle boundaries need taller cells). Grain 2 can be rigidly
translated; atoms closer than the collision distance across the boundary are removed.
"""

from __future__ import annotations

import itertools
from math import ceil
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import StructureError
from surrogate.structures.crystals import shortest_distance
from surrogate.structures.identity import tag
from surrogate.structures.slabs import orient

__all__ = ["bicrystal", "y_period"]


def y_period(ax: float, ay: float, tilt: float, max_length: float, max_strain: float = 0.02, centred: bool = False):
    """Shortest lattice vector of a rotated rectangular lattice that lies (nearly) along y.

    Parameters
    ----------
    ax, ay
        Periods of the grain's rectangular projected cell [Å].
    tilt
        Rotation of the grain about z [deg].
    centred
        The lattice is centred rectangular: (ax/2, ay/2) is a translation too (fcc along [100]).

    Returns
    -------
    (length, correction) or None
        Length [Å] and the rotation [deg] that makes it exactly parallel to y; None when no vector
        up to ``max_length`` lies within ``max_strain`` of y.
    """
    t = np.radians(tilt)
    best = None
    nmax_x, nmax_y = int(max_length / ax) + 1, int(max_length / ay) + 1
    half = (0.0, 0.5) if centred else (0.0,)
    for m, n, h in itertools.product(range(-nmax_x, nmax_x + 1), range(-nmax_y, nmax_y + 1), half):
        if m == 0 and n == 0 and h == 0:
            continue
        v = np.array([(m + h) * ax, (n + h) * ay])
        L = np.hypot(*v)
        if L > max_length:
            continue
        rv = np.array([np.cos(t) * v[0] - np.sin(t) * v[1], np.sin(t) * v[0] + np.cos(t) * v[1]])
        if rv[1] <= 0 or abs(rv[0]) / L > max_strain:
            continue
        corr = np.degrees(np.arctan2(rv[0], rv[1]))  # rotate by +corr to put rv on +y
        if best is None or L < best[0] - 1e-9:
            best = (L, corr)
    return best


def _fill(oriented: Atoms, tilt: float, origin: np.ndarray, xlim, height: float, shift=(0.0, 0.0, 0.0)) -> Atoms:
    """Atoms of the grain rotated by ``tilt`` about ``origin`` inside x in xlim, y in [0, height)."""
    ax, ay, az = np.diag(oriented.cell)
    radius = np.hypot(xlim[1] - xlim[0] + 2 * abs(origin[0]) + 10, height + 10) + 10
    nx, ny = int(ceil(2 * radius / ax)) + 2, int(ceil(2 * radius / ay)) + 2
    big = oriented.repeat((nx, ny, 1))
    # centred on the origin; for odd repeat counts this is a rigid half-period translation of the
    # grain (kept: the shipped DFT cells were built this way)
    pos = big.positions - np.array([nx * ax / 2, ny * ay / 2, 0.0])
    t = np.radians(tilt)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    pos = pos @ rot.T + origin + np.asarray(shift)
    pos[:, 2] %= az
    keep = (pos[:, 0] >= xlim[0]) & (pos[:, 0] < xlim[1]) & (pos[:, 1] >= -1e-6) & (pos[:, 1] < height - 1e-6)
    return Atoms(big.numbers[keep], positions=pos[keep])


def _flip(atoms: Atoms) -> None:
    species = sorted(set(atoms.get_chemical_symbols()))
    if len(species) == 1:  # elemental crystal: swapping species changes nothing
        return
    if len(species) != 2:
        raise StructureError("flip_species needs a binary compound (e.g. CdTe)")
    swap = {species[0]: species[1], species[1]: species[0]}
    atoms.set_chemical_symbols([swap[s] for s in atoms.get_chemical_symbols()])


def bicrystal(
    unit: Atoms,
    grain1: Mapping[str, Any],
    grain2: Mapping[str, Any],
    fov: tuple[float, float] = (25.6, 25.6),
    thickness: float = 20.0,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    collision_distance: float | None = None,
    max_strain: float = 0.02,
    max_height: float = 60.0,
    margin: float = 4.0,
    material: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> Atoms:
    """Periodic bicrystal with a tilt boundary about the beam.

    Parameters
    ----------
    unit
        Bulk conventional cell.
    grain1, grain2
        Each ``{zone_axis: [u,v,w], upward: [u,v,w], tilt: deg, flip_species: bool}``; the two zone
        axes must have the same period along the beam.
    fov
        Field of view (x, y) [Å] the boundary must fill; the boundary is at its centre.
    thickness
        Thickness along the beam [Å], rounded to whole periods.
    translation
        Rigid translation of grain 2 (x = expansion normal to the boundary, y, z) [Å].
    collision_distance
        Atoms of grain 2 closer than this to any atom are removed [Å]; default 0.75 x the bulk
        nearest-neighbour distance.
    max_strain
        Largest strain (and rotation in radians) accepted to make the cell periodic along y.
    max_height
        Largest cell height searched for a common y period [Å]; beyond it the cell is cut at the
        field of view and is not periodic in y (recorded as ``periodic_y: false``).

    Returns
    -------
    ase.Atoms
        Tagged configuration of family ``gb`` whose ``params`` record the actual tilts, the
        misorientation, the strain applied and the number of atoms removed.
    """
    grains = []
    for g in (grain1, grain2):
        o = orient(unit, g.get("zone_axis", (1, 1, 0)), g.get("upward"))
        grains.append((o, float(g.get("tilt", 0.0)), bool(g.get("flip_species", False))))
    az1, az2 = grains[0][0].cell[2, 2], grains[1][0].cell[2, 2]
    if abs(az1 - az2) / az1 > 1e-3:
        raise StructureError(
            f"the grains' periods along the beam differ ({az1:.3f} vs {az2:.3f} Å): use zone axes of the same family"
        )
    nz = max(1, round(thickness / az1))
    # common period along y
    from surrogate.structures.csl import in_plane_basis

    periods = [
        y_period(
            o.cell[0, 0], o.cell[1, 1], t, max_height, max_strain, centred=in_plane_basis(o)[1, 1] < o.cell[1, 1] - 1e-9
        )
        for o, t, _ in grains
    ]
    height, strain, periodic_y, tilts = None, [0.0, 0.0], False, [t for _, t, _ in grains]
    if all(p is not None for p in periods):
        (l1, c1), (l2, c2) = periods
        for k1 in range(1, int(max_height / l1) + 1):
            k2 = max(1, round(k1 * l1 / l2))
            if abs(k1 * l1 - k2 * l2) / (k1 * l1) <= max_strain and k1 * l1 * (1 + max_strain) >= fov[1]:
                height = k1 * l1
                strain = [0.0, height / (k2 * l2) - 1.0]
                tilts = [tilts[0] + c1, tilts[1] + c2]
                periodic_y = True
                break
            if k1 * l1 > max_height:
                break
    if height is None:
        height = fov[1] + 2 * margin
    else:
        height *= ceil(fov[1] / height - 1e-6) if height < fov[1] else 1
    half = max(fov[0] / 2 + margin, 8.0)
    width = 2 * half
    origin = np.array([half, height / 2, 0.0])
    parts = []
    for i, (o, t, flip) in enumerate(grains):
        thick = o.repeat((1, 1, nz))
        thick.set_cell(np.diag([o.cell[0, 0], o.cell[1, 1], nz * az1]))
        if i == 0:
            part = _fill(thick, t, origin, (0.0, half), height)
        else:
            part = _fill(
                thick,
                t,
                origin + np.array([translation[0], 0, 0]),
                (half + translation[0], width),
                height,
                shift=(0.0, translation[1], translation[2]),
            )
            # strain grain 2 along y to the common period
            part.positions[:, 1] *= 1.0 + strain[1]
        if flip:
            _flip(part)
        part.set_tags(np.full(len(part), i + 1))
        parts.append(part)
    atoms = parts[0] + parts[1]
    atoms.set_cell(np.diag([width + translation[0], height, nz * az1]))
    atoms.pbc = True
    atoms.wrap()
    if collision_distance is None:
        collision_distance = 0.75 * shortest_distance(grains[0][0])
    removed = _remove_collisions(atoms, collision_distance)
    if len(atoms) == 0:
        raise StructureError("the bicrystal is empty: check the field of view and thickness")
    params = {
        "material": material or unit.get_chemical_formula(),
        "grain1": {**{k: v for k, v in grain1.items()}, "tilt_actual": tilts[0]},
        "grain2": {**{k: v for k, v in grain2.items()}, "tilt_actual": tilts[1]},
        "misorientation": tilts[1] - tilts[0],
        "translation": list(translation),
        "fov": list(fov),
        "thickness": float(thickness),
        "periodic_y": periodic_y,
        "strain_y": strain[1],
        "collision_distance": collision_distance,
        "removed": removed,
        "boundary_x": half,
        **dict(extra_params or {}),
    }
    return tag(atoms, "gb", params, zone_axis=grains[0][0].info["zone_axis"])


def _remove_collisions(atoms: Atoms, distance: float) -> int:
    """Remove atoms closer than ``distance`` to another, preferring grain 2 (tag 2); returns the count.

    Greedy: the atom with the most collisions goes first, grain 2 first on ties. Removing an atom
    creates no collision, so the pairs are found once and the counts updated as atoms go (the same
    atoms as recomputing the neighbour list after every removal)."""
    from ase.neighborlist import neighbor_list

    i, j = neighbor_list("ij", atoms, distance)
    if len(i) == 0:
        return 0
    counts = np.bincount(i, minlength=len(atoms)).astype(float)
    bonus = 0.5 * (atoms.get_tags() == 2)
    order = np.argsort(i, kind="stable")
    i, j = i[order], j[order]
    starts = np.searchsorted(i, np.arange(len(atoms) + 1))
    alive = np.ones(len(atoms), bool)
    gone = []
    while counts.max() > 0:
        k = int(np.argmax(np.where(alive & (counts > 0), counts + bonus, -1.0)))
        alive[k] = False
        gone.append(k)
        for n in j[starts[k] : starts[k + 1]]:
            if alive[n]:
                counts[n] -= 1
        counts[k] = 0
    del atoms[gone]
    return len(gone)
