"""Generate the independent held-out query set (issue 21): a second simulation pipeline.

The images are made by calling abTEM directly (PRISM with frozen phonons for STEM, plane-wave
multislice for HRTEM), never through ``surrogate.simulate``, on thick cells (100-110 Å along the
beam) under conditions the library does not use (read ``surrogate/configs/simulate/*.yaml``):

==================  ==========================  ==========================================
quantity            library (demo/accurate)     held-out set
==================  ==========================  ==========================================
energy              200 or 300 kV               300 kV
convergence         18-30 mrad                  14.5-17.5 mrad
HAADF detector      60-90 / 150-200 mrad        40-48 / 66-72 mrad
ABF detector        10-12 / 20-24 mrad          0.45-0.55 alpha / alpha
STEM aberrations    defocus only (Cs = 0)       defocus, C12, C21, C23, C30 = +-0.4-1.2 um
source size         0.2-0.7 Å                   0.08-0.16 Å
HRTEM               aperture 15-25 mrad,        aperture 28-34 mrad, Cs = -18..-25 um
                    |Cs| <= 15 um, spread <= 40 focal spread 45-60 Å
pixel size          0.2 Å/px (canonical)        0.12-0.16 Å/px
thickness           20 Å                        100-110 Å
potential           Lobato, 2 Å slices          Kirkland, ~4 Å slices, 0.09 Å sampling
thermal             sigma Cd .11 Te .09 Si .075 sigma Cd .13 Te .105 Si .085 (1 STEM, 4 HRTEM configs)
dose                none, 1e3, 1e4, 1e5 e/Å²    log-uniform 2e4-6e5 (STEM), 2e3-3e4 (HRTEM)
scan                ideal                       line jitter, linear drift, any rotation
==================  ==========================  ==========================================

Each image is 256 x 256 px (31-41 Å), wider than the library's 25.6 Å window, so that inference
can place its window anywhere on it. The cells are periodic (PRISM and multislice are) and the
image is scanned on the periodic field: bulk cells are 16-20 Å wide and tile the field (exact for a
perfect crystal), defect slabs 26-39 Å (a periodic defect array at the image edges), bicrystals 34 Å wide
with the boundary in the middle, so the partner boundary of the periodic cell lies 17 Å away, at
the edge of the field.

Each image is written as ``data/heldout/<name>.tif`` (float32, calibrated in nm as rosettasciio
writes it, so :func:`surrogate.io.readers.read_image` reads its pixel size), ``<name>.extxyz.gz`` (the
ground-truth cell with the image transform in its info) and one record in ``labels.json``.
Resumable: an image whose three outputs exist is skipped; files are written to a temporary name and
renamed.

``OMP_NUM_THREADS=1 python benchmarks/heldout/make_heldout.py [--out data/heldout] [--only N]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["PLAN", "build", "simulate", "make_image", "main"]

ENERGY = 300e3  # [eV]
POTENTIAL_SAMPLING = 0.09  # [Å]: largest simulated angle ~73 mrad at 300 kV (HAADF outer <= 72 mrad)
#: Frozen-phonon configurations per STEM image (PRISM): one thermal snapshot, to fit the generation
#: into the CPU budget of 2 shared cores (HRTEM, cheap, averages 4).
STEM_PHONONS = 1
SIGMAS = {"Cd": 0.13, "Te": 0.105, "Si": 0.085, "Se": 0.10, "Cl": 0.12}  # RMS displacement per axis [Å]
SHAPE = 256  # image side [px]: 31-41 Å at 0.12-0.16 Å/px, larger than the library's 25.6 Å window
COH_TWIN = "coherent_twin"

# ---------------------------------------------------------------------------------------------
# The plan: 38 structures, one image each (32 shipped, the 6 EXTRA with --extra). Labels use the keys of surrogate.structures.labels.
# ---------------------------------------------------------------------------------------------


def _bulk(name, mat, za, mode):
    return {"name": name, "kind": "bulk", "material": mat, "zone_axis": za, "mode": mode}


def _defect(name, mat, za, mode, defects):
    return {"name": name, "kind": "defect", "material": mat, "zone_axis": za, "mode": mode, "defects": defects}


def _gb(name, mat, za, mode, misorientation, sigma=None, inclination=0.0, boundary=None):
    return {
        "name": name,
        "kind": "gb",
        "material": mat,
        "zone_axis": za,
        "mode": mode,
        "misorientation": misorientation,
        "sigma": sigma,
        "inclination": inclination,
        "boundary": boundary
        or (
            f"sigma{sigma}"
            if sigma
            else f"low_angle_{misorientation:g}deg"
            if misorientation < 15
            else f"tilt_{misorientation:g}deg"
        ),
    }


V, A, S = "vacancy", "antisite", "substitution"
PLAN = [
    # bulk
    _bulk("cdte110_bulk_haadf", "CdTe", [1, 1, 0], "haadf"),
    _bulk("cdte100_bulk_haadf", "CdTe", [1, 0, 0], "haadf"),
    _bulk("si110_bulk_haadf", "Si", [1, 1, 0], "haadf"),
    _bulk("si100_bulk_haadf", "Si", [1, 0, 0], "haadf"),
    _bulk("cdte110_bulk_abf", "CdTe", [1, 1, 0], "abf"),
    _bulk("si100_bulk_abf", "Si", [1, 0, 0], "abf"),
    _bulk("si110_bulk_hrtem", "Si", [1, 1, 0], "hrtem"),
    _bulk("cdte110_bulk_hrtem", "CdTe", [1, 1, 0], "hrtem"),
    # point defects: partly vacant / substituted columns (a single atom in a 100 Å column is invisible)
    _defect("cdte110_vac_te", "CdTe", [1, 1, 0], "haadf", [{"kind": V, "species": "Te", "fraction": 0.4}]),
    _defect(
        "cdte110_vac_cd",
        "CdTe",
        [1, 1, 0],
        "haadf",
        [
            {"kind": V, "species": "Cd", "fraction": 0.5, "position": [0.5, 0.5]},
            {"kind": V, "species": "Cd", "fraction": 0.5, "position": [0.5, 0.5]},
        ],
    ),
    _defect(
        "cdte110_antisite",
        "CdTe",
        [1, 1, 0],
        "haadf",
        [{"kind": A, "species": "Cd", "fraction": 0.4}, {"kind": A, "species": "Te", "fraction": 0.4}],
    ),
    _defect(
        "cdte110_se_sub",
        "CdTe",
        [1, 1, 0],
        "haadf",
        [
            {"kind": S, "species": "Te", "element": "Se", "fraction": 0.6, "position": [0.45, 0.5]},
            {"kind": S, "species": "Te", "element": "Se", "fraction": 0.6, "position": [0.45, 0.5]},
            {"kind": S, "species": "Te", "element": "Se", "fraction": 0.6, "position": [0.45, 0.5]},
        ],
    ),
    _defect(
        "cdte110_cl_sub",
        "CdTe",
        [1, 1, 0],
        "haadf",
        [
            {"kind": S, "species": "Te", "element": "Cl", "fraction": 0.5},
            {"kind": S, "species": "Te", "element": "Cl", "fraction": 0.5},
        ],
    ),
    _defect(
        "cdte110_se_sub_abf", "CdTe", [1, 1, 0], "abf", [{"kind": S, "species": "Te", "element": "Se", "fraction": 0.7}]
    ),
    _defect(
        "cdte100_vac",
        "CdTe",
        [1, 0, 0],
        "haadf",
        [{"kind": V, "species": "Te", "fraction": 0.5}, {"kind": V, "species": "Cd", "fraction": 0.5}],
    ),
    _defect(
        "cdte100_se_sub", "CdTe", [1, 0, 0], "haadf", [{"kind": S, "species": "Te", "element": "Se", "fraction": 0.6}]
    ),
    _defect("si110_vac", "Si", [1, 1, 0], "haadf", [{"kind": V, "fraction": 0.5}, {"kind": V, "fraction": 0.5}]),
    _defect("si100_vac_hrtem", "Si", [1, 0, 0], "hrtem", [{"kind": V, "fraction": 0.6}]),
    # twins
    {"name": "cdte110_twin111_haadf", "kind": COH_TWIN, "material": "CdTe", "zone_axis": [1, 1, 0], "mode": "haadf"},
    {"name": "cdte110_twin111_hrtem", "kind": COH_TWIN, "material": "CdTe", "zone_axis": [1, 1, 0], "mode": "hrtem"},
    {"name": "si110_twin111_haadf", "kind": COH_TWIN, "material": "Si", "zone_axis": [1, 1, 0], "mode": "haadf"},
    {"name": "cdte110_twin112_haadf", "kind": "twin112", "material": "CdTe", "zone_axis": [1, 1, 0], "mode": "haadf"},
    # CSL and low-angle tilts about [110] (library: 4 deg, Sigma9 38.94, Sigma3): several in between
    _gb("cdte110_s9_haadf", "CdTe", [1, 1, 0], "haadf", 38.94, 9),
    _gb("cdte110_s11_haadf", "CdTe", [1, 1, 0], "haadf", 50.48, 11),
    _gb("cdte110_s19_haadf", "CdTe", [1, 1, 0], "haadf", 26.53, 19),
    _gb("cdte110_s27_abf", "CdTe", [1, 1, 0], "abf", 31.59, 27),
    _gb("cdte110_s33_haadf", "CdTe", [1, 1, 0], "haadf", 20.05, 33),
    _gb("cdte110_la4_haadf", "CdTe", [1, 1, 0], "haadf", 4.0),
    _gb("cdte110_la7_haadf", "CdTe", [1, 1, 0], "haadf", 7.0),
    _gb("cdte110_la10_haadf", "CdTe", [1, 1, 0], "haadf", 10.0),
    _gb("cdte110_s9_asym_haadf", "CdTe", [1, 1, 0], "haadf", 38.94, 9, inclination=15.0),
    _gb("si110_s9_haadf", "Si", [1, 1, 0], "haadf", 38.94, 9),
    _gb("si110_la6_haadf", "Si", [1, 1, 0], "haadf", 6.0),
    # CSL and low-angle tilts about [100]
    _gb("cdte100_s5_haadf", "CdTe", [1, 0, 0], "haadf", 36.87, 5),
    _gb("cdte100_s13_haadf", "CdTe", [1, 0, 0], "haadf", 22.62, 13),
    _gb("si100_s5_hrtem", "Si", [1, 0, 0], "hrtem", 36.87, 5),
    _gb("si100_s17_asym_haadf", "Si", [1, 0, 0], "haadf", 28.07, 17, inclination=10.0),
    _gb("cdte100_la5_haadf", "CdTe", [1, 0, 0], "haadf", 5.0),
]


#: Entries left out of the shipped set to fit the CPU budget of its generation (2 shared cores);
#: ``--extra`` makes them too.
EXTRA_NAMES = (
    "si100_bulk_abf",
    "cdte100_se_sub",
    "cdte110_s9_asym_haadf",
    "cdte110_la10_haadf",
    "si110_vac",
    "cdte110_s33_haadf",
)
ALL = list(PLAN)  # the seed of an entry is 21000 + its index here (stable whatever is left out)
EXTRA = [s for s in PLAN if s["name"] in EXTRA_NAMES]
PLAN = [s for s in PLAN if s["name"] not in EXTRA_NAMES]

# ---------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------


def coherent_twin(mat: str, thickness: float, height: float = 26.0, periods: int = 2):
    """The ideal coherent Σ3 (111) twin viewed along <110>, with no under-coordinated atoms.

    Grain 1 is the crystal with [111] along x, [11-2] along y and [1-10] along z; grain 2 is grain 1
    rotated by 180° about [111] (x) (stacking ABC|ACB, polarity kept, no wrong bonds). The origin
    along x is searched so that the cut falls between double layers: every atom keeps four
    neighbours of the other species at the bulk bond length.

    Returns
    -------
    (ase.Atoms, float)
        The periodic bicrystal (two boundaries: at x = L and at the cell edge) and L [Å].
    """
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    from surrogate.structures import crystal, orient

    unit = crystal(mat)
    o = orient(unit, (1, -1, 0), (1, 1, -2))
    lx, ly, lz = np.diag(o.cell.array)
    ny, nz = max(1, math.ceil(height / ly - 1e-6)), max(1, round(thickness / lz))
    bond = unit.cell[0, 0] * math.sqrt(3) / 4
    best = None
    for k in range(48):
        g1 = o.copy()
        g1.positions[:, 0] += k * lx / 48
        g1.wrap()
        g1 = g1.repeat((periods, ny, nz))
        L = periods * lx
        g2 = g1.copy()
        g2.positions[:, 1] *= -1
        g2.positions[:, 2] *= -1
        g2.wrap()
        g2.positions[:, 0] += L
        atoms = Atoms(
            np.concatenate([g1.numbers, g2.numbers]),
            positions=np.concatenate([g1.positions, g2.positions]),
            cell=np.diag([2 * L, ny * ly, nz * lz]),
            pbc=True,
        )
        atoms.set_tags(np.r_[np.ones(len(g1), int), np.full(len(g2), 2)])
        atoms.wrap()
        i, j, d = neighbor_list("ijd", atoms, 1.12 * bond)
        counts = np.bincount(i, minlength=len(atoms))
        if d.min() < 0.95 * bond or (counts != 4).any():
            continue
        if len(set(atoms.numbers)) > 1 and (atoms.numbers[i] == atoms.numbers[j]).any():
            continue  # a wrong (cation-cation or anion-anion) bond
        best = (atoms, L)
        break
    if best is None:
        raise RuntimeError(f"no cut of {mat} gives a fully coordinated coherent twin")
    return best


def build(spec: dict, rng: np.random.Generator):
    """Structure of one plan entry (ase.Atoms), its labels and the crop centre (x, y) [Å]."""
    from surrogate.structures import add_defects, bicrystal, crystal, zone_axis_slab

    mat, za = spec["material"], spec["zone_axis"]
    thickness = float(rng.uniform(100.0, 110.0))
    labels = {
        "material": mat,
        "zone_axis": za,
        "family": "bulk",
        "boundary": None,
        "sigma": None,
        "misorientation": None,
        "inclination": None,
        "defect_kind": None,
        "defect_count": 0,
    }
    kind = spec["kind"]
    unit = crystal(mat)
    if kind in ("bulk", "defect"):
        fov = (16.0, 16.0) if kind == "bulk" else (26.0, 26.0)  # bulk is periodic: a small cell tiles the field
        atoms = zone_axis_slab(unit, za, fov=fov, thickness=thickness, material=mat)
        if kind == "defect":
            atoms = add_defects(atoms, spec["defects"], seed=int(rng.integers(2**31)))
            recs = atoms.info["params"]["defects"]
            labels.update(
                family="defect",
                defect_kind=spec["defects"][0]["kind"],
                defect_count=int(sum(int(r.get("count", 1)) for r in recs)),
            )
        centre = np.diag(atoms.cell.array)[:2] / 2
    elif kind == COH_TWIN:
        atoms, L = coherent_twin(mat, thickness)
        labels.update(family="twin", boundary="sigma3_111", sigma=3, misorientation=70.53, inclination=0.0)
        centre = np.array([L, atoms.cell[1, 1] / 2])
    else:
        upward = [0, 0, 1]
        if kind == "twin112":
            g1, g2 = {"upward": upward, "tilt": 54.73561}, {"upward": upward, "tilt": 125.26439, "flip_species": True}
            labels.update(family="twin", boundary="sigma3_112", sigma=3, misorientation=70.53, inclination=0.0)
        else:
            th, phi = float(spec["misorientation"]), float(spec["inclination"])
            upward = [0, 0, 1] if za == [1, 1, 0] else [0, 1, 0]
            g1, g2 = {"upward": upward, "tilt": -th / 2 + phi}, {"upward": upward, "tilt": th / 2 + phi}
            labels.update(
                family="gb", boundary=spec["boundary"], sigma=spec["sigma"], misorientation=th, inclination=phi
            )
        g1["zone_axis"] = g2["zone_axis"] = za
        atoms = bicrystal(unit, g1, g2, fov=(26.0, 26.0), thickness=thickness, max_height=40.0, material=mat)
        if kind != "twin112":
            labels["misorientation"] = round(float(atoms.info["params"]["misorientation"]), 3)
        centre = np.array([atoms.info["params"]["boundary_x"], atoms.cell[1, 1] / 2])
    return atoms, labels, centre, thickness


# ---------------------------------------------------------------------------------------------
# Conditions and simulation (abTEM directly)
# ---------------------------------------------------------------------------------------------


def draw_conditions(mode: str, rng: np.random.Generator) -> dict:
    """Imaging conditions outside the library's ranges (see the module docstring)."""
    c = {"mode": mode, "energy": ENERGY}
    if mode == "hrtem":
        cs = -float(rng.uniform(1.8e5, 2.5e5))
        lam = _wavelength(ENERGY)
        c.update(
            method="multislice",
            semiangle=float(rng.uniform(28.0, 34.0)),
            cs=cs,
            defocus=-1.2 * math.sqrt(abs(cs) * lam) * float(rng.uniform(0.8, 1.2)),
            focal_spread=float(rng.uniform(45.0, 60.0)),
            frozen_phonons=4,
            dose=float(np.exp(rng.uniform(np.log(2e3), np.log(3e4)))),
        )
    else:
        alpha = float(rng.uniform(14.5, 17.5))
        if mode == "haadf":
            inner, outer = float(rng.uniform(40.0, 48.0)), float(rng.uniform(66.0, 72.0))
        else:
            inner, outer = alpha * float(rng.uniform(0.45, 0.55)), alpha
        sgn = lambda: float(rng.choice([-1.0, 1.0]))  # noqa: E731
        c.update(
            method="prism",
            semiangle=alpha,
            inner=inner,
            outer=outer,
            defocus=float(rng.uniform(-12.0, 12.0)),
            aberrations={
                "C12": float(rng.uniform(1, 5)),
                "phi12": float(rng.uniform(0, 2 * np.pi)),
                "C21": float(rng.uniform(50, 250)),
                "phi21": float(rng.uniform(0, 2 * np.pi)),
                "C23": float(rng.uniform(50, 250)),
                "phi23": float(rng.uniform(0, 2 * np.pi)),
                "C30": sgn() * float(rng.uniform(4e3, 1.2e4)),
            },
            source_size=float(rng.uniform(0.08, 0.16)),
            frozen_phonons=STEM_PHONONS,
            dose=float(np.exp(rng.uniform(np.log(2e4), np.log(6e5)))),
        )
    return c


