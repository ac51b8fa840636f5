"""Grains and their misorientation, measured on the image: which *kind* of structure it shows.

The embedding is trained to tell configurations apart, and on images made by another pipeline
(thick, frozen phonons, other optics) it mixes up bulk, point defects and boundaries. A
microscopist answers the coarse question by looking: is the lattice one crystal, or two crystals
rotated against each other, and by how much? This module makes that measurement:

1. atom columns are found on the image (:func:`surrogate.inference.columns.find_columns`);
2. each column's neighbours within :data:`RADIUS` are matched against the projected lattice of the
   candidate material and zone axis (the *template*: the difference vectors between the columns of
   a bulk slab, :func:`template_vectors`) at every rotation; the rotation with the best match is the
   column's local orientation (:func:`column_orientations`), modulo the template's rotational
   symmetry (180° along [110], 90° along [100]);
3. the orientations are split into at most two grains (:func:`split_grains`: circular 2-means with
   a test that the two are separated, both large and spatially contiguous);
4. the misorientation between the grains, reduced by the lattice symmetry, names the boundary: a
   Σ from the coincidence-site lattice (:func:`surrogate.structures.csl.csl_misorientations`, the
   lowest Σ within the Brandon criterion and :data:`CSL_TOLERANCE`), ``low-angle`` below
   :data:`LOW_ANGLE`, else ``general``; Σ3 is the ``twin`` family.

:func:`boundary_check` then re-ranks the retrieved candidates: those whose family and
misorientation agree with the measurement come first, and a boundary measured where the library
holds none within the tolerance is reported out of library at the boundary level.

Measured on the independent held-out set (32 images: bulk, point defects, twins, CSL and low-angle
boundaries of CdTe and Si along [110] and [100], HAADF / ABF / HRTEM; docs/evaluation.md): every
single-crystal image gives one grain, every boundary two grains, with the misorientation within
about 1° (low-angle boundaries of 4-7° included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from surrogate.inference.columns import Columns, _rot, find_columns, merge_columns, projected_columns
from surrogate.inference.rank import Candidate
from surrogate.inference.settings import BoundarySettings
from surrogate.structures.labels import reduce_misorientation

__all__ = [
    "RADIUS",
    "LOW_ANGLE",
    "CSL_TOLERANCE",
    "Template",
    "GrainMeasurement",
    "template_vectors",
    "template_for",
    "column_orientations",
    "split_grains",
    "reduce_angle",
    "name_boundary",
    "measure_grains",
    "boundary_check",
    "boundary_window",
    "agrees",
]

#: neighbourhood radius of a column's local orientation [Å] (two to three lattice spacings)
RADIUS = 5.0
#: misorientations below this are named ``low-angle`` [deg]
LOW_ANGLE = 12.0
#: largest difference to a CSL misorientation for the CSL name [deg] (also bounded by Brandon's 15°/√Σ)
CSL_TOLERANCE = 2.0
#: most library configurations :func:`boundary_check` adds when no retrieved candidate agrees
MAX_ADDED = 10
#: a plane of lower indices is named when its normal is within this of the nearest plane's [deg]
PLANE_SLACK = 1.0
#: a boundary is named symmetric when one plane family lies within this of both grains' normals [deg]
#: (a trace fitted across a 30-40 Å field is good to about 2-3°)
SYMMETRIC_TOLERANCE = 3.0
#: a configuration's boundary planes agree with the measured trace when their normals are within this
#: of the measured ones [deg] (symmetric planes of one Σ differ by far more; a trace across a
#: 30-40 Å field is good to a few degrees)
PLANE_TOLERANCE = 8.0
#: columns whose matched share of neighbours is below this get no orientation (boundary cores, edges)
MIN_QUALITY = 0.5


@dataclass(frozen=True)
class Template:
    """The projected lattice a column's neighbourhood is matched against.

    ``vectors`` (n, 2) [Å]: every distinct difference vector between the columns of a bulk slab
    shorter than :data:`RADIUS`; ``fold`` [deg]: its smallest rotational symmetry (180 along [110],
    90 along [100]); ``mirror``: whether a mirror maps it onto itself (then a misorientation and its
    negative are the same and angles reduce to [0, fold / 2])."""

    vectors: np.ndarray
    fold: float
    mirror: bool
    material: str = ""
    zone_axis: str = ""


def _dedupe(v: np.ndarray, tol: float) -> np.ndarray:
    out: list[np.ndarray] = []
    for x in v[np.argsort(np.hypot(*v.T))]:
        if not any(np.hypot(*(x - u)) < tol for u in out):
            out.append(x)
    return np.array(out).reshape(-1, 2)


def _maps_onto(a: np.ndarray, b: np.ndarray, tol: float = 0.25) -> bool:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(b).query(a)
    return bool(np.all(d < tol))


def template_vectors(
    atoms, merge_distance: float = 0.0, radius: float = RADIUS, material: str = "", zone: str = ""
) -> Template:
    """The :class:`Template` of a bulk slab ``atoms`` (beam along z): its projected columns (merged
    below ``merge_distance`` [Å], as an image that does not resolve dumbbells shows them), and the
    difference vectors from its interior columns to every column within ``radius``."""
    from scipy.spatial import cKDTree

    cols = merge_columns(projected_columns(atoms), merge_distance)
    xy = cols.xy
    centre = xy.mean(axis=0)
    inner = np.flatnonzero(np.hypot(*(xy - centre).T) < max(radius, 0.25 * np.ptp(xy, axis=0).min()))
    tree = cKDTree(xy)
    vecs = [xy[j] - xy[i] for i in inner for j in tree.query_ball_point(xy[i], radius) if j != i]
    v = _dedupe(np.array(vecs).reshape(-1, 2), 0.2)
    v = v[np.hypot(*v.T) > 0.5]
    core = v[np.hypot(*v.T) < radius - 0.4]  # vectors near the radius may have lost their rotated partners
    fold = next((f for f in (60.0, 90.0, 120.0, 180.0) if _maps_onto(core @ _rot(f).T, v)), 360.0)
    mirrored = core * np.array([1.0, -1.0])
    mirror = any(_maps_onto(mirrored @ _rot(a).T, v) for a in np.arange(0.0, 360.0, 0.5))
    return Template(v, fold, mirror, material, zone)


@lru_cache(maxsize=16)
def _template_cached(material: str, zone: str, merge_distance: float) -> Template:
    from surrogate.structures.crystals import crystal
    from surrogate.structures.slabs import zone_axis_slab

    axis = [int(c) for c in zone]
    slab = zone_axis_slab(crystal(material), axis, None, (24.0, 24.0), 8.0, material)
    return template_vectors(slab, merge_distance, material=material, zone=zone)


def template_for(material: str, zone: str, merge_distance: float = 0.0) -> Template:
    """The :class:`Template` of a built-in ``material`` (``CdTe``, ``Si``) along the zone axis
    family ``zone`` (``"110"``), built once per process."""
    return _template_cached(str(material), str(zone), round(float(merge_distance), 2))


def column_orientations(
    xy: np.ndarray,
    template: Template,
    radius: float = RADIUS,
    step: float = 0.5,
    sigma: float = 0.3,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Local lattice orientation of every column.

    For each rotation φ (``step`` [deg] apart over one ``template.fold``) a column scores
    ``sum over its neighbours v of exp(-min_t |R(φ) s t - v|² / 2 sigma²)`` (``t`` the template
    vectors, ``s`` = ``scale``); its orientation is the best φ. Returns ``(theta [deg] in [0, fold),
    quality)``, the quality being the best score over the number of neighbours (1: every neighbour
    sits on the rotated template; NaN orientation for columns with fewer than 3 neighbours)."""
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    n = len(xy)
    theta, quality = np.full(n, np.nan), np.zeros(n)
    if n < 4:
        return theta, quality
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return theta, quality
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    v = xy[j] - xy[i]
    keep = np.hypot(*v.T) > 0.5
    i, v = i[keep], v[keep]
    count = np.bincount(i, minlength=n)
    incidence = csr_matrix((np.ones(len(i)), (np.arange(len(i)), i)), shape=(len(i), n))
    t = np.asarray(template.vectors, np.float64) * scale
    phis = np.arange(0.0, template.fold, step)
    score = np.zeros((len(phis), n))
    for lo in range(0, len(phis), 24):
        ph = np.deg2rad(phis[lo : lo + 24])
        c, s = np.cos(ph)[:, None], np.sin(ph)[:, None]
        rt = np.stack([c * t[:, 0] - s * t[:, 1], s * t[:, 0] + c * t[:, 1]], -1)  # (P, T, 2)
        d2 = ((rt[:, :, None, :] - v[None, None]) ** 2).sum(-1).min(1)  # (P, M)
        score[lo : lo + 24] = incidence.T.dot(np.exp(-d2 / (2 * sigma**2)).T).T
    best = score.argmax(0)
    ok = count >= 3
    theta[ok] = phis[best[ok]]
    quality[ok] = score[best[ok], np.flatnonzero(ok)] / count[ok]
    return theta, quality


