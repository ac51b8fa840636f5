"""Rank retrieved configurations by image distance and energy, and mark the fit/energy Pareto front."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from surrogate.inference.refine import Refinement
    from surrogate.library import Library

__all__ = ["Candidate", "rank_candidates", "rerank_refined", "library_energies"]


@dataclass
class Candidate:
    """One retrieved configuration and everything the report says about it."""

    config_id: str
    distance: float                     # best image distance over windows (0 = identical)
    window: int                         # index of the window where it matched best
    entry: int                          # library image index of the best match
    family: str = ""
    formula: str = ""
    kind: str = ""                      # boundary name (shared by its rigid translations) or family
    energy: float | None = None         # energy per atom [eV/atom] from the potential
    energy_above: float | None = None   # above the lowest candidate of the same kind and elements [eV/atom]
    score: float = 0.0                  # distance + energy_weight * energy_above
    pareto: bool = False
    rank: int = 0
    votes: int = 0                      # windows whose best match is this configuration
    lattice_mismatch: float | None = None  # relative spacing error of its lattice vs the image's (inference.lattice)
    # the fit to the image (inference.refine.Refinement) once refined; empty before
    refinement: "Refinement | Mapping[str, Any]" = field(default_factory=dict)


def _group(c: Candidate) -> tuple:
    from ase.formula import Formula

    return (c.kind, tuple(sorted(Formula(c.formula).count()))) if c.formula else (c.kind,)


def rank_candidates(candidates: list[Candidate], energy_weight: float = 1.0) -> list[Candidate]:
    """Score ``distance + energy_weight * energy_above`` and sort; mark the (distance, energy) front.

    ``energy_above`` is the energy per atom above the lowest-energy candidate of the same kind
    (a boundary's name, else the family) and elements (rigid translations of a boundary cell differ
    by a few atoms removed at collisions: per-atom energies of such large, nearly equal compositions
    still compare), so a weight of 1 trades 0.01 of cosine
    distance for 10 meV/atom. Energy decides between variants of one structure (rigid translations
    of a boundary, defect sites), not between a boundary and bulk: a periodic bicrystal cell's energy
    per atom includes its second, artificial interface, and bulk is always lower, whatever the image
    shows. Candidates without an energy are scored on distance alone (and stay off the front's
    energy axis at +inf).
    """
    lowest: dict[tuple, float] = {}
    for c in candidates:
        if c.energy is not None and np.isfinite(c.energy):
            lowest[_group(c)] = min(lowest.get(_group(c), np.inf), c.energy)
    for c in candidates:
        if c.energy is not None and np.isfinite(c.energy):
            c.energy_above = float(c.energy - lowest[_group(c)])
            c.score = float(c.distance + energy_weight * c.energy_above)
        else:
            c.energy_above = None
            c.score = float(c.distance)
    if candidates:
        from surrogate.pareto import pareto_front

        pts = np.array([[c.distance, np.inf if c.energy_above is None else c.energy_above] for c in candidates])
        for c, p in zip(candidates, pareto_front(pts)):
            c.pareto = bool(p)
    ranked = sorted(candidates, key=lambda c: (c.score, c.distance, c.config_id))
    for i, c in enumerate(ranked, 1):
        c.rank = i
    return ranked


def rerank_refined(ranked: list[Candidate], top: int, energy_weight: float, score: str = "fom") -> list[Candidate]:
    """Order the first ``top`` (refined) candidates by ``score + energy_weight * energy_above``
    (``score``: ``fom`` or ``residual``, from each refinement); the rest keep their order after
    them. Ranks are renumbered."""
    def key(c):
        return c.refinement[score] + energy_weight * (c.energy_above or 0.0)

    head = sorted(ranked[:top], key=lambda c: (key(c), c.rank))
    out = head + ranked[top:]
    for i, c in enumerate(out, 1):
        c.rank = i
    return out


def library_energies(library: "Library") -> tuple[dict[str, float], str | None]:
    """Energy per atom of every library configuration, and the model that computed them, where the
    library has been annotated (``surrogate-annotate-energies``)."""
    from surrogate.library.energies import energy_model, read_energies

    energies = {k: float(v) for k, v in read_energies(library.root).items() if v is not None and np.isfinite(v)}
    return energies, (energy_model(library.root) if energies else None)
