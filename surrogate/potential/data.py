"""Labelled DFT frames (extxyz) -> graphs with precomputed neighbour lists -> batched tensors.

One data path: the training DataModule and the ASE calculator both go through
:func:`atoms_to_graph` and :func:`collate`. Labels are read from ``info["REF_energy"]`` [eV],
``arrays["REF_forces"]`` [eV/Å] and (optional) ``info["REF_stress"]`` (Voigt xx yy zz yz xz xy
[eV/Å^3], ASE sign). Frames flagged ``converged=False`` are excluded (and counted); a frame
without energy or forces is an error, never silently dropped.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from surrogate.potential.errors import PotentialError

__all__ = [
    "REF_ENERGY",
    "REF_FORCES",
    "REF_STRESS",
    "read_frames",
    "atoms_to_graph",
    "collate",
    "data_hash",
    "fit_reference_energies",
    "force_rms",
    "split_frames",
    "PotentialDataModule",
]

REF_ENERGY, REF_FORCES, REF_STRESS = "REF_energy", "REF_forces", "REF_stress"
REPO = Path(__file__).resolve().parents[2]


def _resolve(pattern: str) -> list[Path]:
    """Files matching ``pattern`` (relative patterns: from the working directory, else the repo root)."""
    p = Path(pattern)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, REPO / p]
    for c in candidates:
        hits = sorted(Path(h) for h in glob.glob(str(c)))
        if hits:
            return hits
    return []


def read_frames(patterns: str | Sequence[str], energy_key: str = REF_ENERGY) -> tuple[list[Atoms], int]:
    """Read every frame of the extxyz files matching ``patterns``.

    ``energy_key``: the ``info`` key of the energy to train on (e.g. ``REF_energy_kfix``, the
    k-point-corrected labels of :mod:`surrogate.dft.kcorrect`); it becomes the frame's
    ``REF_energy`` and the original label is kept as ``REF_energy_label``.

    Returns the usable frames and the number of frames flagged ``converged=False`` (excluded).

    Raises
    ------
    PotentialError
        When no file matches, a file cannot be parsed, or a frame lacks ``REF_energy`` /
        ``REF_forces`` or holds NaN labels without being flagged.
    """
    from ase.io import read

    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    frames, flagged = [], 0
    for pattern in patterns:
        paths = _resolve(str(pattern))
        if not paths:
            raise PotentialError(
                f"no DFT data file matches {pattern!r}; check dft.files (run from the repo root or give absolute paths)"
            )
        for path in paths:
            try:
                batch = read(path, index=":", format="extxyz")
            except Exception as exc:  # ase raises many types for malformed files
                raise PotentialError(
                    f"cannot read {path}: {type(exc).__name__}: {exc}; restore or delete the file"
                ) from None
            for k, a in enumerate(batch):
                where = f"{path.name} frame {k}"
                if a.info.get("converged", True) in (False, "F", "False"):
                    flagged += 1
                    continue
                if energy_key not in a.info:
                    raise PotentialError(
                        f"{where} has no {energy_key}; label it (python -m surrogate.dft"
                        + (", then python -m surrogate.dft.kcorrect apply" if energy_key != REF_ENERGY else "")
                        + ") or remove it"
                    )
                if energy_key != REF_ENERGY:
                    a.info["REF_energy_label"] = a.info.get(REF_ENERGY)
                    a.info[REF_ENERGY] = float(a.info[energy_key])
                if REF_FORCES not in a.arrays:
                    raise PotentialError(
                        f"{where} has no {REF_FORCES} (missing forces); label it with forces or remove it"
                    )
                if not np.isfinite(a.info[REF_ENERGY]) or not np.isfinite(a.arrays[REF_FORCES]).all():
                    raise PotentialError(
                        f"{where} has NaN labels but is not flagged converged=False; relabel or remove it"
                    )
                a.info["_source"] = where
                frames.append(a)
    return frames, flagged


def split_frames(frames: Sequence[Atoms], val_fraction: float, key: str = "split") -> dict[str, list[Atoms]]:
    """``train`` / ``val`` / ``test``: frames with ``info[key] == "test"`` are the fixed held-out set;
    ``val`` is drawn from the rest by a hash of ``config_id`` (stable across runs and data growth)."""
    out: dict[str, list[Atoms]] = {"train": [], "val": [], "test": []}
    for a in frames:
        if str(a.info.get(key, "train")) == "test":
            out["test"].append(a)
            continue
        cid = str(a.info.get("config_id", a.info.get("_source")))
        h = int(hashlib.sha256(f"potential-val:{cid}".encode()).hexdigest()[:8], 16) / 0x100000000
        out["val" if h < val_fraction else "train"].append(a)
    return out


def data_hash(frames: Sequence[Atoms]) -> str:
    """sha256 (16 hex digits) of species, positions, cell and labels of ``frames``, in order."""
    h = hashlib.sha256()
    for a in frames:
        h.update(np.asarray(a.numbers, np.int64).tobytes())
        h.update(np.round(np.asarray(a.positions, float), 6).tobytes())
        h.update(np.round(np.asarray(a.cell.array, float), 6).tobytes())
        h.update(np.round(np.float64(a.info[REF_ENERGY]), 6).tobytes())
        h.update(np.round(np.asarray(a.arrays[REF_FORCES], float), 6).tobytes())
    return h.hexdigest()[:16]


def neighbour_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges i <- j within ``cutoff`` [Å] with integer cell shifts S (``r_ij = r_j - r_i + S @ cell``)
    and their lengths d [Å]: matscipy's linked-cell list when installed (~20x faster on 1000 atoms),
    else ASE's (same edges)."""
    try:
        from matscipy.neighbours import neighbour_list as nl
    except ImportError:  # pragma: no cover - matscipy is a dependency, ASE the fallback
        from ase.neighborlist import neighbor_list as nl
    i, j, d, S = nl("ijdS", atoms, float(cutoff))
    return i.astype(np.int64), j.astype(np.int64), np.asarray(S, np.int64), np.asarray(d, float)