def _wavelength(energy: float) -> float:
    from ase.units import _c, _e, _hplanck, _me

    e = energy * _e
    return _hplanck * _c / math.sqrt(e * (2 * _me * _c**2 + e)) * 1e10


def simulate(atoms, c: dict, seed: int) -> np.ndarray:
    """Noise-free image of the whole periodic cell, (rows = y from top, cols = x) [arbitrary units].

    Returns the field on its own grid; the pixel size is ``cell / shape``.
    """
    import abtem

    abtem.config.set({"dask.scheduler": "synchronous", "device": "cpu", "fft": "numpy", "dask.lazy": True})
    sig = {s: SIGMAS.get(s, 0.1) for s in set(atoms.get_chemical_symbols())}
    fp = abtem.FrozenPhonons(atoms, num_configs=int(c["frozen_phonons"]), sigmas=sig, seed=seed)
    lz = atoms.cell[2, 2]
    slice_thickness = lz / max(1, round(lz / 4.0))
    pot = abtem.Potential(
        fp,
        sampling=POTENTIAL_SAMPLING,
        slice_thickness=slice_thickness,
        parametrization="kirkland",
        projection="infinite",
    )
    if c["mode"] == "hrtem":
        waves = abtem.PlaneWave(energy=ENERGY).multislice(pot)
        ctf = abtem.CTF(
            semiangle_cutoff=c["semiangle"],
            energy=ENERGY,
            focal_spread=c["focal_spread"],
            aberration_coefficients={"C10": -c["defocus"], "C30": c["cs"]},
        )
        img = waves.apply_ctf(ctf).intensity().compute()
        arr = np.asarray(img.array)
        while arr.ndim > 2:
            arr = arr.mean(0)
    else:
        interp = tuple(max(1, round(L / 7.0)) for L in atoms.cell.lengths()[:2])
        S = abtem.SMatrix(semiangle_cutoff=c["semiangle"], energy=ENERGY, potential=pot, interpolation=interp)
        ctf = abtem.CTF(
            semiangle_cutoff=c["semiangle"],
            energy=ENERGY,
            aberration_coefficients={"C10": -c["defocus"], **c["aberrations"]},
        )
        det = abtem.AnnularDetector(inner=c["inner"], outer=c["outer"])
        nyq = _wavelength(ENERGY) / (4 * c["semiangle"] * 1e-3)
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, sampling=0.9 * nyq, potential=pot)
        meas = S.scan(scan=scan, detectors=det, ctf=ctf).compute()
        arr = np.asarray(meas.array)
        while arr.ndim > 2:
            arr = arr.mean(0)
        lx, ly = atoms.cell.lengths()[:2]
        arr = _fourier_resize(arr, (int(round(lx / 0.05)), int(round(ly / 0.05))))
    # abTEM arrays are (x, y) with y up; images are (row = y from the top, col = x)
    field = arr.T[::-1]
    if c["mode"] != "hrtem" and c["source_size"] > 0:
        from scipy.ndimage import gaussian_filter

        px = atoms.cell[0, 0] / field.shape[1]
        field = gaussian_filter(field, c["source_size"] / px, mode="wrap")
    return field


