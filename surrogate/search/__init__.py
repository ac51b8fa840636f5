"""Energy-guided configuration search: basin hopping and a genetic algorithm, single-objective on
the energy from an interatomic potential, or multi-objective on energy and image mismatch against
a target image (Pareto front). Output: candidates as extxyz, ready for the library build."""

from surrogate.potential.energy import EnergyModel, check_structure, relax, resolve_calculator
from surrogate.search.basin import basin_hopping
from surrogate.search.candidates import export_for_library, make_candidate, read_candidates, write_candidates
from surrogate.search.ga import genetic_search
from surrogate.search.moves import MOVES, propose, search_info
from surrogate.search.objectives import (
    ImageObjective,
    crowding_distance,
    image_mismatch,
    non_dominated_sort,
    pareto_front,
)
from surrogate.search.state import SearchResult

__all__ = [
    "basin_hopping",
    "genetic_search",
    "SearchResult",
    "ImageObjective",
    "image_mismatch",
    "pareto_front",
    "non_dominated_sort",
    "crowding_distance",
    "MOVES",
    "propose",
    "search_info",
    "EnergyModel",
    "resolve_calculator",
    "relax",
    "check_structure",
    "make_candidate",
    "write_candidates",
    "read_candidates",
    "export_for_library",
]
