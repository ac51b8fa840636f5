"""Refine a candidate against the experiment: register the simulation (rotation, scale, shift), fit
imaging parameters (source size, defocus), and score with ingrained's figure of merit.

The figure of merit is ``0.1 x shift [px] + (1 - SSIM)`` (Schwenker et al., ingrained): the shift
that phase correlation still finds between experiment and simulation, plus the structural
dissimilarity once that shift is applied. Registration moves a simulated image that covers twice the
window, so rotation and shift never bring the cell's edge into view; only a change of defocus or the
structure needs a new simulation, which is what makes the fit cheap in simulations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from surrogate.simulate.conditions import ImagingConditions
from surrogate.simulate.images import SimulationSettings, render

__all__ = ["Fit", "fom", "simulate_field", "transform", "refine", "atom_columns"]


def _norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def local_shift(a: np.ndarray, b: np.ndarray, max_shift: float = 8.0) -> np.ndarray:
    """Shift [px, (row, col)] that moves ``b`` onto ``a``: the cross-correlation peak nearest zero.

    A crystal correlates with itself at every lattice vector, so the global peak of a phase
    correlation can be a whole period away; only shifts within ``max_shift`` pixels count
    (sub-pixel by a parabola through the peak).
    """
    f = np.fft.fft2(a) * np.conj(np.fft.fft2(b))
    xc = np.fft.fftshift(np.fft.ifft2(f).real)
    c = np.array(xc.shape) // 2
    r = int(np.ceil(max_shift))
    win = xc[c[0] - r:c[0] + r + 1, c[1] - r:c[1] + r + 1]
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    win = np.where(yy**2 + xx**2 <= max_shift**2, win, -np.inf)
    i, j = np.unravel_index(int(np.argmax(win)), win.shape)
    out = np.array([i - r, j - r], dtype=np.float64)
    for axis, (p, n) in enumerate(((i, win.shape[0]), (j, win.shape[1]))):
        if 0 < p < n - 1:
            lo, mid, hi = (win[p - 1, j], win[p, j], win[p + 1, j]) if axis == 0 else (win[i, p - 1], win[i, p], win[i, p + 1])
            if np.isfinite(lo) and np.isfinite(hi) and (lo - 2 * mid + hi) < 0:
                out[axis] += 0.5 * (lo - hi) / (lo - 2 * mid + hi)
    return out


def fom(experiment: np.ndarray, simulation: np.ndarray, max_shift: float = 8.0) -> tuple[float, float, float]:
    """(figure of merit, shift [px], SSIM) of a simulation against an experiment of the same shape."""
    from scipy.ndimage import shift as nd_shift
    from skimage.metrics import structural_similarity

    a, b = _norm(experiment), _norm(simulation)
    shift = local_shift(a, b, max_shift)
    moved = nd_shift(b, shift, order=1, mode="nearest")
    m = int(np.ceil(np.abs(shift).max())) + 2  # compare where both images are defined
    m = min(m, a.shape[0] // 4, a.shape[1] // 4)
    ssim = structural_similarity(a[m:-m, m:-m], moved[m:-m, m:-m], data_range=float(a.max() - a.min()))
    s = float(np.hypot(*shift))
    return 0.1 * s + (1.0 - float(ssim)), s, float(ssim)


def simulate_field(atoms: Atoms, conditions: ImagingConditions, shape: tuple[int, int],
                   settings: SimulationSettings | None = None, margin: float = 2.0) -> np.ndarray:
    """Noise-free image of ``margin`` x ``shape`` pixels (the cell repeated laterally as needed), centred
    like the library's images."""
    big = (int(round(shape[0] * margin)), int(round(shape[1] * margin)))
    fov = (big[1] * conditions.sampling, big[0] * conditions.sampling)
    reps = (int(np.ceil(fov[0] / atoms.cell[0, 0] + 1e-9)), int(np.ceil(fov[1] / atoms.cell[1, 1] + 1e-9)), 1)
    clean = conditions.replace(dose=None)
    return render(atoms.repeat(reps), [clean], shape=big, settings=settings, noise=False)[0]


