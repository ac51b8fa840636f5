"""Per-grain fit of a bicrystal candidate, and a short local search around it.

A bicrystal candidate refined as one rigid image (:func:`surrogate.inference.refine.refine`) lands one
grain on its columns and leaves the other off whenever the boundary's geometry (misorientation, the
rigid translation between the grains, where the boundary sits) differs a little from the library's.
:func:`fit_grains` fits each grain's pose separately, in column space:

1. each grain of the (widened) candidate is extended to a whole crystal: its two shortest in-plane
   lattice translations are found among its own atoms (3-D vectors, so the layer stacking along the
   beam is kept) and its basis is tiled over the cell;
2. the window's columns are measured (:func:`surrogate.inference.columns.find_columns`);
3. each grain is aligned on the measured columns of its side of the boundary
   (:func:`surrogate.inference.columns.match_columns`, rotation within ``max_rotation``), which seeds
   its rotation, isotropic strain and translation about the boundary's centre;
4. the boundary's position along its normal is scanned, then all nine parameters (per grain:
   rotation, strain, translation (2); the boundary offset) are polished by Nelder-Mead on a robust
   column distance (``1 - exp(-d²/2σ²)``, both ways, σ = 0.3 Å);
5. the fitted structure is rebuilt in 3-D (each grain transformed and cut at the fitted boundary,
   grain-2 atoms too close to grain-1 atoms removed) and simulated once at the refinement's pose for
   its figure of merit (:func:`surrogate.inference.refine.score_at_pose`).

No image is simulated until step 5: the fit costs one simulation. :func:`local_search` proposes
nearby boundaries (misorientation and inclination around the candidate's, rigid translations of
grain 2), fits each in column space and simulates only the few best, so a search costs tens of
simulations, not ingrained's thousands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import StructureError
from surrogate.inference.columns import (
    Columns,
    find_columns,
    match_columns,
    merge_columns,
    projected_columns,
    structure_to_window,
    window_columns,
)

__all__ = ["GrainFit", "SearchResult", "fit_grains", "local_search", "grain_lattice", "recipe_of"]

#: width of the robust column distance [Å]
SIGMA = 0.3
#: parameter names and Nelder-Mead steps: per grain rotation [deg], strain, translation [Å]; boundary offset [Å]
PARAMS = (
    ("rot1", 0.3),
    ("strain1", 0.004),
    ("tx1", 0.2),
    ("ty1", 0.2),
    ("rot2", 0.3),
    ("strain2", 0.004),
    ("tx2", 0.2),
    ("ty2", 0.2),
    ("boundary", 0.5),
)
BOUNDS = {
    "rot1": 6.0,
    "rot2": 6.0,
    "strain1": 0.05,
    "strain2": 0.05,
    "tx1": 4.0,
    "ty1": 4.0,
    "tx2": 4.0,
    "ty2": 4.0,
    "boundary": 8.0,
}


# ---------------------------------------------------------------------------------------------
# grain lattices


def _periodic_tree(pos: np.ndarray, lz: float):
    """KD-tree over 3-D positions, periodic along z only."""
    from scipy.spatial import cKDTree

    p = pos.copy()
    p[:, 2] = np.mod(p[:, 2], lz)
    p[:, 2] = np.where(p[:, 2] >= lz, 0.0, p[:, 2])
    off = np.array([1e4, 1e4, 0.0])
    return cKDTree(p + off, boxsize=[1e9, 1e9, lz]), off


def grain_lattice(
    atoms: Atoms, region: tuple[float, float], max_length: float = 10.0, tol: float = 0.2
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """In-plane lattice of one grain's atoms: two 3-D translations, the basis, its origin.

    Parameters
    ----------
    atoms
        The grain's atoms (cell periodic along z, the beam).
    region
        x range [Å] the grain fills; atoms within 2.5 Å of its ends (boundaries, cuts) are not used.
    max_length
        Longest in-plane translation tried [Å].

    Returns
    -------
    (vectors, basis, symbols, origin)
        ``(2, 3)`` lattice translations [Å] (shortest, then shortest non-parallel in projection), the
        ``(k, 3)`` basis positions reduced into the cell they span relative to ``origin`` (the (x, y)
        [Å] of one basis atom), and the basis symbols.
    """
    lz = float(atoms.cell[2, 2])
    pos = atoms.positions.copy()
    sym = np.array(atoms.get_chemical_symbols())
    ly = float(atoms.cell[1, 1])
    inner = (pos[:, 0] > region[0] + 2.5) & (pos[:, 0] < region[1] - 2.5) & (pos[:, 1] > 2.5) & (pos[:, 1] < ly - 2.5)
    if inner.sum() < 8:
        raise StructureError("a grain of the bicrystal holds too few atoms to find its lattice: widen the field")
    tree, off = _periodic_tree(pos, lz)
    centre = pos[inner, :2].mean(axis=0)
    cand_ref = np.flatnonzero(inner)[np.argsort(np.hypot(*(pos[inner, :2] - centre).T))[:1]]
    r0 = int(cand_ref[0])
    d = pos - pos[r0]
    d[:, 2] -= lz * np.round(d[:, 2] / lz)
    length = np.hypot(d[:, 0], d[:, 1])
    cands = np.flatnonzero((sym == sym[r0]) & (length > 0.5) & (length < max_length))
    cands = cands[np.argsort(length[cands])]
    test = np.flatnonzero(inner & (np.hypot(*(pos[:, :2] - centre).T) < 0.5 * (region[1] - region[0]) - 3.0))
    if len(test) < 8:
        test = np.flatnonzero(inner)
    found: list[np.ndarray] = []
    for j in cands:
        v = d[j]
        if found and abs(found[0][0] * v[1] - found[0][1] * v[0]) < 0.3 * np.hypot(*found[0][:2]) * np.hypot(*v[:2]):
            continue  # parallel (in projection) to the first vector
        moved = pos[test] + v
        ok = (
            (moved[:, 0] > region[0] + 1.0)
            & (moved[:, 0] < region[1] - 1.0)
            & (moved[:, 1] > 1.0)
            & (moved[:, 1] < ly - 1.0)
        )
        if ok.sum() < 4:
            continue
        q = moved[ok].copy()
        q[:, 2] = np.mod(q[:, 2], lz)
        dist, k = tree.query(q + off, distance_upper_bound=tol)
        hit = np.isfinite(dist)
        same = np.zeros(len(q), bool)
        same[hit] = sym[k[hit]] == sym[test[ok]][hit]
        if same.mean() >= 0.95:
            found.append(v)
            if len(found) == 2:
                break
    if len(found) < 2:
        raise StructureError("cannot find the in-plane lattice of a grain (distorted or amorphous?): fit it as a whole")
    vec = np.array(found)
    # basis: every inner atom reduced into the cell spanned by the two vectors, deduplicated
    m2 = vec[:, :2].T  # columns v1, v2
    frac = np.linalg.solve(m2, (pos[inner, :2] - pos[r0, :2]).T).T
    red = pos[inner] - np.floor(frac + 1e-6) @ vec
    red[:, 2] = np.mod(red[:, 2], lz)
    keep: list[int] = []
    taken = np.zeros(len(red), bool)
    for i in range(len(red)):
        if taken[i]:
            continue
        dd = red - red[i]
        dd[:, 2] -= lz * np.round(dd[:, 2] / lz)
        same = np.linalg.norm(dd, axis=1) < tol
        taken |= same
        keep.append(i)
    basis = red[keep] - np.array([pos[r0, 0], pos[r0, 1], 0.0])
    return vec, basis, [str(s) for s in sym[inner][keep]], pos[r0, :2].copy()


def _tile(
    vec: np.ndarray,
    basis: np.ndarray,
    origin: np.ndarray,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    lz: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Basis tiled by the two translations over the rectangle ``xlim`` x ``ylim`` (grown by 6 Å)."""
    corners = np.array(
        [[xlim[0] - 6, ylim[0] - 6], [xlim[1] + 6, ylim[0] - 6], [xlim[0] - 6, ylim[1] + 6], [xlim[1] + 6, ylim[1] + 6]]
    )
    frac = np.linalg.solve(vec[:, :2].T, (corners - origin).T).T
    lo, hi = np.floor(frac.min(axis=0)) - 1, np.ceil(frac.max(axis=0)) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    shifts = np.stack([i.ravel(), j.ravel()], axis=1) @ vec  # (m, 3)
    pts = (basis[None, :, :] + shifts[:, None, :]).reshape(-1, 3) + np.array([origin[0], origin[1], 0.0])
    pts[:, 2] = np.mod(pts[:, 2], lz)
    ok = (pts[:, 0] >= xlim[0] - 6) & (pts[:, 0] < xlim[1] + 6) & (pts[:, 1] >= ylim[0] - 6) & (pts[:, 1] < ylim[1] + 6)
    return pts, ok


