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

import math
import os
from typing import Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.potential.energy import EnergyModel, relax, resolve_calculator
from surrogate.search.candidates import make_candidate
from surrogate.search.moves import propose, search_info
from surrogate.search.objectives import ImageObjective
from surrogate.search.state import SearchResult, SearchRun, finish_candidates, image_hash, restore_energy

__all__ = ["SearchResult", "basin_hopping", "finish_candidates"]


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
        raise ConfigError(
            f"need steps >= 0, kT > 0 [eV] and checkpoint_every >= 1 (got {steps}, {kT}, {checkpoint_every})"
        )
    model: EnergyModel = resolve_calculator(calculator)
    settings = {
        "method": "basin",
        "kT": kT,
        "moves": dict(moves or {}),
        "rattle": rattle,
        "translate": translate,
        "fmax": fmax,
        "relax_steps": relax_steps,
        "optimizer": optimizer,
        "seed": seed,
        "image_weight": image_weight,
        "image": image_hash(image),
    }
    run = SearchRun(settings, atoms, model, output_dir)
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
        return make_candidate(
            a,
            energy,
            atoms,
            "basin",
            step,
            seed,
            model.model_id,
            mismatch,
            {k: v for k, v in settings.items() if k not in ("method", "seed")},
            forces,
        )

    resumed = run.resume()
    if resumed is not None:
        meta, saved, rng = resumed
        current = saved["current"][0]
        f_old, e_old, m_old = meta["current"]
        candidates = [restore_energy(a) for a in saved["candidates"]]
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
        run.checkpoint(
            {"step": step, "rng": rng.bit_generator.state, "current": [f_old, e_old, m_old], "history": history},
            {"current": [current], "candidates": candidates},
        )

    bar = tqdm(total=steps, initial=min(start_step, steps), unit="step", desc="basin hopping", disable=not progress)
    try:
        for step in range(start_step, steps):
            trial, move = propose(current, rng, moves, rattle=rattle, translate=translate)
            relaxed, e_new, m_new, f_new = evaluate(trial)
            u = float(rng.random())
            accepted = bool(f_new <= f_old or u < math.exp(-min(f_new - f_old, 1e300) / kT))
            history.append(
                {
                    "step": step + 1,
                    "move": move,
                    "objective_old": f_old,
                    "objective_new": f_new,
                    "energy_new": e_new,
                    "mismatch_new": m_new,
                    "u": u,
                    "accepted": accepted,
                }
            )
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
            bar.set_postfix(
                best=f"{min(a.info['energy_per_atom'] for a in candidates):.4f} eV/atom",
                accepted=f"{sum(h['accepted'] for h in history)}/{len(history)}",
            )
            if (step + 1) % checkpoint_every == 0:
                checkpoint(step + 1)
    finally:
        bar.close()
    checkpoint(max(steps, start_step))
    return run.finish(candidates, history, image_weight, image is not None)