def _matrix(angle: float, scale: float) -> np.ndarray:
    t = np.deg2rad(angle)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) / scale


def transform(field: np.ndarray, shape: tuple[int, int], angle: float = 0.0, scale: float = 1.0,
              shift: tuple[float, float] = (0.0, 0.0), blur: float = 0.0) -> np.ndarray:
    """Window of ``shape`` from ``field``: rotated by ``angle`` [deg], magnified by ``scale``, moved by
    ``shift`` [px, (row, col)], blurred by a Gaussian of ``blur`` px."""
    from scipy.ndimage import affine_transform, gaussian_filter

    if blur > 0:
        field = gaussian_filter(field, blur)
    m = _matrix(angle, scale)
    c_out = (np.array(shape) - 1) / 2 + np.asarray(shift)
    c_in = (np.array(field.shape) - 1) / 2
    return affine_transform(field, m, offset=c_in - m @ c_out, output_shape=shape, order=1, mode="reflect")


def atom_columns(atoms: Atoms, conditions: ImagingConditions, shape: tuple[int, int], margin: float,
                 angle: float, scale: float, shift: tuple[float, float], tol: float = 0.3) -> list[dict]:
    """Projected atom columns [(row, col, symbol)] in window pixels, under the fitted transform."""
    big = np.array([int(round(shape[0] * margin)), int(round(shape[1] * margin))])
    fov = big[::-1] * conditions.sampling  # (x, y) Å
    reps = (int(np.ceil(fov[0] / atoms.cell[0, 0] + 1e-9)), int(np.ceil(fov[1] / atoms.cell[1, 1] + 1e-9)), 1)
    rep = atoms.repeat(reps)
    ext = np.array([rep.cell[0, 0], rep.cell[1, 1]])
    x0, y0 = (ext - fov) / 2
    pos = rep.positions[:, :2]
    cols = (pos[:, 0] - x0) / conditions.sampling - 0.5
    rows = big[0] - 0.5 - (pos[:, 1] - y0) / conditions.sampling
    m = _matrix(angle, scale)
    c_out = (np.array(shape) - 1) / 2 + np.asarray(shift)
    c_in = (big - 1) / 2
    # field = m @ out + (c_in - m @ c_out)  =>  out = m^-1 (field - c_in) + c_out
    out = (np.linalg.inv(m) @ (np.stack([rows, cols]) - c_in[:, None])) + c_out[:, None]
    keep = (out[0] >= 0) & (out[0] < shape[0]) & (out[1] >= 0) & (out[1] < shape[1])
    seen: dict[tuple, dict] = {}
    for r, c, s in zip(out[0][keep], out[1][keep], np.array(rep.get_chemical_symbols())[keep]):
        key = (round(r / (tol / conditions.sampling)), round(c / (tol / conditions.sampling)))
        seen.setdefault(key, {"row": float(r), "col": float(c), "symbol": str(s)})
    return list(seen.values())


@dataclass
class Fit:
    """Result of refining one candidate."""

    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    blur: float = 0.0
    defocus: float = 0.0
    fom_before: float = np.inf
    fom: float = np.inf
    ssim_before: float = 0.0
    ssim: float = 0.0
    shift_px: float = 0.0
    simulations: int = 0
    image: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "rotation_deg": round(self.angle, 3), "scale": round(self.scale, 4),
            "shift_px": [round(float(v), 2) for v in self.shift], "source_blur_px": round(self.blur, 3),
            "defocus_A": round(self.defocus, 1), "fom_before": round(self.fom_before, 4), "fom": round(self.fom, 4),
            "ssim_before": round(self.ssim_before, 4), "ssim": round(self.ssim, 4),
            "residual_shift_px": round(self.shift_px, 3), "simulations": self.simulations, **self.extra,
        }


