"""Our potentials against the universal potentials a user could install instead (CHGNet 0.3.0,
SevenNet-0), on the same held-out Si and CdTe splits as ``benchmarks/potential.py``, in one run.

    python benchmarks/potential_universal.py [--universal-python /work/venvs/universal/bin/python]
        [--models ours chgnet sevennet] [--max-frames N] [--max-train N] [--relax-steps N]
        [--physics full|light|none] [--skip-speed] [--reuse] [--out benchmarks/results]
    python benchmarks/potential_universal.py --smoke     # two structures per split, ours only (<out>/..._smoke.*)

For every model and data set: energy MAE raw and after a per-element reference energy fitted on the
training split (the DFT settings differ: mlearn's VASP PBE for Si, our GPAW PBE for CdTe, the
Materials Project's VASP PBE(+U) for the universal models), force-component MAE, the physics checks
of :mod:`surrogate.potential.physics` (lattice constant, bulk modulus, relaxed vacancy/antisite
formation energies, coherent Σ3 twin and Σ9 tilt boundary energies) with DFT beside them (CdTe: the
model and our GPAW labels on the same labelled cells; Si: mlearn's VASP data and published PBE), and
the CPU time of one energy + force call on a 1000-atom cell. Writes ``<out>/<name>.json`` and ``.md``;
every model's raw result is also kept as ``<out>/<name>.<model>.json`` (``--reuse`` skips a model
whose file exists, so an interrupted run resumes).

The universal models live in their own virtualenv (their torch stacks must not touch the
project's). They run in a subprocess of ``--universal-python`` in ``worker`` mode; the worker imports
ASE, numpy, torch, the model package and, through ``PYTHONPATH``, ``surrogate.structures`` and
``surrogate.potential.{interfaces,physics}`` (none of our torch code). The universal venv::

    python3 -m venv /work/venvs/universal
    /work/venvs/universal/bin/pip install torch==2.14.1 chgnet==0.4.2 sevenn==0.13.0

(``chgnet`` 0.4.2 ships the 0.3.0 weights in its wheel; SevenNet-0 (``7net-0``) is inside ``sevenn``'s;
both run offline.)

``chgnet_ft`` (CdTe only) is CHGNet 0.3.0 fine-tuned on our CdTe training split by
``benchmarks/potential_finetune.py``; its weights (``--chgnet-ft``, default
``/work/venvs/chgnet_cdte_ft/best.pt``) are outside git, so make them first (~10 min)::

    /work/venvs/universal/bin/python benchmarks/potential_finetune.py --out /work/venvs/chgnet_cdte_ft
    python benchmarks/potential_universal.py --max-train 60 --relax-steps 200 --reuse
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
UNIVERSAL = ("chgnet", "sevennet", "chgnet_ft")
LABELS = {
    "ours": "ours",
    "chgnet": "CHGNet 0.3.0",
    "sevennet": "SevenNet-0",
    "chgnet_ft": "CHGNet 0.3.0 fine-tuned on our CdTe train split",
}
#: Models fitted to only some materials (the others are skipped and say so in the tables).
ONLY = {"chgnet_ft": ("CdTe",)}
#: Weights of ``chgnet_ft``, written by ``benchmarks/potential_finetune.py`` (outside git).
CHGNET_FT = Path("/work/venvs/chgnet_cdte_ft/best.pt")
CHECKPOINTS = {"Si": REPO / "checkpoints" / "potential_si.pt", "CdTe": REPO / "checkpoints" / "potential_cdte.pt"}
#: Si reference values that are not in the shipped DFT data.
SI_LITERATURE = {
    "a0": "5.469 (PBE, Materials Project mp-149)",
    "B_gpa": "88 (PBE, mp-149); 82 (DFT, Lysogorskiy et al., npj Comput. Mater. 7, 97 (2021), Table 1)",
    "vacancy_ev": "3.67 (DFT, Lysogorskiy et al. 2021, Table 1); 3.6-3.7 (PBE supercells)",
    "twin_mj": "no DFT value at hand",
    "tilt_mj": "no DFT value at hand",
}
CDTE_DEFECTS: tuple[tuple[str, str | None], ...] = (
    ("vacancy", "Cd"),
    ("vacancy", "Te"),
    ("antisite", "Cd"),
    ("antisite", "Te"),
)


# --------------------------------------------------------------------------- calculators
def make_calculator(model: str, material: str, dtype: str = "float32", weights: str | None = None):
    """ASE calculator of ``model`` (ours: the shipped checkpoint of ``material``; chgnet_ft: the
    fine-tuned CHGNet at ``weights``, default :data:`CHGNET_FT`)."""
    if model == "ours":
        from surrogate.potential.calculator import load_calculator

        return load_calculator(CHECKPOINTS[material], dtype=dtype)
    if model == "chgnet":
        from chgnet.model import CHGNet  # type: ignore[import-not-found]
        from chgnet.model.dynamics import CHGNetCalculator  # type: ignore[import-not-found]

        return CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", verbose=False), use_device="cpu")
    if model == "chgnet_ft":
        from chgnet.model import CHGNet  # type: ignore[import-not-found]
        from chgnet.model.dynamics import CHGNetCalculator  # type: ignore[import-not-found]

        return CHGNetCalculator(model=CHGNet.from_file(str(weights or CHGNET_FT)), use_device="cpu")
    if model == "sevennet":
        from sevenn.calculator import SevenNetCalculator  # type: ignore[import-not-found]

        return SevenNetCalculator("7net-0", device="cpu")
    raise ValueError(f"unknown model {model!r}")


def _energy(atoms, calc) -> float:
    b = atoms.copy()
    b.calc = calc
    return float(b.get_potential_energy())


# --------------------------------------------------------------------------- data
def _subset(frames: list, n: int | None) -> list:
    """``n`` frames evenly spaced over the list (all when ``n`` is None or larger)."""
    if not n or n >= len(frames):
        return list(frames)
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]


def split_data(max_frames: int | None = None, max_train: int | None = None) -> dict:
    """``{"Si": {"train": [...], "test": [...]}, "CdTe": {...}}`` as benchmarks/potential.py reads
    them: mlearn's Si train/test files, our CdTe labels' fixed ``split`` (train = every non-test
    frame; converged frames only). ``max_frames`` / ``max_train``: evenly spaced subsets."""
    from surrogate.potential.data import read_frames, split_frames

    si_train, _ = read_frames([str(REPO / "data/dft/si/train.extxyz")])
    si_test, _ = read_frames([str(REPO / "data/dft/si/test.extxyz")])
    cdte, _ = read_frames([str(REPO / "data/dft/cdte/batch_*.extxyz")])
    parts = split_frames(cdte, 0.0)
    out = {
        "Si": {"train": si_train, "test": si_test},
        "CdTe": {"train": parts["train"] + parts["val"], "test": parts["test"]},
    }
    return {
        m: {"train": _subset(d["train"], max_train or max_frames), "test": _subset(d["test"], max_frames)}
        for m, d in out.items()
    }


def _clean(frames) -> list:
    clean = []
    for a in frames:
        b = a.copy()
        b.calc = None
        b.info.pop("_source", None)
        clean.append(b)
    return clean


def write_data(data: dict, folder: Path) -> None:
    from ase.io import write

    for material, splits in data.items():
        for split, frames in splits.items():
            write(folder / f"{material}_{split}.extxyz", _clean(frames), format="extxyz")


def read_data(folder: Path) -> dict:
    from ase.io import read

    out: dict = {}
    for path in sorted(folder.glob("*_*.extxyz")):
        material, split = path.stem.split("_")
        out.setdefault(material, {})[split] = read(path, ":", format="extxyz")
    return out


def predict(calc, frames) -> dict:
    """Energies [eV] and the summed absolute force-component error [eV/Å] of every frame."""
    energy, f_abs, f_n = [], [], []
    for a in frames:
        b = a.copy()
        b.calc = calc
        energy.append(float(b.get_potential_energy()))
        err = np.abs(np.asarray(b.get_forces()) - a.arrays["REF_forces"])
        f_abs.append(float(err.sum()))
        f_n.append(int(err.size))
    return {"energy": energy, "f_abs": f_abs, "f_n": f_n}


def _z(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


def fit_reference(frames, energies, elements) -> np.ndarray:
    """Per-element energies c [eV/atom] minimising sum ((E_ref - E_model)/N - sum_el x_el c_el)^2
    over ``frames`` (x_el: the fraction of element el; an element absent from them gets 0)."""
    x = np.array([[np.sum(a.numbers == _z(el)) / len(a) for el in elements] for a in frames])
    y = np.array([(a.info["REF_energy"] - e) / len(a) for a, e in zip(frames, energies)])
    return np.linalg.lstsq(x, y, rcond=None)[0]


def accuracy(frames_train, pred_train, frames_test, pred_test) -> dict:
    """Energy MAE raw / after the per-element reference fitted on train [meV/atom], force MAE [meV/Å]."""
    elements = sorted({s for a in list(frames_train) + list(frames_test) for s in a.get_chemical_symbols()})
    c = fit_reference(frames_train, pred_train["energy"], elements)
    raw, ref = [], []
    for a, e in zip(frames_test, pred_test["energy"]):
        shift = sum(np.sum(a.numbers == _z(el)) * c[k] for k, el in enumerate(elements))
        raw.append(abs(e - a.info["REF_energy"]) / len(a))
        ref.append(abs(e + shift - a.info["REF_energy"]) / len(a))
    return {
        "energy_mae_raw": 1000 * float(np.mean(raw)),
        "energy_mae_ref": 1000 * float(np.mean(ref)),
        "forces_mae": 1000 * float(np.sum(pred_test["f_abs"]) / max(1, np.sum(pred_test["f_n"]))),
        "n_frames": len(frames_test),
        "n_train_frames": len(frames_train),
        "reference_ev_per_atom": dict(zip(elements, map(float, c))),
    }


# --------------------------------------------------------------------------- physics
def _eos_fit(volumes, energies) -> tuple[float, float]:
    """(cube root of the fitted volume per 8 atoms [Å], B [GPa]) of a Birch-Murnaghan fit."""
    from ase.eos import EquationOfState
    from ase.units import GPa

    v0, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float(v0), float(b / GPa)


def _twin_gamma(twin, e_twin: float, e_ref: float) -> float:
    """(111) twin pair of surrogate.dft.structures.coherent_twin: two planes normal to z per cell."""
    from surrogate.potential.interfaces import EV_PER_A2_IN_MJ_PER_M2

    area = float(np.linalg.norm(np.cross(twin.cell[0], twin.cell[1])))
    return (e_twin - e_ref) / (2 * area) * EV_PER_A2_IN_MJ_PER_M2


def _params(a) -> dict:
    p = a.info.get("params", {})
    return json.loads(p) if isinstance(p, str) else dict(p or {})


def labelled_cells(frames) -> dict:
    """The CdTe DFT cells of the physics checks: bulk, E-V strains, ideal 8-atom defects, twin pairs,
    unrattled boundaries."""
    bulk = next(a for a in frames if a.info["family"] == "bulk")
    out: dict = {"bulk": bulk, "eos": [a for a in frames if a.info["family"] in ("strain_iso", "bulk")]}
    out["twin"], out["gb"] = {}, {}
    for a in frames:
        p, fam = _params(a), a.info["family"]
        if fam in ("vacancy", "antisite") and p.get("stdev") == 0.0 and np.allclose(a.cell.array, bulk.cell.array):
            out[p["defect"]] = a
        elif fam in ("twin111", "twin111_4"):
            out["twin"].setdefault(fam, {})[bool(p["twin"])] = a
        elif fam in ("gb_tilt", "gb_twin") and p.get("stdev") == 0.0 and not any(p.get("translation", [0, 0, 0])):
            out["gb"][fam] = a
    return out


def physics_on_labels(calc, frames) -> dict:
    """Model and DFT on the same labelled CdTe cells (unrelaxed, at the labels' 6.481 Å cells),
    only combinations that need no chemical potential: E-V fit of the isotropic strains, Schottky
    pair (V_Cd + V_Te) and antisite pair (Cd_Te + Te_Cd) of the ideal 8-atom cells, the coherent
    Σ3 (111) twin pairs, and the summed excess energy of the Σ9 tilt (Cd13Te12) and Σ3 {112} twin
    (Cd12Te13) cells, whose opposite non-stoichiometry cancels the chemical potentials."""
    cells = labelled_cells(frames)
    bulk = cells["bulk"]
    out: dict = {}
    vols = [a.get_volume() for a in cells["eos"]]
    n = len(cells["eos"][0])
    dft = _eos_fit(vols, [a.info["REF_energy"] for a in cells["eos"]])
    mod = _eos_fit(vols, [_energy(a, calc) for a in cells["eos"]])
    out["a0 of the labelled E-V cells [Å]"] = {"dft": np.cbrt(dft[0] * 8 / n), "model": np.cbrt(mod[0] * 8 / n)}
    out["B of the labelled E-V cells [GPa]"] = {"dft": dft[1], "model": mod[1]}
    e_bulk = {"dft": bulk.info["REF_energy"], "model": _energy(bulk, calc)}
    e = {
        k: {"dft": cells[k].info["REF_energy"], "model": _energy(cells[k], calc)}
        for k in ("V_Cd", "V_Te", "Cd_Te", "Te_Cd")
    }
    # V_Cd + V_Te removes one formula unit: E(V_Cd) + E(V_Te) - 2 E_bulk + E_bulk/4 (8-atom bulk = 4 f.u.)
    out["Schottky pair V_Cd + V_Te, ideal 8-atom cells [eV]"] = {
        s: e["V_Cd"][s] + e["V_Te"][s] - 2 * e_bulk[s] + e_bulk[s] / 4 for s in ("dft", "model")
    }
    out["antisite pair Cd_Te + Te_Cd, ideal 8-atom cells [eV]"] = {
        s: e["Cd_Te"][s] + e["Te_Cd"][s] - 2 * e_bulk[s] for s in ("dft", "model")
    }
    for family, pair in sorted(cells["twin"].items()):
        if len(pair) == 2:
            layers = _params(pair[True])["bilayers_per_grain"]
            held = "held out" if pair[True].info.get("split") == "test" else "in the training split"
            out[f"coherent Σ3 (111) twin, {layers}+{layers} bilayers ({held}) [mJ/m²]"] = {
                "dft": _twin_gamma(pair[True], pair[True].info["REF_energy"], pair[False].info["REF_energy"]),
                "model": _twin_gamma(pair[True], _energy(pair[True], calc), _energy(pair[False], calc)),
            }
    if {"gb_tilt", "gb_twin"} <= set(cells["gb"]):
        t, w = cells["gb"]["gb_tilt"], cells["gb"]["gb_twin"]
        nfu = (len(t) + len(w)) / 2 / (len(bulk) / 2)  # bulk cells' worth of formula units
        out["Σ9 tilt + Σ3 {112} twin cells, summed excess energy (μ-free) [eV]"] = {
            "dft": t.info["REF_energy"] + w.info["REF_energy"] - nfu * bulk.info["REF_energy"],
            "model": _energy(t, calc) + _energy(w, calc) - nfu * e_bulk["model"],
        }
    return {k: {s: float(v) for s, v in d.items()} for k, d in out.items()}


def labelled_splits(frames) -> dict[str, list[str]]:
    """Which split (train / test) the labelled cells of :func:`physics_on_labels` are in."""
    cells = labelled_cells(frames)
    out: dict[str, list[str]] = {"bulk and E-V": [str(a.info.get("split", "train")) for a in cells["eos"]]}
    out["8-atom defects"] = [str(cells[k].info.get("split", "train")) for k in ("V_Cd", "V_Te", "Cd_Te", "Te_Cd")]
    for family, pair in cells["twin"].items():
        out[family] = [str(a.info.get("split", "train")) for a in pair.values()]
    out["boundaries"] = [str(a.info.get("split", "train")) for a in cells["gb"].values()]
    return {k: sorted(set(v)) for k, v in out.items()}


def physics_own(calc, material: str, mode: str, steps: int) -> dict:
    """:mod:`surrogate.potential.physics` at the model's own lattice constant (``light``: EOS only)."""
    from surrogate.potential import physics

    eos = physics.equation_of_state(calc, material)
    out: dict = {"a0": eos.a0, "B_gpa": eos.bulk_modulus}
    if mode != "full":
        return out
    out["twin_mj"] = physics.twin_energy(calc, material, eos.a0)
    out["tilt"] = physics.tilt_boundary_energy(calc, material, eos.a0, steps=steps)
    defects = CDTE_DEFECTS if material == "CdTe" else (("vacancy", None),)
    out["defects"] = {}
    for kind, species in defects:
        if kind == "vacancy":
            d = physics.vacancy_energy(calc, material, species, a0=eos.a0, fmax=0.05, steps=steps)
        else:
            d = physics.antisite_energy(calc, material, str(species), a0=eos.a0, fmax=0.05, steps=steps)
        out["defects"][d.defect] = d.as_dict()
    return out


# --------------------------------------------------------------------------- speed
def cell_1000(material: str, repeat: int = 5):
    """A rattled conventional cell repeated ``repeat`` times (5: 1000 atoms)."""
    from surrogate.structures import crystal

    a = crystal(material).repeat(repeat)
    a.rattle(0.05, seed=0)
    return a


def time_call(atoms, calc, repeats: int = 2) -> float:
    """Best wall time [s] of ``repeats`` energy + force calls after a warm-up, each on a freshly
    displaced copy (no cached result)."""
    times = []
    for k in range(repeats + 1):
        b = atoms.copy()
        b.positions += 1e-3 * k
        b.calc = calc
        t = time.perf_counter()
        b.get_forces()
        times.append(time.perf_counter() - t)
    return min(times[1:])


# --------------------------------------------------------------------------- one model
def evaluate_model(model: str, data: dict, opts: dict, all_cdte=None) -> dict:
    """Predictions, speed and physics of one model (in this process)."""
    import torch

    torch.set_num_threads(opts["threads"])
    res: dict = {"predictions": {}, "physics": {}, "speed": {}, "seconds": {}}
    for material, splits in data.items():
        if material not in ONLY.get(model, (material,)):
            continue
        t = time.perf_counter()
        calc = make_calculator(model, material, weights=opts.get("chgnet_ft"))
        res["predictions"][material] = {s: predict(calc, fr) for s, fr in splits.items()}
        res["seconds"][f"{material} predictions"] = time.perf_counter() - t
        if opts["speed"]:
            atoms = cell_1000(material, opts["speed_repeat"])
            s = time_call(atoms, calc)
            res["speed"][material] = {"seconds_per_call": s, "atoms_per_s": len(atoms) / s, "atoms": len(atoms)}
        if opts["physics"] != "none":
            t = time.perf_counter()
            pcalc = make_calculator(model, material, dtype="float64") if model == "ours" else calc
            p = physics_own(pcalc, material, opts["physics"], opts["relax_steps"])
            if material == "CdTe" and all_cdte is not None:
                p["labelled"] = physics_on_labels(pcalc, all_cdte)
            res["physics"][material] = p
            res["seconds"][f"{material} physics"] = time.perf_counter() - t
    return res


def worker(args) -> None:
    """Runs under the universal venv: evaluates one model, writes JSON to ``--result``."""
    import warnings

    warnings.filterwarnings("ignore")
    folder = Path(args.data)
    data = read_data(folder)
    from ase.io import read

    opts = json.loads(args.opts)
    labels = folder / "labels_cdte.xyz"
    all_cdte = read(labels, ":", format="extxyz") if labels.is_file() else None
    res = evaluate_model(args.model, data, opts, all_cdte)
    Path(args.result).write_text(json.dumps(res, default=float))


def run_universal(python: str, model: str, folder: Path, opts: dict) -> dict:
    result = folder / f"{model}.json"
    cmd = [python, __file__, "worker", "--model", model, "--data", str(folder), "--result", str(result)]
    cmd += ["--opts", json.dumps(opts)]
    threads = str(opts["threads"])
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
    }
    if not Path(python).is_file():
        return {"error": f"no universal venv interpreter at {python} (see this file's docstring to make one)"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0 or not result.is_file():
        return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(result.read_text())


def si_dft_reference() -> dict:
    """benchmarks/potential.py's a0 and (C11 + 2 C12)/3 of the mlearn Si data."""
    spec = importlib.util.spec_from_file_location("_benchmark_potential", REPO / "benchmarks" / "potential.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.si_dft_reference()


# --------------------------------------------------------------------------- report
def _fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def markdown(res: dict) -> str:
    m, o = res["machine"], res["options"]
    models = [k for k in res["models"] if not res["models"][k].get("error")]
    names = [LABELS.get(k, k) for k in models]
    lines = [
        "# Our potentials vs universal potentials (CHGNet 0.3.0, SevenNet-0)",
        "",
        f"Machine: {m['cpus']} CPU cores ({m['note']}), {o['threads']} torch thread(s), {m['platform']}. "
        "Generated by `benchmarks/potential_universal.py` in one run "
        f"(`{res['command']}`); ours = the shipped checkpoints (`checkpoints/potential_si.pt`, "
        "`potential_cdte.pt`, trained on the training splits), CHGNet and SevenNet-0 as shipped (no fine-tuning)"
        + (
            "; CHGNet fine-tuned = CHGNet 0.3.0 fine-tuned on our CdTe training split by "
            "`benchmarks/potential_finetune.py` (CdTe only; not fine-tuned for Si, so no Si rows)."
            if "chgnet_ft" in res["models"]
            else "."
        ),
        "",
        f"Subset: {res['subset']}.",
        "",
    ]
    if res.get("reused"):
        lines += [f"(Tables re-rendered from the saved per-model results of: {', '.join(res['reused'])}.)", ""]
    for k, v in res["models"].items():
        if v.get("error"):
            lines.append(f"- {LABELS.get(k, k)}: **failed**: {v['error']}")
    lines += [
        "## Held-out accuracy (MAE)",
        "",
        "Energy raw, and after a per-element reference energy fitted on the training split "
        "(removes the constant offset between DFT codes and settings). Forces: per component.",
        "",
        "| data | model | energy raw [meV/atom] | energy, per-element ref. [meV/atom] | forces [meV/Å] | test / train frames |",
        "|---|---|---|---|---|---|",
    ]
    for material, rows in res["accuracy"].items():
        for model in res["models"]:
            if model not in rows and material not in ONLY.get(model, (material,)):
                lines.append(f"| {material} | {LABELS.get(model, model)} | not fine-tuned for {material} | - | - | - |")
            if model not in rows:
                continue
            r = rows[model]
            lines.append(
                f"| {material} | {LABELS.get(model, model)} | {r['energy_mae_raw']:.1f} | {r['energy_mae_ref']:.2f} | "
                f"{r['forces_mae']:.1f} | {r['n_frames']} / {r['n_train_frames']} |"
            )
    if res.get("speed"):
        lines += [
            "",
            "## CPU speed (rattled cubic cell, energy + forces, neighbour list included, best of 2 after a warm-up)",
            "",
            "| cell | model | atoms | s / call | atoms / s |",
            "|---|---|---|---|---|",
        ]
        for material, rows in res["speed"].items():
            for model, r in rows.items():
                lines.append(
                    f"| {material} | {LABELS.get(model, model)} | {r['atoms']} | {r['seconds_per_call']:.2f} | "
                    f"{r['atoms_per_s']:.0f} |"
                )
        if res.get("reused"):
            lines += [
                "",
                "Reused per-model results keep the speed of the run that computed them; runs at different "
                "machine load are not comparable (`docs/potential.md` has ours, CHGNet and the fine-tuned "
                "CHGNet timed back to back).",
            ]
    phys = res.get("physics", {})
    if phys.get("Si"):
        p, dft = phys["Si"], res.get("si_dft", {})
        lines += [
            "",
            "## Physics checks, Si (each model at its own lattice constant)",
            "",
            "| quantity | " + " | ".join(names) + " | DFT / reference |",
            "|---|" + "---|" * (len(models) + 1),
        ]

        def row(label, ref, *keys):
            vals = [_get(p.get(mm), *keys) for mm in models]
            if any(v is not None for v in vals):
                lines.append(f"| {label} | " + " | ".join(_fmt(v, ".4g") for v in vals) + f" | {ref} |")

        a_d, b_d = _fmt(dft.get("a0"), ".4f"), _fmt(dft.get("B_gpa"), ".1f")
        row("lattice constant [Å]", f"{a_d} (mlearn ground state); {SI_LITERATURE['a0']}", "a0")
        row("bulk modulus [GPa]", f"{b_d} ((C11+2C12)/3, mlearn ±2 % strains); {SI_LITERATURE['B_gpa']}", "B_gpa")
        row(
            "vacancy, relaxed 63-atom cell [eV]",
            SI_LITERATURE["vacancy_ev"],
            "defects",
            "V_Si",
            "energy_formation",
        )
        row("vacancy, unrelaxed [eV]", "-", "defects", "V_Si", "unrelaxed")
        row("coherent Σ3 (111) twin, ideal [mJ/m²]", SI_LITERATURE["twin_mj"], "twin_mj")
        row("Σ9 [110] tilt, as built [mJ/m²]", SI_LITERATURE["tilt_mj"], "tilt", "unrelaxed_mj")
        row("Σ9 [110] tilt, relaxed (fixed cell) [mJ/m²]", SI_LITERATURE["tilt_mj"], "tilt", "relaxed_mj")
        row("Σ9 relaxation: why it stopped", "-", "tilt", "relax", "stopped")
        row("Σ9 relaxation: energy drop [eV]", "-", "tilt", "relax", "energy_drop")
    if phys.get("CdTe"):
        p = phys["CdTe"]
        lab = [_get(p.get(mm), "labelled") or {} for mm in models]
        keys = list(next((d for d in lab if d), {}))
        if keys:
            lines += [
                "",
                "## Physics checks, CdTe, on the labelled DFT cells (model and DFT on the same unrelaxed cells)",
                "",
                "Splits of these cells in our data: "
                + "; ".join(f"{k}: {'+'.join(v)}" for k, v in res.get("labelled_splits", {}).items())
                + ". Cells in the training split were fitted by our model"
                + (" and by the fine-tuned CHGNet" if "chgnet_ft" in res["models"] else "")
                + " (not a held-out check for it); the universal models as shipped saw none of them.",
                "",
                "| quantity | " + " | ".join(names) + " | DFT (GPAW PBE, our labels) |",
                "|---|" + "---|" * (len(models) + 1),
            ]
            for k in keys:
                vals = [_get(d, k, "model") for d in lab]
                ref = next((_get(d, k, "dft") for d in lab if k in d), None)
                lines.append(f"| {k} | " + " | ".join(_fmt(v, ".4g") for v in vals) + f" | {_fmt(ref, '.4g')} |")
        lines += [
            "",
            "## Physics checks, CdTe, at each model's own lattice constant (no DFT at these settings)",
            "",
            "Defects: 64-atom cells (2x2x2 conventional), fixed-cell relaxation; formation energies at the "
            "midpoint of the Cd-rich and Te-rich limits, each limit from the model's own elemental solids "
            "(Cd hcp, Te trigonal). Boundaries: mid chemical potentials.",
            "",
            "| quantity | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(models),
        ]

        def crow(label, *keys):
            vals = [_get(p.get(mm), *keys) for mm in models]
            if any(v is not None for v in vals):
                lines.append(f"| {label} | " + " | ".join(_fmt(v, ".4g") for v in vals) + " |")

        crow("lattice constant [Å]", "a0")
        crow("bulk modulus [GPa]", "B_gpa")
        for d in ("V_Cd", "V_Te", "Cd_Te", "Te_Cd"):
            crow(f"E_f({d}) relaxed, mid μ [eV]", "defects", d, "energy_formation")
            crow(f"E_f({d}) relaxed, Cd-rich [eV]", "defects", d, "limits", "Cd-rich")
            crow(f"E_f({d}) relaxed, Te-rich [eV]", "defects", d, "limits", "Te-rich")
        crow("coherent Σ3 (111) twin, ideal [mJ/m²]", "twin_mj")
        crow("Σ9 [110] tilt, as built [mJ/m²]", "tilt", "unrelaxed_mj")
        crow("Σ9 [110] tilt, relaxed (fixed cell) [mJ/m²]", "tilt", "relaxed_mj")
        crow("Σ9 relaxation: why it stopped", "tilt", "relax", "stopped")
        crow("Σ9 relaxation: energy drop [eV]", "tilt", "relax", "energy_drop")
    lines += [
        "",
        "Wall time per model [s]: "
        + ", ".join(f"{LABELS.get(k, k)} {v['wall_s']:.0f}" for k, v in res["models"].items()),
    ]
    return "\n".join(lines) + "\n"


def _summarise(out: dict, data: dict, res: dict, model: str) -> None:
    for material, splits in data.items():
        if material not in out["predictions"]:
            continue
        pr = out["predictions"][material]
        res["accuracy"].setdefault(material, {})[model] = accuracy(
            splits["train"], pr["train"], splits["test"], pr["test"]
        )
        for part in ("speed", "physics"):
            if out.get(part, {}).get(material):
                res[part].setdefault(material, {})[model] = out[part][material]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--universal-python", default="/work/venvs/universal/bin/python")
    p.add_argument("--models", nargs="+", default=None, help="default: ours chgnet sevennet chgnet_ft (--smoke: ours)")
    p.add_argument("--max-frames", type=int, default=None, help="evenly spaced N frames of each test split")
    p.add_argument("--max-train", type=int, default=None, help="evenly spaced N training frames (reference fit)")
    p.add_argument("--physics", choices=("full", "light", "none"), default="full")
    p.add_argument("--relax-steps", type=int, default=200, help="optimiser steps of each defect / boundary")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--chgnet-ft", default=str(CHGNET_FT), help="weights of chgnet_ft (potential_finetune.py)")
    p.add_argument("--speed-repeat", type=int, default=5, help="conventional cells per edge of the speed cell")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="two structures per split, ours only, light physics")
    p.add_argument("--reuse", action="store_true", help="reuse <out>/<name>.<model>.json where it exists")
    p.add_argument("--note", default="2-core VM shared with other jobs")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default=None, help="file stem (default potential_universal; --smoke: ..._smoke)")
    a = p.parse_args(argv)
    if a.smoke:
        a.max_frames, a.max_train = a.max_frames or 2, a.max_train or 2
        a.physics = "light" if a.physics == "full" else a.physics
        a.speed_repeat = min(a.speed_repeat, 2)
        a.models = a.models or ["ours"]
    a.name = a.name or ("potential_universal_smoke" if a.smoke else "potential_universal")  # never the shipped tables
    a.models = a.models or ["ours", *UNIVERSAL]
    import torch

    data = split_data(a.max_frames, a.max_train)
    opts = {
        "threads": a.threads,
        "physics": a.physics,
        "relax_steps": a.relax_steps,
        "speed": not a.skip_speed,
        "speed_repeat": a.speed_repeat,
        "chgnet_ft": a.chgnet_ft,
    }
    subset = "; ".join(
        f"{m}: {len(d['test'])} test frames, {len(d['train'])} training frames for the reference fit"
        for m, d in data.items()
    )
    full = a.max_frames is None and a.max_train is None
    res: dict = {
        "command": "python benchmarks/potential_universal.py "
        + " ".join(x for x in (argv if argv is not None else sys.argv[1:]) if x != "--reuse"),
        "reused": [],
        "subset": subset + (" (all frames)" if full else " (evenly spaced subsets)"),
        "options": opts,
        "machine": {
            "cpus": os.cpu_count(),
            "note": a.note,
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "models": {},
        "accuracy": {},
        "speed": {},
        "physics": {},
    }
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_cdte = None
    if a.physics != "none":
        from surrogate.potential.data import read_frames

        all_cdte, _ = read_frames([str(REPO / "data/dft/cdte/batch_*.extxyz")])
        all_cdte = _clean(all_cdte)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(data, folder)
        if all_cdte is not None:
            from ase.io import write

            write(folder / "labels_cdte.xyz", all_cdte, format="extxyz")
        for model in a.models:
            cache = out_dir / f"{a.name}.{model}.json"
            t = time.perf_counter()
            if a.reuse and cache.is_file():
                out = json.loads(cache.read_text())
                res["reused"].append(model)
            elif model == "ours":
                out = evaluate_model("ours", data, opts, all_cdte)
            else:
                out = run_universal(a.universal_python, model, folder, opts)
            out.setdefault("wall_s", time.perf_counter() - t)
            if "error" not in out:
                tmp_cache = cache.with_suffix(".json.tmp")
                tmp_cache.write_text(json.dumps(out, default=float))
                tmp_cache.replace(cache)
            res["models"][model] = {"wall_s": out["wall_s"], "error": out.get("error")}
            if "error" not in out:
                _summarise(out, data, res, model)
    if a.physics != "none":
        res["si_dft"] = si_dft_reference()
        res["labelled_splits"] = labelled_splits(all_cdte)
    (out_dir / f"{a.name}.json").write_text(json.dumps(res, indent=1, default=float))
    (out_dir / f"{a.name}.md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        q = argparse.ArgumentParser()
        q.add_argument("mode")
        q.add_argument("--model", required=True)
        q.add_argument("--data", required=True)
        q.add_argument("--result", required=True)
        q.add_argument("--opts", required=True)
        worker(q.parse_args())
    else:
        main()