def _circ_mean(a: np.ndarray, fold: float) -> float:
    z = np.exp(2j * np.pi * a / fold).mean()
    return float(np.mod(np.angle(z) * fold / (2 * np.pi), fold))


def _circ_diff(a, b, fold: float):
    d = np.mod(np.asarray(a) - np.asarray(b), fold)
    return np.minimum(d, fold - d)


def reduce_angle(delta: float, template: Template) -> float:
    """Misorientation ``delta`` [deg] reduced by the template's symmetry: to [0, fold) and, with a
    mirror, to [0, fold / 2] (along [110]: [0, 90]; along [100]: [0, 45])."""
    d = float(np.mod(delta, template.fold))
    return min(d, template.fold - d) if template.mirror else d


@dataclass
class GrainMeasurement:
    """What :func:`measure_grains` found.

    ``n_grains`` is 1 (one crystal), 2 (a boundary) or 0 (too few columns with an orientation);
    ``orientations`` [deg] and ``fractions`` per grain (largest first), ``spread`` their robust
    standard deviation [deg], ``misorientation`` the reduced angle between two grains [deg] and
    ``uncertainty`` its standard error; ``family`` ``single`` | ``twin`` | ``gb``; ``boundary``
    ``Σ5`` | ``low-angle`` | ``general`` with ``sigma`` and ``csl_angle`` where a CSL matched."""

    n_columns: int
    n_oriented: int
    n_grains: int
    orientations: list[float] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    spread: list[float] = field(default_factory=list)
    misorientation: float | None = None
    uncertainty: float | None = None
    family: str | None = None
    boundary: str | None = None
    sigma: int | None = None
    csl_angle: float | None = None
    contiguity: float | None = None
    quality: float = 0.0  # mean share of each column's neighbours on the rotated template (1: all)
    material: str = ""
    zone_axis: str = ""
    scale: float = 1.0
    grain: np.ndarray | None = None  # (n_columns,) grain of each column (-1: no orientation)
    offset_px: tuple[int, int] = (0, 0)  # (row, col) of the measured field in the image it was cut from
    columns: Columns | None = None
    trace: float | None = None  # normal of the boundary line in the image frame [deg]
    layout: str | None = None  # ``cut`` (one boundary in the field) or ``band`` (a lamella: two)
    band_width: float | None = None  # width of the band along the trace normal [Å] (layout ``band``)
    planes: tuple[str, str] | None = None  # boundary plane family in grain 1 and grain 2, e.g. ("111", "111")
    plane_error: float | None = None  # largest angle between a measured normal and its named plane [deg]
    field: tuple[float, float] | None = None  # size of the measured field [Å]
    normals: tuple[float, float] | None = None  # the boundary normal in each grain's template frame [deg]
    fold: float = 180.0  # the template's rotational symmetry [deg] (reduces ``normals``)
    mirror: bool = True  # whether the template has a mirror

    def plane_mismatch(self, planes: tuple[str, str] | None) -> float | None:
        """Angle [deg] between the measured boundary normals and the nearest normals of the plane
        families ``planes`` (either grain order; the worse grain of the better order). None when
        either is unknown."""
        if planes is None or self.normals is None:
            return None
        t = Template(np.zeros((0, 2)), self.fold, self.mirror)
        a = [reduce_angle(x, t) for x in self.normals]
        table = _zone_planes(str(self.zone_axis))

        def d(label: str, alpha: float) -> float:
            return min((abs(reduce_angle(b, t) - alpha) for b, lab in table if lab == label), default=180.0)

        p1, p2 = planes
        return float(min(max(d(p1, a[0]), d(p2, a[1])), max(d(p2, a[0]), d(p1, a[1]))))

    @property
    def plane(self) -> str | None:
        """``"111"`` for a symmetric boundary, ``"114/221"`` for an asymmetric one (None: not measured)."""
        if self.planes is None:
            return None
        a, b = self.planes
        return a if a == b else "/".join(sorted((a, b)))

    def summary(self) -> dict[str, Any]:
        def r(x, nd=2):
            return None if x is None else round(float(x), nd)

        return {
            "n_columns": self.n_columns,
            "n_oriented": self.n_oriented,
            "n_grains": self.n_grains,
            "orientations": [r(a) for a in self.orientations],
            "fractions": [r(f, 3) for f in self.fractions],
            "spread": [r(s) for s in self.spread],
            "misorientation": r(self.misorientation),
            "uncertainty": r(self.uncertainty),
            "family": self.family,
            "boundary": self.boundary,
            "sigma": self.sigma,
            "csl_angle": r(self.csl_angle, 3),
            "contiguity": r(self.contiguity, 3),
            "quality": r(self.quality, 3),
            "template": f"{self.material} [{self.zone_axis}]",
            "scale": r(self.scale, 3),
            "trace": r(self.trace, 1),
            "layout": self.layout,
            "band_width": r(self.band_width, 1),
            "plane": self.plane,
            "plane_error": r(self.plane_error, 1),
        }

    def describe(self) -> str:
        """One line for reports: ``two grains, 36.9° ± 0.3° about [100] (Σ5, 36.87°)``."""
        if self.n_grains == 0:
            return "grains not measured (too few atom columns with a clear orientation)"
        if self.n_grains == 1:
            return f"one crystal ({self.material} [{self.zone_axis}] lattice, orientation spread {self.spread[0]:.1f}°)"
        name = self.boundary or "boundary"
        csl = f", {self.csl_angle:.2f}°" if self.csl_angle is not None else ""
        plane = f"; ({self.plane}) plane" if self.plane is not None else ""
        return (
            f"two grains, misorientation {self.misorientation:.1f}° ± {self.uncertainty:.1f}° about "
            f"[{self.zone_axis}] ({name}{csl}{plane})"
        )


