"""Atom columns: measured on an image, projected from a structure, and the score that compares them.

The answer a microscopist checks is the overlay: do the model's columns sit on the image's? This
module turns both sides into point sets in Å and counts how many of the image's columns a model
explains within a tolerance.

* :func:`find_columns` measures columns on an image: local maxima (``skimage.feature.peak_local_max``)
  refined to sub-pixel by 2-D Gaussian fits (``scipy.optimize.least_squares``) on small patches, in
  two passes (the second after subtracting the neighbours' fitted Gaussians, so that overlapping
  tails do not pull the centres). HAADF columns are bright, ABF/BF columns dark (the image is
  inverted); for HRTEM the contrast sign is decided by the fit: both polarities are fitted and the one
  whose peaks are better described by Gaussians (median patch R², ties broken by the regularity of the
  nearest-neighbour distances) wins.
* :func:`projected_columns` groups a structure's atoms by their (x, y) position along the beam (z).
* :func:`match_columns` aligns one point set on the other (rotation, translation, optional mirror) and
  counts the one-to-one (mutual nearest) pairs within a tolerance.
* :func:`score_candidate` scores a refined library candidate: its columns placed by the refinement's
  pose (:class:`surrogate.inference.refine.Fit`) against the window's columns.

Coordinates: measured columns are in the image frame, ``x = col x sampling``, ``y = row x sampling``
(y grows downward); projected columns are in the structure frame (y grows upward). :func:`match_columns`
absorbs the difference (the mirror) when asked to search; :func:`window_columns` maps structure
columns into a window's frame exactly as the refinement maps them for the overlay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from surrogate.errors import ImageError

__all__ = [
    "Columns",
    "ColumnMatch",
    "find_columns",
    "merge_columns",
    "projected_columns",
    "match_columns",
    "window_columns",
    "score_candidate",
    "gaussian_image",
    "structure_to_window",
]

#: exponent of the incoherent (HAADF) Z-contrast used for projected column intensities
Z_EXPONENT = 1.7
#: closest column separations [Å] :func:`find_columns` tries when the image's resolution decides
SEPARATIONS = (1.0, 1.6, 2.4)


@dataclass
class Columns:
    """A set of atom columns.

    Attributes
    ----------
    xy
        ``(n, 2)`` positions [Å]: image frame (``x = col x sampling``, ``y = row x sampling``) for
        measured columns, structure frame for projected ones.
    intensity
        ``(n,)`` fitted peak height above the local background (measured, in image units) or the sum
        of ``Z**1.7`` over the column's atoms (projected).
    width
        ``(n,)`` Gaussian standard deviation [Å] (measured); NaN for projected columns.
    species
        Dominant element of each projected column (``"Cd"``, ``"Te"``), ``None`` when unknown.
    """

    xy: np.ndarray
    intensity: np.ndarray
    width: np.ndarray
    species: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.xy = np.asarray(self.xy, dtype=np.float64).reshape(-1, 2)
        n = len(self.xy)
        self.intensity = np.asarray(self.intensity, dtype=np.float64).reshape(n)
        self.width = np.asarray(self.width, dtype=np.float64).reshape(n)
        if self.species is not None:
            self.species = [str(s) for s in self.species]
            if len(self.species) != n:
                raise ValueError(f"{len(self.species)} species for {n} columns")

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def merge_distance(self) -> float:
        """[Å] model columns closer than this are one blob at the resolution these columns were
        measured at (``find_columns``; 0 when every column is resolved or the set was not measured)."""
        return float(self.meta.get("merge_distance", 0.0) or 0.0)

    def subset(self, keep: np.ndarray) -> Columns:
        """The columns where the boolean (or index) array ``keep`` selects."""
        idx = np.arange(len(self))[keep]
        sp = None if self.species is None else [self.species[i] for i in idx]
        return Columns(self.xy[idx], self.intensity[idx], self.width[idx], sp, dict(self.meta))

    def records(self) -> list[dict[str, Any]]:
        """One dict per column: ``x``, ``y`` [Å], ``intensity``, ``width`` [Å], ``species``."""
        out = []
        for i in range(len(self)):
            w = float(self.width[i])
            out.append(
                {
                    "x": round(float(self.xy[i, 0]), 4),
                    "y": round(float(self.xy[i, 1]), 4),
                    "intensity": float(self.intensity[i]),
                    "width": None if np.isnan(w) else round(w, 4),
                    "species": None if self.species is None else self.species[i],
                }
            )
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Write ``x_A,y_A,intensity,width_A,species`` (one line a column); returns the path."""
        from surrogate.io.files import atomic_write_text

        lines = ["x_A,y_A,intensity,width_A,species"]
        for r in self.records():
            lines.append(
                f"{r['x']},{r['y']},{r['intensity']:.6g},{'' if r['width'] is None else r['width']},"
                f"{r['species'] or ''}"
            )
        path = Path(path)
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write ``{"units": ..., "meta": ..., "columns": [records]}``; returns the path."""
        from surrogate.io.files import atomic_write_text

        doc = {"units": {"x": "Å", "y": "Å", "width": "Å"}, "meta": self.meta, "columns": self.records()}
        path = Path(path)
        atomic_write_text(path, json.dumps(doc, indent=1, default=float))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Columns:
        """Read what :meth:`to_json` wrote."""
        doc = json.loads(Path(path).read_text())
        cols = doc["columns"]
        species = [c["species"] for c in cols]
        return cls(
            np.array([[c["x"], c["y"]] for c in cols], float).reshape(-1, 2),
            np.array([c["intensity"] for c in cols], float),
            np.array([np.nan if c["width"] is None else c["width"] for c in cols], float),
            None if (not cols or any(s is None for s in species)) else species,
            doc.get("meta") or {},
        )


# ---------------------------------------------------------------------------------------------
# measured columns


def _gauss(params: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a, r0, c0, s, b = params
    return b + a * np.exp(-((yy - r0) ** 2 + (xx - c0) ** 2) / (2.0 * s * s))


def gaussian_image(
    shape: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    amplitude: np.ndarray,
    sigma: np.ndarray,
    skip: int | None = None,
) -> np.ndarray:
    """Sum of isotropic Gaussians (no background) on a ``shape`` grid [px]; ``skip`` leaves one out."""
    out = np.zeros(shape, np.float64)
    for i, (r, c, a, s) in enumerate(zip(rows, cols, amplitude, sigma)):
        if i == skip or not np.isfinite(s):
            continue
        h = int(np.ceil(4 * s)) + 1
        r0, r1 = max(0, int(r) - h), min(shape[0], int(r) + h + 2)
        c0, c1 = max(0, int(c) - h), min(shape[1], int(c) + h + 2)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        out[r0:r1, c0:c1] += a * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s))
    return out


def _fit_peaks(signal: np.ndarray, peaks: np.ndarray, radius: int, sigma0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian fit of each peak on its ``(2 radius + 1)²`` patch. Returns ``(n, 5)`` parameters ``(amplitude, row, col, sigma,
    background)`` [px] and the patch R² of each fit (NaN where the fit failed)."""
    from scipy.optimize import least_squares

    out = np.full((len(peaks), 5), np.nan)
    r2 = np.full(len(peaks), np.nan)
    h, w = signal.shape
    for i, (pr, pc) in enumerate(peaks):
        pr, pc = int(round(pr)), int(round(pc))
        r0, r1, c0, c1 = max(0, pr - radius), min(h, pr + radius + 1), max(0, pc - radius), min(w, pc + radius + 1)
        patch = signal[r0:r1, c0:c1].astype(np.float64)
        if patch.size < 9:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
        b0 = float(np.percentile(patch, 10))
        a0 = float(patch.max() - b0)
        x0 = np.array([max(a0, 1e-6), pr, pc, sigma0, b0])
        lo = np.array([0.0, pr - radius, pc - radius, 0.3, -np.inf])
        hi = np.array([np.inf, pr + radius, pc + radius, 2.0 * radius + 1.0, np.inf])
        x0 = np.clip(x0, lo + 1e-9, np.where(np.isfinite(hi), hi - 1e-9, np.inf))
        try:
            res = least_squares(
                lambda p: (_gauss(p, yy, xx) - patch).ravel(),
                x0,
                bounds=(lo, hi),
                method="trf",
                x_scale="jac",
                max_nfev=200,
            )
        except (ValueError, np.linalg.LinAlgError):
            continue
        out[i] = res.x
        ss = float(((patch - patch.mean()) ** 2).sum())
        r2[i] = 1.0 - float((res.fun**2).sum()) / ss if ss > 0 else np.nan
    return out, r2


