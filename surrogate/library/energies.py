"""Energies of library configurations from an interatomic potential.

:func:`annotate_energies` gives every row of a library's ``structures.db`` an energy per atom
(and, with ``relax=True``, the energy per atom and positions after a fixed-cell relaxation), writing
into the row's key/value pairs:

=========================== ==============================================================
``energy_per_atom``         potential energy / number of atoms [eV/atom]
``energy_model``            the model: checkpoint sha256[:16], or ``Class:hash`` of a stand-in
``energy_flag``             ``ok``, or why there is no energy: ``overlap``, ``unknown_element``,
                            ``calculator_error``, ``nonfinite``, ``empty``
``energy_message``          one line explaining a flag (absent when ``ok``)
``relaxed_energy_per_atom`` after relaxation [eV/atom] (``relax=True``)
``relax_converged``         max force <= fmax at the end; ``relax_steps``: optimiser steps
``relax_energy_drop``       energy before - after relaxation [eV]; ``relax_max_displacement`` [Å];
                            ``relax_stopped``: converged / steps / short_contact
``gb_energy``               bicrystals (family ``gb``): boundary energy [mJ/m^2], excess over the
                            bulk crystal / (2 x boundary area), :func:`surrogate.potential.interfaces.boundary_energy`
``formation_energy``        point defects (family ``defect``): E_defect - sum n_i mu_i [eV]
``gb_energy_relaxed``,      the same after relaxation (``relax=True``)
``formation_energy_relaxed``
``excess_message``          why a bicrystal/defect has no gb_energy/formation_energy (absent when it has)
=========================== ==============================================================

and the relaxed positions [Å] into the row's ``data["relaxed_positions"]``, the chemical
potentials and the rich-limit values into ``data["excess"]``. Chemical potentials of a compound
(``condition``): ``mid`` (default, midway between the two rich limits), ``Cd-rich``, ``Te-rich``...
or explicit ``mu``; they are recorded in the sidecar. Rows annotated before these columns existed are
completed on the next pass; libraries without them read as before. Each row commits on its
own, so a killed pass resumes: rows already annotated by the same model (with a relaxation when
one is asked for) are skipped. ``energies.json`` beside the database records the model, the
checkpoint, the date and the counts (atomic write).

Command line::

    python -m surrogate.library.energies --library demo_library --checkpoint ckpt/potential.ckpt
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, cast

import numpy as np

from surrogate.errors import ConfigError, LibraryError, exit_on_user_error
from surrogate.io.files import atomic_write_text

if TYPE_CHECKING:
    from surrogate.potential.interfaces import BoundaryEnergy, FormationEnergy

__all__ = [
    "SIDECAR",
    "annotate_energies",
    "read_energies",
    "read_boundary_energies",
    "read_formation_energies",
    "read_compositions",
    "energy_model",
    "relative_energies",
    "main",
]

#: Sidecar recording the model behind a library's energies.
SIDECAR = "energies.json"


def _db_path(library_dir: str | os.PathLike) -> Path:
    path = Path(library_dir) / "structures.db"
    if not path.is_file():
        raise LibraryError(f"no structures.db in {library_dir}: not a library; build one with surrogate-build-library")
    return path


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


#: Family -> the excess-energy column it gets.
EXCESS_COLUMN = {"gb": "gb_energy", "defect": "formation_energy"}


def _is_done(kvp: Mapping[str, Any], model_id: str, relax: bool, condition: str | None = None) -> bool:
    if kvp.get("energy_model") != model_id or "energy_flag" not in kvp:
        return False
    if kvp["energy_flag"] != "ok":
        return True  # flagged rows are deterministic: flagging them again gives the same answer
    column = EXCESS_COLUMN.get(kvp.get("family", ""))
    if column and "excess_message" not in kvp and (column not in kvp or kvp.get("excess_condition") != condition):
        return False  # annotated before boundary/formation energies existed, or under other potentials
    if column and relax and "excess_message" not in kvp and f"{column}_relaxed" not in kvp:
        return False
    return not relax or "relaxed_energy_per_atom" in kvp


def annotate_energies(
    library_dir: str | os.PathLike,
    calculator=None,
    *,
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    model_id: str | None = None,
    elements=None,
    relax: bool = False,
    fmax: float = 0.05,
    steps: int = 200,
    optimizer: str = "FIRE",
    condition: str = "mid",
    mu: Mapping[str, float] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the energy per atom of every configuration in a library and store it in its row.

    Parameters
    ----------
    library_dir
        Library directory (holds ``structures.db``).
    calculator
        An ASE calculator, a zero-argument factory, a checkpoint path, or a
        :class:`surrogate.potential.energy.EnergyModel`.
    checkpoint
        Potential checkpoint (instead of ``calculator``); loaded lazily with
        ``surrogate.potential.calculator.load_calculator`` and identified by its sha256[:16]. A list
        of checkpoints (one potential per material system, e.g. CdTe and Si): every configuration
        gets its energy from the first one that knows all its elements; the library's energy model
        is then the ids joined by ``+``. Energies are only compared within one element set
        (``surrogate.inference.rank``), so no comparison crosses two potentials.
    model_id
        Override of the recorded ``energy_model``.
    elements
        Elements the model knows (default: what the calculator declares); rows with others are
        flagged ``unknown_element`` without calling the model.
    relax
        Also relax positions at fixed cell and store ``relaxed_energy_per_atom`` and the positions.
    fmax
        Relaxation force criterion [eV/Å].
    steps
        Largest number of relaxation steps.
    optimizer
        :mod:`ase.optimize` optimiser name.
    condition, mu
        Chemical potentials of ``gb_energy`` and ``formation_energy`` for compounds: ``mid``,
        ``<element>-rich``, or explicit ``{element: eV}`` (see
        :func:`surrogate.potential.interfaces.chemical_potentials`).

    Returns
    -------
    dict
        Summary (also written to ``energies.json``): model, counts of rows, annotated, computed now,
        skipped, flagged (per flag), relaxed and relaxations that did not converge.
    """
    from ase.db import connect
    from tqdm.auto import tqdm

    from surrogate.potential.energy import check_structure, resolve_calculator
    from surrogate.potential.energy import relax as relax_atoms

    if fmax <= 0 or steps < 0:
        raise ConfigError(f"fmax must be > 0 [eV/Å] and steps >= 0, got fmax={fmax}, steps={steps}")
    db_path = _db_path(library_dir)
    if isinstance(checkpoint, (list, tuple)):
        paths = [str(c) for c in checkpoint]
        if not paths or calculator is not None or model_id is not None:
            raise ConfigError("give one or more checkpoints, without a calculator or a model_id")
        models = [resolve_calculator(checkpoint=c, elements=elements) for c in paths]
    else:
        one = cast("str | os.PathLike | None", checkpoint)  # not a list or tuple here
        models = [resolve_calculator(calculator, checkpoint=one, model_id=model_id, elements=elements)]
    db = connect(db_path)  # no `with`: each update commits on its own (resumable)
    ids = [
        (row.id, row.key_value_pairs, row.numbers) for row in db.select(columns=["id", "key_value_pairs", "numbers"])
    ]
    from surrogate.potential.interfaces import relax_candidate

    cond_key = _condition_key(condition, mu)
    computed = 0
    bar = tqdm(ids, unit="structure", desc="energies", disable=not progress)
    for row_id, kvp, numbers in bar:
        model = _covering(models, numbers)
        if _is_done(kvp, model.model_id, relax, cond_key):
            continue
        row = db.get(id=row_id)
        atoms = row.toatoms()
        atoms.info = dict((row.data or {}).get("info", {}) or {})
        problem = check_structure(atoms, model.elements)
        update: dict[str, Any] = {"energy_model": model.model_id}
        data = None
        stale = [
            k
            for k in (
                "energy_per_atom",
                "energy_message",
                "relaxed_energy_per_atom",
                "relax_converged",
                "relax_steps",
                "relax_energy_drop",
                "relax_max_displacement",
                "relax_stopped",
                "gb_energy",
                "gb_energy_relaxed",
                "formation_energy",
                "formation_energy_relaxed",
                "excess_message",
                "excess_condition",
            )
            if k in kvp
        ]
        relaxed = None
        if problem is None:
            try:
                _, energy, _, _ = relax_atoms(atoms, model.calculator, fmax, 0, optimizer)
                if not math.isfinite(energy):
                    problem = ("nonfinite", f"the model returned a non-finite energy ({energy})")
                else:
                    update["energy_per_atom"] = energy / len(atoms)
                    if relax:
                        r = relax_candidate(atoms, model.calculator, fmax=fmax, steps=steps, optimizer=optimizer)
                        if not math.isfinite(r.energy_after):
                            problem = ("nonfinite", f"non-finite energy during relaxation ({r.energy_after})")
                        else:
                            relaxed = r
                            update.update(
                                relaxed_energy_per_atom=r.energy_after / len(atoms),
                                relax_converged=r.converged,
                                relax_steps=r.steps,
                                relax_energy_drop=r.energy_drop,
                                relax_max_displacement=r.max_displacement,
                                relax_stopped=r.stopped,
                            )
                            data = {
                                "relaxed_positions": r.atoms.positions.astype(np.float64),
                                "relaxed_model": model.model_id,
                            }
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the pass; it is flagged
                msg = _one_line(exc)
                problem = ("unknown_element" if "element" in msg.lower() else "calculator_error", msg)
        if problem is None:
            update["energy_flag"] = "ok"
            excess, excess_data = _excess_columns(
                atoms, kvp.get("family"), model.calculator, energy, relaxed, condition, mu
            )
            update.update(excess)
            if excess:
                update["excess_condition"] = cond_key
            if excess_data:
                data = {**(data or {}), "excess": excess_data}
        else:
            update = {"energy_model": model.model_id, "energy_flag": problem[0], "energy_message": problem[1]}
        db.update(row_id, delete_keys=[k for k in stale if k not in update], data=data, **update)
        computed += 1
    bar.close()
    summary = _summary(
        db,
        models,
        relax=relax,
        fmax=fmax,
        steps=steps,
        optimizer=optimizer,
        computed=computed,
        condition=cond_key,
        mu=dict(mu) if mu else None,
    )
    _write_sidecar(Path(library_dir), summary)
    return summary