def split_grains(
    xy: np.ndarray,
    theta: np.ndarray,
    template: Template,
    min_fraction: float = 0.15,
    min_separation: float = 2.5,
    min_contiguity: float = 0.75,
) -> tuple[int, np.ndarray, list[float], float | None]:
    """One grain or two: circular 2-means on the orientations ``theta`` (NaN: not oriented).

    Two grains are kept when each holds at least ``min_fraction`` of the oriented columns, their
    orientations differ by at least ``min_separation`` [deg] and by 4 times their pooled spread, and
    they are contiguous (``min_contiguity`` of the columns share the grain of most of their 6
    nearest oriented neighbours). Returns ``(n_grains, grain per column (-1: none), orientation per
    grain [deg], contiguity)``."""
    from scipy.spatial import cKDTree

    fold = template.fold
    ok = np.isfinite(theta)
    grain = np.full(len(theta), -1)
    a = theta[ok]
    if len(a) < 8:
        return 0, grain, [], None
    # initial centres: the two most populated 1°-bins at least min_separation apart (smoothed histogram)
    bins = max(int(round(fold)), 2)
    h, _ = np.histogram(np.mod(a, fold), bins=bins, range=(0, fold))
    hs = h + 0.5 * (np.roll(h, 1) + np.roll(h, -1))
    centres = (np.arange(bins) + 0.5) * fold / bins
    c1 = centres[int(np.argmax(hs))]
    far = _circ_diff(centres, c1, fold) >= min_separation
    c2 = centres[far][int(np.argmax(hs[far]))] if far.any() else c1
    c = np.array([c1, c2])
    lab = np.zeros(len(a), int)
    for _ in range(20):
        lab = np.argmin(np.stack([_circ_diff(a, ci, fold) for ci in c]), 0)
        new = np.array([_circ_mean(a[lab == k], fold) if (lab == k).any() else c[k] for k in range(2)])
        if np.allclose(new, c):
            break
        c = new
    frac = np.array([(lab == k).mean() for k in range(2)])
    sep = float(_circ_diff(c[0], c[1], fold))
    mad = [1.4826 * np.median(_circ_diff(a[lab == k], c[k], fold)) if (lab == k).sum() > 2 else 0.0 for k in range(2)]
    pooled = float(np.sqrt(0.5 * (mad[0] ** 2 + mad[1] ** 2)))
    contiguity = None
    two = bool(frac.min() >= min_fraction and sep >= min_separation and sep >= 4 * pooled)
    if two:
        pts = xy[ok]
        k = min(7, len(pts))
        _, nb = cKDTree(pts).query(pts, k)
        same = (lab[nb[:, 1:]] == lab[:, None]).mean(1) > 0.5
        contiguity = float(same.mean())
        two = contiguity >= min_contiguity
    if not two:
        grain[ok] = 0
        return 1, grain, [_circ_mean(a, fold)], contiguity
    order = np.argsort(-frac)
    remap = np.empty(2, int)
    remap[order] = np.arange(2)
    grain[ok] = remap[lab]
    return 2, grain, [float(c[k]) for k in order], contiguity


