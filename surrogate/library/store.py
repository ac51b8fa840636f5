"""On-disk library format: ``structures.db`` (ASE SQLite), ``images.zarr`` and ``manifest.json``.

``images.zarr`` holds, for N image slots:

- ``images``      (N, H, W) float32, one chunk per work unit (one structure x K conditions),
- ``config_id``   (N,) uint64 (the 16-hex-digit content hash as an integer; 0 = empty slot),
- ``conditions``  (N, F) float64 with column names in ``attrs["columns"]`` (modes/methods as codes,
  an unset dose or thickness as NaN). Rows are decoded by column name, so a store written with
  fewer columns (before ``thickness`` existed) still reads: its missing columns take their
  defaults, and resuming its build appends them (NaN) in place.

A work unit writes only its own chunks; it is recorded as finished by an atomic marker file in
``done/`` written after its chunks and its database row. A killed build leaves at most partial
chunks of unfinished units, which the next run rewrites.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from surrogate.errors import LibraryError
from surrogate.io.files import atomic_write_text
from surrogate.simulate.conditions import METHODS, MODES, ImagingConditions

__all__ = [
    "FORMAT_VERSION",
    "CONDITION_COLUMNS",
    "atomic_write_text",
    "encode_conditions",
    "decode_conditions",
    "condition_columns",
    "condition_column",
    "id_to_int",
    "int_to_id",
    "open_images",
    "create_images",
    "read_manifest",
    "kind_of",
    "Library",
    "StructureRecord",
]

FORMAT_VERSION = 1
CONDITION_COLUMNS = (
    "mode",
    "method",
    "energy",
    "semiangle",
    "defocus",
    "cs",
    "inner",
    "outer",
    "source_size",
    "focal_spread",
    "sampling",
    "dose",
    "rotation",
    "scale",
    "seed",
    "thickness",
)
#: Columns whose NaN encodes ``None``.
_OPTIONAL = ("dose", "thickness")


def id_to_int(cid: str) -> int:
    return int(cid, 16)


def int_to_id(value: int) -> str:
    return f"{int(value):016x}"


def encode_conditions(conditions: list[ImagingConditions]) -> np.ndarray:
    """Rows of :data:`CONDITION_COLUMNS` (N, F) float64; an unset dose or thickness is NaN."""
    rows = []
    for c in conditions:
        d = c.to_dict()
        d["mode"] = MODES.index(c.mode)
        d["method"] = METHODS.index(c.method)
        for k in _OPTIONAL:
            d[k] = np.nan if d[k] is None else d[k]
        rows.append([float(d[k]) for k in CONDITION_COLUMNS])
    return np.asarray(rows, dtype=np.float64).reshape(len(conditions), len(CONDITION_COLUMNS))


def decode_conditions(row: np.ndarray, columns: tuple[str, ...] | list[str] | None = None) -> ImagingConditions:
    """The :class:`ImagingConditions` of one stored row.

    Parameters
    ----------
    row
        One row of the ``conditions`` array.
    columns
        The array's column names (``attrs["columns"]``, :func:`condition_columns`); default
        :data:`CONDITION_COLUMNS`. Columns the row lacks take their defaults (an old store without
        ``thickness`` decodes with ``thickness=None``); columns this package does not know are ignored.
    """
    names = tuple(CONDITION_COLUMNS if columns is None else columns)
    if len(names) != len(row):
        raise LibraryError(f"a conditions row has {len(row)} values for {len(names)} column names: rebuild the library")
    fields = set(CONDITION_COLUMNS)
    d: dict[str, Any] = {k: float(v) for k, v in zip(names, row) if k in fields}
    for k in ("mode", "method", "seed"):
        if k not in d:
            raise LibraryError(f"the conditions columns {list(names)} lack {k!r}: rebuild the library")
    d["mode"] = MODES[int(d["mode"])]
    d["method"] = METHODS[int(d["method"])]
    for k in _OPTIONAL:
        if k in d and np.isnan(d[k]):
            d[k] = None
    d["seed"] = int(d["seed"])
    return ImagingConditions(**d)


def condition_columns(array: Any) -> tuple[str, ...]:
    """Column names of a ``conditions`` array (its ``attrs["columns"]``).

    An array without the attribute is taken as the current layout, or as the layout before
    ``thickness`` (15 columns) when it is one column narrower.
    """
    attrs = getattr(array, "attrs", None)
    names = attrs.get("columns") if attrs is not None else None
    if names:
        return tuple(str(n) for n in names)
    width = int(array.shape[1])
    for layout in (CONDITION_COLUMNS, CONDITION_COLUMNS[:-1]):
        if width == len(layout):
            return layout
    raise LibraryError(f"the conditions array has {width} columns and no column names: rebuild the library")


def condition_column(array: Any, name: str) -> np.ndarray:
    """One column of a ``conditions`` array (or of a :class:`Library`'s), looked up by name.

    A column the array lacks (``thickness`` in a library written before it existed) reads as NaN.
    """
    if isinstance(array, Library):
        array = array.group["conditions"]
    names = condition_columns(array)
    if name not in CONDITION_COLUMNS and name not in names:
        raise LibraryError(f"no conditions column {name!r}: the columns are {list(names)}")
    if name not in names:
        return np.full(int(array.shape[0]), np.nan)
    return np.asarray(array[:, names.index(name)], dtype=np.float64)


def _upgrade_conditions(group: Any, path: Path) -> None:
    """Append the columns an older store lacks (NaN-filled, in place) so that a resumed build writes rows."""
    cond = group["conditions"]
    names = condition_columns(cond)
    if names == CONDITION_COLUMNS:
        return
    if CONDITION_COLUMNS[: len(names)] != names:
        raise LibraryError(
            f"{path}/conditions has columns {list(names)}, not a prefix of {list(CONDITION_COLUMNS)}: "
            "use a new output directory"
        )
    cond.resize((cond.shape[0], len(CONDITION_COLUMNS)))
    cond.attrs["columns"] = list(CONDITION_COLUMNS)


def create_images(path: Path, n: int, shape: tuple[int, int], chunk: int, attrs: dict) -> None:
    """Create (or open, if it matches) the image store with ``n`` empty slots."""
    import zarr

    group = zarr.open_group(str(path), mode="a")
    if "images" in group:
        images: Any = group["images"]
        if images.shape != (n, *shape) or images.chunks[0] != chunk:
            raise LibraryError(
                f"{path} holds {images.shape} images in chunks of {images.chunks[0]}, not {(n, *shape)} in {chunk}: "
                "this library was built with another config; use a new output directory"
            )
        _upgrade_conditions(group, path)
        return
    group.attrs.update(attrs)
    group.create_array("images", shape=(n, *shape), chunks=(chunk, *shape), dtype="float32", fill_value=0.0)
    group.create_array("config_id", shape=(n,), chunks=(chunk,), dtype="uint64", fill_value=0)
    cond = group.create_array(
        "conditions",
        shape=(n, len(CONDITION_COLUMNS)),
        chunks=(chunk, len(CONDITION_COLUMNS)),
        dtype="float64",
        fill_value=np.nan,
    )
    cond.attrs["columns"] = list(CONDITION_COLUMNS)


def open_images(path: Path, mode: Literal["r", "r+", "a"] = "r"):
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        raise LibraryError(f"cannot open image store {path}: {exc}; rebuild the library") from None


def read_manifest(root: Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise LibraryError(
            f"no manifest.json in {root}: not a library, or its build did not finish; run surrogate-build-library"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LibraryError(f"corrupt manifest {path} ({exc}); rebuild the library") from None


class _CheckedArray:
    """A zarr array whose reads turn a damaged chunk (truncated, bad checksum, undecodable) into a
    one-line :class:`LibraryError`; everything else is the array's."""

    def __init__(self, array, name: str, root: Path):
        self._array, self._name, self._root = array, name, root

    def __getitem__(self, key):
        try:
            return self._array[key]
        except (IndexError, TypeError, KeyboardInterrupt):
            raise
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0][:120]
            where = f"{key.start or 0}:{'' if key.stop is None else key.stop}" if isinstance(key, slice) else key
            raise LibraryError(
                f"library {self._root} is damaged: cannot decode images.zarr/{self._name}[{where}] ({type(exc).__name__}: "
                f"{first}); delete the done/ markers of those units and rerun surrogate-build-library with its config"
            ) from None

    def __len__(self) -> int:
        return len(self._array)

    def __getattr__(self, name):
        return getattr(self._array, name)