def _columns_of(
    signal: np.ndarray, sampling: float, min_separation: float, threshold: float, refine_passes: int
) -> tuple[Columns, float]:
    """Columns of the bright peaks of ``signal`` and the polarity score (median R², regularity)."""
    from scipy.ndimage import gaussian_filter
    from skimage.feature import peak_local_max

    sep_px = max(1.0, min_separation / sampling)
    smooth = gaussian_filter(signal, max(0.5, 0.2 / sampling))
    lo, hi = np.percentile(smooth, [1.0, 99.8])
    if not hi > lo:
        return Columns(np.zeros((0, 2)), np.zeros(0), np.zeros(0)), -np.inf
    scaled = (smooth - lo) / (hi - lo)
    peaks = peak_local_max(
        scaled,
        min_distance=max(1, int(np.floor(sep_px * 0.8))),
        threshold_abs=threshold,
        exclude_border=max(1, int(np.ceil(sep_px / 3))),
    )
    if len(peaks) == 0:
        return Columns(np.zeros((0, 2)), np.zeros(0), np.zeros(0)), -np.inf
    radius = max(2, int(np.ceil(0.55 * sep_px)))
    sigma0 = max(0.8, 0.3 * sep_px)
    sig = (signal - lo) / (hi - lo)
    params, r2 = _fit_peaks(sig, peaks, radius, sigma0)
    for _ in range(refine_passes):  # refit with the neighbours' tails removed
        ok = np.isfinite(params[:, 0])
        full = gaussian_image(sig.shape, params[ok, 1], params[ok, 2], params[ok, 0], params[ok, 3])
        idx = np.flatnonzero(ok)
        centres = np.round(params[ok, 1:3]).astype(int)
        new = np.full_like(params, np.nan)
        new_r2 = np.full_like(r2, np.nan)
        for k, i in enumerate(idx):
            own = gaussian_image(
                sig.shape, params[i : i + 1, 1], params[i : i + 1, 2], params[i : i + 1, 0], params[i : i + 1, 3]
            )
            p, q = _fit_peaks(sig - (full - own), centres[k : k + 1], radius, float(params[i, 3]))
            new[i], new_r2[i] = p[0], q[0]
        params, r2 = new, new_r2
    ok = np.isfinite(params[:, 0])
    # keep peaks that moved less than a patch radius from the maximum and are not absurdly wide
    ok &= params[:, 3] < 0.9 * radius + 1.0
    ok &= params[:, 0] > 0.05
    # and whose fitted centre keeps half its patch inside the image: a blob cut by the edge pulls the
    # Gaussian's centre off the column (measured: 0.6-0.8 Å on the demo's edge blobs)
    h, w = signal.shape
    inner = 0.5 * radius
    with np.errstate(invalid="ignore"):
        ok &= (params[:, 1] >= inner) & (params[:, 1] <= h - 1 - inner)
        ok &= (params[:, 2] >= inner) & (params[:, 2] <= w - 1 - inner)
    params, r2 = params[ok], r2[ok]
    # de-duplicate fits that converged on the same column
    keep = np.ones(len(params), bool)
    if len(params) > 1:
        from scipy.spatial import cKDTree

        for i, j in sorted(cKDTree(params[:, 1:3]).query_pairs(0.5 * sep_px)):
            if keep[i] and keep[j]:
                keep[j if params[j, 0] < params[i, 0] else i] = False
    params, r2 = params[keep], r2[keep]
    xy = np.stack([params[:, 2] * sampling, params[:, 1] * sampling], axis=1)
    cols = Columns(xy, params[:, 0] * (hi - lo), params[:, 3] * sampling)
    score = float(np.nanmedian(r2)) if len(r2) else -np.inf
    if len(cols) > 3:  # regularity: spread of nearest-neighbour distances
        from scipy.spatial import cKDTree

        d, _ = cKDTree(xy).query(xy, k=2)
        nn = d[:, 1]
        score -= 0.1 * float(np.std(nn) / max(np.median(nn), 1e-9))
    return cols, score