def name_boundary(angle: float, zone: str, max_sigma: int = 99) -> tuple[str, int | None, float | None]:
    """Name of a boundary of misorientation ``angle`` [deg] about the zone axis ``zone``:
    ``("low-angle", None, None)`` below :data:`LOW_ANGLE`; else the lowest Σ <= ``max_sigma`` whose
    CSL angle is within ``min(CSL_TOLERANCE, 15°/√Σ)`` (Brandon), ``("Σ5", 5, 36.87)``; else
    ``("general", None, None)``."""
    from surrogate.errors import StructureError
    from surrogate.structures.csl import csl_misorientations

    if angle < LOW_ANGLE:
        return "low-angle", None, None
    try:
        table = csl_misorientations(zone, max_sigma)
    except StructureError:
        return "general", None, None
    for s, t in table:  # sorted by Σ
        if abs(t - angle) <= min(CSL_TOLERANCE, 15.0 / np.sqrt(s)):
            return f"Σ{s}", int(s), float(t)
    return "general", None, None


def template_fit(cols: Columns, template: Template, scales=(0.94, 0.97, 1.0, 1.03, 1.06), n: int = 120):
    """``(scale, quality)``: how well ``template`` explains the ``n`` columns nearest the centre, at
    the best of ``scales``: the mean over columns of the geometric mean of the share of its neighbours
    on the rotated template (1° steps) and the share of the template's vectors among its neighbours
    (so a dense template, which any lattice half fits, does not win)."""
    xy = cols.xy
    if len(xy) < 8:
        return 1.0, 0.0
    centre = np.median(xy, axis=0)
    sub = np.argsort(np.hypot(*(xy - centre).T))[:n]
    from scipy.spatial import cKDTree

    t_all = np.asarray(template.vectors, np.float64)
    if len(t_all) < 2:
        return 1.0, 0.0
    fits = [column_orientations(xy[sub], template, scale=s, step=1.0) for s in scales]
    k = int(np.argmax([float(np.mean(q)) for _, q in fits]))
    theta, q = fits[k]
    t = t_all * scales[k]
    t = t[np.hypot(*t.T) < RADIUS - 0.5]
    if not len(t):
        return float(scales[k]), 0.0
    tree = cKDTree(xy)
    recall = np.zeros(len(sub))
    for n_, i in enumerate(sub):  # share of the template's vectors that the column's neighbours show
        nb = [j for j in tree.query_ball_point(xy[i], RADIUS) if j != i]
        if not np.isfinite(theta[n_]) or len(nb) < 3:
            continue
        d, _ = cKDTree(xy[nb] - xy[i]).query(t @ _rot(theta[n_]).T)
        recall[n_] = float((d < 0.6).mean())
    return float(scales[k]), float(np.mean(np.sqrt(q * recall)))