@dataclass
class _Grains:
    """The two grains of a bicrystal as whole crystals over the fitted cell."""

    positions: list[np.ndarray]  # per grain (m, 3) [Å]
    numbers: list[np.ndarray]  # per grain (m,) atomic numbers
    columns: list[Columns]  # per grain projected columns (structure frame)
    boundary_x: float
    pivot: np.ndarray
    cell: np.ndarray  # (Lx, H, Lz)
    vectors: list[np.ndarray]


def _grains(wide: Atoms, field_xy: tuple[float, float]) -> _Grains:
    from ase.data import atomic_numbers

    tags = wide.get_tags()
    if not ((tags == 1).any() and (tags == 2).any()):
        raise StructureError("fit_grains needs a bicrystal whose atoms are tagged 1 and 2 (grain 1, grain 2)")
    params = wide.info.get("params") or {}
    lx, ly, lz = (float(v) for v in np.diag(wide.cell))
    x1 = wide.positions[tags == 1, 0]
    x2 = wide.positions[tags == 2, 0]
    bx = float(params.get("boundary_x", 0.5 * (x1.max() + x2.min())))
    # the cell the refinement simulated: the widened cell repeated over the field
    height = ly * int(np.ceil(field_xy[1] / ly + 1e-9))
    width = lx * int(np.ceil(field_xy[0] / lx + 1e-9))
    positions, numbers, columns, vectors = [], [], [], []
    for g, region in ((1, (0.0, bx)), (2, (bx, lx))):
        part = wide[tags == g]
        vec, basis, syms, origin = grain_lattice(part, region)
        pts, ok = _tile(vec, basis, origin, (0.0, width), (0.0, height), lz)
        z = np.array([atomic_numbers[s] for s in syms])
        nums = np.tile(z, len(pts) // len(z))
        pts, nums = pts[ok], nums[ok]
        positions.append(pts)
        numbers.append(nums)
        a = Atoms(nums, positions=pts, cell=[width + 12, height + 12, lz], pbc=[False, False, True])
        columns.append(projected_columns(a))
        vectors.append(vec)
    return _Grains(
        positions, numbers, columns, bx, np.array([bx, 0.5 * height]), np.array([width, height, lz]), vectors
    )


def _similarity(p: np.ndarray, rot: float, strain: float, t: tuple[float, float], pivot: np.ndarray) -> np.ndarray:
    th = np.deg2rad(rot)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * (1.0 + strain)
    return (p - pivot) @ r.T + pivot + np.asarray(t)


def _place(gr: _Grains, x: Mapping[str, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per grain, transformed column positions (structure frame) and the mask of the kept side."""
    out = []
    bline = gr.boundary_x + x["boundary"]
    for g in (1, 2):
        xy = _similarity(gr.columns[g - 1].xy, x[f"rot{g}"], x[f"strain{g}"], (x[f"tx{g}"], x[f"ty{g}"]), gr.pivot)
        side = xy[:, 0] < bline if g == 1 else xy[:, 0] >= bline
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < gr.cell[0]) & (xy[:, 1] >= 0) & (xy[:, 1] < gr.cell[1])
        out.append((xy, side & inside))
    return out


def build_fitted(gr: _Grains, x: Mapping[str, float], collision: float, base: Atoms) -> Atoms:
    """The fitted bicrystal in 3-D: each grain transformed, cut at the fitted boundary, grain-2 atoms
    closer than ``collision`` [Å] to a grain-1 atom removed."""
    bline = gr.boundary_x + x["boundary"]
    parts, nums, tags = [], [], []
    for g in (1, 2):
        p = gr.positions[g - 1].copy()
        p[:, :2] = _similarity(p[:, :2], x[f"rot{g}"], x[f"strain{g}"], (x[f"tx{g}"], x[f"ty{g}"]), gr.pivot)
        keep = (p[:, 0] < bline) if g == 1 else (p[:, 0] >= bline)
        keep &= (p[:, 0] >= 0) & (p[:, 0] < gr.cell[0]) & (p[:, 1] >= 0) & (p[:, 1] < gr.cell[1])
        parts.append(p[keep])
        nums.append(gr.numbers[g - 1][keep])
        tags.append(np.full(int(keep.sum()), g))
    if len(parts[0]) and len(parts[1]):
        # periodic in all three directions: the cell is periodic, so grain 2's far edge meets grain 1's near edge
        from scipy.spatial import cKDTree

        box = np.asarray(gr.cell, float)
        tree = cKDTree(np.mod(parts[0], box) % box, boxsize=box)
        d, _ = tree.query(np.mod(parts[1], box) % box, distance_upper_bound=collision)
        ok = ~np.isfinite(d)
        removed = int((~ok).sum())
        parts[1], nums[1], tags[1] = parts[1][ok], nums[1][ok], tags[1][ok]
    else:
        removed = 0
    pos, num, tg = np.vstack(parts), np.concatenate(nums), np.concatenate(tags)
    # a grain tiled over the cell can put one atom at both periodic ends (x ~ 0 and x ~ L), or, once turned
    # and strained, two atoms closer than any bond across the periodic seam: keep one of each such pair
    from scipy.spatial import cKDTree

    box = np.asarray(gr.cell, float)
    dup = np.zeros(len(pos), bool)
    for i, j in cKDTree(np.mod(pos, box) % box, boxsize=box).query_pairs(collision):
        if not (dup[i] or dup[j]):
            dup[max(i, j)] = True
    pos, num, tg = pos[~dup], num[~dup], tg[~dup]
    atoms = Atoms(num, positions=pos, cell=np.diag(gr.cell), pbc=True)
    atoms.set_tags(tg)
    atoms.wrap()
    from surrogate.structures.identity import tag

    parent = base.info.get("params") or {}
    keep_keys = ("material", "name", "thickness", "misorientation", "sigma")
    params = {k: parent[k] for k in keep_keys if k in parent}
    params.update(
        fitted_from=base.info.get("config_id"),
        grain_fit={k: round(float(v), 5) for k, v in x.items()},
        boundary_x=float(bline),
        removed=removed,
    )
    extra = {k: base.info[k] for k in ("labels",) if k in base.info}
    return tag(atoms, "gb", params, zone_axis=base.info.get("zone_axis"), **extra)


# ---------------------------------------------------------------------------------------------
# the fit


@dataclass
class GrainFit:
    """Result of :func:`fit_grains`.

    Attributes
    ----------
    atoms
        The fitted bicrystal (family ``gb``; ``params["grain_fit"]`` holds the fitted parameters).
    params
        Per grain ``rot<g>`` [deg], ``strain<g>``, ``tx<g>``, ``ty<g>`` [Å] about the boundary's centre
        (structure frame) and ``boundary``, the boundary's offset along its normal [Å].
    before, after
        Column scores (:meth:`surrogate.inference.columns.ColumnMatch.summary`) of the candidate at
        the refinement pose and of the fitted structure.
    fom_before, fom, ssim_before, ssim
        Figure of merit and SSIM of the refinement and of the fitted structure at the same pose
        (``fom`` is NaN when not simulated).
    image
        The fitted structure's simulated window (``None`` when not simulated).
    simulations, evaluations, seconds
        Images simulated, column-cost evaluations, wall time [s].
    cost
        Final robust column cost (lower is better; 0 = every column on a column).
    """

    atoms: Atoms
    params: dict[str, float]
    before: dict[str, Any]
    after: dict[str, Any]
    fom_before: float = float("nan")
    fom: float = float("nan")
    ssim_before: float = float("nan")
    ssim: float = float("nan")
    image: np.ndarray | None = None
    simulations: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    cost: float = float("nan")
    measured: Columns | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record."""
        r = lambda v, n=4: None if v is None or not np.isfinite(v) else round(float(v), n)  # noqa: E731
        return {
            "params": {k: round(float(v), 4) for k, v in self.params.items()},
            "columns_before": self.before,
            "columns_after": self.after,
            "fom_before": r(self.fom_before),
            "fom": r(self.fom),
            "ssim_before": r(self.ssim_before),
            "ssim": r(self.ssim),
            "simulations": self.simulations,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 2),
            "cost": r(self.cost),
            **self.extra,
        }


def _cost_fn(gr: _Grains, measured_xy: np.ndarray, to_window, counter: list[int]):
    from scipy.spatial import cKDTree

    mtree = cKDTree(measured_xy)
    lo, hi = measured_xy.min(axis=0) - 0.5, measured_xy.max(axis=0) + 0.5

    def cost(x: Mapping[str, float]) -> float:
        counter[0] += 1
        placed = _place(gr, x)
        xy = np.vstack([to_window(p[m]) for p, m in placed])
        if len(xy) == 0:
            return 2.0
        d1, _ = cKDTree(xy).query(measured_xy)
        inside = ((xy >= lo) & (xy <= hi)).all(axis=1)
        d2, _ = mtree.query(xy[inside]) if inside.any() else (np.zeros(0), None)
        rho = lambda d: 1.0 - np.exp(-(d**2) / (2 * SIGMA**2))  # noqa: E731
        return float(rho(d1).mean() + (rho(d2).mean() if len(d2) else 1.0))

    return cost


def _seed_grain(
    gr: _Grains,
    x: dict[str, float],
    g: int,
    measured: Columns,
    to_window,
    to_structure,
    max_rotation: float,
    tolerance: float,
) -> dict[str, float]:
    """Align grain ``g`` on the measured columns of its side of the boundary; return updated params."""
    bline = gr.boundary_x + x["boundary"]
    ms = to_structure(measured.xy)
    side = (ms[:, 0] < bline - 2.0) if g == 1 else (ms[:, 0] > bline + 2.0)
    if side.sum() < 6:
        return x
    placed = _place(gr, x)[g - 1][0]
    win = to_window(placed)
    lo, hi = (
        measured.xy[side].min(axis=0) - 10.0,
        measured.xy[side].max(axis=0) + 10.0,
    )  # room for a lattice translation
    near = ((win >= lo) & (win <= hi)).all(axis=1)
    if near.sum() < 6:
        return x
    model = Columns(
        win[near],
        gr.columns[g - 1].intensity[near],
        np.full(int(near.sum()), np.nan),
        [species[i] for i in np.flatnonzero(near)] if (species := gr.columns[g - 1].species) else None,
    )
    m = match_columns(measured.subset(side), model, tolerance, mirror=False, max_rotation=max_rotation)
    if m.fraction < 0.3:
        return x
    target = to_structure(m.transform(win[near]))  # where the grain's columns should go (structure frame)
    return _set_similarity(x, g, gr.columns[g - 1].xy[near] - gr.pivot, target - gr.pivot)


def _set_similarity(x: dict[str, float], g: int, src: np.ndarray, dst: np.ndarray) -> dict[str, float]:
    """Grain ``g``'s parameters set to the similarity (rotation, isotropic scale, translation) that
    takes ``src`` onto ``dst`` (least squares; both relative to the pivot)."""
    sc, dc = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - sc, dst - dc
    h = a.T @ b
    theta = np.arctan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1])
    r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    scale = float(np.sum(b * (a @ r.T)) / max(np.sum(a * a), 1e-12))
    t = dc - (sc @ r.T) * scale
    out = dict(x)
    out[f"rot{g}"] = float(np.degrees(theta))
    out[f"strain{g}"] = float(np.clip(scale - 1.0, -BOUNDS["strain1"], BOUNDS["strain1"]))
    out[f"tx{g}"], out[f"ty{g}"] = float(t[0]), float(t[1])
    return out