def find_columns(
    image: np.ndarray,
    sampling: float,
    mode: str = "haadf",
    min_separation: float | None = None,
    threshold: float = 0.2,
    refine_passes: int = 1,
    polarity: int | None = None,
) -> Columns:
    """Atom columns of an image, to sub-pixel precision.

    Parameters
    ----------
    image
        2-D image (any units; it is rescaled internally).
    sampling
        Pixel size [Å/px].
    mode
        ``haadf`` (bright columns), ``abf`` / ``bf`` (dark columns: the image is inverted) or
        ``hrtem`` (the contrast sign is chosen by the fit, see the module docstring).
    min_separation
        Closest distance between two columns [Å]; sets the peak search's minimum distance and the
        Gaussian patch (about 0.55 x this radius). ``None`` (default): the image's resolution decides,
        :data:`SEPARATIONS` are tried and the one that finds the most columns is kept, so an image
        whose dumbbells are not resolved (a large source size) gives one column per blob instead of
        peaks rejected as too wide. Compare model columns with
        ``merge_columns(model, measured.merge_distance)``.
    threshold
        Peaks below this fraction of the (1st-99.8th percentile) range of the smoothed image are ignored.
    refine_passes
        Refits of each column after subtracting its neighbours' fitted Gaussians.
    polarity
        ``+1`` (bright columns) or ``-1`` (dark) to override the mode's sign.

    Returns
    -------
    Columns
        Image-frame positions [Å], fitted peak heights (image units), Gaussian widths [Å];
        ``meta`` records the mode, sampling and the polarity used.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ImageError(f"find_columns needs a 2-D image of at least 8x8 px, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ImageError("the image holds NaN or infinite pixels: clean or crop it before finding columns")
    if not sampling > 0:
        raise ImageError(f"sampling must be positive [Å/px], got {sampling}")
    mode = mode.lower()
    if polarity is not None:
        signs = [int(np.sign(polarity)) or 1]
    elif mode == "haadf":
        signs = [1]
    elif mode in ("abf", "bf"):
        signs = [-1]
    elif mode == "hrtem":
        signs = [1, -1]
    else:
        raise ImageError(f"unknown imaging mode {mode!r} for find_columns: use haadf, abf, bf or hrtem")
    found: list[tuple[int, Columns, int, float, dict]] = []
    for sep in SEPARATIONS if min_separation is None else (float(min_separation),):
        best: tuple[float, Columns, int] | None = None
        scores = {}
        for s in signs:
            cols, score = _columns_of(s * img, sampling, sep, threshold, refine_passes)
            scores[s] = score
            if best is None or score > best[0]:
                best = (score, cols, s)
        assert best is not None
        found.append((len(best[1]), best[1], best[2], sep, scores))
    _, cols, sign, sep, scores = max(found, key=lambda f: (f[0], -f[3]))  # most columns, then the finest
    min_separation = sep
    cols.meta = {
        "mode": mode,
        "sampling": float(sampling),
        "polarity": sign,
        "polarity_scores": {str(k): round(v, 4) for k, v in scores.items()},
        "frame": "image",
        "min_separation": float(min_separation),
        # model columns closer than this are one blob at this image's resolution (0: all resolved)
        "merge_distance": 0.0 if min_separation <= SEPARATIONS[0] else 0.9 * float(min_separation),
    }
    return cols


def merge_columns(columns: Columns, distance: float) -> Columns:
    """Columns closer than ``distance`` [Å] (chains of such neighbours) merged into one, as an image
    that does not resolve them shows them: at the intensity-weighted centroid, intensities summed,
    the brightest member's species. (A blurred dumbbell peaks between the centroid and its heavier
    column, nearer the centroid the stronger the blur: within 0.15 Å of it at a 0.7 Å source.)
    ``distance <= 0`` returns ``columns`` unchanged."""
    if distance <= 0 or len(columns) < 2:
        return columns
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(columns)
    pairs = cKDTree(columns.xy).query_pairs(distance, output_type="ndarray")
    if not len(pairs):
        return columns
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    ncomp, label = connected_components(graph, directed=False)
    w = np.nan_to_num(columns.intensity, nan=1.0)
    brightest: dict[int, int] = {}
    for i, lab in enumerate(label):
        if lab not in brightest or w[i] > w[brightest[lab]]:
            brightest[lab] = i
    first = np.array([brightest[k] for k in range(ncomp)])
    wc = np.clip(w, 1e-9, None)
    xy = np.zeros((ncomp, 2))
    np.add.at(xy, label, columns.xy * wc[:, None])
    xy /= np.bincount(label, weights=wc, minlength=ncomp)[:, None]
    intensity = np.bincount(label, weights=w, minlength=ncomp)
    width = np.full(ncomp, np.nan)
    species = None if columns.species is None else [columns.species[i] for i in first]
    return Columns(xy, intensity, width, species, dict(columns.meta, merged=float(distance)))


# ---------------------------------------------------------------------------------------------
# projected columns


def projected_columns(atoms: Atoms, tol: float = 0.3) -> Columns:
    """Atom columns of a structure viewed along z.

    Atoms whose (x, y) lie within ``tol`` [Å] of each other (chains of such neighbours, periodic in x
    and y where the cell is) form one column; its position is the mean (minimum image), its intensity
    the sum of ``Z**1.7`` over its atoms and its species the element with most atoms in it.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(atoms)
    if n == 0:
        return Columns(np.zeros((0, 2)), np.zeros(0), np.zeros(0), [])
    xy = atoms.positions[:, :2].copy()
    cell = atoms.cell.array
    periodic = (
        bool(atoms.pbc[0] and atoms.pbc[1])
        and np.allclose(cell[:2, :2], np.diag(np.diag(cell[:2, :2])), atol=1e-6)
        and cell[0, 0] > 0
        and cell[1, 1] > 0
    )
    box = None
    if periodic:
        box = np.array([cell[0, 0], cell[1, 1]])
        xy = np.mod(xy, box)
        xy = np.where(xy >= box, xy - box, xy)
    tree = cKDTree(xy, boxsize=box) if box is not None else cKDTree(xy)
    pairs = tree.query_pairs(tol, output_type="ndarray")
    graph = (
        coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        if len(pairs)
        else coo_matrix((n, n))
    )
    ncomp, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(ncomp + 1))
    symbols = np.array(atoms.get_chemical_symbols())
    weight = atoms.numbers.astype(np.float64) ** Z_EXPONENT
    pos = np.zeros((ncomp, 2))
    inten = np.zeros(ncomp)
    species = []
    for k in range(ncomp):
        members = order[starts[k] : starts[k + 1]]
        p = xy[members]
        if box is not None:  # minimum image about the first member
            d = p - p[0]
            d -= box * np.round(d / box)
            p = p[0] + d
            centre = np.mod(p.mean(axis=0), box)
        else:
            centre = p.mean(axis=0)
        pos[k] = centre
        inten[k] = weight[members].sum()
        vals, counts = np.unique(symbols[members], return_counts=True)
        species.append(str(vals[np.argmax(counts)]))
    return Columns(pos, inten, np.full(ncomp, np.nan), species, {"frame": "structure", "tol": float(tol)})


