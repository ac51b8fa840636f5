"""Rank retrieved configurations by image distance and energy, and mark the fit/energy Pareto front."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from surrogate.inference.refine import Refinement
    from surrogate.library import Library

__all__ = ["Candidate", "rank_candidates", "rerank_refined", "library_energies", "attach_energies"]


@dataclass
class Candidate:
    """One retrieved configuration and everything the report says about it."""

    config_id: str
    distance: float  # best image distance over windows (0 = identical)
    window: int  # index of the window where it matched best
    entry: int  # library image index of the best match
    family: str = ""
    formula: str = ""
    kind: str = ""  # boundary name (shared by its rigid translations) or family
    energy: float | None = None  # energy per atom [eV/atom] from the potential
    energy_above: float | None = None  # above the lowest candidate of the same kind and elements [eV/atom]
    score: float = 0.0  # distance + energy_weight * energy_above
    pareto: bool = False
    rank: int = 0
    votes: int = 0  # windows whose best match is this configuration
    lattice_mismatch: float | None = None  # relative spacing error of its lattice vs the image's (inference.lattice)
    gb_energy: float | None = None  # grain-boundary energy [mJ/m^2] of a bicrystal (library.energies)
    gb_energy_above: float | None = (
        None  # above the lowest boundary candidate of the same material + zone axis [mJ/m^2]
    )
    source: str = "library"  # library | built (made by inference.propose for a measured boundary the library lacks)
    # the fit to the image (inference.refine.Refinement) once refined; empty before
    refinement: "Refinement | Mapping[str, Any]" = field(default_factory=dict)


def _group(c: Candidate) -> tuple:
    from ase.formula import Formula

    return (c.kind, tuple(sorted(Formula(c.formula).count()))) if c.formula else (c.kind,)


def _boundary_group(c: Candidate) -> tuple:
    from ase.formula import Formula

    return tuple(sorted(Formula(c.formula).count())) if c.formula else ()


def rank_candidates(
    candidates: list[Candidate], energy_weight: float = 1.0, boundary_weight: float = 0.1
) -> list[Candidate]:
    """Score each candidate by its image distance plus an energy term, sort, and mark the
    (distance, energy) Pareto front.

    Boundaries with a boundary energy (``gb_energy`` [mJ/m^2], the excess over bulk per boundary
    area: :func:`surrogate.potential.interfaces.boundary_energy`) are scored
    ``distance + boundary_weight * gb_energy_above / 1000``, ``gb_energy_above`` being the energy
    above the lowest boundary candidate of the same elements, across boundary kinds: a twin and a
    tilt boundary compare, and a weight of 0.1 trades 0.05 of cosine distance for 0.5 J/m^2 (a
    coherent twin against a general boundary).

    Every other candidate is scored ``distance + energy_weight * energy_above``: ``energy_above`` is
    the energy per atom above the lowest-energy candidate of the same kind (a boundary's name, else
    the family) and elements, so a weight of 1 trades 0.01 of cosine distance for 10 meV/atom.
    Per-atom energy decides between variants of one structure (defect sites, rigid translations of a
    boundary without a boundary energy), not between a boundary and bulk: a periodic bicrystal cell's
    energy per atom includes its second interface, and bulk is always lower. Candidates without an
    energy are scored on distance alone (and stay off the front's energy axis at +inf).
    """
    lowest: dict[tuple, float] = {}
    lowest_gb: dict[tuple, float] = {}
    for c in candidates:
        if c.gb_energy is not None and np.isfinite(c.gb_energy):
            lowest_gb[_boundary_group(c)] = min(lowest_gb.get(_boundary_group(c), np.inf), c.gb_energy)
        if c.energy is not None and np.isfinite(c.energy):
            lowest[_group(c)] = min(lowest.get(_group(c), np.inf), c.energy)
    for c in candidates:
        c.energy_above = float(c.energy - lowest[_group(c)]) if c.energy is not None and np.isfinite(c.energy) else None
        if c.gb_energy is not None and np.isfinite(c.gb_energy):
            c.gb_energy_above = float(c.gb_energy - lowest_gb[_boundary_group(c)])
            c.score = float(c.distance + boundary_weight * c.gb_energy_above / 1000.0)
        else:
            c.gb_energy_above = None
            c.score = (
                float(c.distance + energy_weight * c.energy_above) if c.energy_above is not None else float(c.distance)
            )
    if candidates:
        from surrogate.pareto import pareto_front

        def energy_axis(c: Candidate) -> float:
            if c.gb_energy_above is not None:  # in the score's units, as the per-atom term below
                return c.score - c.distance if energy_weight > 0 or boundary_weight > 0 else c.gb_energy_above / 1000.0
            if c.energy_above is None:
                return np.inf
            return energy_weight * c.energy_above if energy_weight > 0 else c.energy_above

        pts = np.array([[c.distance, energy_axis(c)] for c in candidates])
        for c, p in zip(candidates, pareto_front(pts)):
            c.pareto = bool(p)
    ranked = sorted(candidates, key=lambda c: (c.score, c.distance, c.config_id))
    for i, c in enumerate(ranked, 1):
        c.rank = i
    return ranked


def rerank_refined(
    ranked: list[Candidate], top: int, energy_weight: float, score: str = "fom", boundary_weight: float = 0.1
) -> list[Candidate]:
    """Order the first ``top`` (refined) candidates by their refinement ``score`` (``fom``,
    ``residual``, or ``columns``: the fraction of the image's columns left unexplained) plus the same
    energy term as :func:`rank_candidates`, ties broken by the FOM; the rest keep their order after
    them. Ranks are renumbered."""

    def image_term(c):
        if score == "columns":
            cols = c.refinement.get("columns") or {}
            return 1.0 - float(cols.get("column_fraction") or 0.0)
        return c.refinement[score]

    def key(c):
        if c.gb_energy_above is not None:
            return image_term(c) + boundary_weight * c.gb_energy_above / 1000.0
        return image_term(c) + energy_weight * (c.energy_above or 0.0)

    head = sorted(ranked[:top], key=lambda c: (key(c), c.refinement["fom"], c.rank))
    out = head + ranked[top:]
    for i, c in enumerate(out, 1):
        c.rank = i
    return out


def library_energies(library: "Library") -> tuple[dict[str, float], dict[str, float], str | None]:
    """Energy per atom [eV/atom] and boundary energy [mJ/m^2] of every annotated library
    configuration, and the model that computed them (``surrogate-annotate-energies``)."""
    from surrogate.library.energies import energy_model, read_boundary_energies, read_energies

    def finite(d):
        return {k: float(v) for k, v in d.items() if v is not None and np.isfinite(v)}

    energies = finite(read_energies(library.root))
    boundaries = finite(read_boundary_energies(library.root)) if energies else {}
    return energies, boundaries, (energy_model(library.root) if energies else None)


def attach_energies(candidates: list[Candidate], library: "Library") -> str | None:
    """Give every candidate its energies from the library; returns the energy model (None: none)."""
    energies, boundaries, model = library_energies(library)
    for c in candidates:
        c.energy = energies.get(c.config_id)
        c.gb_energy = boundaries.get(c.config_id)
    return model