def _fourier_resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Band-limited interpolation of a periodic image to ``shape`` (Fourier zero-padding)."""
    F = np.fft.fftshift(np.fft.fft2(a))
    out = np.zeros(shape, complex)
    n0, n1 = a.shape
    m0, m1 = shape
    s0, s1 = m0 // 2 - n0 // 2, m1 // 2 - n1 // 2  # the zero frequency lands on m // 2
    out[s0 : s0 + n0, s1 : s1 + n1] = F
    return np.real(np.fft.ifft2(np.fft.ifftshift(out))) * (m0 * m1) / (n0 * n1)


def make_image(
    field: np.ndarray,
    cell: np.ndarray,
    centre: np.ndarray,
    pixel: float,
    rotation: float,
    jitter: float,
    drift: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Scan the periodic field: ``SHAPE``² pixels of ``pixel`` [Å] about ``centre`` (x, y) [Å], the
    structure rotated counter-clockwise by ``rotation`` [deg], with per-line jitter (RMS, [Å]) and a
    linear drift along the fast axis ([Å] per line)."""
    from scipy.ndimage import map_coordinates

    n = SHAPE
    ny, nx = field.shape
    lx, ly = cell
    u = (np.arange(n) - (n - 1) / 2) * pixel  # image x (cols) [Å]
    v = -(np.arange(n) - (n - 1) / 2) * pixel  # image y (rows, top = +y) [Å]
    uu, vv = np.meshgrid(u, v)
    uu = uu + (rng.normal(0, jitter, n) + drift * np.arange(n))[:, None]  # scan lines are rows
    t = np.radians(rotation)
    # image point p = R(t) (P - C)  =>  P = C + R(-t) p
    X = centre[0] + np.cos(t) * uu + np.sin(t) * vv
    Y = centre[1] - np.sin(t) * uu + np.cos(t) * vv
    col = X / lx * nx - 0.5
    row = (ly - Y) / ly * ny - 0.5
    return map_coordinates(field, [row, col], order=3, mode="grid-wrap")