# ---------------------------------------------------------------------------------------------
# matching


@dataclass
class ColumnMatch:
    """How well a model's columns sit on the measured ones.

    Attributes
    ----------
    fraction
        Fraction of the measured columns with a model column within the tolerance (one-to-one pairs;
        species-agreeing pairs only when the match was species-aware).
    rms
        Root-mean-square distance of the matched pairs [Å] (NaN without pairs).
    rotation
        Rotation applied to the model [deg] (after the mirror, if any).
    translation
        Translation applied to the model [Å].
    mirror
        Whether the model was mirrored (``y -> -y``) before rotating.
    pairs
        ``(k, 2)`` indices (measured, model) of the matched pairs.
    n_measured, n_model
        Columns on each side (the model's counted where they fall inside the measured field).
    species_fraction
        Fraction of the matched pairs whose species agree (``None`` where the species are unknown).
    tolerance
        Tolerance used [Å].
    """

    fraction: float
    rms: float
    rotation: float
    translation: tuple[float, float]
    mirror: bool
    pairs: np.ndarray
    n_measured: int
    n_model: int
    species_fraction: float | None = None
    tolerance: float = 0.3

    def transform(self, xy: np.ndarray) -> np.ndarray:
        """Apply the alignment to model positions ``xy`` [Å]."""
        return _apply(np.asarray(xy, float), self.rotation, np.asarray(self.translation), self.mirror)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (``column_fraction``, ``column_rms`` [Å], ...)."""
        return {
            "column_fraction": round(float(self.fraction), 4),
            "column_rms": None if not np.isfinite(self.rms) else round(float(self.rms), 4),
            "n_columns": int(self.n_measured),
            "n_model_columns": int(self.n_model),
            "matched": int(len(self.pairs)),
            "species_fraction": None if self.species_fraction is None else round(float(self.species_fraction), 4),
            "rotation_deg": round(float(self.rotation), 3),
            "translation_A": [round(float(v), 3) for v in self.translation],
            "mirror": bool(self.mirror),
            "tolerance_A": float(self.tolerance),
        }


def _rot(theta_deg: float) -> np.ndarray:
    t = np.deg2rad(theta_deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _apply(xy: np.ndarray, theta: float, t: np.ndarray, mirror: bool) -> np.ndarray:
    p = xy * np.array([1.0, -1.0]) if mirror else xy
    return p @ _rot(theta).T + t


def _mutual_pairs(a: np.ndarray, b: np.ndarray, tol: float, tree_b=None) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of point sets ``a`` and ``b`` closer than ``tol``: ``(pairs, distances)``."""
    from scipy.spatial import cKDTree

    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), int), np.zeros(0)
    tree_b = tree_b or cKDTree(b)
    d_ab, j = tree_b.query(a, distance_upper_bound=tol)
    ok = np.isfinite(d_ab)
    if not ok.any():
        return np.zeros((0, 2), int), np.zeros(0)
    ia = np.flatnonzero(ok)
    jb = j[ok]
    _, back = cKDTree(a).query(b[jb])
    mutual = back == ia
    return np.stack([ia[mutual], jb[mutual]], axis=1), d_ab[ia[mutual]]


