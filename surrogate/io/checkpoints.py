"""One reader for every surrogate checkpoint (embedding and potential, Lightning ``.ckpt`` or the slim
exported ``.pt``): ``torch.load(weights_only=True)`` only (no pickled code runs), and every bad file
becomes a one-line error of the caller's class."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_torch_checkpoint", "checkpoint_kind", "EMBEDDING", "POTENTIAL"]

EMBEDDING = "surrogate.embedding"
POTENTIAL = "surrogate.potential"
_NAMES = {EMBEDDING: "an embedding", POTENTIAL: "a potential"}


def checkpoint_kind(record: dict) -> str:
    """What a checkpoint's ``surrogate`` record belongs to (embedding records predate the ``kind``
    field, so a record without one is an embedding's)."""
    return str(record.get("kind") or EMBEDDING)


def load_torch_checkpoint(
    path: str | os.PathLike, error_cls: type[Exception], what: str, kind: str | None = None, hint: str = ""
) -> dict:
    """Load a checkpoint dict with ``torch.load(map_location="cpu", weights_only=True)``.

    Parameters
    ----------
    path
        Checkpoint file.
    error_cls
        Exception class raised (with a one-line message) for a missing, empty, truncated, foreign or
        wrong-kind file, e.g. :class:`surrogate.errors.LibraryError`.
    what
        What the file should be, for the messages (``"embedding checkpoint"``).
    kind
        Required :func:`checkpoint_kind` of the ``surrogate`` record (:data:`EMBEDDING` or
        :data:`POTENTIAL`); ``None`` accepts any surrogate record.
    hint
        How to get a good file, appended to the "not found" message.

    Returns
    -------
    dict
        The checkpoint, with a ``surrogate`` record dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error_cls(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))
    if path.stat().st_size == 0:
        raise error_cls(f"{what} {path} is empty (0 bytes): an interrupted copy or save? use an intact file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (
            "unsafe or unknown objects in it"
            if "weights_only" in str(exc)
            else "truncated, corrupt or not a torch file"
        )
        raise error_cls(
            f"cannot read {what} {path} ({type(exc).__name__}: {reason}); is it a surrogate checkpoint?"
        ) from None
    record = ckpt.get("surrogate") if isinstance(ckpt, dict) else None
    if not isinstance(record, dict) or not record or not isinstance(ckpt.get("state_dict"), dict):
        raise error_cls(f"{path} is not a surrogate {what} (no surrogate record or no weights)")
    if kind is not None and checkpoint_kind(record) != kind:
        found = _NAMES.get(checkpoint_kind(record), repr(checkpoint_kind(record)))
        raise error_cls(f"{path} is not a surrogate {what} but {found} checkpoint: pass the right file")
    return ckpt