def trace_fit(xy: np.ndarray, grain: np.ndarray, step: float = 1.0) -> tuple[float, str, float | None, float]:
    """The line (or band) that separates the two grains' columns.

    For every direction ψ of the normal (``step`` [deg] over 180°) the columns are projected on the
    normal and split by one threshold (``cut``: one boundary crosses the field) or by two (``band``:
    a lamella of one grain between two parallel boundaries, as a periodic twin shows), each with the
    fewest columns on the wrong side. The band wins only when it misassigns less than half as many.
    Returns ``(ψ [deg, 0-180), layout, band width [Å] or None, share of misassigned columns)``; ψ is
    the circular mean of the directions within one column of the best."""
    ok = grain >= 0
    pts, lab = np.asarray(xy, float)[ok], np.asarray(grain)[ok]
    psis = np.arange(0.0, 180.0, step)
    cut_err = np.zeros(len(psis))
    band_err = np.zeros(len(psis))
    widths = np.zeros(len(psis))
    n1 = int((lab == 1).sum())
    n0 = len(lab) - n1
    for i, psi in enumerate(psis):
        p = pts @ np.array([np.cos(np.radians(psi)), np.sin(np.radians(psi))])
        order = np.argsort(p)
        one = (lab[order] == 1).astype(int)
        c1 = np.concatenate([[0], np.cumsum(one)])  # grain-1 columns at or below each threshold
        c0 = np.arange(len(one) + 1) - c1
        cut_err[i] = min(np.min(c1 + (n0 - c0)), np.min(c0 + (n1 - c1)))
        best = np.inf
        for k, nk in ((1, n1), (0, n0)):  # grain k inside the band: errors = nk - max subarray of (+1 k, -1 other)
            s_ = np.concatenate([[0], np.cumsum(np.where(lab[order] == k, 1, -1))])
            gain = s_ - np.minimum.accumulate(s_)
            j = int(np.argmax(gain))
            if nk - gain[j] < best:
                best = nk - gain[j]
                lo = int(np.argmin(s_[: j + 1]))  # the band holds sorted columns lo .. j-1
                widths[i] = float(p[order][j - 1] - p[order][lo]) if j > lo else 0.0
        band_err[i] = best
    use_band = band_err.min() < 0.5 * cut_err.min()
    err = band_err if use_band else cut_err
    near = err <= err.min() + 1
    z = np.exp(2j * np.radians(psis[near])).mean()  # the normal's direction is defined modulo 180°
    psi = float(np.degrees(np.angle(z)) / 2 % 180.0)
    width = float(np.median(widths[near])) if use_band else None
    psi = _trace_direction(pts, lab, psi, use_band)
    return psi, "band" if use_band else "cut", width, float(err.min() / max(len(lab), 1))


def _trace_direction(pts: np.ndarray, lab: np.ndarray, psi: float, band: bool, radius: float = 4.5) -> float:
    """The trace normal ψ [deg] refined on the boundary itself: the midpoints between each column and
    its nearest column of the other grain (within ``radius`` [Å]) line the boundary, and their
    direction that puts them closest to a line (each of a band's two boundaries on its own), within
    10° of ``psi`` in 0.1° steps, is the trace. The coarse ``psi`` is kept when too few midpoints
    line it or they scatter by more than 1 Å about the line."""
    from scipy.spatial import cKDTree

    if len(pts) < 12 or len(set(lab.tolist())) < 2:
        return psi
    mids = []
    for k in (0, 1):
        a, b = pts[lab == k], pts[lab != k]
        d, j = cKDTree(b).query(a, distance_upper_bound=radius)
        ok = np.isfinite(d)
        mids.append(0.5 * (a[ok] + b[j[ok]]))
    m = np.unique(np.round(np.vstack(mids), 3), axis=0)
    if len(m) < 8:
        return psi
    n = np.array([np.cos(np.radians(psi)), np.sin(np.radians(psi))])
    p = m @ n
    groups = [p < np.median(p), p >= np.median(p)] if band else [np.ones(len(m), bool)]
    groups = [g for g in groups if g.sum() >= 4]
    if not groups:
        return psi
    trial = psi + np.arange(-10.0, 10.05, 0.1)
    normals = np.stack([np.cos(np.radians(trial)), np.sin(np.radians(trial))], 1)  # (T, 2)
    spread = sum(np.var(m[g] @ normals.T, axis=0) * g.sum() for g in groups)  # midpoints' scatter about each line
    k = int(np.argmin(spread))
    if spread[k] / len(m) > 1.0:  # the midpoints do not lie on lines (> 1 Å rms): keep the coarse trace
        return psi
    return float(trial[k] % 180.0)


@lru_cache(maxsize=8)
def _zone_planes(zone: str, max_index: int = 6) -> tuple[tuple[float, str], ...]:
    """``(angle [deg] of the plane normal in the template frame, plane family)`` of every plane
    containing the zone axis with indices up to ``max_index``, lowest indices first."""
    from surrogate.structures.csl import TILT_AXES
    from surrogate.structures.labels import plane_label
    from surrogate.structures.slabs import DEFAULT_UPWARD

    z = np.array(TILT_AXES.get(zone, tuple(int(c) for c in zone)), float)
    za = (int(z[0]), int(z[1]), int(z[2]))
    y = np.asarray(DEFAULT_UPWARD.get(za, (0, 0, 1)), dtype=np.float64)
    x = np.cross(y, z)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    out = []
    r = range(-max_index, max_index + 1)
    for h in r:
        for k in r:
            for l_ in r:
                v = np.array([h, k, l_])
                if not v.any() or v @ z != 0 or np.gcd.reduce(np.abs(v[v != 0])) != 1:
                    continue
                out.append((float(np.degrees(np.arctan2(v @ y, v @ x))), plane_label(v), int(np.abs(v).sum())))
    out.sort(key=lambda t: t[2])
    return tuple((a, lab) for a, lab, _ in out)


