"""Genetic algorithm over the decoration of a fixed lattice (and a grain translation).

The genome of a configuration is what the structure builders choose: which species (or a vacancy)
sits on each lattice site of the starting configuration, plus, for a bicrystal, the rigid
translation of grain 2. An individual is built from its genome on the ideal sites, relaxed with the
calculator (``ase.optimize``) and scored by its energy per atom (and image mismatch).

Operators, after ``ase.ga`` but on lattice sites so that every child is again a decoration of the
same periodic cell:

- **cut-and-splice crossover** (as ``CutAndSplicePairing``): a random slab of fractional width
  along a random cell axis comes from parent B, the rest from parent A; the composition is then
  repaired (surplus species turned into missing ones, preferring their own sublattice);
- **permutation mutation** (as ``PermutationMutation``): swap two sites of different species
  (antisites);
- **vacancy mutation**: a vacancy swaps with an atom of its own sublattice;
- **translation mutation** (bicrystals): Gaussian step of grain 2's rigid translation [Å].

Selection is elitist (parents and children compete): by the objective (energy per atom + weight x
mismatch) for one objective, by NSGA-II (Pareto rank, then crowding distance) for two. Genomes
already evaluated are never recomputed; the state is checkpointed after every generation.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.pareto import crowding_distance, non_dominated_sort
from surrogate.potential.energy import EnergyModel, check_structure, relax, resolve_calculator
from surrogate.search.candidates import make_candidate
from surrogate.search.moves import search_info
from surrogate.search.objectives import ImageObjective
from surrogate.search.state import SearchResult, SearchRun, image_hash, restore_energy

__all__ = ["MUTATIONS", "Lattice", "genetic_search"]

MUTATIONS = ("antisite", "vacancy", "translate")


class Lattice:
    """The sites of a starting configuration: its atoms plus its vacant sites.

    Attributes
    ----------
    sites
        (S, 3) ideal site positions [Å].
    sublattice
        (S,) atomic number of the species that occupies each site in the start (vacancy: its host).
    occupancy
        (S,) the start's genome: atomic number per site, 0 = vacant.
    grain
        (S,) 2 for sites of grain 2 of a bicrystal (rigidly translated), else 0/1.
    """

    def __init__(self, start: Atoms):
        from ase.data import atomic_numbers
        from ase.geometry import get_distances

        self.start = start
        info = search_info(start)
        vac = info["vacancies"]
        vpos = np.array([v["position"] for v in vac], float).reshape(-1, 3)
        tags = start.get_tags()
        vtags = np.zeros(len(vac), int)
        if len(vac) and len(start):
            _, d = get_distances(vpos, start.positions, cell=start.cell, pbc=start.pbc)
            vtags = tags[np.argmin(d, axis=1)]
        self.sites = np.vstack([start.positions, vpos])
        hosts = [atomic_numbers.get(v.get("host") or "", 0) for v in vac]
        self.sublattice = np.concatenate([start.numbers, np.asarray(hosts, int)]).astype(int)
        self.occupancy = np.concatenate([start.numbers, np.zeros(len(vac), int)]).astype(int)
        self.grain = np.concatenate([tags, vtags]).astype(int)
        self.translatable = bool((self.grain == 2).any() and (self.grain == 1).any())
        self.translation0 = np.asarray(info["translation"], float)
        self.boundary_x = info["boundary_x"]
        self.counts = np.bincount(self.occupancy, minlength=self.occupancy.max() + 1)

    def key(self, occ: np.ndarray, t: np.ndarray) -> str:
        h = hashlib.sha256(np.asarray(occ, np.int16).tobytes())
        h.update(np.round(np.asarray(t, float), 3).tobytes())
        return h.hexdigest()[:16]

    def build(self, occ: np.ndarray, t: np.ndarray) -> Atoms:
        """The configuration of a genome on the ideal sites (grain 2 translated by ``t`` [Å])."""
        occ = np.asarray(occ)
        pos = self.sites.copy()
        cell = self.start.cell.array.copy()
        if self.translatable and np.any(t):
            g2 = self.grain == 2
            lx = cell[0, 0]
            x = pos[g2, 0]
            x = np.where(x < self.boundary_x - 0.5 * (lx - self.boundary_x), x + lx, x)
            pos[g2] = np.column_stack([x, pos[g2, 1], pos[g2, 2]]) + t
            cell[0, 0] = lx + t[0]
        keep = occ > 0
        a = Atoms(numbers=occ[keep], positions=pos[keep], cell=cell, pbc=self.start.pbc, tags=self.grain[keep])
        if a.pbc.any():
            a.wrap()
        vacancies = [
            {"position": [float(v) for v in pos[s]], "host": _symbol(self.sublattice[s])} for s in np.flatnonzero(~keep)
        ]
        a.info["search"] = {
            "vacancies": vacancies,
            "translation": [float(v) for v in self.translation0 + t],
            "boundary_x": self.boundary_x,
        }
        return a

    # -- operators ---------------------------------------------------------------------------
    def mutations(self) -> list[str]:
        out = []
        species = set(self.occupancy[self.occupancy > 0])
        if len(species) > 1:
            out.append("antisite")
        if (self.occupancy == 0).any():
            out.append("vacancy")
        if self.translatable:
            out.append("translate")
        return out

    def mutate(self, occ, t, rng, kind: str, step: float):
        occ, t = occ.copy(), np.array(t, float)
        if kind == "antisite":
            filled = np.flatnonzero(occ > 0)
            i = int(filled[rng.integers(len(filled))])
            others = filled[occ[filled] != occ[i]]
            j = int(others[rng.integers(len(others))])
            occ[[i, j]] = occ[[j, i]]
        elif kind == "vacancy":
            empty = np.flatnonzero(occ == 0)
            v = int(empty[rng.integers(len(empty))])
            same = np.flatnonzero((occ > 0) & (self.sublattice == self.sublattice[v]))
            if len(same) == 0:
                same = np.flatnonzero(occ > 0)
            j = int(same[rng.integers(len(same))])
            occ[[v, j]] = occ[[j, v]]
        else:
            t = t + rng.normal(0.0, step, 3)
        return occ, t

    def crossover(self, a, b, rng):
        (occ_a, t_a), (occ_b, t_b) = a, b
        frac = np.linalg.solve(self.start.cell.array.T, self.sites.T).T if self.start.pbc.all() else None
        axis = int(rng.integers(3))
        if frac is None:  # clusters: a plane through the centre
            coord = self.sites[:, axis] - self.sites[:, axis].mean()
            inside = coord > rng.uniform(coord.min(), coord.max())
        else:
            lo, width = rng.uniform(), rng.uniform(0.25, 0.75)
            inside = ((frac[:, axis] - lo) % 1.0) < width
        child = np.where(inside, occ_b, occ_a)
        child = self._repair(child, rng)
        t = np.where(rng.random(3) < 0.5, t_a, t_b)
        return child, t

    def _repair(self, occ: np.ndarray, rng) -> np.ndarray:
        """Restore the start's composition (vacancies count as species 0)."""
        occ = occ.copy()
        counts = np.bincount(occ, minlength=len(self.counts))[: len(self.counts)]
        surplus = {z: int(c - self.counts[z]) for z, c in enumerate(counts) if c > self.counts[z]}
        missing = [z for z, c in enumerate(counts) for _ in range(int(self.counts[z] - c)) if c < self.counts[z]]
        rng.shuffle(missing)
        for z_new in missing:
            cand = [s for s in np.flatnonzero(np.isin(occ, [z for z, n in surplus.items() if n > 0]))]
            prefer = [s for s in cand if self.sublattice[s] == z_new or z_new == 0]
            pool = prefer or cand
            s = int(pool[rng.integers(len(pool))])
            surplus[int(occ[s])] -= 1
            occ[s] = z_new
        return occ


