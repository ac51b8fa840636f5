"""The resumable GPAW labelling job: energies, forces (and stress) of the CdTe structure list.

Output: ``<out>/batch_<shard>_<nnnn>.extxyz`` files of up to ``batch`` frames each. A frame is
the structure with ``info``:

``config_id, family, params`` (JSON string), ``split`` (train/test, by a hash of config_id),
``REF_energy`` (total energy, eV; GPAW's energy extrapolated to zero smearing),
``REF_stress`` (Voigt xx yy zz yz xz xy, eV/Å^3, ASE sign; absent for slabs with vacuum),
``converged`` (False when the SCF did not converge: energies/forces are NaN and the frame must
not be trained on), ``scf_iterations``, ``wall_s``, and the settings ``dft_code, dft_version,
dft_xc, dft_mode, dft_ecut, dft_basis, dft_kpts, dft_kpt_density, dft_smearing, dft_setups``;
and per-atom array ``REF_forces`` (eV/Å).

Resuming: config_ids already present in any batch file of the output directory are skipped, so a
finished structure is never recomputed. After every structure the current batch file is written to
a temporary file and renamed over the old one, so a killed job loses at most the structure in
progress.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence, cast

import numpy as np
from ase import Atoms

from surrogate.dft.structures import KPT_DENSITY, kpts_for, split_of
from surrogate.errors import SurrogateError
from surrogate.io.files import atomic_open

__all__ = [
    "DFTSettings",
    "DFTDataError",
    "read_batches",
    "done_ids",
    "label_one",
    "run_job",
    "gpaw_calculator",
    "make_frame",
    "write_atomic",
]

BATCH_RE = re.compile(r"^batch_(?P<shard>[0-9a-z]+)_(?P<num>\d{4})\.extxyz$")
REQUIRED_KEYS = ("config_id", "family", "split", "converged", "REF_energy", "dft_code")


class DFTDataError(SurrogateError, OSError):
    """A labelled-data file is unreadable, truncated, or lacks required metadata."""


@dataclass(frozen=True)
class DFTSettings:
    """GPAW settings of the labelling job (see docs/dft.md for the convergence check behind them)."""

    mode: str = "pw"  #: "pw" (plane waves) or "lcao"
    ecut: float = 300.0  #: plane-wave cutoff [eV] (pw mode; also fixes the real-space grid)
    basis: str = "dzp"  #: LCAO basis (lcao mode)
    xc: str = "PBE"
    smearing: float = 0.1  #: Fermi-Dirac width [eV]
    kpt_density: float = KPT_DENSITY  #: k-points per axis = ceil(kpt_density / length[Å])
    maxiter: int = 150  #: SCF iterations before a structure is flagged converged=False
    stress: bool = True  #: compute the stress (pw mode, cells without vacuum)
    setups: str = "paw"

    def describe(self) -> dict:
        return asdict(self)


def _check_shard(shard: str) -> None:
    if not re.fullmatch(r"[0-9a-z]+", shard):
        raise SurrogateError(f"shard label {shard!r} must be lowercase letters and digits")


def read_batches(out: str | Path) -> list[Atoms]:
    """All frames of the batch files in ``out`` (sorted by name).

    Raises
    ------
    DFTDataError
        Naming the file, when one cannot be parsed (e.g. truncated) or a frame lacks the required
        metadata.
    """
    from ase.io import read

    out = Path(out)
    frames: list[Atoms] = []
    if not out.is_dir():
        return frames
    for path in sorted(out.iterdir()):
        if not BATCH_RE.match(path.name):
            continue
        try:
            batch = read(path, index=":", format="extxyz")
        except Exception as exc:  # ase raises many exception types for malformed files
            raise DFTDataError(
                f"cannot read labelled batch {path}: {type(exc).__name__}: {exc}; the file is corrupt or "
                "truncated: restore it from git or delete it (its structures will be recomputed)"
            ) from None
        for i, a in enumerate(batch):
            missing = [k for k in REQUIRED_KEYS if k not in a.info]
            if "REF_forces" not in a.arrays:
                missing.append("REF_forces")
            if missing:
                raise DFTDataError(
                    f"labelled batch {path}, frame {i}: missing {', '.join(missing)}; the file is not a "
                    "complete surrogate.dft batch: restore it from git or delete it"
                )
            a.info["_file"] = path.name
        frames.extend(batch)
    return frames


def done_ids(out: str | Path) -> set[str]:
    """config_ids already labelled (converged or flagged) in ``out``."""
    return {a.info["config_id"] for a in read_batches(out)}


def write_atomic(path: Path, frames: Sequence[Atoms]) -> None:
    """Write ``frames`` as extxyz to a temporary file in the same folder, then rename it to ``path``."""
    from ase.io import write

    with atomic_open(path) as fh:
        write(fh, list(frames), format="extxyz")


def gpaw_version() -> str:
    import gpaw

    return str(gpaw.__version__)


def gpaw_calculator(atoms: Atoms, settings: DFTSettings, txt=None):
    """A GPAW calculator for ``atoms`` with ``settings`` (k-points from the cell size)."""
    from gpaw import GPAW, PW, FermiDirac

    kpts = kpts_for(atoms, settings.kpt_density)
    common = dict(
        xc=settings.xc,
        kpts={"size": kpts, "gamma": False},
        occupations=FermiDirac(settings.smearing),
        maxiter=settings.maxiter,
        txt=txt,
        setups=settings.setups,
    )
    if settings.mode == "pw":
        return GPAW(mode=PW(settings.ecut), **common)
    if settings.mode == "lcao":
        return GPAW(mode="lcao", basis=settings.basis, h=0.2, **common)
    raise SurrogateError(f"unknown DFT mode {settings.mode!r}: choose pw or lcao")


def has_vacuum(atoms: Atoms) -> bool:
    p = atoms.info.get("params")
    if isinstance(p, str):
        p = json.loads(p)
    return isinstance(p, dict) and p.get("vacuum_axis") is not None


def make_frame(
    atoms: Atoms,
    energy: float,
    forces: np.ndarray,
    stress,
    converged: bool,
    settings: DFTSettings,
    code_version: str,
    iterations: int | None = None,
    wall_s: float | None = None,
) -> Atoms:
    """The labelled frame: a plain copy of ``atoms`` with the REF_* results and the settings in ``info``."""
    frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    params = atoms.info.get("params", {})
    kpts = kpts_for(atoms, settings.kpt_density)
    info = {
        "config_id": atoms.info["config_id"],
        "family": atoms.info.get("family", "unknown"),
        "params": params if isinstance(params, str) else json.dumps(params, sort_keys=True),
        "split": split_of(atoms.info["config_id"], family=atoms.info.get("family")),
        "converged": bool(converged),
        "REF_energy": float(energy),
        "dft_code": "gpaw",
        "dft_version": code_version,
        "dft_xc": settings.xc,
        "dft_mode": settings.mode,
        "dft_ecut": float(settings.ecut) if settings.mode == "pw" else 0.0,
        "dft_basis": settings.basis if settings.mode == "lcao" else "pw",
        "dft_kpts": "x".join(str(k) for k in kpts),
        "dft_kpt_density": float(settings.kpt_density),
        "dft_smearing": f"fermi-dirac {settings.smearing} eV",
        "dft_setups": settings.setups,
    }
    if stress is not None:
        info["REF_stress"] = np.asarray(stress, float).reshape(6)
    if iterations is not None:
        info["scf_iterations"] = int(iterations)
    if wall_s is not None:
        info["wall_s"] = round(float(wall_s), 2)
    frame.info.update(info)
    frame.arrays["REF_forces"] = np.asarray(forces, float).reshape(len(atoms), 3)
    return frame


def label_one(atoms: Atoms, settings: DFTSettings, txt=None) -> Atoms:
    """Run GPAW on one structure; a non-converged SCF gives a frame with ``converged=False`` and NaNs."""
    from gpaw import KohnShamConvergenceError

    t0 = time.perf_counter()
    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    calc = gpaw_calculator(atoms, settings, txt=txt)
    work.calc = calc
    converged = True
    stress = None
    try:
        energy = work.get_potential_energy()
        forces = work.get_forces()
        if settings.stress and settings.mode == "pw" and not has_vacuum(atoms):
            stress = work.get_stress(voigt=True)
    except KohnShamConvergenceError:
        converged = False
        energy = float("nan")
        forces = np.full((len(atoms), 3), np.nan)
    iterations = None
    try:
        iterations = int(calc.get_number_of_iterations())
    except Exception:
        pass
    return make_frame(
        atoms, energy, forces, stress, converged, settings, gpaw_version(), iterations, time.perf_counter() - t0
    )


def _next_batch_path(out: Path, shard: str) -> Path:
    nums = [
        int(m["num"])
        for p in out.glob(f"batch_{shard}_*.extxyz")
        if (m := BATCH_RE.match(p.name)) and m["shard"] == shard
    ]
    return out / f"batch_{shard}_{(max(nums) + 1 if nums else 0):04d}.extxyz"


def run_job(
    structures: Sequence[Atoms],
    out: str | Path,
    settings: DFTSettings = DFTSettings(),
    batch: int = 10,
    max_structures: int | None = None,
    shard: tuple[int, int] = (0, 1),
    labeller: Callable[[Atoms, DFTSettings], Atoms] | None = None,
    log: Callable[[str], None] = lambda s: print(s, flush=True),
    stop_after_s: float | None = None,
) -> list[Atoms]:
    """Label the structures not yet in ``out`` and append them to batch files.

    Parameters
    ----------
    structures
        The ordered structure list (:func:`surrogate.dft.structures.cdte_structures`).
    batch
        Frames per batch file; a resumed job first fills its shard's last, incomplete batch.
    max_structures
        Stop after labelling this many new structures (None: all).
    shard
        ``(i, n)``: this process labels structures ``i, i+n, i+2n, ...`` of the list and writes
        ``batch_<i>of<n>_*.extxyz`` (``batch_main_*`` for ``(0, 1)``); run n processes for n cores.
    labeller
        ``f(atoms, settings) -> frame`` (default: :func:`label_one`, i.e. GPAW); tests pass a stub.
    stop_after_s
        Do not start a new structure after this many seconds.

    Returns
    -------
    list of ase.Atoms
        The frames labelled by this call.
    """
    i_shard, n_shard = shard
    if not (n_shard >= 1 and 0 <= i_shard < n_shard):
        raise SurrogateError(f"shard {i_shard}/{n_shard} is impossible: use i/n with 0 <= i < n")
    if batch < 1:
        raise SurrogateError(f"batch size {batch} must be >= 1")
    label = "main" if n_shard == 1 else f"{i_shard}of{n_shard}"
    _check_shard(label)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = done_ids(out)
    mine = [a for k, a in enumerate(structures) if k % n_shard == i_shard]
    remaining = [a for a in mine if a.info["config_id"] not in done]
    todo = remaining if max_structures is None else remaining[:max_structures]
    log(
        f"surrogate.dft: {len(done)} structures labelled in {out}; shard {i_shard}/{n_shard}: "
        f"{len(mine) - len(remaining)} of {len(mine)} done, labelling {len(todo)} now; "
        f"settings {json.dumps(settings.describe())}"
    )
    labeller = labeller or label_one
    # continue the shard's last batch if it is not full
    from ase.io import read

    existing = sorted(p for p in out.glob(f"batch_{label}_*.extxyz") if BATCH_RE.match(p.name))
    current: list[Atoms]
    if existing and len(current := cast("list[Atoms]", read(existing[-1], index=":", format="extxyz"))) < batch:
        path = existing[-1]
    else:
        path, current = _next_batch_path(out, label), []
    new: list[Atoms] = []
    failed: list[str] = []
    t_start = time.perf_counter()
    for atoms in todo:
        if stop_after_s is not None and time.perf_counter() - t_start > stop_after_s:
            log("surrogate.dft: time limit reached, stopping before the next structure")
            break
        t0 = time.perf_counter()
        try:
            frame = labeller(atoms, settings)
        except Exception as exc:  # a crash of one structure must not end a multi-hour job
            failed.append(atoms.info["config_id"])
            log(
                f"{time.strftime('%H:%M:%S')} FAILED {atoms.info['config_id']} {atoms.info['family']} "
                f"({type(exc).__name__}: {exc}); not recorded, it is retried on the next run"
            )
            continue
        if frame.info["config_id"] != atoms.info["config_id"]:
            raise SurrogateError("labeller returned a frame with another config_id")
        current.append(frame)
        write_atomic(path, current)
        new.append(frame)
        flag = "" if frame.info["converged"] else "  NOT CONVERGED (flagged converged=False)"
        log(
            f"{time.strftime('%H:%M:%S')} {len(done) + len(new):4d} {atoms.info['family']:14s} {len(atoms):3d} atoms "
            f"k={frame.info['dft_kpts']} E={frame.info['REF_energy']:.4f} eV "
            f"fmax={np.nanmax(np.linalg.norm(frame.arrays['REF_forces'], axis=1)) if frame.info['converged'] else float('nan'):.3f} "
            f"{time.perf_counter() - t0:.1f} s -> {path.name}{flag}"
        )
        if len(current) >= batch:
            path, current = _next_batch_path(out, label), []
    if failed:
        log(f"surrogate.dft: {len(failed)} structures failed with an error (see above): {', '.join(failed)}")
    return new
