"""Errors of the tracking tools."""

from __future__ import annotations

from surrogate.errors import SurrogateError

__all__ = ["TrackingError"]


class TrackingError(SurrogateError, ValueError):
    """A directory that is not a training or build run, or a results folder without tables."""
