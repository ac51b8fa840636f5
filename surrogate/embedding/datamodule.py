"""LightningDataModule over a library: splits by imaging condition (default) or configuration,
and a family-aware batch sampler that puts near-identical configurations in the same batch."""

from __future__ import annotations

from typing import Iterator, cast

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Sampler

from surrogate.errors import ConfigError
from surrogate.library import Library, LibraryDataset

__all__ = ["LibraryDataModule", "FamilyBatchSampler"]


class FamilyBatchSampler(Sampler[list[int]]):
    """Batches of ``classes_per_batch`` configurations x ``images_per_class`` images, filled group by
    group so that each batch holds whole families of near-identical configurations (hard negatives).

    Parameters
    ----------
    labels
        Class (configuration) of every dataset position.
    groups
        Group of every class (``groups[label]``).
    classes_per_batch, images_per_class
        Batch layout; the batch size is their product.
    seed
        Base seed; the epoch is added (``set_epoch``), so each epoch draws anew and reproducibly.
    rank, world_size
        Under DDP every process draws the same batch sequence and keeps every ``world_size``-th batch
        from ``rank``, so the processes see disjoint batches and the same number of them.
    """

    def __init__(
        self,
        labels: np.ndarray,
        groups: np.ndarray,
        classes_per_batch: int = 16,
        images_per_class: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if classes_per_batch < 2 or images_per_class < 1:
            raise ConfigError("the family sampler needs classes_per_batch >= 2 and images_per_class >= 1")
        self.labels, self.groups = np.asarray(labels), np.asarray(groups)
        self.by_class = {c: np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        self.by_group: dict = {}
        for c in self.by_class:
            self.by_group.setdefault(self.groups[c], []).append(c)
        self.cpb, self.ipc, self.seed, self.epoch = int(classes_per_batch), int(images_per_class), int(seed), 0
        self.rank, self.world_size = int(rank), max(1, int(world_size))
        self.cpb = min(self.cpb, len(self.by_class))
        if self.cpb < 2:
            raise ConfigError("the family sampler needs at least two configurations in the training split")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _total(self) -> int:
        return max(self.world_size, len(self.labels) // (self.cpb * self.ipc))

    def __len__(self) -> int:
        return self._total() // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1  # advances even when the Trainer does not call set_epoch
        order: list = []
        for b in range(len(self) * self.world_size):
            batch_classes: list = []
            while len(batch_classes) < self.cpb:
                if not order:
                    keys = list(self.by_group)
                    order = [keys[i] for i in rng.permutation(len(keys))]
                members = [c for c in self.by_group[order.pop()] if c not in batch_classes]
                batch_classes += [members[i] for i in rng.permutation(len(members))][: self.cpb - len(batch_classes)]
            batch = [
                int(i)
                for c in batch_classes
                for i in rng.choice(self.by_class[c], self.ipc, replace=len(self.by_class[c]) < self.ipc)
            ]
            if b % self.world_size == self.rank:
                yield batch


class LibraryDataModule(L.LightningDataModule):
    """Parameters
    ----------
    library_dir
        Library directory.
    batch_size
        Images per batch (``sampler=random``; the family sampler uses ``classes_per_batch x images_per_class``).
    sampler
        ``random`` (shuffled) or ``family`` (:class:`FamilyBatchSampler`, hard negatives in every batch).
    split_by, fractions
        Split of the library (see :func:`surrogate.library.split_indices`).
    """

    def __init__(
        self,
        library_dir: str,
        batch_size: int = 64,
        num_workers: int = 0,
        split_by: str = "condition",
        fractions=(0.8, 0.1, 0.1),
        sampler: str = "random",
        classes_per_batch: int = 16,
        images_per_class: int = 4,
        seed: int = 0,
        preload: bool = False,
    ):
        super().__init__()
        if sampler not in ("random", "family"):
            raise ConfigError(f"unknown sampler {sampler!r}: choose random or family")
        self.library_dir, self.batch_size, self.num_workers = library_dir, batch_size, num_workers
        self.split_by, self.fractions, self.sampler = split_by, tuple(fractions), sampler
        self.classes_per_batch, self.images_per_class, self.seed = classes_per_batch, images_per_class, seed
        self.train_set = LibraryDataset(library_dir, "train", split_by, self.fractions)
        self.val_set = LibraryDataset(library_dir, "val", split_by, self.fractions)
        self.library = self.train_set.library
        if preload:  # small libraries: read the store once instead of one zarr chunk read per item
            images = np.asarray(self.library.group["images"][:], dtype=np.float32)
            for ds in (self.train_set, self.val_set):
                ds.library = cast(Library, _InMemory(self.library, images))  # duck-typed: same interface

    def class_groups(self) -> np.ndarray:
        """Group key (``material zone_axis``) of every configuration label; a configuration the
        structure database does not know is a group of its own."""
        group_of = self.library.groups()
        return np.array([group_of.get(int(c), str(int(c))) for c in self.train_set.classes])

    def _family_sampler(self, rank: int = 0, world_size: int = 1) -> FamilyBatchSampler:
        ds = self.train_set
        return FamilyBatchSampler(
            ds.labels[ds.indices],
            self.class_groups(),
            self.classes_per_batch,
            self.images_per_class,
            self.seed,
            rank=rank,
            world_size=world_size,
        )

    def _distributed(self) -> tuple[int, int]:
        """``(rank, world_size)`` of the attached Trainer (``(0, 1)`` outside DDP)."""
        trainer = getattr(self, "trainer", None)
        return (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)

    def train_dataloader(self):
        kw = dict(num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
        rank, world = self._distributed()
        if self.sampler == "family":
            if world > 1 and getattr(
                getattr(self.trainer, "_accelerator_connector", None), "use_distributed_sampler", False
            ):
                raise ConfigError(
                    "the family sampler shards its own batches under DDP: set trainer.use_distributed_sampler=false "
                    "(trainer=ddp and trainer=ddp_cpu do)"
                )
            return DataLoader(self.train_set, batch_sampler=self._family_sampler(rank, world), **kw)
        if world > 1:
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
            return DataLoader(
                self.train_set,
                batch_size=self.batch_size,
                sampler=sampler,
                drop_last=len(self.train_set) > self.batch_size * world,
                **kw,
            )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > self.batch_size,
            **kw,
        )

    def val_dataloader(self):
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class _InMemory:
    """A :class:`Library` whose images are held in memory (same ``image`` interface)."""

    def __init__(self, library: Library, images: np.ndarray):
        self._library, self._images = library, images

    def image(self, i: int) -> np.ndarray:
        return self._images[i]

    def __getattr__(self, name):
        return getattr(self._library, name)
