"""The state of a search run, shared by basin hopping and the GA.

- **Checkpoints**: one ``.npz`` file, written atomically, holding the search's scalars (JSON) and
  its structures (exact float64 positions, so that a resumed search continues bit for bit):
  :func:`save_state` / :func:`load_state`.
- **A run** (:class:`SearchRun`): the settings and their hash, the output directory, resuming from
  its checkpoint (refusing one of another search), checkpointing, and finishing (Pareto flags,
  ``candidates.extxyz``, ``summary.json``, the :class:`SearchResult`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, cast

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.io.files import atomic_open, atomic_write_text
from surrogate.pareto import pareto_front
from surrogate.search.candidates import write_candidates
from surrogate.structures.identity import jsonable

__all__ = [
    "STATE",
    "CANDIDATES",
    "SUMMARY",
    "SearchResult",
    "SearchRun",
    "finish_candidates",
    "image_hash",
    "restore_energy",
    "save_state",
    "load_state",
]

#: file names in a search's output directory
STATE = "state.npz"
CANDIDATES = "candidates.extxyz"
SUMMARY = "summary.json"


@dataclass
class SearchResult:
    """What a search returns.

    Attributes
    ----------
    candidates
        Distinct minima found (tagged configurations, see :mod:`surrogate.search.candidates`),
        lowest objective first; ``info["pareto"]`` marks the non-dominated ones.
    best
        The candidate with the lowest objective.
    history
        One record per step (basin hopping) or generation (GA).
    output_dir
        Where the candidates and the checkpoint were written (``None``: nothing written).
    """

    candidates: list[Atoms]
    best: Atoms
    history: list[dict] = field(default_factory=list)
    output_dir: Path | None = None

    def pareto(self) -> list[Atoms]:
        return [a for a in self.candidates if a.info.get("pareto")]


def finish_candidates(candidates: list[Atoms], image_weight: float, use_image: bool) -> list[Atoms]:
    """Flag the Pareto front and sort by objective (energy per atom + weight x mismatch)."""
    e = np.array([a.info["energy_per_atom"] for a in candidates])
    m = np.array([a.info["mismatch"] for a in candidates])
    front = pareto_front(np.column_stack([e, m]) if use_image else e[:, None])
    for a, f in zip(candidates, front):
        a.info["pareto"] = bool(f)
    score = e + (image_weight * m if use_image and image_weight else 0.0)
    return [candidates[i] for i in np.argsort(score, kind="stable")]


def image_hash(image) -> str | None:
    """Content hash of an :class:`~surrogate.search.objectives.ImageObjective`'s target (``None``: no image)."""
    if image is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(image.target).tobytes()).hexdigest()[:16]


def restore_energy(a: Atoms) -> Atoms:
    """Give a candidate read back from a checkpoint its energy [eV] (``info["energy_per_atom"]``)
    as a single-point calculator, and its zone axis as ints."""
    from ase.calculators.singlepoint import SinglePointCalculator

    a.calc = SinglePointCalculator(a, energy=float(a.info["energy_per_atom"]) * len(a))
    if "zone_axis" in a.info:
        a.info["zone_axis"] = [int(v) for v in a.info["zone_axis"]]
    return a


