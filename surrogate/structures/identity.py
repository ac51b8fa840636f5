"""Configuration identity: content hashes and the ``info`` contract of every configuration."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["config_id", "tag", "jsonable"]


def config_id(atoms: Atoms) -> str:
    """Content hash of a configuration.

    Hash of the chemical species, the positions wrapped into the cell and rounded to 1e-3 Å, and
    the cell rounded to 1e-3 Å. Two configurations with the same hash are the same structure up to
    the ordering of atoms (atoms are sorted before hashing).

    Returns
    -------
    str
        16 hexadecimal characters.
    """
    cell = np.round(np.asarray(atoms.cell), 3) + 0.0
    wrapped = atoms.get_positions(wrap=True) if atoms.pbc.any() else atoms.get_positions()
    pos = np.round(wrapped, 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    numbers = atoms.numbers
    order = np.lexsort((pos[:, 2], pos[:, 1], pos[:, 0], numbers))
    h = hashlib.sha256()
    h.update(numbers[order].astype(np.int16).tobytes())
    h.update(pos[order].astype(np.float64).tobytes())
    h.update(cell.astype(np.float64).tobytes())
    return h.hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def tag(atoms: Atoms, family: str, params: dict[str, Any], zone_axis=None, **provenance) -> Atoms:
    """Stamp ``atoms.info`` with the configuration contract and return ``atoms``.

    Sets ``config_id`` (content hash), ``family`` (bulk / defect / gb / rattled ...), ``params``
    (the generator's parameters, JSON-serialisable), ``zone_axis`` (beam along z), ``labels`` (the
    class labels, :class:`surrogate.structures.labels.StructureLabels` as a dict, inferred from the
    family and parameters unless given) and any provenance keys given.
    """
    from surrogate.structures.crystals import check_overlaps

    check_overlaps(atoms)
    info = atoms.info
    info["family"] = family
    info["params"] = jsonable(params)
    if zone_axis is not None:
        info["zone_axis"] = [int(v) for v in zone_axis]
    for k, v in provenance.items():
        info[k] = jsonable(v)
    if "labels" not in provenance:  # class labels from the family and parameters (surrogate.structures.labels)
        from surrogate.structures.labels import labels_of

        info.pop("labels", None)
        info["labels"] = labels_of(atoms).to_dict()
    info["config_id"] = config_id(atoms)
    json.dumps(info["params"])  # fail early if the parameters cannot be stored
    return atoms