def _polish(
    gr: _Grains, x: dict[str, float], measured: Columns, to_window, to_structure, tolerance: float, iterations: int = 3
) -> dict[str, float]:
    """Least-squares refinement of each grain on its matched columns (mutual nearest pairs within
    ``tolerance``), the boundary fixed: the robust cost finds the basin, this finds its bottom."""
    from surrogate.inference.columns import _mutual_pairs

    for _ in range(iterations):
        placed = _place(gr, x)
        for g in (1, 2):
            xy, keep = placed[g - 1]
            idx = np.flatnonzero(keep)
            if len(idx) < 4:
                continue
            pairs, _ = _mutual_pairs(to_window(xy[idx]), measured.xy, tolerance)
            if len(pairs) < 4:
                continue
            target = to_structure(measured.xy[pairs[:, 1]])
            src = gr.columns[g - 1].xy[idx[pairs[:, 0]]] - gr.pivot
            new = _set_similarity(x, g, src, target - gr.pivot)
            if abs(new[f"rot{g}"] - x[f"rot{g}"]) < 2.0:  # a polish, not a jump
                x = new
    return x


def _pose_maps(extent, sampling, shape, margin, pose):
    """structure -> window and window -> structure maps (affine) of a refinement pose."""

    def fwd(xy):
        return structure_to_window(xy, extent, sampling, shape, margin, pose)

    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    img = fwd(base)
    a = np.stack([img[1] - img[0], img[2] - img[0]], axis=1)  # window = a @ xy + img[0]
    inv = np.linalg.inv(a)

    def back(w):
        return (np.asarray(w, float) - img[0]) @ inv.T

    return fwd, back


