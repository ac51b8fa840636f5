"""Errors of the potential stage."""

from __future__ import annotations

from surrogate.errors import SurrogateError

__all__ = ["PotentialError"]


class PotentialError(SurrogateError, ValueError):
    """Bad potential input: unknown element for a checkpoint, unlabelled or damaged training data,
    an unreadable or foreign checkpoint."""
