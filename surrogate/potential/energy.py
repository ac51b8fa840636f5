"""The energy objective: which calculator, which model, and a local relaxation.

Everything here works with any ASE calculator. A neural-potential checkpoint is loaded lazily
through :func:`surrogate.potential.calculator.load_calculator` and identified by the first 16 hex
digits of the checkpoint file's sha256 (the ``energy_model`` recorded with every energy).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from surrogate.errors import ConfigError, StructureError

__all__ = [
    "OPTIMIZERS",
    "EnergyModel",
    "resolve_calculator",
    "checkpoint_model_id",
    "check_structure",
    "relax",
]

#: Local optimisers from :mod:`ase.optimize`, by name.
OPTIMIZERS = ("FIRE", "BFGS", "LBFGS", "BFGSLineSearch")


def checkpoint_model_id(path: str | os.PathLike) -> str:
    """First 16 hex digits of the sha256 of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}; give the path of a trained potential checkpoint")
    from surrogate.io.files import file_hash

    return file_hash(path)


def _calculator_model_id(calc: Calculator) -> str:
    """``ClassName:hash`` of a calculator's class and parameters (for stand-in calculators)."""
    from surrogate.structures.identity import jsonable

    try:
        params = json.dumps(jsonable(dict(getattr(calc, "parameters", {}) or {})), sort_keys=True, default=str)
    except TypeError:
        params = repr(getattr(calc, "parameters", ""))
    digest = hashlib.sha256(f"{type(calc).__module__}.{type(calc).__name__}:{params}".encode()).hexdigest()[:8]
    return f"{type(calc).__name__}:{digest}"


@dataclass
class EnergyModel:
    """A calculator together with the identity of the model behind it.

    Attributes
    ----------
    calculator
        Any ASE calculator (energy, forces).
    model_id
        ``energy_model`` recorded with every energy: the checkpoint hash, or ``Class:hash`` of a
        stand-in calculator's parameters.
    checkpoint
        Checkpoint path, when the model came from one.
    elements
        Chemical symbols the model knows (``None``: not declared, every element is tried).
    """

    calculator: Calculator
    model_id: str
    checkpoint: str | None = None
    elements: frozenset[str] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "checkpoint": self.checkpoint,
            "calculator": type(self.calculator).__name__,
            "elements": sorted(self.elements) if self.elements is not None else None,
        }


def _declared_elements(calc: Calculator) -> frozenset[str] | None:
    """Elements a calculator declares (``elements``/``species`` attribute or parameter), if any."""
    from ase.data import chemical_symbols

    for source in (calc, getattr(calc, "parameters", {}) or {}):
        for name in ("elements", "species", "symbols"):
            value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
            if value is None or isinstance(value, (str, bytes)):
                continue
            try:
                values = list(value)
            except TypeError:
                continue
            if values and all(isinstance(v, (int, np.integer)) for v in values):
                return frozenset(chemical_symbols[int(v)] for v in values)
            if values and all(isinstance(v, str) for v in values):
                return frozenset(values)
    return None


def resolve_calculator(
    calculator: Calculator | Callable[[], Calculator] | str | os.PathLike | EnergyModel | None = None,
    checkpoint: str | os.PathLike | None = None,
    model_id: str | None = None,
    elements: Iterable[str] | None = None,
) -> EnergyModel:
    """Turn a calculator, a calculator factory or a checkpoint path into an :class:`EnergyModel`.

    Parameters
    ----------
    calculator
        An ASE calculator, a zero-argument factory returning one, a checkpoint path, or an
        :class:`EnergyModel` (returned as is).
    checkpoint
        Checkpoint of the neural potential; loaded with
        ``surrogate.potential.calculator.load_calculator`` (imported only here).
    model_id
        Override of the recorded model id (default: checkpoint sha256[:16] or ``Class:hash``).
    elements
        Elements the model knows; default: what the calculator declares, if anything.
    """
    if isinstance(calculator, EnergyModel):
        return calculator
    if calculator is not None and checkpoint is not None:
        raise ConfigError("give either a calculator or a checkpoint, not both")
    if isinstance(calculator, (str, os.PathLike)):
        checkpoint, calculator = calculator, None
    if checkpoint is not None:
        mid = checkpoint_model_id(checkpoint)
        try:
            from surrogate.potential.calculator import load_calculator
        except ImportError as exc:
            raise ConfigError(
                f"cannot load a potential checkpoint: surrogate.potential is not available ({exc}); "
                "pass an ASE calculator instead"
            ) from None
        calc = load_calculator(str(checkpoint))
        return EnergyModel(
            calc,
            model_id or mid,
            str(Path(checkpoint).resolve()),
            frozenset(elements) if elements is not None else _declared_elements(calc),
        )
    if calculator is None:
        raise ConfigError("no energy model: pass a calculator or a potential checkpoint")
    is_factory = isinstance(calculator, type) or not hasattr(calculator, "get_potential_energy")
    given: Any = calculator() if is_factory and callable(calculator) else calculator
    if not hasattr(given, "get_potential_energy"):
        raise ConfigError(f"{calculator!r} is not an ASE calculator (nor a factory of one)")
    return EnergyModel(
        given,
        model_id or _calculator_model_id(given),
        None,
        frozenset(elements) if elements is not None else _declared_elements(given),
    )


def check_structure(atoms: Atoms, elements: frozenset[str] | None = None, min_distance: float | None = None):
    """Why a structure cannot be given an energy, or ``None`` when it can.

    Returns
    -------
    (flag, message) or None
        ``flag`` is ``overlap`` (two atoms closer than ``min_distance`` [Å]), ``unknown_element``
        (an element outside ``elements``) or ``empty``.
    """
    from surrogate.structures.crystals import MIN_DISTANCE, check_overlaps

    if len(atoms) == 0:
        return "empty", "structure has no atoms"
    if elements is not None:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            return "unknown_element", (
                f"element(s) {', '.join(unknown)} unknown to the model (it knows {', '.join(sorted(elements))})"
            )
    try:
        check_overlaps(atoms, MIN_DISTANCE if min_distance is None else min_distance)
    except StructureError as exc:
        return "overlap", str(exc).split(";")[0]
    return None


def _optimizer(name: str):
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    import ase.optimize

    return getattr(ase.optimize, name)


def relax(
    atoms: Atoms, calculator: Calculator, fmax: float = 0.05, steps: int = 200, optimizer: str = "FIRE"
) -> tuple[Atoms, float, bool, int]:
    """Relax atomic positions at fixed cell with an :mod:`ase.optimize` optimiser.

    Parameters
    ----------
    atoms
        Structure (not modified).
    fmax
        Force convergence criterion [eV/Å].
    steps
        Largest number of optimiser steps (0: no relaxation, only the energy).

    Returns
    -------
    (relaxed, energy, converged, n_steps)
        Relaxed copy (with the calculator's results attached as a single-point calculator),
        its potential energy [eV], whether max force <= ``fmax``, and the steps taken.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    work = atoms.copy()
    work.calc = calculator
    n = 0
    if steps > 0:
        opt = _optimizer(optimizer)(work, logfile=None)
        opt.run(fmax=fmax, steps=steps)
        n = int(opt.nsteps)
    energy = float(work.get_potential_energy())
    forces = np.asarray(work.get_forces())
    converged = bool(np.sqrt((forces**2).sum(1)).max(initial=0.0) <= fmax) if steps > 0 else False
    out = work.copy()
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
    work.calc = None
    return out, energy, converged, n
