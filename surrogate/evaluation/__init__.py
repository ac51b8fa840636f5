"""Evaluation of the inversion on query sets the library did not make (issue 21)."""

from surrogate.evaluation.heldout import (
    LEVELS,
    HeldoutError,
    HeldoutQuery,
    auroc,
    confusion_matrix,
    in_library,
    level_applies,
    level_class,
    level_match,
    library_labels,
    normalize_labels,
    out_of_library_auroc,
    read_heldout,
    score_labels,
)

__all__ = [
    "LEVELS",
    "HeldoutError",
    "HeldoutQuery",
    "read_heldout",
    "normalize_labels",
    "library_labels",
    "level_class",
    "level_applies",
    "level_match",
    "score_labels",
    "confusion_matrix",
    "in_library",
    "auroc",
    "out_of_library_auroc",
]
