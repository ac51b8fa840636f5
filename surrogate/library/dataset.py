"""A lazy, worker-safe torch Dataset over a library, with splits by configuration and by
imaging condition."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from surrogate.errors import ConfigError
from surrogate.library.store import Library, int_to_id

__all__ = ["split_indices", "LibraryDataset"]

SPLITS = ("train", "val", "test")


def _bucket(key: str, fractions: Sequence[float]) -> str:
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32
    edges = np.cumsum(fractions)
    return SPLITS[int(np.searchsorted(edges, u, side="right"))] if u < edges[-1] else SPLITS[-1]


def split_indices(
    library: Library, split: str, by: str = "condition", fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> np.ndarray:
    """Image indices of one split.

    ``by="configuration"``: every image of a configuration goes to the same split (tests
    generalisation to unseen structures). ``by="condition"``: every configuration appears in all
    splits, but with disjoint imaging conditions (unseen conditions and noise seeds). Assignment
    hashes the config id or the condition's seed, so it is stable as the library grows.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose train, val or test")
    if by not in ("configuration", "condition"):
        raise ConfigError(f"unknown split criterion {by!r}: choose configuration or condition")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ConfigError(f"split fractions {list(fractions)} must be three non-negative numbers summing to 1")
    if by == "configuration":
        keys = [int_to_id(c) for c in library.config_ids()]
    else:
        seeds = library.condition_column("seed").astype(np.int64)
        keys = [f"cond-{s}" for s in seeds]
    return np.array([i for i, key in enumerate(keys) if _bucket(key, fractions) == split], dtype=np.int64)


class LibraryDataset:
    """Torch-style dataset of ``(image[1, H, W] float32 tensor, label int, index int)``.

    Images are read from the zarr store on access (nothing is preloaded); the store is opened
    lazily in each DataLoader worker. Labels index the library's distinct configurations.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        by: str = "condition",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        transform=None,
    ):
        self.library = Library(root)
        self.indices = (
            np.arange(len(self.library)) if split is None else split_indices(self.library, split, by, fractions)
        )
        cids = self.library.config_ids()
        self.classes, labels = np.unique(cids, return_inverse=True)
        self.labels = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        import torch

        i = int(self.indices[item])
        image = torch.from_numpy(self.library.image(i).astype(np.float32))[None]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i]), i
