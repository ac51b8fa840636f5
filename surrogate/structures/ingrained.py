"""Bicrystal recipes read from ingrained's ``config.json`` (MaterialEyes/ingrained).

Microscopists who fit grain boundaries with ingrained describe the bicrystal in a ``config.json``::

    {"slab_1": {"chemical_formula": "CdTe", "space_group": "F-43m", "uvw_project": [1,1,0],
                "uvw_upward": [0,0,1], "tilt_angle": 54.73538, "max_dimension": 34.4,
                "flip_species": false},
     "slab_2": {... "tilt_angle": 125.26462, "flip_species": true},
     "constraints": {"min_width": 30, "max_width": 60, "min_depth": 8, "max_depth": 20, ...}}

Each slab is a crystal viewed along ``uvw_project`` with ``uvw_upward`` pointing up, then rotated
counter-clockwise about the projection axis by ``tilt_angle`` [deg] (ingrained's
``construct_oriented_slab``); slab 1 is the left grain, slab 2 the right one, and ``flip_species``
swaps the two species of a binary compound. That is exactly a ``gb`` recipe of
:func:`surrogate.structures.recipes.build_structure`: ``zone_axis <- uvw_project``, ``upward <-
uvw_upward``, ``tilt <- tilt_angle``, ``flip_species <- flip_species``. Of the constraints, the
width (``min_width``/``max_width`` [Å]) sets the field of view (the larger of ``min_width`` and the
requested ``fov``, within ``max_width``) and the depth (``min_depth``/``max_depth`` [Å]) the thickness
(the mid-range, unless given); ingrained's interface widths and collision-removal flags have no
counterpart here (collisions are always removed) and are recorded in the recipe's ``ingrained``
entry. Only the chemical formula selects the crystal: it must be a built-in material
(:data:`surrogate.structures.crystals.BUILTIN`); the space group is checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError, StructureError

__all__ = ["read_ingrained_config", "ingrained_recipe", "ingrained_bicrystal"]

#: space group (Hermann-Mauguin) of each built-in structure type
_SPACE_GROUPS = {"zincblende": "F-43m", "diamond": "Fd-3m", "fcc": "Fm-3m", "bcc": "Im-3m", "rocksalt": "Fm-3m"}


def _vector(slab: Mapping[str, Any], key: str, where: str) -> list[int]:
    v = slab.get(key)
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise ConfigError(f"{where}.{key} must be three numbers [u, v, w], got {v!r}: fix the config.json")
    if not np.any(arr):
        raise ConfigError(f"{where}.{key} is the zero vector: give a lattice direction such as [1, 1, 0]")
    if not np.allclose(arr, np.round(arr)):
        raise ConfigError(f"{where}.{key} = {v!r} is not a lattice direction: give integer indices [u, v, w]")
    return [int(x) for x in np.round(arr)]


def _slab(cfg: Mapping[str, Any], name: str, path: str) -> tuple[dict, str]:
    from surrogate.structures.crystals import BUILTIN, crystal

    slab = cfg.get(name)
    if not isinstance(slab, Mapping):
        raise ConfigError(f"{path}: missing {name!r} (slab_1 and slab_2 describe the two grains); add it")
    for key in ("chemical_formula", "uvw_project", "uvw_upward", "tilt_angle"):
        if key not in slab:
            raise ConfigError(f"{path}: {name}.{key} is missing; add it (see ingrained's config.json format)")
    formula = str(slab["chemical_formula"])
    if formula not in BUILTIN:
        raise ConfigError(
            f"{name}.chemical_formula {formula!r} is not a known material: use one of {', '.join(sorted(BUILTIN))}"
        )
    structure = BUILTIN[formula]["crystalstructure"]
    group = slab.get("space_group")
    if group and _SPACE_GROUPS.get(structure) and str(group).replace(" ", "") != _SPACE_GROUPS[structure]:
        raise ConfigError(
            f"{name}.space_group {group!r} does not match {formula} ({structure}, "
            f"{_SPACE_GROUPS[structure]}): fix the space group or the formula"
        )
    project = _vector(slab, "uvw_project", name)
    upward = _vector(slab, "uvw_upward", name)
    cell = crystal(formula).cell.array
    cz, cy = np.asarray(project) @ cell, np.asarray(upward) @ cell
    cos = abs(float(np.dot(cz, cy))) / (np.linalg.norm(cz) * np.linalg.norm(cy))
    if cos > 1 - 1e-6:
        raise ConfigError(
            f"{name}: uvw_project {project} and uvw_upward {upward} are parallel; "
            "the upward direction must be perpendicular to the projection"
        )
    if cos > 1e-6:
        raise ConfigError(
            f"{name}: uvw_project {project} and uvw_upward {upward} are not perpendicular; "
            "choose an upward direction normal to the projection"
        )
    try:
        tilt = float(slab["tilt_angle"])
    except (TypeError, ValueError):
        raise ConfigError(f"{name}.tilt_angle must be a number [deg], got {slab['tilt_angle']!r}") from None
    if not np.isfinite(tilt):
        raise ConfigError(f"{name}.tilt_angle must be finite [deg], got {tilt}")
    grain = {
        "zone_axis": project,
        "upward": upward,
        "tilt": tilt,
        "flip_species": bool(slab.get("flip_species", False)),
    }
    return grain, formula


def _number(constraints: Mapping[str, Any], key: str) -> float | None:
    v = constraints.get(key)
    if v in (None, ""):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"constraints.{key} must be a number [Å], got {v!r}") from None
    if not x > 0:
        raise ConfigError(f"constraints.{key} must be positive [Å], got {x}")
    return x


def ingrained_recipe(
    cfg: Mapping[str, Any],
    fov: tuple[float, float] | None = None,
    thickness: float | None = None,
    name: str = "ingrained",
    source: str = "config.json",
) -> dict[str, Any]:
    """The ``gb`` recipe of an ingrained configuration (already parsed JSON); see the module docstring.

    Parameters
    ----------
    cfg
        The parsed ``config.json``.
    fov
        Field of view (x, y) [Å]; default: ``min_width`` of the constraints (25.6 Å if absent) on both
        axes, capped at ``max_width``.
    thickness
        Thickness along the beam [Å]; default: the middle of ``min_depth`` .. ``max_depth`` (20 Å if absent).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: expected a JSON object with slab_1, slab_2 and constraints")
    g1, f1 = _slab(cfg, "slab_1", source)
    g2, f2 = _slab(cfg, "slab_2", source)
    if f1 != f2:
        raise ConfigError(
            f"slab_1 is {f1} but slab_2 is {f2}: a heterophase boundary is not supported; use one material"
        )
    if g1["zone_axis"] != g2["zone_axis"]:
        from surrogate.structures.crystals import crystal
        from surrogate.structures.slabs import orient

        unit = crystal(f1)
        a, b = (
            orient(unit, g1["zone_axis"], g1["upward"]).cell[2, 2],
            orient(unit, g2["zone_axis"], g2["upward"]).cell[2, 2],
        )
        if abs(a - b) / a > 1e-3:
            raise ConfigError(
                f"slab_1 views along {g1['zone_axis']} and slab_2 along {g2['zone_axis']}, whose periods "
                f"along the beam differ ({a:.3f} vs {b:.3f} Å): use projections of the same family"
            )
    cons = cfg.get("constraints") or {}
    if not isinstance(cons, Mapping):
        raise ConfigError(f"{source}: constraints must be a JSON object")
    wmin, wmax = _number(cons, "min_width"), _number(cons, "max_width")
    dmin, dmax = _number(cons, "min_depth"), _number(cons, "max_depth")
    if wmin and wmax and wmin > wmax:
        raise ConfigError(f"constraints: min_width {wmin} exceeds max_width {wmax}; swap or fix them")
    if dmin and dmax and dmin > dmax:
        raise ConfigError(f"constraints: min_depth {dmin} exceeds max_depth {dmax}; swap or fix them")
    if fov is None:
        w = wmin or 25.6
        fov = (w, w)
    window = [float(min(v, wmax)) if wmax else float(v) for v in fov]
    if thickness is None:
        thickness = 0.5 * (dmin + dmax) if (dmin and dmax) else (dmin or dmax or 20.0)
    extra = {
        k: cons[k] for k in ("interface_1_width", "interface_2_width", "collision_removal", "pixel_size") if k in cons
    }
    return {
        "kind": "gb",
        "name": name,
        "material": {"name": f1},
        "thickness": float(thickness),
        "fov": window,
        "zone_axis": g1["zone_axis"],
        "grain1": g1,
        "grain2": g2,
        "translation": [0.0, 0.0, 0.0],
        "ingrained": {
            "structure_file": cfg.get("structure_file"),
            "constraints": extra,
            "max_dimension": [cfg["slab_1"].get("max_dimension"), cfg["slab_2"].get("max_dimension")],
        },
    }


def read_ingrained_config(
    path: str | Path, fov: tuple[float, float] | None = None, thickness: float | None = None
) -> dict[str, Any]:
    """Read an ingrained ``config.json`` into a recipe that
    :func:`surrogate.structures.recipes.build_structure` accepts (kind ``gb``).

    Raises
    ------
    ConfigError
        Missing file or keys, invalid JSON, unknown formula, zero or non-integer vector, parallel (or
        non-perpendicular) projection and upward axes, mismatched slabs.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"ingrained config {p} not found: give the path of a config.json")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}): fix the file") from None
    return ingrained_recipe(cfg, fov, thickness, name=f"ingrained_{p.parent.name or 'config'}", source=str(p))


def ingrained_bicrystal(
    path: str | Path, fov: tuple[float, float] | None = None, thickness: float | None = None
) -> Atoms:
    """The bicrystal an ingrained ``config.json`` describes (see :func:`read_ingrained_config`)."""
    from surrogate.structures.recipes import build_structure

    recipe = read_ingrained_config(path, fov, thickness)
    build = {k: v for k, v in recipe.items() if k != "ingrained"}
    try:
        return build_structure(build)
    except StructureError as exc:
        raise ConfigError(f"{path}: {exc}") from None
