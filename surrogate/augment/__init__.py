"""Realistic experimental corruptions of simulated images, as batched torch ops (CPU or GPU)."""

from surrogate.augment.corruptions import Corrupt, rotate_scale

__all__ = ["Corrupt", "rotate_scale"]
