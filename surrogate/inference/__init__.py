"""Single-image inference: read -> preprocess -> match -> rank with energies -> lattice check ->
refine -> report. Heavy modules are imported on first use of their names."""

from __future__ import annotations

from surrogate.lazy import lazy_attributes

__all__ = ["InferenceResult", "InferenceSettings", "run_inference", "Candidate", "rank_candidates"]

_LAZY = {
    "InferenceResult": "surrogate.inference.pipeline",
    "run_inference": "surrogate.inference.pipeline",
    "InferenceSettings": "surrogate.inference.settings",
    "Candidate": "surrogate.inference.rank",
    "rank_candidates": "surrogate.inference.rank",
}


__getattr__ = lazy_attributes(_LAZY)
