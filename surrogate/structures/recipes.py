"""Structure recipes: the deterministic list of configurations a library config asks for, and
the function that builds one (run on the workers, so the driver never holds all structures)."""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.structures.boundaries import bicrystal
from surrogate.structures.crystals import crystal
from surrogate.structures.defects import add_defects
from surrogate.structures.slabs import zone_axis_slab
from surrogate.structures.thermal import rattle

__all__ = ["plan_structures", "build_structure"]


def _plain(cfg) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return cfg


def plan_structures(cfg: Mapping[str, Any]) -> list[dict]:
    """Expand a ``structures`` config into recipes (plain dicts, JSON-serialisable, ordered).

    Keys of ``cfg``: ``materials`` (list of ``{name, crystalstructure?, a?, cif?, substituents?}``
    or names), ``zone_axes``, ``thicknesses`` [Å], ``fov`` [Å, Å], ``bulk`` (bool),
    ``defects`` (``{per_slab, kinds, depths, max_per_structure, seed}``), ``boundaries`` (list of
    ``{name, zone_axis?, grain1, grain2, translations}``), ``rattle`` (``{copies, stdev}``), ``files``
    (extxyz files whose frames become configurations, e.g. the output of ``surrogate.search``).
    """
    cfg = _plain(cfg)
    materials = [m if isinstance(m, Mapping) else {"name": m} for m in cfg.get("materials") or []]
    files = [str(f) for f in cfg.get("files") or []]
    if not materials and not files:
        raise ConfigError("structures.materials is empty: list at least one material (e.g. [CdTe, Si]) or structures.files")
    zone_axes = [list(z) for z in cfg.get("zone_axes") or []]
    thicknesses = list(cfg.get("thicknesses") or [])
    if materials and (not zone_axes or not thicknesses):
        raise ConfigError("structures.zone_axes and structures.thicknesses must each list at least one value")
    fov = list(cfg.get("fov", [25.6, 25.6]))
    dcfg = cfg.get("defects") or {}
    rng = np.random.default_rng(int(dcfg.get("seed", 0)))
    recipes: list[dict] = []
    kinds_of: dict[str, list[str]] = {}
    for mat in materials:  # defect kinds that make sense for each material
        compound = len(set(_unit(mat).get_chemical_symbols())) > 1
        kinds_of[mat["name"]] = [
            k for k in dcfg.get("kinds", ["vacancy"])
            if not (k == "antisite" and not compound) and not (k == "substitution" and not mat.get("substituents"))
        ] or ["vacancy"]
    for mat, za, t in itertools.product(materials, zone_axes, thicknesses):
        base = {"material": mat, "zone_axis": za, "thickness": float(t), "fov": fov}
        if cfg.get("bulk", True):
            recipes.append({"kind": "bulk", **base})
        for j in range(int(dcfg.get("per_slab", 0))):
            n = int(rng.integers(1, int(dcfg.get("max_per_structure", 1)) + 1))
            specs = []
            for _ in range(n):
                kind = str(rng.choice(kinds_of[mat["name"]]))
                spec = {"kind": kind, "depth": float(rng.choice(list(dcfg.get("depths", [0.5]))))}
                if kind == "substitution":
                    spec["element"] = str(rng.choice(mat["substituents"]))
                specs.append(spec)
            recipes.append({"kind": "defect", **base, "defects": specs, "seed": int(rng.integers(2**31))})
    for b in cfg.get("boundaries") or []:
        mats = b.get("materials") or [m["name"] for m in materials]
        for name, t, tr in itertools.product(mats, thicknesses, b.get("translations") or [[0, 0, 0]]):
            mat = next((m for m in materials if m["name"] == name), {"name": name})
            recipes.append({
                "kind": "gb", "name": b.get("name", "gb"), "material": mat, "thickness": float(t), "fov": fov,
                "grain1": b["grain1"], "grain2": b["grain2"], "translation": list(tr),
            })
    recipes += _file_recipes(files)
    rcfg = cfg.get("rattle") or {}
    copies = int(rcfg.get("copies", 0))
    if copies:
        recipes += [
            {"kind": "rattled", "parent": r, "stdev": float(rcfg.get("stdev", 0.05)), "seed": k}
            for r in list(recipes) for k in range(copies)
        ]
    return recipes


def _file_recipes(files: list[str]) -> list[dict]:
    """One recipe per frame of each extxyz file (e.g. ``for_library.extxyz`` from surrogate.search)."""
    from pathlib import Path

    from ase.io import read

    recipes = []
    for f in files:
        p = Path(f).expanduser().resolve()
        if not p.is_file():
            raise ConfigError(f"structures.files: {p} not found; give an extxyz written by python -m surrogate.search")
        try:
            frames = read(p, ":", format="extxyz")
        except Exception as exc:
            raise ConfigError(f"structures.files: cannot read {p} as extxyz ({type(exc).__name__}); is it truncated?") from None
        recipes += [{"kind": "file", "path": str(p), "index": i, "config_id": a.info.get("config_id")}
                    for i, a in enumerate(frames)]
    return recipes


def _from_file(recipe: Mapping[str, Any]) -> Atoms:
    """A configuration read back from an extxyz frame, re-tagged (the id must not have changed)."""
    from ase.io import read

    from surrogate.structures.identity import tag

    atoms = read(recipe["path"], index=recipe["index"], format="extxyz")
    atoms.calc = None
    info = dict(atoms.info)
    atoms.info = {}
    extra = {k: info[k] for k in ("energy_per_atom", "energy_model", "mismatch") if k in info}
    tag(atoms, info.get("family", "file"), info.get("params") or {"source": recipe["path"]},
        zone_axis=info.get("zone_axis"), **extra)
    if recipe.get("config_id") and atoms.info["config_id"] != recipe["config_id"]:
        raise ConfigError(
            f"{recipe['path']} frame {recipe['index']} changed since the library was planned: use a new library.output_dir"
        )
    return atoms


def _unit(mat: Mapping[str, Any]) -> Atoms:
    return crystal(mat.get("name"), mat.get("crystalstructure"), mat.get("a"), mat.get("c"), mat.get("cif"))


def build_structure(recipe: Mapping[str, Any]) -> Atoms:
    """Build the configuration of one recipe (deterministic)."""
    kind = recipe["kind"]
    if kind == "rattled":
        return rattle(build_structure(recipe["parent"]), recipe["stdev"], recipe["seed"])
    if kind == "file":
        return _from_file(recipe)
    mat = recipe["material"]
    unit = _unit(mat)
    if kind == "gb":
        g1 = {"zone_axis": recipe.get("zone_axis", [1, 1, 0]), **recipe["grain1"]}
        g2 = {"zone_axis": recipe.get("zone_axis", [1, 1, 0]), **recipe["grain2"]}
        atoms = bicrystal(unit, g1, g2, fov=tuple(recipe["fov"]), thickness=recipe["thickness"],
                          translation=tuple(recipe.get("translation", (0, 0, 0))), material=mat["name"])
        atoms.info["params"]["name"] = recipe.get("name", "gb")
        return atoms
    slab = zone_axis_slab(unit, recipe["zone_axis"], mat.get("upward"), tuple(recipe["fov"]), recipe["thickness"], mat["name"])
    if kind == "bulk":
        return slab
    if kind == "defect":
        return add_defects(slab, recipe["defects"], seed=recipe["seed"])
    raise ConfigError(f"unknown structure recipe kind {kind!r}: use bulk, defect, gb or rattled")