def plane_of(alpha: float, template: Template, zone: str, max_index: int = 6) -> tuple[str, float]:
    """Family of the plane whose normal makes ``alpha`` [deg] with the template's x axis (the angle
    reduced by the template's symmetry), and the angle between them [deg]; of planes within
    :data:`PLANE_SLACK` of the nearest, the one with the lowest indices."""
    a = reduce_angle(alpha, template)
    found = [(abs(reduce_angle(beta, template) - a), label) for beta, label in _zone_planes(str(zone), max_index)]
    near = min(d for d, _ in found)
    d, label = next((d, lab) for d, lab in found if d <= near + PLANE_SLACK)  # lowest indices first
    return label, float(d)


def boundary_planes(
    alphas: tuple[float, float], template: Template, zone: str, max_index: int = 6, slack: float = 0.0
) -> tuple[tuple[str, str], float]:
    """Plane families of a boundary whose normal makes ``alphas`` [deg] with the two grains' template
    x axes: one family for both (a symmetric boundary) when one lies within :data:`SYMMETRIC_TOLERANCE`
    + ``slack`` of both normals (the one nearest the worse of the two; ``slack``: half the measured
    misorientation's distance from its CSL angle, by which a symmetric boundary's two normals move
    apart), else each grain's own (:func:`plane_of`). Returns ``((plane 1, plane 2), largest angle
    to a named plane [deg])``."""
    a = [reduce_angle(x, template) for x in alphas]
    best, err = None, 180.0
    for beta, label in _zone_planes(str(zone), max_index):
        b = reduce_angle(beta, template)
        d = max(abs(b - a[0]), abs(b - a[1]))
        if d < err - 1e-6:
            best, err = label, d
    if best is not None and err <= SYMMETRIC_TOLERANCE + slack:
        return (best, best), float(err)
    (p1, e1), (p2, e2) = (plane_of(x, template, zone, max_index) for x in alphas)
    return (p1, p2), float(max(e1, e2))


def measure_grains(
    image: np.ndarray,
    sampling: float,
    mode: str,
    material: str,
    zone: str,
    columns: Columns | None = None,
    scales=(0.94, 0.97, 1.0, 1.03, 1.06),
) -> GrainMeasurement:
    """Grains of ``image`` (pixel size ``sampling`` [Å/px], imaging ``mode``) against the lattice of
    ``material`` along ``zone`` (``"110"``): see the module docstring. ``columns`` skips the column
    search. The template's scale is chosen among ``scales`` on a subset of the columns (a pixel size
    off by a few per cent, or a lattice constant other than the built-in one; one scale: that one)."""
    cols = columns if columns is not None else find_columns(image, sampling, mode)
    template = template_for(material, zone, cols.merge_distance)
    xy = cols.xy
    best_scale = float(scales[0]) if len(scales) == 1 else template_fit(cols, template, scales)[0]
    theta, quality = column_orientations(xy, template, scale=best_scale)
    mean_quality = float(np.mean(quality)) if len(quality) else 0.0
    theta = np.where(quality >= MIN_QUALITY, theta, np.nan)
    n_grains, grain, ori, contiguity = split_grains(xy, theta, template)
    m = GrainMeasurement(
        n_columns=len(xy),
        n_oriented=int(np.isfinite(theta).sum()),
        n_grains=n_grains,
        material=material,
        zone_axis=zone,
        scale=best_scale,
        grain=grain,
        columns=cols,
        contiguity=contiguity,
        quality=mean_quality,
    )
    if n_grains == 0:
        return m
    fold = template.fold
    for k in range(n_grains):
        a = theta[grain == k]
        m.fractions.append(float((grain == k).sum() / max(m.n_oriented, 1)))
        m.orientations.append(float(ori[k]))
        m.spread.append(float(1.4826 * np.median(_circ_diff(a, ori[k], fold))) if len(a) else 0.0)
    if n_grains == 1:
        m.family = "single"
        return m
    m.misorientation = reduce_angle(ori[1] - ori[0], template)
    se = [max(m.spread[k], 0.25) / np.sqrt(max((grain == k).sum(), 1)) for k in range(2)]
    m.uncertainty = float(np.hypot(*se) + 0.5 * 0.5)  # + half the orientation step's rounding
    m.boundary, m.sigma, m.csl_angle = name_boundary(m.misorientation, zone)
    m.family = "twin" if m.sigma == 3 else "gb"
    psi, layout, width, _ = trace_fit(xy, grain)
    m.trace, m.layout, m.band_width = psi, layout, width
    slack = 0.5 * abs(m.misorientation - m.csl_angle) if m.csl_angle is not None else 0.0
    m.planes, m.plane_error = boundary_planes((psi - ori[0], psi - ori[1]), template, zone, slack=slack)
    m.normals, m.fold, m.mirror = (psi - ori[0], psi - ori[1]), template.fold, template.mirror
    return m


# ---------------------------------------------------------------------------------------------
# the check of the retrieved candidates


