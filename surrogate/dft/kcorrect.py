"""Per-cell-shape k-point corrections of the CdTe labels (the [111] twin-cell offset).

The labels sample the Brillouin zone with ``kpts_for(atoms)`` points per axis and
``gamma=False``, which in ASE/GPAW means *Gamma-avoiding*: even sizes are the usual Monkhorst-Pack
grid, but odd sizes (3 in the plane of the hexagonal [111] cells, 1 along long axes) are shifted by
half a spacing. Energy *differences* within one cell shape and mesh are converged; absolute
energies of differently shaped cells are not (the cubic 8-atom cell at 2x2x2 is 27 meV/atom above
the converged value, the hexagonal twin cells at the shifted 3x3x1 17 meV/atom below it). See the
section "k-point corrections" of docs/dft.md.

The correction of a group of frames that share a cell shape and k-mesh is

    dE/atom = [E_ideal(label mesh) - E_ideal(converged mesh)] / N_ideal

for the ideal (unrattled, as-built or bulk) structure of that cell, computed with the label
settings; the converged mesh is Gamma-centred with ``ceil(|b_i| / spacing)`` points along each
periodic axis (|b_i| = 2 pi / d_i, one point along a vacuum axis). Every frame of the group gets
``REF_energy_kfix = REF_energy - len(frame) * dE/atom`` (the original ``REF_energy`` is kept).
Where a smaller cell samples exactly the same k-points (a supercell's grid folded back), the
correction is computed in the small cell; the fold is checked against the labels in the docs.

``python -m surrogate.dft.kcorrect compute`` runs the GPAW calculations (resumable: every energy is
written to the JSON table atomically as it finishes, and a rerun skips what is there);
``python -m surrogate.dft.kcorrect apply`` writes the corrected copies of the batch files.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from math import ceil, pi
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

from surrogate.dft.label import DFTSettings, read_batches, write_atomic
from surrogate.dft.structures import kpts_for
from surrogate.errors import SurrogateError
from surrogate.io.files import atomic_write_text

__all__ = [
    "KFIX_ENERGY",
    "KFIX_SPACING",
    "Calc",
    "KGroup",
    "gamma_mesh",
    "k_groups",
    "group_of",
    "compute_corrections",
    "apply_corrections",
    "write_corrected",
    "gpaw_energy",
]

#: info key of the k-corrected total energy [eV] written next to ``REF_energy``.
KFIX_ENERGY = "REF_energy_kfix"

#: k-spacing [1/Å, with the 2 pi] of the converged Gamma-centred reference mesh: 4x4x4 for the
#: cubic 8-atom cell, 7x7x3 for the 6-atom hexagonal [111] cell (both within 1 meV/atom of
#: 6x6x6 / 12x12x4; see docs/dft.md).
KFIX_SPACING = 0.25

#: A frame belongs to a group when its k-mesh string is the group's and its cell lengths are within
#: this fraction, and its cell angles within KFIX_ANGLE_TOL degrees, of the group's cell (strained
#: and rattled frames keep the group of their unstrained cell).
KFIX_LENGTH_TOL = 0.06
KFIX_ANGLE_TOL = 5.0


def _vacuum_axis(atoms: Atoms):
    p = atoms.info.get("params")
    if isinstance(p, str):
        p = json.loads(p)
    return p.get("vacuum_axis") if isinstance(p, dict) else None


def gamma_mesh(atoms: Atoms, spacing: float = KFIX_SPACING) -> tuple[int, int, int]:
    """Gamma-centred mesh with ``ceil(|b_i| / spacing)`` points per periodic axis [spacing: 1/Å].

    ``|b_i| = 2 pi |reciprocal_i|`` (the reciprocal-lattice vector, so the spacing is the distance
    of neighbouring k-points); one point along a non-periodic or vacuum axis.
    """
    b = 2 * pi * np.linalg.norm(atoms.cell.reciprocal(), axis=1)
    vac = _vacuum_axis(atoms)
    return tuple(  # type: ignore[return-value]
        1 if (not atoms.pbc[i] or vac == i) else max(1, ceil(b[i] / spacing - 1e-9)) for i in range(3)
    )


@dataclass(frozen=True)
class Calc:
    """One ideal-structure energy: ``atoms`` on a ``size`` mesh (``gamma``: Gamma-centred, else the
    labels' Gamma-avoiding convention)."""

    atoms: Atoms
    size: tuple[int, int, int]
    gamma: bool
    what: str  #: short name of the structure, e.g. "cubic8"

    @property
    def key(self) -> str:
        return f"{self.what}:{'x'.join(map(str, self.size))}:{'gamma' if self.gamma else 'label'}"


@dataclass(frozen=True)
class KGroup:
    """Frames with one cell shape and label k-mesh, and the two calculations of their correction."""

    name: str
    cell: np.ndarray  #: the group's unstrained cell [Å]
    kpts: str  #: the label k-mesh, e.g. "2x2x2"
    label: Calc  #: ideal structure on (a fold of) the label mesh
    converged: Calc  #: the same on the converged Gamma-centred mesh
    note: str = ""
    #: a point-defect group: the frames of this family whose ``params`` hold these values (and the
    #: cell and mesh above); they take precedence over the cell-shape groups
    family: str | None = None
    defect: tuple[tuple[str, object], ...] = ()
    #: the cell-shape group whose correction is applied while this group's own is not computed
    parent: str | None = None

    def selects(self, frame: Atoms) -> bool:
        if self.family is None:
            return True
        if frame.info.get("family") != self.family:
            return False
        p = frame.info.get("params", {})
        p = json.loads(p) if isinstance(p, str) else p
        return all(p.get(k) == v for k, v in self.defect)


def _hex111_bulk(a: float) -> Atoms:
    """Three Cd-Te (111) bilayers of bulk (ABC) stacking: the 6-atom hexagonal cell of the [111] twin
    cells (same in-plane vectors, c = sqrt(3) a)."""
    from ase.build import bulk, surface

    cell = surface(bulk("CdTe", "zincblende", a=a), (1, 1, 1), 3, periodic=True)
    cell.wrap()
    return cell


def k_groups(structures: Sequence[Atoms] | None = None, spacing: float = KFIX_SPACING) -> list[KGroup]:
    """The (cell shape, k-mesh) groups of the CdTe structure list and how each correction is computed.

    ``structures`` defaults to :func:`surrogate.dft.structures.cdte_structures` (only the ideal
    members are used).
    """
    from surrogate.dft.structures import cdte_structures

    structures = list(structures) if structures is not None else cdte_structures()

    def ideal(family: str, **want) -> Atoms:
        for a in structures:
            p = a.info.get("params", {})
            if a.info.get("family") == family and all(p.get(k) == v for k, v in want.items()):
                return a
        raise SurrogateError(f"no ideal {family} {want} in the structure list")

    unit = ideal("bulk")
    a0 = float(unit.cell.lengths()[0])
    hex6 = _hex111_bulk(a0)
    conv8 = Calc(unit, gamma_mesh(unit, spacing), True, "cubic8")
    lab8 = Calc(unit, kpts_for(unit), False, "cubic8")
    groups = []
    # 16- and 32-atom supercells: their Gamma-avoiding 1x2x2 / 1x1x2 meshes (k = 1/2 along a doubled
    # axis) fold onto exactly the 8-atom cell's 2x2x2 k-points, so all three share one correction.
    for name, rep in (("cubic8", (1, 1, 1)), ("cubic16", (2, 1, 1)), ("cubic32", (2, 2, 1))):
        cell = unit.cell.array * np.asarray(rep)[:, None]
        sup = Atoms(cell=cell, pbc=True)
        groups.append(
            KGroup(
                name,
                cell,
                "x".join(map(str, kpts_for(sup))),
                lab8,
                conv8,
                "" if rep == (1, 1, 1) else "label mesh folds onto the 8-atom 2x2x2 k-points",
            )
        )
    # point defects change the electronic structure (V_Cd leaves holes at the valence-band top): the
    # k-error of a defect cell is not the bulk one, so each (family, defect, cell) gets its own group,
    # computed on its unrattled defect cell, with the bulk cell-shape group as the fallback
    parents: dict[tuple[int, ...], str] = {(1, 1, 1): "cubic8", (2, 1, 1): "cubic16", (2, 2, 1): "cubic32"}
    seen = set()
    for a in structures:
        fam, p = a.info.get("family"), a.info.get("params", {})
        if fam in ("vacancy", "antisite", "substitution", "interstitial") and p.get("stdev") == 0.0:
            sel: tuple[tuple[str, object], ...] = (("defect", p["defect"]), ("cell", p["cell"]))
            tag_ = f"{p['defect']}-{p['cell']}"
        elif fam == "alloy_se" and p.get("stdev") == 0.0:
            sel, tag_ = (("n_se", p["n_se"]),), f"Se{p['n_se']}-1x1x1"
        else:
            continue
        if (fam, sel) in seen:
            continue
        seen.add((fam, sel))
        drep = tuple(int(x) for x in str(dict(sel).get("cell", "1x1x1")).split("x"))
        groups.append(
            KGroup(
                f"{fam}:{tag_}",
                unit.cell.array * np.asarray(drep)[:, None],
                "x".join(map(str, kpts_for(a))),
                Calc(a, kpts_for(a), False, f"{fam}-{tag_}"),
                Calc(a, gamma_mesh(a, spacing), True, f"{fam}-{tag_}"),
                "unrattled defect cell",
                family=fam,
                defect=sel,
                parent=parents[drep],
            )
        )
    # twin111 (12 bilayers, k 3x3x1 with kz = 1/2): folds onto the 6-atom cell's shifted 3x3x4
    ref12 = ideal("twin111", twin=False)
    nz = round(ref12.cell.lengths()[2] / hex6.cell.lengths()[2])
    groups.append(
        KGroup(
            "hex111_12",
            ref12.cell.array.copy(),
            "x".join(map(str, kpts_for(ref12))),
            Calc(hex6, (*kpts_for(ref12)[:2], nz * kpts_for(ref12)[2]), False, "hex6"),
            Calc(hex6, gamma_mesh(hex6, spacing), True, "hex6"),
            "twin-free reference cell; label mesh folds onto the 6-atom bulk cell's shifted 3x3x4",
        )
    )
    # the other cell shapes have no bulk cell with the same k-points: their own ideal structure
    for name, family, want, note in (
        ("hex111_8", "twin111_4", {"twin": False}, "as-built reference (8 bilayers, not a multiple of 3)"),
        ("slab110", "surface110", {"stdev": 0.0}, "as-built unrattled slab"),
        ("gb_twin", "gb_twin", {"stdev": 0.0, "translation": [0.0, 0.0, 0.0]}, "as-built unrattled bicrystal"),
        ("gb_tilt", "gb_tilt", {"stdev": 0.0}, "as-built unrattled bicrystal"),
    ):
        a = ideal(family, **want)
        groups.append(
            KGroup(
                name,
                a.cell.array.copy(),
                "x".join(map(str, kpts_for(a))),
                Calc(a, kpts_for(a), False, family),
                Calc(a, gamma_mesh(a, spacing), True, family),
                note,
            )
        )
    return groups


def group_of(frame: Atoms, groups: Sequence[KGroup]) -> KGroup:
    """The group of ``frame``: same label k-mesh, cell within the length/angle tolerances.

    Raises
    ------
    SurrogateError
        When no group (or more than one) matches: a new cell shape needs its own correction.
    """
    from ase.geometry import cell_to_cellpar

    par = cell_to_cellpar(frame.cell.array)
    hits = []
    special = [g for g in groups if g.family is not None and g.selects(frame)]
    for g in special or [g for g in groups if g.family is None]:
        gp = cell_to_cellpar(g.cell)
        if (
            str(frame.info.get("dft_kpts")) == g.kpts
            and np.all(np.abs(par[:3] / gp[:3] - 1) < KFIX_LENGTH_TOL)
            and np.all(np.abs(par[3:] - gp[3:]) < KFIX_ANGLE_TOL)
        ):
            hits.append(g)
    if len(hits) != 1:
        raise SurrogateError(
            f"frame {frame.info.get('config_id')} ({frame.info.get('family')}, cell {np.round(par, 2).tolist()}, "
            f"k {frame.info.get('dft_kpts')}) matches {len(hits)} k-correction groups "
            f"({', '.join(g.name for g in hits) or 'none'}); add its cell shape to surrogate.dft.kcorrect.k_groups"
        )
    return hits[0]


def gpaw_energy(atoms: Atoms, size: tuple[int, int, int], gamma: bool, settings: DFTSettings = DFTSettings()) -> dict:
    """Total energy [eV] (extrapolated to zero smearing, as ``REF_energy``) and forces [eV/Å] of
    ``atoms`` with the label settings on the given mesh; symmetry is used (ideal structures)."""
    from gpaw import GPAW, PW, FermiDirac

    t0 = time.perf_counter()
    calc = GPAW(
        mode=PW(settings.ecut),
        xc=settings.xc,
        kpts={"size": tuple(size), "gamma": bool(gamma)},
        occupations=FermiDirac(settings.smearing),
        maxiter=settings.maxiter,
        setups=settings.setups,
        txt=None,
    )
    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = calc
    energy = float(work.get_potential_energy())
    forces = work.get_forces()
    return {
        "E": energy,
        "natoms": len(atoms),
        "fmax": float(np.linalg.norm(forces, axis=1).max()),
        "forces": np.round(forces, 6).tolist(),
        "n_ibz_kpts": len(calc.get_ibz_k_points()),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, table: dict) -> None:
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")


def compute_corrections(
    table_path: str | Path,
    groups: Sequence[KGroup],
    energy: Callable[[Atoms, tuple[int, int, int], bool], dict] | None = None,
    spacing: float = KFIX_SPACING,
    log: Callable[[str], None] = lambda s: print(s, flush=True),
    only: Sequence[str] | None = None,
    frames: Sequence[Atoms] = (),
) -> dict:
    """Compute (or resume) the energies behind every group's correction and the corrections.

    The table (JSON) holds ``energies`` (by calculation key: E [eV], natoms, wall_s, ...) and
    ``groups`` (name -> dE_per_atom [eV] and the two keys). It is rewritten atomically after every
    calculation; a calculation already in it is not repeated, so a killed job loses at most the one
    in progress. ``only`` restricts the run to these group names. A label-mesh energy of a
    structure that is itself a labelled frame (same config_id and k-mesh in ``frames``) is taken from
    that frame instead of being recomputed (identical settings).
    """
    table_path = Path(table_path)
    energy = energy or gpaw_energy
    table = _load(table_path)
    if table and abs(float(table.get("spacing", spacing)) - spacing) > 1e-12:
        raise SurrogateError(
            f"{table_path} was computed with k-spacing {table['spacing']} 1/Å, not {spacing}: use another file"
        )
    table.setdefault("spacing", spacing)
    table.setdefault("settings", DFTSettings().describe())
    energies = table.setdefault("energies", {})
    out = table.setdefault("groups", {})
    for g in groups:
        if only is not None and g.name not in only:
            continue
        for c in (g.label, g.converged):
            if c.key in energies:
                continue
            same = [
                f
                for f in frames
                if not c.gamma
                and f.info.get("config_id") == c.atoms.info.get("config_id", "-")
                and str(f.info.get("dft_kpts")) == "x".join(map(str, c.size))
                and bool(f.info.get("converged"))
            ]
            if same:
                f = same[0]
                energies[c.key] = {
                    "E": float(f.info["REF_energy"]),
                    "natoms": len(f),
                    "size": list(c.size),
                    "gamma": False,
                    "E_per_atom": float(f.info["REF_energy"]) / len(f),
                    "wall_s": float(f.info.get("wall_s", float("nan"))),
                    "fmax": float(np.linalg.norm(f.arrays["REF_forces"], axis=1).max()),
                    "forces": np.round(f.arrays["REF_forces"], 6).tolist(),
                    "source": f"labelled frame {f.info['config_id']} ({f.info.get('_file')})",
                }
                _save(table_path, table)
                log(f"{g.name}: {c.key} from the labelled frame {f.info['config_id']}")
                continue
            log(f"{time.strftime('%H:%M:%S')} {g.name}: {c.key} ({len(c.atoms)} atoms) ...")
            r = energy(c.atoms, c.size, c.gamma)
            r = {**r, "size": list(c.size), "gamma": c.gamma, "E_per_atom": r["E"] / r["natoms"]}
            energies[c.key] = r
            _save(table_path, table)
            log(f"{time.strftime('%H:%M:%S')} {g.name}: {c.key} E/atom = {r['E_per_atom']:.6f} eV")
        e_lab, e_conv = energies[g.label.key], energies[g.converged.key]
        out[g.name] = {
            "dE_per_atom": e_lab["E_per_atom"] - e_conv["E_per_atom"],
            "label": g.label.key,
            "converged": g.converged.key,
            "kpts": g.kpts,
            "cell": np.round(g.cell, 4).tolist(),
            "note": g.note,
        }
        _save(table_path, table)
        log(f"{g.name}: dE/atom = {1000 * out[g.name]['dE_per_atom']:+.2f} meV (label {g.kpts} minus converged)")
    return table


def apply_corrections(frames: Sequence[Atoms], table: dict, groups: Sequence[KGroup]) -> list[Atoms]:
    """Copies of ``frames`` with ``REF_energy_kfix`` [eV], ``kfix_group``, ``kfix_from`` (the group whose
    correction was applied: the frame's own, or its parent cell-shape group while the own one is not
    computed yet) and ``kfix_dE_per_atom`` [eV].

    Raises
    ------
    SurrogateError
        When a frame's group has no correction in ``table`` (compute it first).
    """
    out = []
    done = table.get("groups", {})
    for f in frames:
        g = group_of(f, groups)
        used = g.name if g.name in done else g.parent
        if used is None or used not in done:
            raise SurrogateError(f"no k-correction computed for group {g.name}: run `kcorrect compute` first")
        de = float(done[used]["dE_per_atom"])
        c = f.copy()
        c.info.pop("_file", None)
        c.info[KFIX_ENERGY] = float(f.info["REF_energy"]) - len(f) * de
        c.info["kfix_group"] = g.name
        c.info["kfix_from"] = used
        c.info["kfix_dE_per_atom"] = de
        c.info["kfix_spacing"] = float(table["spacing"])
        out.append(c)
    return out


def write_corrected(src: str | Path, dst: str | Path, table: dict, groups: Sequence[KGroup]) -> list[Path]:
    """Write every batch file of ``src`` to ``dst`` (same names) with the corrected column added;
    each file is written to a temporary file and renamed. Returns the written paths."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise SurrogateError("write the corrected batches to another folder than the labels")
    frames = read_batches(src)
    by_file: dict[str, list[Atoms]] = {}
    for f in frames:
        by_file.setdefault(f.info["_file"], []).append(f)
    written = []
    for name, batch in sorted(by_file.items()):
        path = dst / name
        write_atomic(path, apply_corrections(batch, table, groups))
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m surrogate.dft.kcorrect",
        description="k-point corrections of the CdTe labels per (cell shape, k-mesh) group (docs/dft.md).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pc = sub.add_parser("compute", help="run the GPAW calculations of the corrections (resumable)")
    pa = sub.add_parser("apply", help="write corrected copies of the batch files")
    for q in (pc, pa):
        q.add_argument("--table", default="data/dft/cdte/kcorrected/kpoint_corrections.json")
        q.add_argument("--spacing", type=float, default=KFIX_SPACING, help="k-spacing [1/Å] (default: %(default)s)")
    pc.add_argument("--groups", nargs="+", default=None, help="only these groups (default: all)")
    pc.add_argument("--labels", default="data/dft/cdte", help="labelled batches whose ideal frames are reused")
    pa.add_argument("--src", default="data/dft/cdte")
    pa.add_argument("--dst", default="data/dft/cdte/kcorrected")
    args = p.parse_args(argv)
    groups = k_groups(spacing=args.spacing)
    if args.cmd == "compute":
        compute_corrections(
            args.table, groups, spacing=args.spacing, only=args.groups, frames=read_batches(args.labels)
        )
        return 0
    table = _load(Path(args.table))
    paths = write_corrected(args.src, args.dst, table, groups)
    frames = [f for path in paths for f in read_batches(path.parent) if f.info["_file"] == path.name]
    counts: dict[tuple[str, str], int] = {}
    for f in frames:
        k = (f.info["kfix_group"], f.info["kfix_from"])
        counts[k] = counts.get(k, 0) + 1
    for (name, used), n in sorted(counts.items()):
        via = "" if used == name else f"  (own correction not computed: {used}'s)"
        print(f"{name:28s} {n:4d} frames  dE/atom = {1000 * table['groups'][used]['dE_per_atom']:+7.2f} meV{via}")
    print(f"wrote {len(paths)} files to {args.dst}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
