"""User-facing errors.

Every problem a user can fix (bad config, bad input file, impossible request) is raised as a
:class:`SurrogateError` (or a subclass) whose message is one line naming the problem and the fix.
Entry points catch it and print ``error: <message>`` without a traceback.
"""

from __future__ import annotations

__all__ = ["SurrogateError", "ConfigError", "StructureError", "SimulationError", "LibraryError"]


class SurrogateError(Exception):
    """Base class of errors that are reported to the user as one line."""


class ConfigError(SurrogateError, ValueError):
    """A configuration value is missing, empty, or out of range."""


class StructureError(SurrogateError, ValueError):
    """A structure cannot be built as requested (unknown element, impossible zone axis, ...)."""


class SimulationError(SurrogateError, ValueError):
    """A simulation request is physically inconsistent (detector beyond the simulated angle, ...)."""


class LibraryError(SurrogateError, OSError):
    """A library directory is unwritable, corrupt, or from an incompatible build."""