def candidate_planes(params: dict[str, Any] | None) -> tuple[str, str] | None:
    """Boundary plane families ``(grain 1, grain 2)`` of a configuration, from its builder's
    parameters: the recorded planes (CSL boundaries, the coherent twin) or, for a bicrystal given by
    its grains' tilts, the plane normal to the cell's x axis in each grain (None: no boundary, or not
    known)."""
    from surrogate.structures.labels import plane_label

    p = params or {}
    planes = (p.get("csl") or {}).get("planes") or p.get("planes")
    if planes and len(planes) == 2:
        try:
            return plane_label(planes[0]), plane_label(planes[1])
        except (TypeError, ValueError):
            return None
    g1, g2, mat = p.get("grain1"), p.get("grain2"), p.get("material")
    if not (isinstance(g1, dict) and isinstance(g2, dict) and "tilt" in g1 and "tilt" in g2 and mat):
        return None
    try:
        return _tilt_planes(
            str(mat["name"] if isinstance(mat, dict) else mat),
            tuple(int(v) for v in g1.get("zone_axis") or p.get("zone_axis") or (1, 1, 0)),
            tuple(int(v) for v in g1.get("upward") or ()),
            round(float(g1["tilt"]), 4),
            tuple(int(v) for v in g2.get("upward") or ()),
            round(float(g2["tilt"]), 4),
        )
    except Exception:  # a material or orientation the builders do not know: no plane
        return None


@lru_cache(maxsize=256)
def _tilt_planes(material: str, zone: tuple, up1: tuple, tilt1: float, up2: tuple, tilt2: float) -> tuple[str, str]:
    from surrogate.structures.crystals import crystal
    from surrogate.structures.csl import _miller, _rot2
    from surrogate.structures.labels import plane_label
    from surrogate.structures.slabs import orient

    out = []
    for up, tilt in ((up1, tilt1), (up2, tilt2)):
        o = orient(crystal(material), zone, up or None)
        out.append(plane_label(_miller(o, _rot2(-tilt) @ np.array([1.0, 0.0]))))
    return out[0], out[1]


def same_planes(a: tuple[str, str] | None, b: tuple[str, str] | None) -> bool | None:
    """Whether two boundaries meet on the same plane families (either grain order; None: unknown)."""
    if a is None or b is None:
        return None
    return sorted(a) == sorted(b)


def _labels(library, config_id: str):
    rec = library.structures().get(config_id)
    return None if rec is None else rec.labels


def agrees(
    labels, m: GrainMeasurement, tolerance: float, planes: tuple[str, str] | None = None
) -> tuple[bool, bool, float | None]:
    """``(consistent, same_family, angle difference [deg])`` of a configuration's labels with a
    measurement: one crystal agrees with any configuration without a boundary; two grains with a
    boundary about the same axis whose reduced misorientation is within ``tolerance`` [deg] and, when
    both the measurement and the configuration (``planes``, :func:`candidate_planes`) have them, on
    planes whose normals lie within :data:`PLANE_TOLERANCE` of the measured trace's
    (:meth:`GrainMeasurement.plane_mismatch`; a Σ3 (112) twin is not the coherent (111) one)."""
    if labels is None or m.n_grains == 0:
        return True, True, None
    if m.material and (labels.material != m.material or str(labels.zone_axis) != str(m.zone_axis)):
        return False, False, None
    boundary = labels.family in ("twin", "gb")
    if m.n_grains == 1:
        return not boundary, not boundary, None
    if not boundary:
        return False, False, None
    same = labels.family == m.family
    if labels.misorientation is None or m.misorientation is None:
        return False, same, None
    axis = labels.tilt_axis or labels.zone_axis
    if axis and m.zone_axis and str(axis) != str(m.zone_axis):
        return False, same, None
    d = abs(reduce_misorientation(float(labels.misorientation), str(axis)) - m.misorientation)
    off = None if m.boundary == "low-angle" else m.plane_mismatch(planes)
    return d <= tolerance and (off is None or off <= PLANE_TOLERANCE), same, d


