"""Atomic configurations: crystals, zone-axis slabs, point defects, grain boundaries, disorder."""

from surrogate.structures.boundaries import bicrystal
from surrogate.structures.crystals import BUILTIN, crystal, shortest_distance
from surrogate.structures.csl import coherent_twin, csl_boundaries, csl_misorientations, low_angle_boundaries
from surrogate.structures.defects import add_defects, columns
from surrogate.structures.identity import config_id, tag
from surrogate.structures.labels import StructureLabels, labels_of
from surrogate.structures.recipes import build_structure, plan_structures
from surrogate.structures.slabs import orient, zone_axis_slab
from surrogate.structures.thermal import rattle

__all__ = [
    "BUILTIN",
    "crystal",
    "shortest_distance",
    "orient",
    "zone_axis_slab",
    "add_defects",
    "columns",
    "bicrystal",
    "rattle",
    "config_id",
    "tag",
    "plan_structures",
    "build_structure",
    "StructureLabels",
    "labels_of",
    "csl_misorientations",
    "csl_boundaries",
    "low_angle_boundaries",
    "coherent_twin",
]