def fit_grains(
    window: np.ndarray,
    sampling: float,
    atoms: Atoms,
    conditions,
    fit,
    settings=None,
    mode: str | None = None,
    measured: Columns | None = None,
    tolerance: float = 0.3,
    max_rotation: float = 4.0,
    max_evals: int = 900,
    simulate: bool = True,
    margin: float | None = None,
) -> GrainFit:
    """Fit each grain of a bicrystal candidate onto the window's columns (see the module docstring).

    Parameters
    ----------
    window
        The experimental window (the one ``fit`` was refined on) at ``sampling`` [Å/px].
    atoms
        The bicrystal candidate (family ``gb``, grains tagged 1 and 2), as stored in the library.
    conditions
        Its imaging conditions (:class:`surrogate.simulate.conditions.ImagingConditions`).
    fit
        Its refinement (:class:`surrogate.inference.refine.Fit`): the pose that places the structure.
    settings
        :class:`surrogate.simulate.images.SimulationSettings` for the final simulation.
    measured
        The window's columns, when already found (:func:`find_columns`).
    max_rotation
        Largest rotation of a grain from the candidate's orientation [deg] in the seeding alignment.
    simulate
        Simulate the fitted structure for its FOM/SSIM (one simulation); ``False`` fits columns only.

    Returns
    -------
    GrainFit
    """
    from scipy.optimize import minimize

    from surrogate.inference.refine import score_at_pose, widen_boundary
    from surrogate.structures.crystals import shortest_distance

    t0 = time.perf_counter()
    mode = str(mode or getattr(conditions, "mode", "haadf"))
    margin = float(fit.extra.get("margin", 2.0) if margin is None else margin)
    shape = window.shape
    field_xy = (shape[1] * margin * conditions.sampling, shape[0] * margin * conditions.sampling)
    if measured is None:
        measured = find_columns(window, sampling, mode)
    wide = widen_boundary(atoms, margin * max(shape) * conditions.sampling)
    merge = measured.merge_distance  # unresolved neighbours: one blob
    before_model = merge_columns(window_columns(wide, conditions, shape, fit, margin), merge)
    before = match_columns(measured, before_model, tolerance, mirror=False, search=False).summary()
    gr = _grains(wide, field_xy)
    gr.columns = [merge_columns(c, merge) for c in gr.columns]
    ext = (float(gr.cell[0]), float(gr.cell[1]))
    to_window, to_structure = _pose_maps(ext, conditions.sampling, shape, margin, fit.pose)
    x = {n: 0.0 for n, _ in PARAMS}
    counter = [0]
    cost = _cost_fn(gr, measured.xy, to_window, counter)
    if len(measured) < 6:
        raise StructureError("fewer than 6 atom columns found in the window: fit_grains needs a resolved lattice")
    # seeds: each grain on its side's columns (twice: the second after the first moved the grain),
    # the sides split at the candidate's boundary and at boundaries moved by up to the bound (a
    # rigid fit that left the boundary a few Å off would otherwise seed each grain partly on the
    # other grain's columns); the candidate's seeding and the best other one are each descended,
    # and the lower final column cost wins
    seeded = []
    for b0 in np.arange(-BOUNDS["boundary"], BOUNDS["boundary"] + 1e-9, 2.0):
        xs = dict(x, boundary=float(b0))
        for _ in range(2):
            for g in (1, 2):
                xs = _seed_grain(gr, xs, g, measured, to_window, to_structure, max_rotation, tolerance)
        seeded.append((cost(xs), abs(float(b0)), xs))
    at_candidate = min(seeded, key=lambda t: t[1])
    best_other = min((t for t in seeded if t is not at_candidate), key=lambda t: t[0], default=None)
    starts = [at_candidate[2]] + ([best_other[2]] if best_other is not None else [])
    names = [n for n, _ in PARAMS]
    steps = np.array([s for _, s in PARAMS])

    def loss(v):
        xv = dict(zip(names, v))
        if any(abs(xv[n]) > BOUNDS[n] for n in names if n.startswith(("strain", "boundary"))):
            return 3.0
        return cost(xv)

    def descend(x: dict[str, float]) -> dict[str, float]:
        best = (cost(x), x)  # the boundary's position, then all parameters, then the polish
        for b in np.arange(-BOUNDS["boundary"], BOUNDS["boundary"] + 1e-9, 0.5):
            xb = dict(x, boundary=float(b))
            c = cost(xb)
            if c < best[0] - 1e-9:
                best = (c, xb)
        x = best[1]
        x0 = np.array([x[n] for n in names])
        res = minimize(
            loss,
            x0,
            method="Nelder-Mead",
            options={
                "maxfev": max_evals // len(starts),
                "xatol": 1e-3,
                "fatol": 1e-6,
                "initial_simplex": np.vstack([x0, x0 + np.diag(steps)]),
            },
        )
        if res.fun < best[0]:
            x = dict(zip(names, (float(v) for v in res.x)))
        polished = _polish(gr, dict(x), measured, to_window, to_structure, tolerance)
        return polished if cost(polished) <= cost(x) + 1e-3 else x

    ends = [descend(x0) for x0 in starts]
    x = min(ends, key=cost)  # ties: the candidate's own boundary (first)
    final_cost = cost(x)
    collision = 0.75 * shortest_distance(_unit_of(atoms)) if _unit_of(atoms) is not None else 1.5
    fitted = build_fitted(gr, x, collision, atoms)
    after_model = merge_columns(_window_columns_fitted(fitted, conditions, shape, to_window), merge)
    after = match_columns(measured, after_model, tolerance, mirror=False, search=False).summary()
    out = GrainFit(
        fitted,
        x,
        before,
        after,
        fom_before=float(fit.fom),
        ssim_before=float(fit.ssim),
        evaluations=counter[0],
        cost=final_cost,
        measured=measured,
    )
    if simulate:
        f, _, ssim, image = score_at_pose(window, fitted, conditions, fit, settings, margin)
        out.fom, out.ssim, out.image, out.simulations = float(f), float(ssim), image, 1
    out.seconds = time.perf_counter() - t0
    return out