def boundary_check(
    library,
    image: np.ndarray,
    ranked: list[Candidate],
    settings: BoundarySettings = BoundarySettings(),
    mode: str | None = None,
    pool: list[Candidate] | None = None,
    lattice_tolerance: float | None = None,
) -> tuple[list[Candidate], dict[str, Any], GrainMeasurement | None]:
    """Measure the grains of ``image`` (the resampled experiment, at the library's sampling; imaging
    ``mode`` as the user gave it, None: the columns' polarity is decided by the fit) against the
    lattice, among the candidates' and then the library's material + zone-axis groups (at most
    ``settings.max_templates``), whose template explains its columns best (:func:`template_fit`),
    and re-rank.

    With ``settings.mode="rerank"``: among the candidates whose lattice fits (``lattice_mismatch``
    within ``lattice_tolerance``; all of them when it is None), and then among the others, those
    whose family and misorientation agree (:func:`agrees`) come first, then those of the measured
    family (nearest misorientation first), then the rest, each part in its ranked order. When no
    candidate agrees, the library's agreeing configurations are added (those of ``pool``, every
    configuration the retrieval matched, first; at most :data:`MAX_ADDED`). Returns ``(candidates,
    record, measurement)``; ``record["in_library"]`` is false when two grains were measured and no
    library boundary agrees (the boundary level is out of library)."""
    if settings.mode == "off" or not ranked:
        return ranked, {}, None
    groups: list[tuple[str, str]] = []
    records = library.structures()
    retrieved = [c.config_id for c in ranked]
    seen = set(retrieved)
    ordered = retrieved + [cid for cid in records if cid not in seen]
    for cid in ordered:  # the candidates' lattices first, then every other lattice of the library
        lab = _labels(library, cid)
        if lab is not None and lab.material and lab.zone_axis and (lab.material, str(lab.zone_axis)) not in groups:
            groups.append((lab.material, str(lab.zone_axis)))
    groups = groups[: settings.max_templates]
    if not groups:
        return ranked, {"mode": settings.mode, "skipped": "no candidate has material / zone-axis labels"}, None
    sampling = float(library.sampling)
    side = int(round(settings.max_field / sampling))
    h, w = image.shape
    r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    field_img = image[r0 : r0 + side, c0 : c0 + side]
    img_mode = mode or "hrtem"  # mode unknown: the column polarity is decided by the fit (find_columns)
    cols = find_columns(field_img, sampling, img_mode)
    tried: dict[str, float] = {}
    best: tuple[float, str, str, float] | None = None
    last = ""
    for material, zone in groups:  # the lattice whose template explains the columns best
        try:
            scale, q = template_fit(cols, template_for(material, zone, cols.merge_distance))
        except Exception as exc:  # a material the builders do not know: skip its template
            last = f"{type(exc).__name__}: {exc}"
            continue
        tried[f"{material} [{zone}]"] = round(q, 3)
        if best is None or q > best[0] + 0.02:
            best = (q, material, zone, scale)
    if best is None:
        return ranked, {"mode": settings.mode, "skipped": f"grains not measured: {last}"}, None
    m = measure_grains(field_img, sampling, img_mode, best[1], best[2], columns=cols, scales=(best[3],))
    m.offset_px = (r0, c0)
    m.field = (field_img.shape[1] * sampling, field_img.shape[0] * sampling)
    tol = float(settings.tolerance)

    def judge(cid: str):
        rec = records.get(cid)
        return agrees(
            None if rec is None else rec.labels, m, tol, candidate_planes(None if rec is None else rec.params)
        )

    info = [(c, *judge(c.config_id)) for c in ranked]
    added: list[str] = []
    if not any(ok for _, ok, _, _ in info):  # none retrieved agrees: the measured lattice's configurations
        have = {c.config_id for c, *_ in info}
        pooled = [c.config_id for c in sorted(pool or [], key=lambda c: c.distance)]
        extra = {c.config_id: c for c in (pool or [])}
        for cid in pooled + [cid for cid in records if cid not in extra]:  # matched ones first
            if cid in have or cid not in records or len(added) >= MAX_ADDED:
                continue
            ok, same, d = judge(cid)
            if ok:
                c = extra.get(cid) or _unretrieved(library, cid, ranked)
                info.append((c, ok, same, d))
                added.append(cid)
    agree = [c for c, ok, _, _ in info if ok]
    family = [c for c, ok, same, _ in info if not ok and same]
    if settings.mode == "rerank" and m.n_grains > 0:

        def key(k: int):
            c, ok, same, d = info[k]
            fits = c.lattice_mismatch is None or lattice_tolerance is None or c.lattice_mismatch <= lattice_tolerance
            return (not fits, 0 if ok else 1 if same else 2, d if (same and not ok and d is not None) else 0.0, k)

        ranked = [info[k][0] for k in sorted(range(len(info)), key=key)]
        for i, c in enumerate(ranked, 1):
            c.rank = i
    record = {
        "mode": settings.mode,
        "tolerance": tol,
        "field_px": [int(field_img.shape[0]), int(field_img.shape[1])],
        "templates": tried,
        "measured": m.summary(),
        "description": m.describe(),
        "consistent": len(agree),
        "agreeing": [c.config_id for c in agree],
        "same_family": [c.config_id for c in family] if m.n_grains == 2 else [],
        "added_from_pool": added,
        "in_library": bool(agree) or m.n_grains != 2,
    }
    return ranked, record, m


def _unretrieved(library, cid: str, ranked: list[Candidate]) -> Candidate:
    """A candidate for a library configuration the matcher did not return: it comes after every
    retrieved one (distance of the farthest), at the top candidate's window and image."""
    rec = library.structures()[cid]
    far = max(c.distance for c in ranked)
    top = ranked[0]
    return Candidate(
        config_id=cid,
        distance=float(far),
        window=top.window,
        entry=top.entry,
        family=rec.family,
        formula=rec.formula,
        kind=rec.kind,
    )


def boundary_window(m: GrainMeasurement, windows, sampling: float) -> int | None:
    """Index of the window (``Window`` objects of the resampled image) whose columns split most
    evenly between the two measured grains: the one that shows the boundary best (None with fewer
    than two grains)."""
    if m.n_grains != 2 or m.columns is None or m.grain is None:
        return None
    px = m.columns.xy / sampling + np.array([m.offset_px[1], m.offset_px[0]])  # (x=col, y=row) [px]
    best, score = None, -1.0
    for k, w in enumerate(windows):
        hh, ww = w.image.shape
        inside = (px[:, 0] >= w.col) & (px[:, 0] < w.col + ww) & (px[:, 1] >= w.row) & (px[:, 1] < w.row + hh)
        g = m.grain[inside]
        g = g[g >= 0]
        if len(g) < 8:
            continue
        share = float(min((g == 0).mean(), (g == 1).mean()))
        if share > score + 1e-9:
            best, score = k, share
    return best
