"""User-facing errors.

Every problem a user can fix (bad config, bad input file, impossible request) is raised as a
:class:`SurrogateError` (or a subclass) whose message is one line naming the problem and the fix.
Entry points catch it and print ``error: <message>`` without a traceback.
"""

from __future__ import annotations

__all__ = [
    "SurrogateError",
    "ConfigError",
    "StructureError",
    "SimulationError",
    "LibraryError",
    "ImageError",
    "exit_on_user_error",
]


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


class ImageError(SurrogateError, ValueError):
    """An input image is unreadable, uncalibrated, or not a usable micrograph (NaN, constant, RGB, ...)."""


def _user_error(exc: BaseException) -> SurrogateError | None:
    """The :class:`SurrogateError` behind ``exc``: itself, or the cause Hydra's ``instantiate``
    wrapped (a check in a constructor that a config builds); ``None`` for anything else."""
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, SurrogateError):
            return cur
        if type(cur).__name__ != "InstantiationException":
            return None
        cur = cur.__cause__
    return None


def exit_on_user_error(func):
    """Decorator for entry points: a :class:`SurrogateError` (also one raised by a constructor that
    Hydra instantiates) becomes ``error: <message>`` on stderr and exit status 2, without a
    traceback. Other exceptions (bugs) propagate unchanged."""
    import functools
    import sys

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            user = _user_error(exc)
            if user is None:
                raise
            print(f"error: {user}", file=sys.stderr)
            sys.exit(2)

    return wrapper