def _condition_key(condition: str, mu: Mapping[str, float] | None) -> str:
    """How the chemical potentials were chosen, as recorded with the rows (``mid``, ``Cd-rich``,
    ``mu:Cd=-1.5,...``)."""
    if mu:
        return "mu:" + ",".join(f"{k}={float(v):.6g}" for k, v in sorted(mu.items()))
    return str(condition)


def _excess_value(d: BoundaryEnergy | FormationEnergy) -> tuple[float, dict]:
    """The excess energy of a boundary (``gamma`` [mJ/m²]) or point defect (``energy_formation``
    [eV]) and its values at the rich limits."""
    from surrogate.potential.interfaces import BoundaryEnergy

    if isinstance(d, BoundaryEnergy):
        return d.gamma, d.gamma_limits
    return d.energy_formation, d.limits


def _excess_columns(atoms, family, calculator, energy: float, relaxed, condition: str, mu) -> tuple[dict, dict]:
    """``gb_energy`` / ``formation_energy`` (and their relaxed values) of one row, and the data
    (chemical potentials, rich limits) that go with them; a problem goes to ``excess_message``."""
    column = EXCESS_COLUMN.get(family)
    if column is None:
        return {}, {}
    from surrogate.potential import interfaces

    func = interfaces.boundary_energy_details if family == "gb" else interfaces.formation_energy_details
    try:
        d = func(atoms, calculator, energy=energy, condition=condition, mu=mu)
        value, limits = _excess_value(d)
        out = {column: float(value)}
        data: dict[str, Any] = {
            "column": column,
            "mu": d.mu,
            "condition": d.condition,
            "limits": limits,
            "excess_atoms": d.excess_atoms,
            "reference": d.reference,
        }
        if isinstance(d, interfaces.BoundaryEnergy):
            data.update(area=d.area, n_boundaries=d.n_boundaries, periodic_y=d.periodic_y)
        if relaxed is not None:
            r = func(relaxed.atoms, calculator, energy=relaxed.energy_after, condition=condition, mu=mu)
            out[f"{column}_relaxed"] = float(_excess_value(r)[0])
        if not all(math.isfinite(v) for v in out.values()):
            return {"excess_message": f"non-finite {column}"}, {}
        return out, data
    except Exception as exc:  # noqa: BLE001 - e.g. a substituent without a chemical potential
        return {"excess_message": _one_line(exc)}, {}