def add_dose(img: np.ndarray, dose: float, pixel: float, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts at ``dose`` [e/Å²] plus a little detector read noise (STEM)."""
    counts = rng.poisson(np.clip(img, 0, None) * dose * pixel**2).astype(np.float64)
    if mode != "hrtem":
        counts += rng.normal(0, 0.5, img.shape)
    return counts.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def write_tiff(path: Path, image: np.ndarray, pixel: float, title: str) -> None:
    """Float32 TIFF calibrated in nm (rosettasciio writer, as surrogate.inference.example does), zlib-compressed."""
    from rsciio.tiff import file_writer

    axes = [
        {"name": n, "size": s, "scale": pixel / 10, "units": "nm", "navigate": False, "offset": 0.0}
        for n, s in zip("yx", image.shape)
    ]
    signal = {
        "data": image.astype(np.float32),
        "axes": axes,
        "metadata": {"General": {"title": title}, "Signal": {}},
        "original_metadata": {},
    }
    tmp = path.with_name(path.name + ".tmp.tif")
    file_writer(str(tmp), signal, compression="zlib")  # lossless; a 256 px float32 image is 256 kB raw
    os.replace(tmp, path)


def write_extxyz(path: Path, atoms) -> None:
    """Extended XYZ with positions to 1 mÅ (ASE's writer uses 8 decimals: 2x the size); gzipped when
    ``path`` ends in ``.gz`` (ASE reads it as it is)."""
    lat = " ".join(f"{v:.6f}" for v in atoms.cell.array.ravel())
    info = " ".join(
        f"{k}={json.dumps(v).replace(' ', '')}" if not isinstance(v, str) else f"{k}={v}" for k, v in atoms.info.items()
    )
    lines = [str(len(atoms)), f'Lattice="{lat}" Properties=species:S:1:pos:R:3 {info} pbc="T T T"']
    lines += [f"{s} {x:.3f} {y:.3f} {z:.3f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    tmp = path.with_name(f".{path.name}.tmp")
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        import gzip

        tmp.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def one(spec: dict, index: int, out: Path) -> dict:
    """Build, simulate and write one image; returns its labels.json record."""
    seed = 21_000 + index
    rng = np.random.default_rng(seed)
    atoms, labels, centre, thickness = build(spec, rng)
    c = draw_conditions(spec["mode"], rng)
    pixel = float(rng.uniform(0.12, 0.16))
    rotation = float(rng.uniform(-180.0, 180.0))
    jitter = float(rng.uniform(0.02, 0.08)) if spec["mode"] != "hrtem" else 0.0
    drift = float(rng.uniform(-1.5e-3, 1.5e-3)) if spec["mode"] != "hrtem" else 0.0
    t0 = time.perf_counter()
    field = simulate(atoms, c, seed)
    sim_s = time.perf_counter() - t0
    clean = make_image(field, atoms.cell.lengths()[:2], centre, pixel, rotation, jitter, drift, rng)
    image = add_dose(clean, c["dose"], pixel, spec["mode"], rng)
    name = spec["name"]
    truth = atoms.copy()
    truth.info = {k: v for k, v in atoms.info.items() if k in ("config_id", "family", "zone_axis")}
    truth.info.update(
        heldout_name=name,
        crop_centre=[float(x) for x in centre],
        rotation=rotation,
        pixel_size=pixel,
        image_shape=[SHAPE, SHAPE],
    )
    write_extxyz(out / f"{name}.extxyz.gz", truth)
    write_tiff(out / f"{name}.tif", image, pixel, f"held-out {name} ({spec['mode']}), simulated")
    record = {
        "name": name,
        "image": f"{name}.tif",
        "structure": f"{name}.extxyz.gz",
        "labels": labels,
        "mode": spec["mode"],
        "pixel_size": pixel,
        "rotation": rotation,
        "dose": c["dose"],
        "seed": seed,
        "thickness": float(atoms.cell[2, 2]),
        "n_atoms": len(atoms),
        "cell": [float(x) for x in atoms.cell.lengths()],
        "crop_centre": [float(x) for x in centre],
        "jitter": jitter,
        "drift": drift,
        "conditions": {k: v for k, v in c.items() if k not in ("mode", "dose")},
        "potential": {"sampling": POTENTIAL_SAMPLING, "parametrization": "kirkland", "sigmas": SIGMAS},
        "simulation_s": round(sim_s, 1),
        "abtem": __import__("abtem").__version__,
    }
    write_json(out / f".{name}.json", record)
    return record


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/heldout", help="output folder (default: %(default)s)")
    p.add_argument("--only", type=int, default=None, help="make only the first N images of the plan")
    p.add_argument("--names", nargs="*", default=None, help="make only these plan entries")
    p.add_argument("--extra", action="store_true", help="also make the EXTRA entries")
    p.add_argument("--collect", action="store_true", help="only rewrite labels.json from the per-image records")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.collect:
        collect(out)
        return
    out.mkdir(parents=True, exist_ok=True)
    full = PLAN + (EXTRA if a.extra else [])
    plan = [(ALL.index(s), s) for s in full if a.names is None or s["name"] in a.names]
    # interleave the families so that a partial run is still a balanced set
    rank = {}
    for i, s in plan:
        rank[i] = (sum(1 for j, t in plan if j < i and t["kind"] == s["kind"]), i)
    plan = sorted(plan, key=lambda p: rank[p[0]])[: a.only]
    bar = tqdm(plan, desc="held-out images", file=sys.stdout)
    for i, spec in bar:
        name = spec["name"]
        bar.set_postfix_str(name)
        if all((out / f).exists() for f in (f"{name}.tif", f"{name}.extxyz.gz", f".{name}.json")):
            continue
        rec = one(spec, i, out)
        bar.write(f"{name}: {rec['simulation_s']} s, {rec['n_atoms']} atoms, {rec['mode']}")
        collect(out)
    collect(out)


def collect(out: Path) -> None:
    """Write labels.json from the per-image records, in plan order."""
    order = {s["name"]: i for i, s in enumerate(ALL)}
    recs = []
    for f in out.glob(".*.json"):
        try:
            recs.append(json.loads(f.read_text()))
        except json.JSONDecodeError:
            continue
    recs.sort(key=lambda r: order.get(r["name"], 1e9))
    try:  # the library's label spelling (zone "110", "Σ9", reduced misorientation) where available
        from surrogate.evaluation.heldout import normalize_labels

        for r in recs:
            r["labels"] = normalize_labels(r["labels"])
    except ImportError:
        pass
    write_json(out / "labels.json", {"version": 1, "generator": "benchmarks/heldout/make_heldout.py", "images": recs})


if __name__ == "__main__":
    main()