class _CheckedGroup:
    def __init__(self, group, root: Path):
        self._group, self._root = group, root

    def __getitem__(self, name: str) -> _CheckedArray:
        return _CheckedArray(self._group[name], name, self._root)

    def __contains__(self, name: str) -> bool:
        return name in self._group

    def __getattr__(self, name):
        return getattr(self._group, name)


def kind_of(family: str, params: dict[str, Any]) -> str:
    """A configuration's *kind*: a boundary's name (its rigid translations share it), else its family."""
    return str(params.get("name") or family) if family == "gb" else family


@dataclass(frozen=True)
class StructureRecord:
    """What the library knows of one configuration without loading its atoms (a ``structures.db`` row).

    ``kind`` is a boundary's name (its rigid translations share it), else the family; ``group`` is
    ``"<material> <zone_axis>"``: the configurations of one group are near-identical (a slab, its
    defect variants and the boundaries along the same zone axis). ``columns`` holds every key/value
    column of the row (the class labels among them, where the builder recorded them).
    """

    config_id: str
    family: str
    formula: str  # reduced, metals first (CdTe, Si)
    kind: str
    material: str
    zone_axis: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    columns: dict[str, Any] = field(default_factory=dict, compare=False)
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the builder's atoms.info

    @property
    def group(self) -> str:
        return f"{self.material} {self.zone_axis}"

    @property
    def labels(self):
        """The configuration's class labels (:class:`surrogate.structures.labels.StructureLabels`;
        inferred from family and parameters for configurations built before labels existed)."""
        from surrogate.structures.labels import labels_of

        return labels_of(dict(self.info, family=self.info.get("family", self.family)))


