"""Single-image inference: read -> preprocess -> match -> rank with energies -> refine -> report."""

from surrogate.inference.pipeline import InferenceResult, run_inference
from surrogate.inference.rank import Candidate, rank_candidates

__all__ = ["InferenceResult", "run_inference", "Candidate", "rank_candidates"]