def _covering(models: list, numbers) -> Any:
    """The first model that knows every element of a configuration (else the first: it flags it)."""
    from ase.data import chemical_symbols

    if len(models) > 1:
        symbols = {chemical_symbols[int(z)] for z in numbers}
        for m in models:
            if m.elements is None or symbols <= set(m.elements):
                return m
    return models[0]


def _summary(db, models: list, computed: int, **settings) -> dict[str, Any]:
    from collections import Counter

    ids = {m.model_id for m in models}
    n = annotated = relaxed = unconverged = other_model = 0
    flags: Counter = Counter()
    excess: Counter = Counter()
    for row in db.select(columns=["key_value_pairs"]):
        n += 1
        kvp = row.key_value_pairs
        if kvp.get("energy_model") not in ids:
            other_model += "energy_model" in kvp
            continue
        flag = kvp.get("energy_flag")
        if flag == "ok":
            annotated += 1
            for column in EXCESS_COLUMN.values():
                excess[column] += column in kvp
            if "relaxed_energy_per_atom" in kvp:
                relaxed += 1
                unconverged += not kvp.get("relax_converged", False)
        elif flag is not None:
            flags[flag] += 1
    described = (
        models[0].describe()
        if len(models) == 1
        else {
            "model_id": "+".join(m.model_id for m in models),
            "checkpoint": [m.checkpoint for m in models],
            "models": [m.describe() for m in models],
        }
    )
    return {
        "energy_model": "+".join(m.model_id for m in models),
        **described,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "counts": {
            "rows": n,
            "annotated": annotated,
            "flagged": sum(flags.values()),
            "flags": dict(flags),
            "relaxed": relaxed,
            "relax_not_converged": unconverged,
            "computed": computed,
            "skipped": n - computed,
            "other_model": other_model,
            "gb_energy": excess["gb_energy"],
            "formation_energy": excess["formation_energy"],
        },
    }


