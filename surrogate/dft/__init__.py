"""DFT labelling of CdTe structures with GPAW (optional extra ``[dft]``).

``python -m surrogate.dft --out data/dft/cdte`` labels the structure list of
:mod:`surrogate.dft.structures` and writes resumable extxyz batches (:mod:`surrogate.dft.label`).
GPAW is imported only when a structure is actually computed, so reading the labelled data and the
structure list need nothing beyond ASE.
"""

from surrogate.dft.label import DFTDataError, DFTSettings, done_ids, read_batches, run_job
from surrogate.dft.structures import FAMILIES, cdte_structures, kpts_for, split_of

__all__ = [
    "DFTDataError",
    "DFTSettings",
    "done_ids",
    "read_batches",
    "run_job",
    "FAMILIES",
    "cdte_structures",
    "kpts_for",
    "split_of",
]