class Library:
    """Read access to a finished library directory (lazy: nothing is loaded until indexed).

    Parameters
    ----------
    root
        Library directory written by :func:`surrogate.library.build_library`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise LibraryError(
                f"library {self.root} has format {self.manifest.get('format_version')}, this package reads "
                f"{FORMAT_VERSION}: rebuild it"
            )
        self._group = None

    # zarr handles are opened lazily so that the object pickles into DataLoader workers
    def __getstate__(self):
        return {"root": self.root, "manifest": self.manifest, "_group": None}

    def db(self):
        """The library's ``structures.db`` (an :func:`ase.db.connect` handle; use it as a context manager)."""
        from ase.db import connect

        path = self.root / "structures.db"
        if not path.exists():
            raise LibraryError(
                f"no structures.db in {self.root}: not a finished library; rebuild it with surrogate-build-library"
            )
        return connect(path)

    @cached_property
    def _structures(self) -> dict[str, StructureRecord]:
        out = {}
        with self.db() as db:
            for row in db.select(columns=["key_value_pairs", "numbers", "data"]):
                family = str(row.get("family", ""))
                params = (row.data or {}).get("info", {}).get("params", {}) or {}
                kind = kind_of(family, params)
                out[row.config_id] = StructureRecord(
                    config_id=row.config_id,
                    family=family,
                    formula=row.toatoms().get_chemical_formula(mode="metal", empirical=True),
                    kind=kind,
                    material=str(row.get("material", "")),
                    zone_axis=str(row.get("zone_axis", "")),
                    params=params,
                    columns=dict(row.key_value_pairs),
                    info=(row.data or {}).get("info", {}) or {},
                )
        return out

    def structures(self) -> dict[str, StructureRecord]:
        """One :class:`StructureRecord` per configuration (config_id -> record), read once per object."""
        return self._structures

    def groups(self) -> dict[int, str]:
        """Group key of every configuration (uint64 id -> ``"<material> <zone_axis>"``)."""
        return {id_to_int(cid): r.group for cid, r in self.structures().items()}

    @property
    def group(self):
        """The read-only ``images.zarr`` group; a chunk that cannot be decoded raises :class:`LibraryError`."""
        if self._group is None:
            self._group = _CheckedGroup(open_images(self.root / "images.zarr"), self.root)
        return self._group

    def __len__(self) -> int:
        return int(self.manifest["counts"]["images"])

    @property
    def sampling(self) -> float:
        return float(self.manifest["canonical_sampling"])

    @property
    def hash(self) -> str:
        return str(self.manifest["library_hash"])

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.group["images"][i])

    def config_ids(self) -> np.ndarray:
        """All image slots' configuration ids as uint64 (N,)."""
        return np.asarray(self.group["config_id"][:])

    def conditions(self, i: int) -> ImagingConditions:
        array = self.group["conditions"]
        return decode_conditions(np.asarray(array[i]), condition_columns(array))

    def condition_table(self) -> np.ndarray:
        """The raw (N, F) conditions array; its columns are :meth:`condition_columns` (read by name)."""
        return np.asarray(self.group["conditions"][:])

    def condition_columns(self) -> tuple[str, ...]:
        """Column names of :meth:`condition_table`."""
        return condition_columns(self.group["conditions"])

    def condition_column(self, name: str) -> np.ndarray:
        """One conditions column of every image slot, by name (NaN where the store lacks it)."""
        return condition_column(self.group["conditions"], name)

    def noise_free(self) -> np.ndarray:
        """Boolean mask of the images stored without shot noise (their dose is NaN)."""
        return np.isnan(self.condition_column("dose"))

    def atoms(self, config_id: str):
        """The configuration with this id, from ``structures.db``."""
        with self.db() as db:
            rows = list(db.select(config_id=config_id))
        if not rows:
            raise LibraryError(f"config_id {config_id} is not in {self.root / 'structures.db'}")
        atoms = rows[0].toatoms()
        atoms.info.update(rows[0].data.get("info", {}))
        return atoms