def _write_sidecar(root: Path, summary: dict) -> None:
    path = root / SIDECAR
    history = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            history = old.get("history", []) + [
                {k: old.get(k) for k in ("energy_model", "checkpoint", "date", "counts")}
            ]
        except json.JSONDecodeError:
            history = []
    atomic_write_text(path, json.dumps({**summary, "history": history[-20:]}, indent=1))


def _sidecar(library_dir: str | os.PathLike) -> dict[str, Any]:
    """A library's ``energies.json`` (empty when it has none)."""
    path = Path(library_dir) / SIDECAR
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LibraryError(f"corrupt {path} ({exc}); rerun python -m surrogate.library.energies") from None


def energy_model(library_dir: str | os.PathLike) -> str | None:
    """The ``energy_model`` of a library's energies (from ``energies.json``), or ``None``."""
    return _sidecar(library_dir).get("energy_model")


def energy_models(library_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The potentials that annotated a library (``energies.json``'s ``models``: ``checkpoint``,
    ``elements``, ``model_id``), in the order they were tried; empty when it has none."""
    return [m for m in _sidecar(library_dir).get("models", []) if m.get("checkpoint")]


def library_calculators(
    library_dir: str | os.PathLike, checkpoint: str | None = None
) -> dict[frozenset[str] | None, Any]:
    """The potentials to use on a library's structures: ``checkpoint`` for every structure, or (None)
    the ones that annotated the library, each for the elements it knows (empty: none annotated it)."""
    from surrogate.potential.calculator import load_calculator

    if checkpoint:
        return {None: load_calculator(checkpoint)}
    return {frozenset(m.get("elements") or ()): load_calculator(m["checkpoint"]) for m in energy_models(library_dir)}


def calculator_for(calculators: Mapping[frozenset[str] | None, Any], atoms) -> Any:
    """The first of ``calculators`` (:func:`library_calculators`) that knows every element of
    ``atoms`` (None: none does)."""
    present = set(atoms.get_chemical_symbols())
    for elements, calc in calculators.items():
        if elements is None or not elements or present <= elements:
            return calc
    return None


def read_energies(library_dir: str | os.PathLike, relaxed: bool = False, model: str | None = None) -> dict[str, float]:
    """Energy per atom [eV/atom] of every configuration, keyed by its 16-hex ``config_id``.

    Parameters
    ----------
    relaxed
        Return the energy after relaxation (``relaxed_energy_per_atom``) instead.
    model
        Only energies of this ``energy_model`` (ids joined by ``+``: any of them; default: the model
        in ``energies.json``, or any model when there is no sidecar).

    Returns
    -------
    dict
        ``{config_id: energy}``; NaN for configurations not annotated (or flagged, or by another model).
    """
    from ase.db import connect

    model = model or energy_model(library_dir)
    accepted = None if model is None else set(model.split("+"))  # several potentials: ids joined by "+"
    key = "relaxed_energy_per_atom" if relaxed else "energy_per_atom"
    out: dict[str, float] = {}
    for row in connect(_db_path(library_dir)).select(columns=["key_value_pairs"]):
        kvp = row.key_value_pairs
        ok = key in kvp and (accepted is None or kvp.get("energy_model") in accepted)
        out[kvp["config_id"]] = float(kvp[key]) if ok else float("nan")
    return out


def _read_column(library_dir, column: str, relaxed: bool, model: str | None) -> dict[str, float]:
    from ase.db import connect

    model = model or energy_model(library_dir)
    accepted = None if model is None else set(model.split("+"))
    key = f"{column}_relaxed" if relaxed else column
    out: dict[str, float] = {}
    for row in connect(_db_path(library_dir)).select(columns=["key_value_pairs"]):
        kvp = row.key_value_pairs
        if EXCESS_COLUMN.get(kvp.get("family")) != column:
            continue
        ok = key in kvp and (accepted is None or kvp.get("energy_model") in accepted)
        out[kvp["config_id"]] = float(kvp[key]) if ok else float("nan")
    return out


def read_boundary_energies(
    library_dir: str | os.PathLike, relaxed: bool = False, model: str | None = None
) -> dict[str, float]:
    """Grain-boundary energy [mJ/m^2] of every bicrystal (family ``gb``) of a library, by ``config_id``.

    The excess energy over the bulk crystal per boundary area
    (:func:`surrogate.potential.interfaces.boundary_energy`), so boundaries of different kinds (a
    twin and a tilt boundary) compare directly: lower is more likely. Only bicrystals are keys; NaN
    for one without a value (annotated before this column existed, flagged, or by another model:
    rerun ``python -m surrogate.library.energies``). ``relaxed=True``: after the relaxation.
    """
    return _read_column(library_dir, "gb_energy", relaxed, model)


def read_formation_energies(
    library_dir: str | os.PathLike, relaxed: bool = False, model: str | None = None
) -> dict[str, float]:
    """Formation energy [eV] of every point-defect configuration (family ``defect``), by ``config_id``
    (NaN where missing); the chemical potentials are in ``energies.json`` (``settings.condition``)."""
    return _read_column(library_dir, "formation_energy", relaxed, model)


def read_compositions(library_dir: str | os.PathLike) -> dict[str, str]:
    """Reduced chemical formula (e.g. ``Cd47Te48``, ``CdTe``) of every configuration, by ``config_id``."""
    from ase.db import connect
    from ase.formula import Formula

    return {
        row.config_id: Formula(row.formula).reduce()[0].format("hill")
        for row in connect(_db_path(library_dir)).select()
    }


def relative_energies(energies: Mapping[str, float], compositions: Mapping[str, str]) -> dict[str, float]:
    """Energy per atom above the lowest configuration of the same composition [eV/atom].

    Parameters
    ----------
    energies
        ``{config_id: energy per atom}`` (e.g. from :func:`read_energies`); NaN = unknown.
    compositions
        ``{config_id: composition}`` (e.g. from :func:`read_compositions`); configurations missing
        here form their own group.

    Returns
    -------
    dict
        ``{config_id: energy - min(energy of its composition)}``: 0 for the lowest of each
        composition, NaN where the energy is NaN.
    """
    lowest: dict[str, float] = {}
    for cid, e in energies.items():
        if e is None or not math.isfinite(e):
            continue
        group = compositions.get(cid, f"?{cid}")
        lowest[group] = min(e, lowest.get(group, math.inf))
    out = {}
    for cid, e in energies.items():
        ok = e is not None and math.isfinite(e)
        out[cid] = float(e - lowest[compositions.get(cid, f"?{cid}")]) if ok else float("nan")
    return out


def _calculator_from_path(spec: str):
    """``module:Class`` (or ``module.Class``) -> an instance built with no arguments."""
    import importlib

    module, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"cannot build calculator {spec!r} ({exc}); give module:Class, e.g. ase.calculators.emt:EMT"
        ) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m surrogate.library.energies",
        description="Give every configuration of a library its energy per atom from an interatomic potential "
        "(resumable: rows already done by the same model are skipped).",
        epilog="Examples: python -m surrogate.library.energies --library demo_library --checkpoint ckpt.ckpt --relax\n"
        "          surrogate-annotate-energies --library demo_library "
        "--checkpoint checkpoints/potential_cdte.pt checkpoints/potential_si.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--library", required=True, help="library directory (holds structures.db)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        nargs="+",
        help="potential checkpoint(s) (surrogate.potential); with several, "
        "each configuration uses the first that knows all its elements",
    )
    src.add_argument(
        "--calculator", help="an ASE calculator class built without arguments, e.g. ase.calculators.emt:EMT"
    )
    p.add_argument(
        "--elements",
        nargs="+",
        help="elements the model knows (others are flagged unknown_element); default: what the calculator declares",
    )
    p.add_argument("--relax", action="store_true", help="also relax positions (fixed cell) and store the relaxed copy")
    p.add_argument("--fmax", type=float, default=0.05, help="relaxation force criterion [eV/Å] (default 0.05)")
    p.add_argument("--steps", type=int, default=200, help="largest number of relaxation steps (default 200)")
    p.add_argument("--optimizer", default="FIRE", help="ase.optimize optimiser (FIRE, BFGS, LBFGS)")
    p.add_argument(
        "--condition",
        default="mid",
        help="chemical potentials of gb_energy/formation_energy for a compound: mid (default), Cd-rich, Te-rich, ...",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@exit_on_user_error
def run(argv=None) -> dict:
    """Command-line pass (``surrogate-annotate-energies``); returns the summary."""
    args = _parser().parse_args(argv)
    calc = _calculator_from_path(args.calculator) if args.calculator else None
    summary = annotate_energies(
        args.library,
        calc,
        checkpoint=args.checkpoint,
        elements=args.elements,
        relax=args.relax,
        fmax=args.fmax,
        steps=args.steps,
        optimizer=args.optimizer,
        condition=args.condition,
        progress=not args.no_progress,
    )
    c = summary["counts"]
    print(
        f"energies of {args.library} by model {summary['energy_model']}: {c['annotated']}/{c['rows']} annotated, "
        f"{c['flagged']} flagged {c['flags'] or ''}, {c['computed']} computed now, {c['relaxed']} relaxed "
        f"({c['relax_not_converged']} not converged)"
    )
    return summary


def main(argv=None) -> None:
    """Console-script entry: one-line errors, exit status 0 on success."""
    from surrogate.errors import exit_on_user_error

    exit_on_user_error(run)(argv)


if __name__ == "__main__":
    main()