def _kabsch(p: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray]:
    """Rotation [deg] and translation taking points ``p`` onto ``q`` (least squares, no reflection)."""
    pc, qc = p.mean(axis=0), q.mean(axis=0)
    h = (p - pc).T @ (q - qc)
    theta = np.degrees(np.arctan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1]))
    return float(theta), qc - pc @ _rot(theta).T


def _nn_vectors(xy: np.ndarray, k: int = 4, top: int = 6, bin_size: float = 0.25) -> np.ndarray:
    """The most frequent short vectors between neighbouring columns (lattice-vector candidates)."""
    from scipy.spatial import cKDTree

    if len(xy) < 3:
        return np.zeros((0, 2))
    k = min(k + 1, len(xy))
    _, idx = cKDTree(xy).query(xy, k=k)
    v = (xy[idx[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    v = v[np.hypot(v[:, 0], v[:, 1]) > 1e-6]
    keys, inverse, counts = np.unique(
        np.round(v / bin_size).astype(int), axis=0, return_inverse=True, return_counts=True
    )
    order = np.argsort(-counts)[:top]
    inverse = inverse.ravel()
    return np.array([v[inverse == o].mean(axis=0) for o in order])


def _seed_rotations(measured: np.ndarray, model: np.ndarray, max_rotation: float | None) -> list[float]:
    """Rotations [deg] mapping a frequent neighbour vector of the model onto one of the measured
    columns of similar length; 0 always included."""
    out = [0.0]
    vm, vp = _nn_vectors(measured), _nn_vectors(model)
    for a in vm:
        la = np.hypot(*a)
        for b in vp:
            lb = np.hypot(*b)
            if abs(la - lb) > 0.12 * max(la, lb):
                continue
            th = float(np.degrees(np.arctan2(a[1], a[0]) - np.arctan2(b[1], b[0])))
            th = (th + 180.0) % 360.0 - 180.0
            if max_rotation is not None and abs(th) > max_rotation:
                continue
            if all(abs((th - o + 180.0) % 360.0 - 180.0) > 1.0 for o in out):
                out.append(th)
    return out


def _seed_translations(
    measured: np.ndarray, model_rot: np.ndarray, tol: float, top: int = 4, n_anchor: int = 40
) -> list[np.ndarray]:
    """Translations voted by pairs (central measured column, any model column): the ``top``
    histogram peaks (bins of ``tol``), each averaged over its votes."""
    centre = measured.mean(axis=0)
    anchors = measured[np.argsort(np.hypot(*(measured - centre).T))[:n_anchor]]
    d = (anchors[:, None, :] - model_rot[None, :, :]).reshape(-1, 2)
    keys, inverse, counts = np.unique(
        np.floor(d / tol).astype(np.int64), axis=0, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    # merge each bin with its 8 neighbours (a peak split over bin edges)
    lookup = {tuple(k): c for k, c in zip(keys, counts)}
    merged = np.array([sum(lookup.get((k[0] + i, k[1] + j), 0) for i in (-1, 0, 1) for j in (-1, 0, 1)) for k in keys])
    out: list[np.ndarray] = []
    for o in np.argsort(-merged)[: top * 3]:
        k = keys[o]
        near = np.abs(np.floor(d / tol).astype(np.int64) - k).max(axis=1) <= 1
        t = np.median(d[near], axis=0)
        if all(np.hypot(*(t - u)) > tol for u in out):
            out.append(t)
        if len(out) == top:
            break
    return out


def _icp(
    measured: np.ndarray,
    model: np.ndarray,
    theta: float,
    t: np.ndarray,
    tol: float,
    iterations: int = 12,
    fix_rotation: bool = False,
    max_rotation: float | None = None,
) -> tuple[float, np.ndarray]:
    """Iterative closest points (mutual nearest pairs within 2 x ``tol``, then ``tol``), rigid."""
    from scipy.spatial import cKDTree

    tree = cKDTree(measured)
    theta0 = theta
    for it in range(iterations):
        cur = model @ _rot(theta).T + t
        pairs, _ = _mutual_pairs(cur, measured, tol * (2.0 if it < iterations // 2 else 1.0), tree)
        if len(pairs) < 3:
            break
        if fix_rotation:
            t = t + (measured[pairs[:, 1]] - cur[pairs[:, 0]]).mean(axis=0)
            continue
        dth, dt = _kabsch(cur[pairs[:, 0]], measured[pairs[:, 1]])
        new_theta = theta + dth
        if max_rotation is not None and abs((new_theta - theta0 + 180) % 360 - 180) > max(max_rotation, 0.0) + 1e-9:
            t = t + (measured[pairs[:, 1]] - cur[pairs[:, 0]]).mean(axis=0)
            continue
        t = t @ _rot(dth).T + dt
        theta = new_theta
        if abs(dth) < 1e-4 and np.hypot(*dt) < 1e-4:
            break
    return float(theta), t


def _agreement(measured: Columns, model: Columns, pairs: np.ndarray) -> np.ndarray:
    """Per matched pair, whether the measured column's species (given, or from the intensity ranking)
    is the model column's; all False where the model's species are unknown."""
    if model.species is None or not len(pairs):
        return np.zeros(len(pairs), bool)
    msp = (
        measured.species
        if measured.species is not None
        else _intensity_species(measured, model.species, model.intensity, pairs)
    )
    return np.array([msp[i] == model.species[j] for i, j in pairs], dtype=bool)


def _intensity_species(
    measured: Columns, model_species: list[str], model_intensity: np.ndarray, pairs: np.ndarray
) -> list[str | None]:
    """Species of the matched measured columns inferred from their intensity (HAADF Z contrast):
    ranked by intensity and split in the proportions of the matched model species, brightest to the
    species with the brightest model columns."""
    out: list[str | None] = [None] * len(measured)
    if len(pairs) == 0:
        return out
    sp = np.array([model_species[j] for j in pairs[:, 1]])
    names = sorted(set(sp), key=lambda s: float(np.mean(model_intensity[pairs[:, 1]][sp == s])))
    order = pairs[np.argsort(measured.intensity[pairs[:, 0]]), 0]  # dimmest first
    start = 0
    for name in names:
        k = int((sp == name).sum())
        for i in order[start : start + k]:
            out[int(i)] = name
        start += k
    return out


def match_columns(
    measured: Columns,
    model: Columns,
    tolerance: float = 0.3,
    mirror: bool = True,
    species: bool = False,
    max_rotation: float | None = None,
    search: bool = True,
    region_margin: float = 1.0,
) -> ColumnMatch:
    """Align ``model`` onto ``measured`` rigidly and count the columns it explains.

    The alignment (rotation, translation, and a mirror ``y -> -y`` when ``mirror``) is seeded
    robustly, because a periodic lattice has many near-equivalent alignments:

    1. rotations: every angle that maps one of the model's most frequent nearest-neighbour vectors
       onto one of the measured set's of similar length (within 12 %), plus 0 (all within
       ``max_rotation`` [deg] of 0 when given);
    2. translations, per rotation: votes of every (central measured column, model column) pair,
       binned at ``tolerance``; the 4 strongest peaks;
    3. each seed is polished by iterative closest points (mutual nearest pairs, rigid Kabsch fit) and
       the alignment explaining most measured columns (then lowest RMS) wins.

    With ``search=False`` the model is taken as already placed (e.g. by a refinement pose): only a
    short ICP polish from the identity is done (capture radius 2 x ``tolerance``), so a model shifted
    by half a lattice period is not re-aligned onto the image.

    Pairs are one-to-one (mutual nearest neighbours within ``tolerance`` [Å]). Model columns outside
    the measured field (its bounding box grown by ``region_margin`` [Å]) are not counted in
    ``n_model``. With ``species=True`` only pairs of the same species count: measured species come
    from ``measured.species`` or, when unknown, from the intensity ranking (HAADF Z contrast).
    ``species_fraction`` (pairs whose species agree, over all pairs) is given whenever the model's
    species are known. With ``species=True`` the alignment with the most species-agreeing pairs wins
    (a sublattice swap fits the geometry as well).

    Returns
    -------
    ColumnMatch
    """
    A = measured.xy
    B = model.xy
    if len(A) == 0 or len(B) == 0:
        return ColumnMatch(
            0.0, float("nan"), 0.0, (0.0, 0.0), False, np.zeros((0, 2), int), len(A), len(B), None, tolerance
        )
    candidates: list[tuple[float, float, np.ndarray, bool]] = []
    mirrors = (False, True) if (mirror and search) else (False,)
    for mir in mirrors:
        Bm = B * np.array([1.0, -1.0]) if mir else B
        if not search:
            candidates.append((0.0, 0.0, np.zeros(2), mir))
            continue
        for theta in _seed_rotations(A, Bm, max_rotation):
            rot = Bm @ _rot(theta).T
            for t in _seed_translations(A, rot, tolerance):
                candidates.append((0.0, theta, t, mir))
    best = None
    from scipy.spatial import cKDTree

    tree = cKDTree(A)
    for _, theta, t, mir in candidates:
        Bm = B * np.array([1.0, -1.0]) if mir else B
        theta, t = _icp(
            A, Bm, theta, t, tolerance, max_rotation=max_rotation if search else 1.0, iterations=12 if search else 6
        )
        cur = Bm @ _rot(theta).T + t
        pairs, d = _mutual_pairs(A, cur, tolerance, cKDTree(cur))
        rms = float(np.sqrt(np.mean(d**2))) if len(d) else np.inf
        # a lattice fits as well shifted onto the other sublattice (Cd on Te): among alignments, the one
        # whose species agree wins
        agree = int(_agreement(measured, model, pairs).sum()) if species else 0
        key = (agree, len(pairs), -rms)
        if best is None or key > best[0]:
            best = (key, theta, t, mir, pairs, d)
    assert best is not None
    _, theta, t, mir, pairs, d = best
    cur = _apply(B, theta, t, mir)
    lo, hi = A.min(axis=0) - region_margin, A.max(axis=0) + region_margin
    n_model = int(((cur >= lo) & (cur <= hi)).all(axis=1).sum())
    species_fraction = None
    if model.species is not None and len(pairs):
        same = _agreement(measured, model, pairs)
        species_fraction = float(same.mean())
        if species:
            pairs, d = pairs[same], d[same]
    del tree
    rms = float(np.sqrt(np.mean(d**2))) if len(d) else float("nan")
    return ColumnMatch(
        len(pairs) / len(A),
        rms,
        float((theta + 180.0) % 360.0 - 180.0),
        (float(t[0]), float(t[1])),
        bool(mir),
        pairs,
        len(A),
        n_model,
        species_fraction,
        tolerance,
    )


# ---------------------------------------------------------------------------------------------
# candidates placed by a refinement pose


def structure_to_window(
    xy: np.ndarray,
    extent: tuple[float, float],
    sampling: float,
    shape: tuple[int, int],
    margin: float,
    pose: dict[str, float],
) -> np.ndarray:
    """Structure-frame positions ``xy`` [Å] -> window image frame [Å] (``x = col x sampling``,
    ``y = row x sampling``), for a cell of lateral ``extent`` [Å] simulated over ``margin`` x the
    window and moved by the refinement ``pose`` (:func:`surrogate.inference.refine.transform`)."""
    from surrogate.inference.refine import _matrix

    s = sampling
    big = np.array([int(round(shape[0] * margin)), int(round(shape[1] * margin))])
    fov = big[::-1] * s
    x0, y0 = (np.asarray(extent, float) - fov) / 2
    xy = np.asarray(xy, float).reshape(-1, 2)
    c_f = (xy[:, 0] - x0) / s - 0.5
    r_f = big[0] - 0.5 - (xy[:, 1] - y0) / s
    m = _matrix(
        pose.get("angle", 0.0),
        float(np.exp(pose.get("log_scale", 0.0))),
        pose.get("shear", 0.0),
        pose.get("stretch", 0.0),
    )
    c_out = (np.array(shape) - 1) / 2 + np.array([pose.get("row", 0.0), pose.get("col", 0.0)])
    c_in = (big - 1) / 2
    out = (np.linalg.inv(m) @ (np.stack([r_f, c_f]) - c_in[:, None])) + c_out[:, None]
    return np.stack([out[1] * s, out[0] * s], axis=1)


def window_columns(
    atoms: Atoms,
    conditions,
    shape: tuple[int, int],
    fit=None,
    margin: float | None = None,
    tol: float = 0.3,
    pose: dict[str, float] | None = None,
) -> Columns:
    """Projected columns of ``atoms`` in a window's image frame [Å] under a refinement pose.

    The mapping is the one :func:`surrogate.inference.refine.atom_columns` uses for the overlay: the
    cell is repeated over ``margin`` x the window (the simulated field), the field is centred on the
    repeated cell, and the fitted rotation, magnification, shift and scan distortions (``fit.pose``
    or ``pose``) take field pixels to window pixels. Columns outside the window are dropped.
    """
    from surrogate.inference.refine import POSE

    if pose is None:
        pose = dict(fit.pose) if fit is not None else {n: v for n, v, _, _ in POSE}
    if margin is None:
        margin = float((fit.extra.get("margin", 2.0) if fit is not None else 2.0))
    s = conditions.sampling
    big = np.array([int(round(shape[0] * margin)), int(round(shape[1] * margin))])
    fov = big[::-1] * s
    reps = (int(np.ceil(fov[0] / atoms.cell[0, 0] + 1e-9)), int(np.ceil(fov[1] / atoms.cell[1, 1] + 1e-9)), 1)
    rep = atoms.repeat(reps)
    cols = projected_columns(rep, tol)
    ext = (float(rep.cell[0, 0]), float(rep.cell[1, 1]))
    xy = structure_to_window(cols.xy, ext, s, shape, margin, pose)
    out = np.stack([xy[:, 1] / s, xy[:, 0] / s])  # (row, col) [px]
    keep = (out[0] >= -0.5) & (out[0] < shape[0] - 0.5) & (out[1] >= -0.5) & (out[1] < shape[1] - 0.5)
    placed = Columns(xy, cols.intensity, cols.width, cols.species, {"frame": "image", "sampling": float(s)})
    return placed.subset(keep)


def score_candidate(
    window: np.ndarray,
    sampling: float,
    atoms: Atoms,
    conditions,
    fit,
    mode: str | None = None,
    tolerance: float = 0.3,
    measured: Columns | None = None,
    species: bool = False,
    realign: bool = False,
) -> dict[str, Any]:
    """Column score of a refined candidate on its window.

    The window's columns (:func:`find_columns`, or ``measured``) are compared with the candidate's
    projected columns placed by the refinement pose ``fit`` (:func:`window_columns`; a bicrystal is
    widened as the refinement widened it). By default the pose is trusted (``search=False`` in
    :func:`match_columns`: only a small ICP polish), so a candidate whose columns sit half a period
    off scores low; ``realign=True`` searches the alignment afresh.

    Returns
    -------
    dict
        ``column_fraction`` (measured columns matched within ``tolerance`` [Å]), ``column_rms`` [Å],
        ``n_columns`` (measured), ``species_fraction`` (matched pairs of the right species by the
        intensity ranking; ``None`` where it cannot be told) and the rest of
        :meth:`ColumnMatch.summary`.
    """
    from surrogate.inference.refine import widen_boundary

    mode = str(mode or getattr(conditions, "mode", "haadf"))
    if measured is None:
        measured = find_columns(window, sampling, mode)
    margin = float(fit.extra.get("margin", 2.0)) if fit is not None else 2.0
    wide = widen_boundary(atoms, margin * max(window.shape) * conditions.sampling)
    model = merge_columns(window_columns(wide, conditions, window.shape, fit, margin), measured.merge_distance)
    match = match_columns(
        measured, model, tolerance, mirror=False, species=species, search=realign, max_rotation=None if realign else 1.0
    )
    out = match.summary()
    if mode != "haadf":  # intensity does not separate species outside Z contrast
        out["species_fraction"] = None
    return out
