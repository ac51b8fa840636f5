"""The simulated library: resumable build, on-disk format, torch Dataset, reports."""

from surrogate.library.build import build_library
from surrogate.library.dataset import LibraryDataset, split_indices
from surrogate.library.report import contact_sheet, summary
from surrogate.library.store import Library

__all__ = ["build_library", "Library", "LibraryDataset", "split_indices", "contact_sheet", "summary"]