def _fit_transform(window, field, start, max_evals):
    """Nelder-Mead over (angle, log scale, row shift, col shift, blur) maximising SSIM."""
    from scipy.optimize import minimize
    from skimage.metrics import structural_similarity

    a = _norm(window)
    rng = float(a.max() - a.min())

    def loss(p):
        angle, logs, dr, dc, blur = p
        if abs(logs) > 0.3 or blur < 0 or blur > 4:
            return 2.0
        sim = _norm(transform(field, window.shape, angle, float(np.exp(logs)), (dr, dc), blur))
        return 1.0 - structural_similarity(a, sim, data_range=rng)

    x0 = np.asarray(start, float)
    simplex = np.vstack([x0, x0 + np.diag([1.0, 0.02, 1.0, 1.0, 0.3])])  # steps: 1 deg, 2 %, 1 px, 0.3 px
    res = minimize(loss, x0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-5, "initial_simplex": simplex})
    return res.x, float(res.fun)


def _initial(window: np.ndarray, field: np.ndarray) -> list[float]:
    """Starting transform: the best by SSIM of the library orientation and the rotations (and
    scale) that the power spectra suggest, each aligned by the nearest cross-correlation peak."""
    from skimage.metrics import structural_similarity

    from surrogate.inference.preprocess import estimate_rotation

    centre = transform(field, window.shape)
    angle0, scale0 = estimate_rotation(window, centre)
    scale0 = float(np.clip(scale0, 0.8, 1.25))
    a = _norm(window)
    best, best_s = None, -2.0
    for angle, scale in ((0.0, 1.0), (angle0, scale0), (angle0 + 180.0, scale0)):
        sim = transform(field, window.shape, angle, scale)
        shift = local_shift(a, _norm(sim), max(window.shape) / 4)
        sim = transform(field, window.shape, angle, scale, tuple(shift))
        s = structural_similarity(a, _norm(sim), data_range=float(a.max() - a.min()))
        if s > best_s:
            best, best_s = [angle, np.log(scale), shift[0], shift[1], 0.5], s
    return best


def refine(window: np.ndarray, atoms: Atoms, conditions: ImagingConditions,
           settings: SimulationSettings | None = None, defocus_steps: tuple[float, ...] = (-30.0, 30.0),
           max_evals: int = 300, margin: float = 2.0) -> Fit:
    """Fit ``atoms`` imaged under ``conditions`` to an experimental ``window`` (same sampling).

    Returns the fitted transform and imaging parameters with the figure of merit before (library
    conditions, only aligned by phase correlation) and after.
    """
    conditions = conditions.replace(dose=None)
    field = simulate_field(atoms, conditions, window.shape, settings, margin)
    fit = Fit(defocus=conditions.defocus, simulations=1)
    field0 = field
    fit.fom_before, before_shift, fit.ssim_before = fom(window, transform(field, window.shape))
    params, loss = _fit_transform(window, field, _initial(window, field), max_evals)
    best = (loss, params, conditions.defocus, field)
    for step in defocus_steps:  # a short defocus search, each step one simulation
        c = conditions.replace(defocus=conditions.defocus + step)
        f = simulate_field(atoms, c, window.shape, settings, margin)
        fit.simulations += 1
        p, l_ = _fit_transform(window, f, best[1], max_evals // 3)
        if l_ < best[0]:
            best = (l_, p, c.defocus, f)
    _, params, fit.defocus, field = best
    fit.angle, logs, dr, dc, fit.blur = (float(v) for v in params)
    fit.scale, fit.shift = float(np.exp(logs)), (float(dr), float(dc))
    fit.image = transform(field, window.shape, fit.angle, fit.scale, fit.shift, fit.blur).astype(np.float32)
    fit.fom, fit.shift_px, fit.ssim = fom(window, fit.image)
    if fit.fom > fit.fom_before:  # the fit found a better SSIM but a worse FOM: keep the library pose
        fit.angle, fit.scale, fit.shift, fit.blur, fit.defocus = 0.0, 1.0, (0.0, 0.0), 0.0, conditions.defocus
        fit.image = transform(field0, window.shape).astype(np.float32)
        fit.fom, fit.shift_px, fit.ssim = fit.fom_before, before_shift, fit.ssim_before
    fit.extra["margin"] = margin
    return fit
