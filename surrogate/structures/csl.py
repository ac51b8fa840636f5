"""Coincidence-site-lattice (CSL) tilt boundaries about [110] and [100] of cubic crystals, low-angle
tilts, and the ideal coherent Σ3 (111) twin.

A tilt about the beam axis [uvw] by θ is a CSL misorientation when the rotation matrix in the cubic
basis is rational: ``Σ R`` is an integer matrix for the smallest odd integer Σ (the coincidence
index; θ = 2 arctan(n sqrt(N) / m), Σ = m² + N n² with the factors of 2 removed, N = u²+v²+w²).
The boundary plane contains the beam; it is periodic along the boundary when its trace is a vector
of the two-dimensional CSL of the grains' in-plane lattices, whose shortest vector along the trace
is the boundary period. Every such trace is a boundary: the two symmetric ones (inclination 0 and
90°) and the asymmetric ones (any other inclination, the rotation of the plane about the beam from
the symmetric position).

Conventions (those of :func:`surrogate.structures.boundaries.bicrystal`): grain 1 is rotated by
``tilt1 = -θ/2 + inclination`` about the beam, grain 2 by ``tilt2 = tilt1 + θ``; the boundary trace
is the image y axis. Misorientations are reduced by the lattice symmetry about the axis ([110]:
θ ∈ (0, 90]; [100]: θ ∈ (0, 45]); in a compound (zincblende) θ with grain 2's species flipped is the
other polarity, which for Σ3 is the twin (no wrong bonds).

No external package is needed: the enumeration is exact integer arithmetic on the rotation matrix
and the in-plane lattice, and takes milliseconds (pymatgen's and aimsgb's generators build full 3-D
supercells with the boundary normal along c, not the beam-along-z cells the simulation needs).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from functools import lru_cache
from math import atan, ceil, degrees, gcd, sqrt
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from surrogate.errors import StructureError
from surrogate.structures.identity import tag
from surrogate.structures.labels import (
    StructureLabels,
    boundary_name,
    plane_label,
    reduce_misorientation,
    zone_axis_label,
)
from surrogate.structures.slabs import DEFAULT_UPWARD, _integer_direction, _is_translation, orient

__all__ = [
    "TILT_AXES",
    "CSLBoundary",
    "rotation_matrix",
    "sigma_of_rotation",
    "sigma_of_angle",
    "csl_misorientations",
    "in_plane_basis",
    "csl_vectors",
    "csl_boundaries",
    "coherent_twin",
    "coordination",
]

#: Tilt axes supported (beam directions of the cubic crystal).
TILT_AXES = {"110": (1, 1, 0), "100": (1, 0, 0)}


def rotation_matrix(axis, angle: float) -> np.ndarray:
    """Rotation by ``angle`` [deg] about ``axis`` (any vector), as a 3x3 matrix (Rodrigues)."""
    k = np.asarray(axis, float)
    k = k / np.linalg.norm(k)
    t = np.radians(angle)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def sigma_of_rotation(axis, angle: float, max_sigma: int = 999, tol: float = 1e-6) -> int | None:
    """Coincidence index Σ of a rotation in a cubic lattice: the smallest integer N with N·R integral
    (None when R is not rational with a denominator <= ``max_sigma``)."""
    R = rotation_matrix(axis, angle)
    for n in range(1, max_sigma + 1):
        M = n * R
        if np.abs(M - np.round(M)).max() < tol * n:
            return n
    return None


def _axis_label(axis) -> str:
    label = zone_axis_label(axis) if not isinstance(axis, str) else zone_axis_label(axis)
    if label not in TILT_AXES:
        raise StructureError(f"tilt axis {axis} is not supported: use [1,1,0] or [1,0,0]")
    return label


@lru_cache(maxsize=None)
def csl_misorientations(axis="110", max_sigma: int = 99) -> tuple[tuple[int, float], ...]:
    """Every CSL misorientation about ``axis`` with Σ <= ``max_sigma``: ``((Σ, θ [deg]), ...)``
    sorted by Σ then θ, θ reduced by the lattice symmetry about the axis and checked against the
    rotation matrix."""
    label = _axis_label(axis)
    uvw = TILT_AXES[label]
    N = sum(v * v for v in uvw)
    found: dict[float, int] = {}
    mmax = int(sqrt(4 * max_sigma)) + 2
    for m in range(0, mmax + 1):
        for n in range(1, mmax + 1):
            if gcd(m, n) != 1:
                continue
            s = m * m + N * n * n
            while s % 2 == 0:
                s //= 2
            if s > max_sigma or s == 1:
                continue
            theta = reduce_misorientation(degrees(2 * atan(n * sqrt(N) / m)) if m else 180.0, label)
            if theta < 1e-6:
                continue
            key = round(theta, 6)
            if key in found:
                continue
            check = sigma_of_rotation(uvw, theta, max_sigma=max_sigma)
            if check != s:  # the closed form and the rotation matrix must agree
                raise AssertionError(f"Σ{s} at {theta:.4f}° about [{label}] has Σ {check} by its rotation matrix")
            found[key] = s
    return tuple(sorted(((s, t) for t, s in found.items()), key=lambda p: (p[0], p[1])))


def sigma_of_angle(axis, angle: float, max_sigma: int = 99, tol: float = 0.05) -> int | None:
    """Σ of the CSL misorientation within ``tol`` [deg] of ``angle`` about ``axis`` (None if none)."""
    try:
        label = _axis_label(axis)
    except StructureError:
        return None
    a = reduce_misorientation(angle, label)
    for s, t in csl_misorientations(label, max_sigma):
        if abs(t - a) <= tol:
            return s
    return None


def in_plane_basis(oriented: Atoms) -> np.ndarray:
    """Basis (rows, [Å]) of the lattice translations perpendicular to the beam of an oriented cell:
    its rectangular cell, centred when (1/2, 1/2, 0) is a translation (fcc along [100])."""
    lx, ly = oriented.cell[0, 0], oriented.cell[1, 1]
    if _is_translation(oriented, np.array([0.5, 0.5, 0.0])):
        return np.array([[lx, 0.0], [lx / 2, ly / 2]])
    return np.array([[lx, 0.0], [0.0, ly]])


def _rot2(angle: float) -> np.ndarray:
    t = np.radians(angle)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def csl_vectors(basis: np.ndarray, theta: float, max_length: float) -> list[np.ndarray]:
    """Shortest vector of the 2-D CSL of ``basis`` and its rotation by ``theta`` [deg] along each
    direction (up to sign), no longer than ``max_length`` [Å], sorted by length."""
    inv = np.linalg.inv(basis.T)
    rot = _rot2(-theta)
    nmax = int(max_length / min(np.linalg.norm(basis, axis=1))) + 1
    best: dict[float, np.ndarray] = {}
    for i, j in itertools.product(range(-nmax, nmax + 1), range(0, nmax + 1)):
        if (i == 0 and j == 0) or (j == 0 and i < 0):
            continue
        u = i * basis[0] + j * basis[1]
        L = float(np.linalg.norm(u))
        if L > max_length + 1e-9:
            continue
        c = inv @ (rot @ u)
        if np.abs(c - np.round(c)).max() > 1e-6:
            continue
        direction = round(float(np.degrees(np.arctan2(u[1], u[0]))) % 180.0, 4)
        if direction not in best or L < np.linalg.norm(best[direction]) - 1e-9:
            best[direction] = u
    return sorted(best.values(), key=lambda v: (round(float(np.linalg.norm(v)), 6), float(np.arctan2(v[1], v[0]))))


def _miller(oriented: Atoms, normal_xy: np.ndarray) -> list[int] | list[float]:
    """Miller indices (cubic: the normal direction) of the plane with in-plane normal ``normal_xy``
    of an oriented cell (x, y directions from its ``info``)."""
    z = np.asarray(oriented.info["zone_axis"], float)
    y = np.asarray(oriented.info["upward"], float)
    x = np.cross(y, z)
    n = normal_xy[0] * x / np.linalg.norm(x) + normal_xy[1] * y / np.linalg.norm(y)
    d = _integer_direction(n, max_index=60)
    return [int(v) for v in d] if d is not None else [round(float(v), 3) for v in n]


@dataclass(frozen=True)
class CSLBoundary:
    """One enumerated tilt boundary.

    Attributes
    ----------
    axis
        Tilt axis (= beam) family, ``"110"`` or ``"100"``.
    sigma
        Coincidence index (None for a low-angle, non-CSL tilt).
    misorientation
        Tilt angle θ [deg].
    inclination
        Rotation of the boundary plane from the symmetric position [deg], in (-90, 90].
    tilt1, tilt2
        Grain rotations about the beam handed to the bicrystal builder [deg].
    period
        CSL period along the boundary [Å] (None when not periodic).
    planes
        Miller indices of the boundary plane in grain 1 and grain 2.
    """

    axis: str
    sigma: int | None
    misorientation: float
    inclination: float
    tilt1: float
    tilt2: float
    period: float | None
    planes: tuple[tuple, tuple]

    @property
    def symmetric(self) -> bool:
        """Both grains meet on planes of one family (a mirror-symmetric boundary)."""
        return (
            self.sigma is None
            and abs(self.inclination) < 1e-6
            or plane_label(self.planes[0]) == plane_label(self.planes[1])
        )

    @property
    def name(self) -> str:
        if self.sigma is None:
            return f"low_angle_{self.misorientation:g}deg_{self.axis}" + (
                "" if self.symmetric else f"_inc{self.inclination:g}"
            )
        return f"sigma{self.sigma}_{self.axis}_{plane_label(self.planes[0])}" + (
            "" if self.symmetric else f"_{plane_label(self.planes[1])}"
        )

    def labels(self, material: str) -> StructureLabels:
        planes = [self.planes[0]] if self.symmetric else list(self.planes)
        return StructureLabels(
            material=material,
            zone_axis=self.axis,
            family="twin" if self.sigma == 3 else "gb",
            boundary=boundary_name(self.sigma, planes, low_angle=self.sigma is None),
            sigma=self.sigma,
            misorientation=round(self.misorientation, 4),
            inclination=round(self.inclination, 4),
            tilt_axis=self.axis,
        )

    def params(self) -> dict[str, Any]:
        """The ``params`` a bicrystal recipe records for this boundary."""
        return {
            "sigma": self.sigma,
            "misorientation_csl": self.misorientation,
            "inclination": self.inclination,
            "csl_period": self.period,
            "planes": [list(p) for p in self.planes],
            "tilt_axis": self.axis,
        }


def _boundary(
    oriented: Atoms, axis: str, sigma, theta: float, u: np.ndarray | None, inclination: float | None
) -> CSLBoundary:
    if u is not None:  # trace along the CSL vector u of grain 1
        tilt1 = 90.0 - float(np.degrees(np.arctan2(u[1], u[0])))
        inc = (tilt1 + theta / 2 + 90.0) % 180.0 - 90.0
        if abs(inc + 90.0) < 1e-6:
            inc = 90.0
        tilt1 = inc - theta / 2
    else:
        inc = float(inclination or 0.0)
        tilt1 = inc - theta / 2
    tilt2 = tilt1 + theta
    n1 = _rot2(-tilt1) @ np.array([1.0, 0.0])
    n2 = _rot2(-tilt2) @ np.array([1.0, 0.0])
    planes = (tuple(_miller(oriented, n1)), tuple(_miller(oriented, n2)))
    period = float(np.linalg.norm(u)) if u is not None else None
    return CSLBoundary(axis, sigma, round(theta, 6), round(inc, 6), round(tilt1, 6), round(tilt2, 6), period, planes)


def csl_boundaries(
    unit: Atoms,
    axis="110",
    max_sigma: int = 99,
    max_period: float = 40.0,
    planes: str = "symmetric",
    sigmas: Sequence[int] | None = None,
) -> list[CSLBoundary]:
    """Enumerate the CSL tilt boundaries of a cubic crystal about ``axis``.

    Parameters
    ----------
    unit
        Conventional cubic cell (zincblende, diamond, fcc ...).
    axis
        Tilt axis = beam direction, ``[1,1,0]`` or ``[1,0,0]`` (or ``"110"``/``"100"``).
    max_sigma
        Largest Σ enumerated.
    max_period
        Longest CSL period along the boundary kept [Å] (the cell height is a multiple of it).
    planes
        ``symmetric`` (the two symmetric planes per misorientation) or ``all`` (every CSL trace
        with a period up to ``max_period``, asymmetric ones included).
    sigmas
        Keep only these Σ values (default: all up to ``max_sigma``).

    Returns
    -------
    list of CSLBoundary
        Sorted by Σ, misorientation, then period.
    """
    if planes not in ("symmetric", "all"):
        raise StructureError(f"boundary planes {planes!r}: use symmetric or all")
    label = _axis_label(axis)
    oriented = orient(unit, TILT_AXES[label], DEFAULT_UPWARD[TILT_AXES[label]])
    basis = in_plane_basis(oriented)
    out = []
    for sigma, theta in csl_misorientations(label, max_sigma):
        if sigmas is not None and sigma not in sigmas:
            continue
        found = [_boundary(oriented, label, sigma, theta, u, None) for u in csl_vectors(basis, theta, max_period)]
        sym = [b.inclination for b in found if b.symmetric] or [0.0, 90.0]
        seen = set()
        for b in found:
            if planes == "symmetric" and not b.symmetric:
                continue
            # traces related by the lattice symmetry (or a mirror of the bicrystal) look alike: keep one
            assert b.period is not None  # a CSL boundary has a period (its CSL vector's length)
            key = (plane_label(b.planes[0]), plane_label(b.planes[1]), round(b.period, 3))
            if key in seen or key[:2][::-1] + key[2:] in seen:
                continue
            seen.add(key)
            # inclination: rotation of the plane from the nearest symmetric position
            inc = min((((b.inclination - s + 90.0) % 180.0) - 90.0 for s in sym), key=abs)
            out.append(dataclasses.replace(b, inclination=round(0.0 if b.symmetric else inc, 6)))
    return out


def low_angle_boundaries(
    unit: Atoms, axis="110", angles: Sequence[float] = (1, 2, 3, 4, 6, 8, 10), inclinations: Sequence[float] = (0.0,)
) -> list[CSLBoundary]:
    """Low-angle tilts (no CSL period: the cell is cut at the field of view along the boundary)."""
    label = _axis_label(axis)
    oriented = orient(unit, TILT_AXES[label], DEFAULT_UPWARD[TILT_AXES[label]])
    return [_boundary(oriented, label, None, float(a), None, float(i)) for a in angles for i in inclinations]


__all__ += ["low_angle_boundaries"]


def coordination(atoms: Atoms, bond: float, tol: float = 0.15) -> np.ndarray:
    """Number of neighbours within (1 + tol) x ``bond`` [Å] of every atom (periodic)."""
    from ase.neighborlist import neighbor_list

    i = neighbor_list("i", atoms, (1 + tol) * bond)
    return np.bincount(i, minlength=len(atoms))


#: Grain-2 shift of the ideal twin in fractions of the oriented cell (x along [1-11], y along
#: [1-1-2], z along [110]) after the 180° rotation about the boundary normal, with the boundary in
#: the middle of the wide (single-bond) gap of the (111) stacking; found by searching the shifts
#: that leave every atom four-fold coordinated at the bulk bond length (checked at every build).
_TWIN_SHIFT = (0.0, 2 / 12, 2 / 4)


def coherent_twin(
    unit: Atoms,
    fov: tuple[float, float] = (25.6, 25.6),
    thickness: float = 20.0,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    margin: float = 4.0,
    material: str | None = None,
) -> Atoms:
    """The ideal coherent Σ3 (111) twin viewed along [110], without under-coordinated atoms.

    Grain 2 is grain 1 rotated by 180° about the (1-11) boundary normal; both boundaries of the
    periodic cell (at its centre and at its edge) are coherent twins, and every atom keeps four
    neighbours at the bulk bond length (zincblende: of the other species) when ``translation`` is
    zero. ``translation`` rigidly shifts grain 2 (x = expansion normal to the boundary, y, z) [Å].

    Returns
    -------
    ase.Atoms
        Tagged configuration of family ``gb`` (labels: family ``twin``, boundary ``Σ3(111)``).
    """
    o = orient(unit, (1, 1, 0), (1, -1, -2))
    lx, ly, lz = np.diag(o.cell)
    n = max(1, ceil((fov[0] / 2 + margin) / lx - 1e-6))
    ry = max(1, ceil(fov[1] / ly - 1e-6))
    nz = max(1, round(thickness / lz))
    xs = np.unique(np.round(o.positions[:, 0] % lx, 4))
    gaps = np.diff(np.append(xs, xs[0] + lx))
    k = int(np.argmax(gaps))
    cut = xs[k] + gaps[k] / 2
    big = o.repeat((2 * n + 2, ry, nz))
    P = big.positions - np.array([lx, 0.0, 0.0])
    Z = big.numbers
    width, height, depth = 2 * n * lx, ry * ly, nz * lz
    shift = np.array(_TWIN_SHIFT) * np.array([lx, ly, lz]) + np.asarray(translation, float)
    Q = P * np.array([1.0, -1.0, -1.0]) + shift
    g1 = (P[:, 0] >= cut) & (P[:, 0] < cut + n * lx)
    g2 = (Q[:, 0] >= cut + n * lx + translation[0]) & (Q[:, 0] < cut + 2 * n * lx + translation[0])
    atoms = Atoms(
        np.concatenate([Z[g1], Z[g2]]),
        positions=np.vstack([P[g1], Q[g2]]) - np.array([cut, 0, 0]),
        cell=np.diag([width + translation[0], height, depth]),
        pbc=True,
    )
    atoms.set_tags(np.concatenate([np.ones(g1.sum(), int), np.full(g2.sum(), 2)]))
    atoms.wrap()
    from surrogate.structures.crystals import shortest_distance

    bond = shortest_distance(o)
    name = material or unit.get_chemical_formula()
    ideal = not any(translation)
    if ideal:
        cn = coordination(atoms, bond)
        if not (cn == 4).all():
            raise StructureError(
                f"the coherent twin of {name} has "
                f"{int((cn != 4).sum())} atoms not four-fold coordinated: it needs a diamond or zincblende crystal"
            )
    params = {
        "material": name,
        "name": "twin_sigma3_111",
        "sigma": 3,
        "misorientation": 70.5288,
        "inclination": 0.0,
        "planes": [[1, -1, 1], [1, -1, 1]],
        "tilt_axis": "110",
        "csl_period": float(ly),
        "translation": list(translation),
        "fov": list(fov),
        "thickness": float(thickness),
        "periodic_y": True,
        "boundary_x": float(n * lx),
        "ideal": ideal,
        "construction": "rotation 180° about [1-11]",
    }
    labels = StructureLabels(name, "110", "twin", "Σ3(111)", 3, 70.5288, 0.0, "110")
    return tag(atoms, "gb", params, zone_axis=[1, 1, 0], upward=[1, -1, -2], labels=labels.to_dict())