def atoms_to_graph(atoms: Atoms, elements: Sequence[str], cutoff: float, labels: bool = True) -> dict:
    """The model input of one structure (numpy arrays), with labels when ``labels`` and present.

    Raises
    ------
    PotentialError
        When ``atoms`` holds an element the model was not trained on.
    StructureError
        When two atoms are closer than ``surrogate.structures.crystals.MIN_DISTANCE`` (overlap).
    """
    from surrogate.structures.crystals import MIN_DISTANCE, check_overlaps

    index = {e: k for k, e in enumerate(elements)}
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(index))
    if unknown:
        raise PotentialError(
            f"element(s) {', '.join(unknown)} unknown to this potential (trained on "
            f"{', '.join(elements)}); use a potential trained on them"
        )
    i, j, S, d = neighbour_list(atoms, cutoff)
    if len(d) and d.min() < MIN_DISTANCE:
        check_overlaps(atoms)  # raises StructureError naming the pair
    g = {
        "species": np.asarray([index[s] for s in atoms.get_chemical_symbols()], np.int64),
        "positions": np.asarray(atoms.positions, float),
        "cell": np.asarray(atoms.cell.array, float),
        "edge_index": np.stack([i, j]),
        "shifts": S,
    }
    if labels:
        if REF_ENERGY in atoms.info:
            g["energy"] = np.float64(atoms.info[REF_ENERGY])
        if REF_FORCES in atoms.arrays:
            g["forces"] = np.asarray(atoms.arrays[REF_FORCES], float)
        stress = atoms.info.get(REF_STRESS)
        if stress is not None and atoms.pbc.all():
            g["stress"] = np.asarray(stress, float).reshape(6)
    return g


def collate(graphs: Sequence[dict], dtype=None) -> dict:
    """Concatenate graphs into one batch of torch tensors (edge indices offset per graph)."""
    import torch

    dtype = dtype or torch.get_default_dtype()
    n = np.asarray([len(g["species"]) for g in graphs])
    offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
    batch = {
        "species": torch.from_numpy(np.concatenate([g["species"] for g in graphs])),
        "positions": torch.from_numpy(np.concatenate([g["positions"] for g in graphs])).to(dtype),
        "cell": torch.from_numpy(np.stack([g["cell"] for g in graphs])).to(dtype),
        "batch": torch.from_numpy(np.repeat(np.arange(len(graphs)), n)),
        "edge_index": torch.from_numpy(np.concatenate([g["edge_index"] + o for g, o in zip(graphs, offsets)], axis=1)),
        "shifts": torch.from_numpy(np.concatenate([g["shifts"] for g in graphs])).to(dtype),
        "n_atoms": torch.from_numpy(n),
    }
    if all("energy" in g for g in graphs):
        batch["energy"] = torch.tensor([float(g["energy"]) for g in graphs], dtype=dtype)
    if all("forces" in g for g in graphs):
        batch["forces"] = torch.from_numpy(np.concatenate([g["forces"] for g in graphs])).to(dtype)
    has = [("stress" in g) for g in graphs]
    if any(has):
        batch["stress"] = torch.from_numpy(np.stack([g.get("stress", np.zeros(6)) for g in graphs])).to(dtype)
        batch["stress_mask"] = torch.tensor(has, dtype=torch.bool)
    return batch


def fit_reference_energies(frames: Sequence[Atoms], elements: Sequence[str]) -> np.ndarray:
    """Per-element energies [eV] minimising sum (E - sum_Z n_Z e_Z)^2 over ``frames``; elements whose
    counts are collinear (e.g. Si alone, or Cd and Te always 1:1) share the fit by min-norm lstsq."""
    index = {e: k for k, e in enumerate(elements)}
    A = np.zeros((len(frames), len(elements)))
    for r, a in enumerate(frames):
        for s in a.get_chemical_symbols():
            A[r, index[s]] += 1
    E = np.asarray([a.info[REF_ENERGY] for a in frames], float)
    ref, *_ = np.linalg.lstsq(A, E, rcond=None)
    return ref


