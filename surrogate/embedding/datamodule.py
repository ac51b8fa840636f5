"""LightningDataModule over a library: splits by imaging condition (default) or configuration."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from surrogate.library import LibraryDataset

__all__ = ["LibraryDataModule"]


class LibraryDataModule(L.LightningDataModule):
    def __init__(self, library_dir: str, batch_size: int = 64, num_workers: int = 0, split_by: str = "condition",
                 fractions=(0.8, 0.1, 0.1)):
        super().__init__()
        self.library_dir, self.batch_size, self.num_workers = library_dir, batch_size, num_workers
        self.split_by, self.fractions = split_by, tuple(fractions)
        self.train_set = LibraryDataset(library_dir, "train", split_by, self.fractions)
        self.val_set = LibraryDataset(library_dir, "val", split_by, self.fractions)
        self.library = self.train_set.library

    def _loader(self, ds, shuffle):
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False)
