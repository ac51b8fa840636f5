"""Search checkpoints: one ``.npz`` file, written atomically, holding the search's scalars (JSON) and
its structures (exact float64 positions, so that a resumed search continues bit for bit)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.io.files import atomic_open
from surrogate.structures.identity import jsonable

__all__ = ["save_state", "load_state"]


def _pack(name: str, images: list[Atoms], arrays: dict[str, np.ndarray]) -> list[dict]:
    n = [len(a) for a in images]
    arrays[f"{name}.n"] = np.asarray(n, dtype=np.int64)
    arrays[f"{name}.numbers"] = np.concatenate([a.numbers for a in images]).astype(np.int64) if images else np.zeros(0, np.int64)
    arrays[f"{name}.positions"] = np.concatenate([a.positions for a in images]) if images else np.zeros((0, 3))
    arrays[f"{name}.tags"] = np.concatenate([a.get_tags() for a in images]).astype(np.int64) if images else np.zeros(0, np.int64)
    arrays[f"{name}.cell"] = np.asarray([a.cell.array for a in images]).reshape(-1, 3, 3)
    arrays[f"{name}.pbc"] = np.asarray([a.pbc for a in images], dtype=bool).reshape(-1, 3)
    return [jsonable(dict(a.info)) for a in images]


def _unpack(name: str, data, infos: list[dict]) -> list[Atoms]:
    n = data[f"{name}.n"]
    ends = np.cumsum(n)
    out = []
    for k, (stop, info) in enumerate(zip(ends, infos)):
        start = stop - n[k]
        a = Atoms(numbers=data[f"{name}.numbers"][start:stop], positions=data[f"{name}.positions"][start:stop],
                  cell=data[f"{name}.cell"][k], pbc=data[f"{name}.pbc"][k], tags=data[f"{name}.tags"][start:stop])
        a.info.update(info)
        out.append(a)
    return out


def save_state(path: str | os.PathLike, meta: dict[str, Any], structures: dict[str, list[Atoms]]) -> None:
    """Write a checkpoint: ``meta`` (JSON-serialisable) and named lists of structures."""
    arrays: dict[str, np.ndarray] = {}
    infos = {name: _pack(name, list(images), arrays) for name, images in structures.items()}
    header = json.dumps({"meta": jsonable(meta), "infos": infos})
    arrays["header"] = np.frombuffer(header.encode(), dtype=np.uint8)
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, list[Atoms]]]:
    """Read a checkpoint written by :func:`save_state`."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            structures = {name: _unpack(name, data, infos) for name, infos in header["infos"].items()}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read search checkpoint {path} ({exc}); delete it to start afresh") from None
    return header["meta"], structures