def _unit_of(atoms: Atoms):
    from surrogate.structures.crystals import crystal

    name = (atoms.info.get("params") or {}).get("material")
    try:
        return crystal(name) if name else None
    except Exception:  # a material the builder does not know: default collision distance
        return None


def _window_columns_fitted(fitted: Atoms, conditions, shape, to_window) -> Columns:
    cols = projected_columns(fitted)
    xy = to_window(cols.xy)
    s = conditions.sampling
    keep = (
        (xy[:, 1] >= -0.5 * s)
        & (xy[:, 1] < (shape[0] - 0.5) * s)
        & (xy[:, 0] >= -0.5 * s)
        & (xy[:, 0] < (shape[1] - 0.5) * s)
    )
    return Columns(xy, cols.intensity, cols.width, cols.species).subset(keep)


# ---------------------------------------------------------------------------------------------
# local search


def recipe_of(atoms: Atoms, fov_x: float | None = None) -> dict[str, Any] | None:
    """The ``build_structure`` recipe of a library bicrystal (``None`` when its params cannot say)."""
    params = atoms.info.get("params") or {}
    if atoms.info.get("family") != "gb" or "material" not in params:
        return None
    fov = list(params.get("fov", [atoms.cell[0, 0], atoms.cell[1, 1]]))
    if fov_x is not None:
        fov[0] = max(float(fov[0]), float(fov_x))
    base = {
        "material": {"name": params["material"]},
        "thickness": float(params["thickness"]),
        "fov": [float(v) for v in fov],
        "translation": [float(v) for v in params.get("translation", [0, 0, 0])],
    }
    if "grain1" in params:
        keep = ("zone_axis", "upward", "tilt", "flip_species")
        return {
            "kind": "gb",
            "name": params.get("name", "gb"),
            **base,
            "grain1": {k: v for k, v in params["grain1"].items() if k in keep},
            "grain2": {k: v for k, v in params["grain2"].items() if k in keep},
        }
    if str(params.get("name", "")).startswith("twin") and params.get("construction", "").startswith("rotation 180"):
        return {"kind": "twin", **base}
    return None


