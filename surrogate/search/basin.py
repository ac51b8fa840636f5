"""Basin hopping over configurations: move, relax (``ase.optimize``), Metropolis accept.

Each step proposes a structural move of the current local minimum (:mod:`surrogate.search.moves`:
rattle, antisite swap, vacancy hop, rigid grain translation), relaxes it at fixed cell, and accepts
the new minimum with probability ``min(1, exp(-(F_new - F_old) / kT))``, where the objective is

    F = E + image_weight * N * mismatch        [eV]

(E the potential energy, N the number of atoms, mismatch = 1 - SSIM of its simulated image against
a target; ``image_weight`` [eV/atom] = 0 gives plain energy basin hopping). Every distinct minimum
visited is kept as a candidate; with a target image the candidates on the (energy per atom,
mismatch) Pareto front are flagged.

This is ASE's :class:`ase.optimize.basin.BasinHopping` loop with three changes that the
configurations of this package need: moves other than a uniform displacement of all atoms, a seeded
:class:`numpy.random.Generator` instead of the global NumPy state, and a checkpoint (every
``checkpoint_every`` steps, atomic) from which a killed search resumes bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.search.candidates import make_candidate, write_candidates
from surrogate.potential.energy import EnergyModel, relax, resolve_calculator
from surrogate.search.moves import propose, search_info
from surrogate.search.objectives import ImageObjective, pareto_front
from surrogate.search.state import load_state, save_state

__all__ = ["SearchResult", "basin_hopping", "finish_candidates"]

STATE = "state.npz"
CANDIDATES = "candidates.extxyz"


@dataclass
class SearchResult:
    """What a search returns.

    Attributes
    ----------
    candidates
        Distinct minima found (tagged configurations, see :mod:`surrogate.search.candidates`),
        lowest objective first; ``info["pareto"]`` marks the non-dominated ones.
    best
        The candidate with the lowest objective.
    history
        One record per step (basin hopping) or generation (GA).
    output_dir
        Where the candidates and the checkpoint were written (``None``: nothing written).
    """

    candidates: list[Atoms]
    best: Atoms
    history: list[dict] = field(default_factory=list)
    output_dir: Path | None = None

    def pareto(self) -> list[Atoms]:
        return [a for a in self.candidates if a.info.get("pareto")]


def _settings_hash(settings: Mapping[str, Any], start: Atoms, model_id: str) -> str:
    blob = json.dumps({"settings": settings, "start": start.info.get("config_id"), "model": model_id},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finish_candidates(candidates: list[Atoms], image_weight: float, use_image: bool) -> list[Atoms]:
    """Flag the Pareto front and sort by objective (energy per atom + weight x mismatch)."""
    e = np.array([a.info["energy_per_atom"] for a in candidates])
    m = np.array([a.info["mismatch"] for a in candidates])
    front = pareto_front(np.column_stack([e, m]) if use_image else e[:, None])
    for a, f in zip(candidates, front):
        a.info["pareto"] = bool(f)
    score = e + (image_weight * m if use_image and image_weight else 0.0)
    return [candidates[i] for i in np.argsort(score, kind="stable")]


def _restore(a: Atoms) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator

    a.calc = SinglePointCalculator(a, energy=float(a.info["energy_per_atom"]) * len(a))
    if "zone_axis" in a.info:
        a.info["zone_axis"] = [int(v) for v in a.info["zone_axis"]]
    return a


def basin_hopping(
    atoms: Atoms,
    calculator,
    steps: int = 50,
    kT: float = 0.05,
    moves: Mapping[str, float] | None = None,
    rattle: float = 0.1,
    translate: float = 0.3,
    fmax: float = 0.05,
    relax_steps: int = 200,
    optimizer: str = "FIRE",
    image: ImageObjective | None = None,
    image_weight: float = 0.0,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    max_candidates: int = 1000,
    progress: bool = True,
) -> SearchResult:
    """Basin hopping from ``atoms``.

    Parameters
    ----------
    atoms
        Starting configuration (tagged by a builder; vacancies recorded by ``add_defects`` and the
        grains of a ``bicrystal`` are used by the moves).
    calculator
        ASE calculator, factory, checkpoint path or :class:`~surrogate.potential.energy.EnergyModel`.
    steps
        Total number of basin-hopping steps (a resumed search runs the remaining ones).
    kT
        Metropolis temperature [eV].
    moves
        Relative weights of the moves (``rattle``, ``swap``, ``vacancy_hop``, ``translate``).
    rattle, translate
        Rattle standard deviation and largest grain-translation step [Å].
    fmax, relax_steps, optimizer
        Local relaxation: force criterion [eV/Å], largest number of steps (0: no relaxation),
        :mod:`ase.optimize` optimiser.
    image
        Target-image objective; its mismatch is computed for every minimum.
    image_weight
        Weight of the mismatch in the Metropolis objective [eV/atom].
    seed
        Seed of the moves and acceptances.
    output_dir
        Directory for ``state.npz`` (checkpoint), ``candidates.extxyz`` and ``summary.json``;
        an existing checkpoint of the same search is resumed, one of another search is refused.
    checkpoint_every
        Steps between checkpoints.
    """
    from tqdm.auto import tqdm

    if steps < 0 or kT <= 0 or checkpoint_every < 1:
        raise ConfigError(f"need steps >= 0, kT > 0 [eV] and checkpoint_every >= 1 (got {steps}, {kT}, {checkpoint_every})")
    model: EnergyModel = resolve_calculator(calculator)
    settings = {"method": "basin", "kT": kT, "moves": dict(moves or {}), "rattle": rattle, "translate": translate,
                "fmax": fmax, "relax_steps": relax_steps, "optimizer": optimizer, "seed": seed,
                "image_weight": image_weight, "image": None if image is None else hashlib.sha256(
                    np.ascontiguousarray(image.target).tobytes()).hexdigest()[:16]}
    shash = _settings_hash(settings, atoms, model.model_id)
    out_dir = Path(output_dir) if output_dir is not None else None
    n = len(atoms)

    def evaluate(a: Atoms):
        relaxed, energy, _, _ = relax(a, model.calculator, fmax, relax_steps, optimizer)
        relaxed.info["search"] = a.info["search"]
        mismatch = image(relaxed) if image is not None else float("nan")
        objective = energy + (image_weight * n * mismatch if image is not None else 0.0)
        if not math.isfinite(objective):  # no image (or no energy): never accepted
            objective = math.inf
        return relaxed, energy, mismatch, objective

    def candidate(a: Atoms, energy: float, mismatch: float, step: int) -> Atoms:
        forces = a.calc.results.get("forces") if a.calc is not None else None
        return make_candidate(a, energy, atoms, "basin", step, seed, model.model_id, mismatch,
                              {k: v for k, v in settings.items() if k not in ("method", "seed")}, forces)

    state_path = out_dir / STATE if out_dir is not None else None
    if state_path is not None and state_path.is_file():
        meta, saved = load_state(state_path)
        if meta.get("settings_hash") != shash:
            raise ConfigError(f"{out_dir} holds another search (settings hash {meta.get('settings_hash')} != {shash}): "
                              "use a new output directory or delete it")
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        current = saved["current"][0]
        f_old, e_old, m_old = meta["current"]
        candidates = [_restore(a) for a in saved["candidates"]]
        history, start_step = meta["history"], int(meta["step"])
    else:
        rng = np.random.default_rng(seed)
        start = atoms.copy()
        start.info["search"] = search_info(atoms)
        current, e_old, m_old, f_old = evaluate(start)
        candidates = [candidate(current, e_old, m_old, 0)]
        history, start_step = [], 0
    seen = {a.info["config_id"] for a in candidates}

    def checkpoint(step: int) -> None:
        if out_dir is None:
            return
        meta = {"settings_hash": shash, "settings": settings, "model": model.describe(), "step": step,
                "rng": rng.bit_generator.state, "current": [f_old, e_old, m_old], "history": history}
        save_state(state_path, meta, {"current": [current], "candidates": candidates})

    bar = tqdm(total=steps, initial=min(start_step, steps), unit="step", desc="basin hopping", disable=not progress)
    try:
        for step in range(start_step, steps):
            trial, move = propose(current, rng, moves, rattle=rattle, translate=translate)
            relaxed, e_new, m_new, f_new = evaluate(trial)
            u = float(rng.random())
            accepted = bool(f_new <= f_old or u < math.exp(-min(f_new - f_old, 1e300) / kT))
            history.append({"step": step + 1, "move": move, "objective_old": f_old, "objective_new": f_new,
                            "energy_new": e_new, "mismatch_new": m_new, "u": u, "accepted": accepted})
            if accepted:
                current, e_old, m_old, f_old = relaxed, e_new, m_new, f_new
            if math.isfinite(e_new):
                c = candidate(relaxed, e_new, m_new, step + 1)
                if c.info["config_id"] not in seen:
                    seen.add(c.info["config_id"])
                    candidates.append(c)
                    if len(candidates) > max_candidates:
                        candidates = finish_candidates(candidates, image_weight, image is not None)[:max_candidates]
            bar.update(1)
            bar.set_postfix(best=f"{min(a.info['energy_per_atom'] for a in candidates):.4f} eV/atom",
                            accepted=f"{sum(h['accepted'] for h in history)}/{len(history)}")
            if (step + 1) % checkpoint_every == 0:
                checkpoint(step + 1)
    finally:
        bar.close()
    checkpoint(max(steps, start_step))
    candidates = finish_candidates(candidates, image_weight, image is not None)
    if out_dir is not None:
        write_candidates(out_dir / CANDIDATES, candidates)
        _write_summary(out_dir, settings, model, candidates, history)
    return SearchResult(candidates, candidates[0], history, out_dir)


def _write_summary(out_dir: Path, settings: dict, model: EnergyModel, candidates: list[Atoms], history: list[dict]) -> None:
    from surrogate.io.files import atomic_write_text

    best = candidates[0]
    summary = {
        "settings": settings, "model": model.describe(), "n_candidates": len(candidates),
        "n_pareto": sum(bool(a.info.get("pareto")) for a in candidates),
        "best": {k: best.info.get(k) for k in ("config_id", "energy_per_atom", "mismatch", "search_step")},
        "steps": len(history), "accepted": sum(bool(h.get("accepted")) for h in history),
        "candidates": [{k: a.info.get(k) for k in ("config_id", "energy_per_atom", "mismatch", "pareto", "search_step")}
                       for a in candidates],
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1, default=float).replace("NaN", "null"))
