"""Search output: candidate configurations as extxyz, and the file the library build ingests.

Every candidate is a tagged configuration (``info``: ``config_id``, ``family``, ``params``,
``zone_axis``) with its energy (``energy`` [eV] and forces as a single-point calculator,
``energy_per_atom`` [eV/atom]), ``mismatch`` (1 - SSIM against the target image; NaN without one),
``pareto`` (on the non-dominated front of the search), ``energy_model`` and provenance
(``search_method``, ``search_step``, ``search_seed``; ``params.parent`` = the starting
configuration's id, ``params.search`` = the search settings).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, cast

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.io.files import atomic_open
from surrogate.structures.identity import config_id, tag

__all__ = ["make_candidate", "write_candidates", "read_candidates", "export_for_library", "LIBRARY_KEYS"]

#: ``info`` keys kept in the file handed to the library build (the configuration contract plus
#: the energy, recorded as db key/value pairs).
LIBRARY_KEYS = ("config_id", "family", "params", "zone_axis", "energy_per_atom", "energy_model", "mismatch")


def make_candidate(
    atoms: Atoms,
    energy: float,
    start: Atoms,
    method: str,
    step: int,
    seed: int,
    model_id: str,
    mismatch: float = float("nan"),
    settings: dict[str, Any] | None = None,
    forces: np.ndarray | None = None,
) -> Atoms:
    """A tagged copy of a relaxed structure found by a search.

    Parameters
    ----------
    atoms
        The structure (positions are rounded to 1e-8 Å, the precision of extxyz, so its
        ``config_id`` survives a round trip through the file).
    energy
        Potential energy [eV].
    start
        The configuration the search started from (its family, zone axis and id are inherited).
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.positions = np.round(out.get_positions(wrap=True) if out.pbc.any() else out.positions, 8)
    sinfo = dict(out.info.get("search", {}))
    out.info = {"search": sinfo} if sinfo else {}
    sparams = start.info.get("params") or {}
    params = {
        "material": sparams.get("material", start.get_chemical_formula()),
        "parent": start.info.get("config_id"),
        "parent_family": start.info.get("family"),
        "parent_params": sparams,
        "search": {"method": method, "seed": int(seed), **(settings or {})},
    }
    if sinfo.get("vacancies"):
        params["vacancies"] = sinfo["vacancies"]
    if start.info.get("family") == "gb":
        params["translation"] = sinfo.get("translation", [0.0, 0.0, 0.0])
    tag(out, start.info.get("family", "search"), params, zone_axis=start.info.get("zone_axis"))
    out.info.update(
        energy_per_atom=float(energy) / len(out),
        mismatch=float(mismatch),
        pareto=False,
        energy_model=model_id,
        search_method=method,
        search_step=int(step),
        search_seed=int(seed),
    )
    out.calc = SinglePointCalculator(out, energy=float(energy), **({"forces": forces} if forces is not None else {}))
    return out


def write_candidates(path: str | os.PathLike, candidates: Sequence[Atoms]) -> Path:
    """Write candidates to an extxyz file atomically; returns the path."""
    from ase.io import write

    path = Path(path)
    with atomic_open(path, "w") as f:
        write(f, list(candidates), format="extxyz")
    return path


def read_candidates(path: str | os.PathLike) -> list[Atoms]:
    """Read candidates written by :func:`write_candidates` (``config_id`` checked against the content)."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"candidate file not found: {path}; run python -m surrogate.search first")
    images = cast("list[Atoms]", read(path, ":", format="extxyz"))
    for i, a in enumerate(images):
        if a.calc is not None and "energy" in a.calc.results:
            a.info.setdefault("energy", float(a.calc.results["energy"]))
        if "zone_axis" in a.info:
            a.info["zone_axis"] = [int(v) for v in a.info["zone_axis"]]
        stored = a.info.get("config_id")
        if stored is not None and stored != config_id(a):
            raise ConfigError(f"{path} entry {i}: config_id {stored} does not match its atoms; the file was edited")
    return images


def export_for_library(
    candidates: Iterable[Atoms],
    path: str | os.PathLike,
    pareto_only: bool = False,
    max_energy_above_min: float | None = None,
    top: int | None = None,
) -> Path:
    """Write the candidates the library should render as an extxyz of tagged configurations.

    Parameters
    ----------
    pareto_only
        Keep only candidates on the Pareto front.
    max_energy_above_min
        Keep only candidates within this energy per atom of the lowest [eV/atom].
    top
        Keep at most this many, lowest energy per atom first.

    Returns
    -------
    pathlib.Path
        The file: one configuration per frame, ``info`` restricted to :data:`LIBRARY_KEYS`,
        distinct ``config_id`` values, lowest energy first.
    """
    chosen = [a for a in candidates if not pareto_only or bool(a.info.get("pareto"))]
    energies = [float(a.info.get("energy_per_atom", math.nan)) for a in chosen]
    if max_energy_above_min is not None and chosen:
        emin = np.nanmin(energies)
        keep = [e <= emin + max_energy_above_min for e in energies]
        chosen = [a for a, k in zip(chosen, keep) if k]
        energies = [e for e, k in zip(energies, keep) if k]
    order: np.ndarray | list[int] = (
        np.argsort(np.where(np.isnan(energies), np.inf, energies), kind="stable") if chosen else []
    )
    seen: set[str] = set()
    out = []
    for k in order:
        a = chosen[int(k)]
        if a.info["config_id"] in seen:
            continue
        seen.add(a.info["config_id"])
        b = a.copy()
        b.calc = None
        b.info = {key: a.info[key] for key in LIBRARY_KEYS if key in a.info}
        out.append(b)
        if top is not None and len(out) >= top:
            break
    if not out:
        raise ConfigError("no candidate passes the selection: relax pareto_only / max_energy_above_min / top")
    return write_candidates(path, out)