def _symbol(z: int) -> str | None:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)] if z > 0 else None


def genetic_search(
    atoms: Atoms,
    calculator,
    generations: int = 10,
    population: int = 12,
    crossover: float = 0.7,
    mutations: Mapping[str, float] | None = None,
    n_initial_mutations: int = 3,
    translate: float = 0.3,
    fmax: float = 0.05,
    relax_steps: int = 200,
    optimizer: str = "FIRE",
    rattle: float = 0.02,
    image: ImageObjective | None = None,
    image_weight: float = 0.0,
    multi_objective: bool | None = None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> SearchResult:
    """Genetic algorithm over the lattice decoration (and grain translation) of ``atoms``.

    Parameters
    ----------
    atoms
        Starting configuration: its sites (and the vacancies recorded by ``add_defects``) define
        the lattice; its composition is kept.
    calculator
        ASE calculator, factory, checkpoint path or :class:`~surrogate.potential.energy.EnergyModel`.
    generations
        Total number of generations (a resumed search runs the remaining ones).
    population
        Population size (the start plus ``population - 1`` mutants of it in generation 0).
    crossover
        Probability that a child comes from cut-and-splice (else a copy of one parent); every
        child is then mutated until its genome is new.
    mutations
        Relative weights of ``antisite``, ``vacancy``, ``translate`` (inapplicable ones dropped).
    translate
        Standard deviation of a translation mutation [Å].
    fmax, relax_steps, optimizer
        Local relaxation (``relax_steps=0``: energies of the ideal sites).
    rattle
        Gaussian displacement [Å] before relaxation (seeded by the genome), to break symmetry.
    image, image_weight
        Target-image objective and its weight in the scalar objective [eV/atom].
    multi_objective
        NSGA-II selection on (energy per atom, mismatch); default: whenever ``image`` is given.
    seed, output_dir, progress
        As in :func:`surrogate.search.basin_hopping`; the checkpoint is written every generation.
    """
    from tqdm.auto import tqdm

    if generations < 0 or population < 2 or not 0 <= crossover <= 1:
        raise ConfigError(
            f"need generations >= 0, population >= 2, 0 <= crossover <= 1 (got {generations}, {population}, {crossover})"
        )
    multi = image is not None if multi_objective is None else bool(multi_objective)
    if multi and image is None:
        raise ConfigError("multi-objective search needs a target image (image=ImageObjective(...))")
    model: EnergyModel = resolve_calculator(calculator)
    lattice = Lattice(atoms)
    weights, kinds, p_kind = _mutation_kinds(lattice, mutations)
    settings = {
        "method": "ga",
        "population": population,
        "crossover": crossover,
        "mutations": weights,
        "n_initial_mutations": n_initial_mutations,
        "translate": translate,
        "fmax": fmax,
        "relax_steps": relax_steps,
        "optimizer": optimizer,
        "rattle": rattle,
        "seed": seed,
        "image_weight": image_weight,
        "multi_objective": multi,
        "image": image_hash(image),
    }
    run = SearchRun(settings, atoms, model, output_dir)
    ga = _Evolution(lattice, model, atoms, settings, kinds, p_kind, image, image_weight, multi)

    resumed = run.resume()
    if resumed is not None:
        meta, saved, rng = resumed
        ga.restore(saved["archive"])
        pop, history, gen0 = list(meta["population"]), meta["history"], int(meta["generation"])
    else:
        rng = np.random.default_rng(seed)
        genomes = ga.initial_genomes(rng, n_initial_mutations)
        pop = ga.select(
            [
                ga.evaluate(occ, t, 0)
                for occ, t in tqdm(genomes, desc="GA generation 0", unit="ind", disable=not progress, leave=False)
            ]
        )
        history, gen0 = [ga.record(0, pop)], 0

    def checkpoint(generation: int) -> None:
        run.checkpoint(
            {"generation": generation, "rng": rng.bit_generator.state, "population": pop, "history": history},
            {"archive": list(ga.archive.values())},
        )

    if gen0 == 0:
        checkpoint(0)
    bar = tqdm(total=generations, initial=min(gen0, generations), unit="gen", desc="GA", disable=not progress)
    try:
        for gen in range(gen0 + 1, generations + 1):
            children = ga.breed(pop, rng, gen)
            pop = ga.select(pop + children)
            history.append(ga.record(gen, pop))
            checkpoint(gen)
            bar.update(1)
            bar.set_postfix(best=f"{history[-1]['best_energy_per_atom']:.4f} eV/atom", evaluated=len(ga.archive))
    finally:
        bar.close()
    return run.finish(ga.candidates(), history, image_weight, image is not None)


def _mutation_kinds(lattice: Lattice, mutations: Mapping[str, float] | None) -> tuple[dict, list[str], np.ndarray]:
    """The mutation weights, the kinds that apply to ``lattice`` and their probabilities."""
    weights = dict(mutations or {m: 1.0 for m in MUTATIONS})
    unknown = set(weights) - set(MUTATIONS)
    if unknown:
        raise ConfigError(f"unknown mutation(s) {sorted(unknown)}: choose from {', '.join(MUTATIONS)}")
    kinds = [m for m in lattice.mutations() if weights.get(m, 0) > 0]
    if not kinds:
        raise ConfigError(
            "no mutation applies to this configuration (one species, no vacancy, no grains): "
            "a GA needs antisites, vacancies or a bicrystal"
        )
    p_kind = np.array([weights[m] for m in kinds], float)
    p_kind /= p_kind.sum()
    return weights, kinds, p_kind


class _Evolution:
    """The population machinery of one GA run: the archive of evaluated genomes (genome key ->
    candidate; never recomputed), mutation, breeding and elitist selection.

    Genomes are ``(occupancy, translation)`` pairs (:class:`Lattice`); the population is a list of
    genome keys, best first.
    """

    def __init__(
        self,
        lattice: Lattice,
        model: EnergyModel,
        start: Atoms,
        settings: Mapping[str, Any],
        kinds: list[str],
        p_kind: np.ndarray,
        image: ImageObjective | None,
        image_weight: float,
        multi: bool,
    ):
        self.lattice, self.model, self.start = lattice, model, start
        self.settings = settings
        self.kinds, self.p_kind = kinds, p_kind
        self.image, self.image_weight, self.multi = image, image_weight, multi
        self.population = int(settings["population"])
        self.archive: dict[str, Atoms] = {}

    # -- genomes -----------------------------------------------------------------------------
    def genome(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        a = self.archive[key]
        return np.asarray(a.info["genome"], int), np.asarray(a.info["translation_genome"], float)

    def mutate(self, occ: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One mutation of a kind drawn by weight."""
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.p_kind))]
        return self.lattice.mutate(occ, t, rng, kind, self.settings["translate"])

    def initial_genomes(
        self, rng: np.random.Generator, n_initial_mutations: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The start and up to ``population - 1`` distinct mutants of it (1 to ``n_initial_mutations`` each)."""
        lattice, population = self.lattice, self.population
        t0 = np.zeros(3)
        genomes = [(lattice.occupancy.copy(), t0)]
        tries = 0
        while len(genomes) < population and tries < 100 * population:
            tries += 1
            occ, t = lattice.occupancy.copy(), t0.copy()
            for _ in range(int(rng.integers(1, max(1, n_initial_mutations) + 1))):
                occ, t = self.mutate(occ, t, rng)
            if lattice.key(occ, t) not in {lattice.key(*g) for g in genomes}:
                genomes.append((occ, t))
        return genomes

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, occ: np.ndarray, t: np.ndarray, generation: int) -> str:
        """Build, rattle, relax and score a genome (once: the archive remembers it); its key."""
        key = self.lattice.key(occ, t)
        if key in self.archive:
            return key
        s = self.settings
        a = self.lattice.build(occ, t)
        if s["rattle"] > 0 and s["relax_steps"] > 0:
            r = np.random.default_rng(int(key, 16))
            a.positions = a.positions + r.normal(0.0, s["rattle"], a.positions.shape)
        energy, mismatch = math.inf, math.nan
        if check_structure(a, self.model.elements) is None:
            relaxed, energy, _, _ = relax(a, self.model.calculator, s["fmax"], s["relax_steps"], s["optimizer"])
            relaxed.info["search"] = a.info["search"]
            a = relaxed
            mismatch = self.image(a) if self.image is not None else math.nan
        genome_info = {"genome": [int(v) for v in occ], "translation_genome": [float(v) for v in t], "genome_key": key}
        if not math.isfinite(energy):  # overlapping or failed: kept out of the population
            a.info.update(genome_info, energy_per_atom=math.inf, mismatch=math.nan)
            self.archive[key] = a
            return key
        forces = a.calc.results.get("forces") if a.calc is not None else None
        c = make_candidate(
            a,
            energy,
            self.start,
            "ga",
            generation,
            s["seed"],
            self.model.model_id,
            mismatch,
            {k: v for k, v in s.items() if k not in ("method", "seed")},
            forces,
        )
        c.info.update(genome_info)
        self.archive[key] = c
        return key

    def restore(self, archive: list[Atoms]) -> None:
        """Refill the archive from a checkpoint."""
        for a in archive:
            if math.isfinite(a.info["energy_per_atom"]):
                restore_energy(a)
            self.archive[a.info["genome_key"]] = a

    def finite(self, key: str) -> bool:
        return math.isfinite(self.archive[key].info["energy_per_atom"])

    # -- selection ---------------------------------------------------------------------------
    def objectives(self, keys: list[str]) -> np.ndarray:
        """(N, 1) energy per atom + weight x mismatch, or (N, 2) (energy per atom, mismatch)."""
        info = [self.archive[k].info for k in keys]
        e = np.array([i["energy_per_atom"] for i in info], float)
        if not self.multi:
            m = np.array([i["mismatch"] for i in info], float)
            f = e + (self.image_weight * m if self.image is not None else 0.0)
            return np.where(np.isnan(f), np.inf, f)[:, None]
        return np.column_stack([e, [i["mismatch"] for i in info]])

    def order(self, keys: list[str]) -> list[str]:
        """Best first: by objective, or by (Pareto rank, -crowding distance)."""
        obj = self.objectives(keys)
        obj = np.where(np.isfinite(obj), obj, np.inf)
        if not self.multi:
            return [keys[i] for i in np.argsort(obj[:, 0], kind="stable")]
        rank = non_dominated_sort(np.where(np.isinf(obj), np.nan, obj))
        crowd = np.zeros(len(keys))
        for r in np.unique(rank):
            idx = np.flatnonzero(rank == r)
            crowd[idx] = crowding_distance(obj[idx])
        return [keys[i] for i in np.lexsort((-crowd, rank))]

    def select(self, keys: list[str]) -> list[str]:
        """Elitist selection: the best ``population`` distinct evaluated genomes of ``keys``."""
        return [k for k in self.order(list(dict.fromkeys(keys))) if self.finite(k)][: self.population]

    def breed(self, ranked: list[str], rng: np.random.Generator, generation: int) -> list[str]:
        """``population`` children of the population ``ranked`` (best first), evaluated: binary
        tournament parents, cut-and-splice with probability ``crossover`` (else a copy of the
        first parent), then mutated until the genome is new (at most 20 tries)."""

        def tournament() -> str:
            i, j = rng.integers(len(ranked), size=2)
            return ranked[min(i, j)]  # lower position = fitter (rank, crowding / objective)

        children: list[str] = []
        for _ in range(self.population):
            a, b = tournament(), tournament()
            if rng.random() < self.settings["crossover"] and a != b:
                occ, t = self.lattice.crossover(self.genome(a), self.genome(b), rng)
            else:
                occ, t = self.genome(a)
            for _ in range(20):
                occ, t = self.mutate(occ, t, rng)
                if self.lattice.key(occ, t) not in self.archive:
                    break
            children.append(self.evaluate(occ, t, generation))
        return children

    # -- output ------------------------------------------------------------------------------
    def record(self, generation: int, pop: list[str]) -> dict[str, Any]:
        """The history record of a generation."""
        e = [self.archive[k].info["energy_per_atom"] for k in pop]
        m = [self.archive[k].info["mismatch"] for k in pop]
        rec = {
            "generation": generation,
            "evaluated": len(self.archive),
            "best_energy_per_atom": float(min(e)),
            "mean_energy_per_atom": float(np.mean(e)),
            "population": len(pop),
        }
        if self.multi:
            rec["best_mismatch"] = float(np.nanmin(m))
        return rec

    def candidates(self) -> list[Atoms]:
        """The evaluated configurations with an energy, one per configuration id."""
        seen: dict[str, Atoms] = {}
        for a in self.archive.values():
            if math.isfinite(a.info["energy_per_atom"]):
                seen.setdefault(a.info["config_id"], a)
        return list(seen.values())