class SearchRun:
    """The bookkeeping of one search: settings, checkpoint and output files.

    Parameters
    ----------
    settings
        Everything that defines the search (JSON-serialisable); with the start's ``config_id`` and
        the model's id it gives the settings hash that a checkpoint must match.
    start
        Starting configuration.
    model
        The :class:`~surrogate.potential.energy.EnergyModel` (``model_id``, ``describe()``).
    output_dir
        Directory for ``state.npz``, ``candidates.extxyz`` and ``summary.json`` (``None``: nothing
        written, nothing resumed).
    """

    def __init__(self, settings: Mapping[str, Any], start: Atoms, model, output_dir: str | os.PathLike | None):
        self.settings = dict(settings)
        self.model = model
        blob = json.dumps(
            {"settings": self.settings, "start": start.info.get("config_id"), "model": model.model_id},
            sort_keys=True,
            default=str,
        )
        self.settings_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.state_path = self.output_dir / STATE if self.output_dir is not None else None

    def resume(self) -> tuple[dict[str, Any], dict[str, list[Atoms]], np.random.Generator] | None:
        """The checkpoint of this search: ``(meta, structures, rng)`` with the generator in its saved
        state, or ``None`` when there is none. A checkpoint of another search is a :class:`ConfigError`."""
        if self.state_path is None or not self.state_path.is_file():
            return None
        meta, saved = load_state(self.state_path)
        if meta.get("settings_hash") != self.settings_hash:
            raise ConfigError(
                f"{self.output_dir} holds another search (settings hash {meta.get('settings_hash')} != "
                f"{self.settings_hash}): use a new output directory or delete it"
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        return meta, saved, rng

    def checkpoint(self, progress: Mapping[str, Any], structures: dict[str, list[Atoms]]) -> None:
        """Write the checkpoint (nothing without an output directory): the settings, the model and
        ``progress`` (counters, ``rng`` state, history), with the named lists of ``structures``."""
        if self.state_path is None:
            return
        meta = {
            "settings_hash": self.settings_hash,
            "settings": self.settings,
            "model": self.model.describe(),
            **progress,
        }
        save_state(self.state_path, meta, structures)

    def finish(
        self, candidates: list[Atoms], history: list[dict], image_weight: float, use_image: bool
    ) -> SearchResult:
        """Flag the Pareto front, sort by objective, write ``candidates.extxyz`` and ``summary.json``."""
        candidates = finish_candidates(candidates, image_weight, use_image)
        if self.output_dir is not None:
            write_candidates(self.output_dir / CANDIDATES, candidates)
            self._write_summary(self.output_dir, candidates, history)
        return SearchResult(candidates, candidates[0], history, self.output_dir)

    def _write_summary(self, output_dir: Path, candidates: list[Atoms], history: list[dict]) -> None:
        best = candidates[0]
        summary = {
            "settings": self.settings,
            "model": self.model.describe(),
            "n_candidates": len(candidates),
            "n_pareto": sum(bool(a.info.get("pareto")) for a in candidates),
            "best": {k: best.info.get(k) for k in ("config_id", "energy_per_atom", "mismatch", "search_step")},
            "steps": len(history),
            "accepted": sum(bool(h.get("accepted")) for h in history),
            "candidates": [
                {k: a.info.get(k) for k in ("config_id", "energy_per_atom", "mismatch", "pareto", "search_step")}
                for a in candidates
            ],
        }
        atomic_write_text(output_dir / SUMMARY, json.dumps(summary, indent=1, default=float).replace("NaN", "null"))


def _pack(name: str, images: list[Atoms], arrays: dict[str, np.ndarray]) -> list[dict]:
    n = [len(a) for a in images]
    arrays[f"{name}.n"] = np.asarray(n, dtype=np.int64)
    arrays[f"{name}.numbers"] = (
        np.concatenate([a.numbers for a in images]).astype(np.int64) if images else np.zeros(0, np.int64)
    )
    arrays[f"{name}.positions"] = np.concatenate([a.positions for a in images]) if images else np.zeros((0, 3))
    arrays[f"{name}.tags"] = (
        np.concatenate([a.get_tags() for a in images]).astype(np.int64) if images else np.zeros(0, np.int64)
    )
    arrays[f"{name}.cell"] = np.asarray([a.cell.array for a in images]).reshape(-1, 3, 3)
    arrays[f"{name}.pbc"] = np.asarray([a.pbc for a in images], dtype=bool).reshape(-1, 3)
    return [jsonable(dict(a.info)) for a in images]


def _unpack(name: str, data, infos: list[dict]) -> list[Atoms]:
    n = data[f"{name}.n"]
    ends = np.cumsum(n)
    out = []
    for k, (stop, info) in enumerate(zip(ends, infos)):
        start = stop - n[k]
        a = Atoms(
            numbers=data[f"{name}.numbers"][start:stop],
            positions=data[f"{name}.positions"][start:stop],
            cell=data[f"{name}.cell"][k],
            pbc=data[f"{name}.pbc"][k],
            tags=data[f"{name}.tags"][start:stop],
        )
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
        np.savez(f, **cast("dict[str, Any]", arrays))  # (the stub types every keyword as allow_pickle)


def load_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, list[Atoms]]]:
    """Read a checkpoint written by :func:`save_state`."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            structures = {name: _unpack(name, data, infos) for name, infos in header["infos"].items()}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read search checkpoint {path} ({exc}); delete it to start afresh") from None
    return header["meta"], structures