@dataclass
class SearchResult:
    """Result of :func:`local_search`: the best fit, every proposal tried, the simulations used."""

    best: GrainFit
    best_recipe: dict[str, Any] | None
    tried: list[dict[str, Any]]
    simulations: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "best": self.best.summary(),
            "best_recipe": self.best_recipe,
            "proposals": len(self.tried),
            "simulations": self.simulations,
            "seconds": round(self.seconds, 2),
            "tried": self.tried,
        }


def _proposals(recipe: dict[str, Any], tilts, inclinations, translations) -> list[tuple[str, dict]]:
    out = []
    if recipe["kind"] == "gb":
        for d in tilts:
            r = {**recipe, "grain2": dict(recipe["grain2"], tilt=float(recipe["grain2"].get("tilt", 0.0)) + d)}
            out.append((f"misorientation {d:+g}°", r))
        for d in inclinations:
            r = {
                **recipe,
                "grain1": dict(recipe["grain1"], tilt=float(recipe["grain1"].get("tilt", 0.0)) + d),
                "grain2": dict(recipe["grain2"], tilt=float(recipe["grain2"].get("tilt", 0.0)) + d),
            }
            out.append((f"inclination {d:+g}°", r))
    t0 = np.asarray(recipe.get("translation", [0, 0, 0]), float)
    if np.any(t0 != 0):  # the library's rigid-translation variants of one boundary: try the untranslated one
        out.append(("translation reset", {**recipe, "translation": [0.0, 0.0, 0.0]}))
    for tr in translations:
        out.append((f"translation {tr}", {**recipe, "translation": [float(v) for v in t0 + np.asarray(tr, float)]}))
    return out


