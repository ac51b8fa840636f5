"""Realistic experimental corruptions of simulated images, as batched torch ops (CPU or GPU)."""

from surrogate.augment.corruptions import Corrupt

__all__ = ["Corrupt"]