def force_rms(frames: Sequence[Atoms]) -> float:
    """RMS force component [eV/Å] of ``frames`` (the scale of the network's output)."""
    f = np.concatenate([np.asarray(a.arrays[REF_FORCES], float).ravel() for a in frames])
    return float(np.sqrt(np.mean(f**2))) if len(f) else 1.0


class _Graphs:
    """A map-style dataset over precomputed graphs."""

    def __init__(self, graphs):
        self.graphs = graphs

    def __len__(self):
        return len(self.graphs)

    def __getitem__(self, k):
        return self.graphs[k]


def _lightning_base():
    import lightning as L

    return L.LightningDataModule


class PotentialDataModule(_lightning_base()):  # type: ignore[misc]  # Lightning imported lazily
    """Train / val / test graphs from labelled extxyz files.

    Parameters
    ----------
    files
        Glob patterns of extxyz files (``REF_energy``, ``REF_forces``, optional ``REF_stress``).
    cutoff
        Neighbour-list cutoff [Å] (the model's).
    elements
        Species order; default: the sorted elements of the data (a resumed run passes the
        checkpoint's).
    val_fraction
        Fraction of the non-test frames used for validation (drawn by a hash of ``config_id``).
    split_key
        ``info`` key whose value ``"test"`` marks the fixed held-out frames.
    batch_size, num_workers
        Loader settings (graphs per batch).
    cache_dir
        Folder for a neighbour-list cache keyed by data hash and cutoff (``None``: in memory only).
    energy_key
        ``info`` key of the energy labels (:func:`read_frames`).
    """

    def __init__(
        self,
        files: Sequence[str],
        cutoff: float,
        elements: Sequence[str] | None = None,
        val_fraction: float = 0.1,
        split_key: str = "split",
        batch_size: int = 4,
        num_workers: int = 0,
        cache_dir: str | None = None,
        energy_key: str = REF_ENERGY,
    ):
        super().__init__()
        self.files = [str(f) for f in ([files] if isinstance(files, str) else files)]
        self.cutoff, self.val_fraction, self.split_key = float(cutoff), float(val_fraction), split_key
        self.batch_size, self.num_workers, self.cache_dir = int(batch_size), int(num_workers), cache_dir
        frames, self.flagged = read_frames(self.files, energy_key)
        self.frames = split_frames(frames, self.val_fraction, split_key)
        if not self.frames["train"]:
            raise PotentialError(f"no training frames in {self.files}; label some structures first")
        present = sorted({s for a in frames for s in a.get_chemical_symbols()})
        if elements is None:
            elements = present
        missing = sorted(set(present) - set(elements))
        if missing:
            raise PotentialError(
                f"the data holds {', '.join(missing)}, unknown to the checkpoint's elements "
                f"{', '.join(elements)}; train anew instead of resuming"
            )
        self.elements = list(elements)
        self.data_hash = data_hash(self.frames["train"])
        self.graphs: dict[str, list[dict]] | None = None

    def summary(self) -> str:
        s = ", ".join(f"{k} {len(v)}" for k, v in self.frames.items())
        return f"{s} frames ({self.flagged} flagged not converged, excluded); elements {' '.join(self.elements)}"

    def reference_energies(self) -> np.ndarray:
        return fit_reference_energies(self.frames["train"], self.elements)

    def force_rms(self) -> float:
        return force_rms(self.frames["train"])

    def setup(self, stage: str | None = None) -> None:
        if self.graphs is not None:
            return
        import torch

        key = hashlib.sha256(
            f"{data_hash(sum(self.frames.values(), []))}:{self.cutoff}:{self.elements}:{self.val_fraction}".encode()
        ).hexdigest()[:16]
        cache = Path(self.cache_dir) / f"graphs_{key}.pt" if self.cache_dir else None
        if cache is not None and cache.is_file():
            try:
                raw = torch.load(cache, weights_only=True)
                self.graphs = {k: [{n: t.numpy() for n, t in g.items()} for g in v] for k, v in raw.items()}
                return
            except Exception:
                pass  # a damaged cache is rebuilt
        self.graphs = {k: [atoms_to_graph(a, self.elements, self.cutoff) for a in v] for k, v in self.frames.items()}
        if cache is not None:
            from surrogate.io.files import atomic_open

            raw = {k: [{n: torch.as_tensor(x) for n, x in g.items()} for g in v] for k, v in self.graphs.items()}
            with atomic_open(cache, "wb") as fh:
                torch.save(raw, fh)

    def _loader(self, split: str, shuffle: bool):
        from torch.utils.data import DataLoader

        self.setup()
        assert self.graphs is not None  # setup() fills it
        return DataLoader(
            _Graphs(self.graphs[split]),  # type: ignore[arg-type]  # a map-style dataset
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=False,
        )

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val" if self.graphs is None or self.graphs.get("val") else "train", False)

    def test_dataloader(self):
        return self._loader("test", False)