def local_search(
    window: np.ndarray,
    sampling: float,
    atoms: Atoms,
    conditions,
    fit,
    budget: int = 12,
    settings=None,
    mode: str | None = None,
    measured: Columns | None = None,
    tolerance: float = 0.3,
    tilts=(-2.0, -1.0, 1.0, 2.0),
    inclinations=(-3.0, 3.0),
    translations=(
        (0.0, 0.5, 0.0),
        (0.0, -0.5, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, -1.0, 0.0),
        (0.5, 0.0, 0.0),
        (-0.5, 0.0, 0.0),
    ),
    max_proposals: int = 24,
    start: GrainFit | None = None,
) -> SearchResult:
    """Nearby boundaries of a bicrystal candidate, fitted per grain and the best kept.

    Proposals (built with :func:`surrogate.structures.recipes.build_structure`): grain 2's tilt
    changed by ``tilts`` [deg] (misorientation), both grains' tilts by ``inclinations`` [deg] (the
    boundary plane's inclination), grain 2 rigidly translated by ``translations`` [Å]. Each is fitted
    per grain in column space (:func:`fit_grains` with ``simulate=False``: no simulation); the best
    ``budget - 1`` by column cost are then simulated for their FOM, and the candidate with the most
    columns matched (then the lower FOM) wins. The candidate itself (``start``, or fitted here) is
    always among them.

    Returns
    -------
    SearchResult
        ``simulations`` counts every image simulated, the start's included.
    """
    from surrogate.inference.refine import score_at_pose
    from surrogate.structures.recipes import build_structure

    t0 = time.perf_counter()
    mode = str(mode or getattr(conditions, "mode", "haadf"))
    if measured is None:
        measured = find_columns(window, sampling, mode)
    if start is None:
        start = fit_grains(window, sampling, atoms, conditions, fit, settings, mode, measured, tolerance)
    sims = start.simulations
    recipe = recipe_of(atoms)
    tried: list[dict[str, Any]] = [
        {
            "proposal": "candidate",
            "cost": round(start.cost, 4),
            "column_fraction": start.after["column_fraction"],
            "fom": start.fom,
        }
    ]
    fits: list[tuple[GrainFit, dict[str, Any] | None, str]] = []
    if recipe is not None:
        for name, r in _proposals(recipe, tilts, inclinations, translations)[:max_proposals]:
            try:
                cand = build_structure(r)
                g = fit_grains(
                    window, sampling, cand, conditions, fit, settings, mode, measured, tolerance, simulate=False
                )
            except StructureError as exc:
                tried.append({"proposal": name, "error": str(exc)})
                continue
            fits.append((g, r, name))
            tried.append({"proposal": name, "cost": round(g.cost, 4), "column_fraction": g.after["column_fraction"]})
    # the column cost sees tiled grains cut at a line, so proposals the per-grain fit absorbs (a small
    # misorientation) tie on it; the built structure's columns (the boundary's own atoms) decide first
    fits.sort(key=lambda f: (-f[0].after["column_fraction"], f[0].cost))
    best: GrainFit = start
    best_recipe: dict[str, Any] | None = recipe
    for g, rec, name in fits[: max(0, budget - sims)]:
        f, _, ssim, image = score_at_pose(window, g.atoms, conditions, fit, settings)
        sims += 1
        g.fom, g.ssim, g.image, g.simulations = float(f), float(ssim), image, 1
        for t in tried:
            if t["proposal"] == name:
                t["fom"] = round(float(f), 4)
        key = (g.after["column_fraction"], -g.fom)
        if key > (best.after["column_fraction"], -(best.fom if np.isfinite(best.fom) else np.inf)):
            best, best_recipe = g, rec
    return SearchResult(best, best_recipe, tried, sims, time.perf_counter() - t0)
