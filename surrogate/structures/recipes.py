"""Structure recipes: the deterministic list of configurations a library config asks for, and
the function that builds one (run on the workers, so the driver never holds all structures)."""

from __future__ import annotations

import itertools
import json
from typing import Any, Mapping, cast

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError
from surrogate.structures.boundaries import bicrystal
from surrogate.structures.crystals import crystal
from surrogate.structures.csl import coherent_twin
from surrogate.structures.defects import add_defects
from surrogate.structures.slabs import zone_axis_slab
from surrogate.structures.thermal import rattle

__all__ = ["plan_structures", "build_structure", "boundary_recipes"]


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
        raise ConfigError(
            "structures.materials is empty: list at least one material (e.g. [CdTe, Si]) or structures.files"
        )
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
            k
            for k in dcfg.get("kinds", ["vacancy"])
            if not (k == "antisite" and not compound) and not (k == "substitution" and not mat.get("substituents"))
        ] or ["vacancy"]
    for mat, za, t in itertools.product(materials, zone_axes, thicknesses):
        base = {"material": mat, "zone_axis": za, "thickness": float(t), "fov": fov}
        if cfg.get("bulk", True):
            recipes.append({"kind": "bulk", **base})
        recipes += _defect_recipes(base, dcfg, kinds_of[mat["name"]], mat, rng)
    nb = int(dcfg.get("per_boundary", 0))
    seen: set[str] = set()  # generators may propose one boundary twice (the CSL's Σ3(111) and the twin)
    for b in cfg.get("boundaries") or []:
        mats = b.get("materials") or [m["name"] for m in materials]
        for name in mats:
            mat = next((m for m in materials if m["name"] == name), {"name": name})
            for t in thicknesses:
                for r in boundary_recipes(b, mat, float(t), fov):
                    key = json.dumps(r, sort_keys=True)
                    if key in seen:
                        continue
                    seen.add(key)
                    recipes.append(r)
                    if nb:
                        recipes += [
                            {"kind": "defect", "parent": r, "defects": d["defects"], "seed": d["seed"]}
                            for d in _defect_recipes(
                                {}, _per_boundary(dcfg, nb), kinds_of.get(name, ["vacancy"]), mat, rng
                            )
                        ]
    recipes += _file_recipes(files)
    rcfg = cfg.get("rattle") or {}
    copies = int(rcfg.get("copies", 0))
    if copies:
        recipes += [
            {"kind": "rattled", "parent": r, "stdev": float(rcfg.get("stdev", 0.05)), "seed": k}
            for r in list(recipes)
            for k in range(copies)
        ]
    return recipes


def _per_boundary(dcfg: Mapping[str, Any], n: int) -> dict:
    """The defect config with ``n`` variants of every configured density, for boundary recipes."""
    out = {**dcfg, "per_slab": n}
    for mode in ("clusters", "columns", "segregation"):
        if dcfg.get(mode):
            out[mode] = {**dcfg[mode], "per_slab": n}
    return out


def _draw_range(rng, spec, integer=False):
    if isinstance(spec, (int, float)):
        return spec
    lo, hi = spec
    return int(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(float(lo), float(hi)))


def _defect_spec(kind: str, mat: Mapping[str, Any], rng, depth: float) -> dict:
    spec = {"kind": kind, "depth": depth}
    if kind == "substitution":
        spec["element"] = str(rng.choice(mat["substituents"]))
    return spec


def _defect_recipes(base: dict, dcfg: Mapping[str, Any], kinds: list[str], mat: Mapping[str, Any], rng) -> list[dict]:
    """Defect variants of one slab (``base``): single defects, clusters, partial columns, segregation."""
    out = []
    depths = list(dcfg.get("depths", [0.5]))
    for _ in range(int(dcfg.get("per_slab", 0))):
        n = int(rng.integers(1, int(dcfg.get("max_per_structure", 1)) + 1))
        specs = [_defect_spec(str(rng.choice(kinds)), mat, rng, float(rng.choice(depths))) for _ in range(n)]
        out.append({"kind": "defect", **base, "defects": specs, "seed": int(rng.integers(2**31))})
    cl = dcfg.get("clusters") or {}
    for _ in range(int(cl.get("per_slab", 0))):
        kind = str(rng.choice([k for k in kinds if k != "interstitial"] or kinds))
        centre = [float(v) for v in rng.uniform(0.3, 0.7, 2)]
        n = _draw_range(rng, cl.get("size", [3, 6]), integer=True)
        specs = [{**_defect_spec(kind, mat, rng, float(rng.choice(depths))), "position": centre} for _ in range(n)]
        out.append({"kind": "defect", **base, "defects": specs, "seed": int(rng.integers(2**31))})
    co = dcfg.get("columns") or {}
    for _ in range(int(co.get("per_slab", 0))):
        kind = str(rng.choice([k for k in kinds if k != "interstitial"] or kinds))
        spec = {
            **_defect_spec(kind, mat, rng, 0.0),
            "fraction": round(_draw_range(rng, co.get("fraction", [0.25, 1.0])), 3),
        }
        out.append({"kind": "defect", **base, "defects": [spec], "seed": int(rng.integers(2**31))})
    sg = dcfg.get("segregation") or {}
    for _ in range(int(sg.get("per_slab", 0))):
        skinds = [k for k in (sg.get("kinds") or kinds) if k in kinds and k != "interstitial"] or ["vacancy"]
        kind = str(rng.choice(skinds))
        spec = {
            **_defect_spec(kind, mat, rng, 0.0),
            "profile": {
                "peak": round(_draw_range(rng, sg.get("peak", [0.3, 0.8])), 3),
                "decay": round(_draw_range(rng, sg.get("decay", [2.0, 6.0])), 3),
            },
        }
        unit = _unit(mat)
        if kind == "substitution" and len(set(unit.get_chemical_symbols())) > 1:
            spec["species"] = _substituted_species(unit, spec["element"])
        out.append({"kind": "defect", **base, "defects": [spec], "seed": int(rng.integers(2**31))})
    return out


def _substituted_species(unit: Atoms, element: str) -> str:
    """The host species a substituent replaces: the one closest in group (Se, Cl -> Te in CdTe)."""
    from ase.data import atomic_numbers

    z = atomic_numbers[element]
    return min(sorted(set(unit.get_chemical_symbols())), key=lambda s: abs(atomic_numbers[s] - z))


def _angles(spec) -> list[float]:
    if isinstance(spec, Mapping):
        start, stop, step = float(spec.get("start", 1.0)), float(spec["stop"]), float(spec.get("step", 1.0))
        return [round(float(a), 4) for a in np.arange(start, stop + 1e-9, step)]
    return [float(a) for a in spec]


def boundary_recipes(b: Mapping[str, Any], mat: Mapping[str, Any], thickness: float, fov) -> list[dict]:
    """Recipes of one ``boundaries`` entry (explicit, or a csl / low_angle / twin generator)."""
    from surrogate.structures.csl import csl_boundaries, low_angle_boundaries

    translations = [list(tr) for tr in b.get("translations") or [[0, 0, 0]]]
    gen = b.get("generate")
    common = {"kind": "gb", "material": mat, "thickness": thickness, "fov": fov}
    if gen is None:
        return [
            {
                **common,
                "name": b.get("name", "gb"),
                "grain1": b["grain1"],
                "grain2": b["grain2"],
                "translation": tr,
                **({"zone_axis": b["zone_axis"]} if "zone_axis" in b else {}),
            }
            for tr in translations
        ]
    if gen == "twin":
        return [
            {"kind": "twin", "material": mat, "thickness": thickness, "fov": fov, "translation": tr}
            for tr in translations
        ]
    if gen not in ("csl", "low_angle"):
        raise ConfigError(
            f"structures.boundaries: unknown generator {gen!r}; use csl, low_angle or twin (or give grain1/grain2)"
        )
    unit = _unit(mat)
    compound = len(set(unit.get_chemical_symbols())) > 1
    polarities = [bool(p) for p in (b.get("polarities") or [True])] if compound else [False]
    out = []
    for axis in b.get("axes") or [[1, 1, 0]]:
        if gen == "csl":
            found = csl_boundaries(
                unit,
                axis,
                int(b.get("max_sigma", 99)),
                float(b.get("max_period", 40.0)),
                str(b.get("planes", "symmetric")),
                b.get("sigmas"),
            )
        else:
            found = low_angle_boundaries(
                unit,
                axis,
                _angles(b.get("angles", {"start": 1, "stop": 10, "step": 1.5})),
                [float(i) for i in b.get("inclinations") or [0.0]],
            )
        for cb in found:
            if (
                gen == "csl"
                and cb.sigma == 3
                and cb.symmetric
                and cb.planes[0]
                and sorted(map(abs, cb.planes[0])) == [1, 1, 1]
            ):
                # the coherent Σ3 (111) twin: the ideal twin, not a cut-and-rotated bicrystal
                out += [
                    {"kind": "twin", "material": mat, "thickness": thickness, "fov": fov, "translation": tr}
                    for tr in translations
                ]
                continue
            za = [int(v) for v in axis]
            height = None
            if cb.period:
                height = cb.period * max(1, int(np.ceil(fov[1] / cb.period - 1e-6)))
            for flip, tr in itertools.product(polarities, translations):
                out.append(
                    {
                        **common,
                        "name": cb.name + ("" if flip or not compound else "_inverted"),
                        "zone_axis": za,
                        "grain1": {"tilt": cb.tilt1},
                        "grain2": {"tilt": cb.tilt2, "flip_species": flip},
                        "translation": tr,
                        "csl": {**cb.params(), "polarity_flipped": flip},
                        "max_strain": 1e-6,
                        "max_height": max(60.0, (height or 0.0) * 1.001),
                    }
                )
    return out


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
            frames = cast("list[Atoms]", read(p, ":", format="extxyz"))
        except Exception as exc:
            raise ConfigError(
                f"structures.files: cannot read {p} as extxyz ({type(exc).__name__}); is it truncated?"
            ) from None
        recipes += [
            {"kind": "file", "path": str(p), "index": i, "config_id": a.info.get("config_id")}
            for i, a in enumerate(frames)
        ]
    return recipes


def _from_file(recipe: Mapping[str, Any]) -> Atoms:
    """A configuration read back from an extxyz frame, re-tagged (the id must not have changed)."""
    from ase.io import read

    from surrogate.structures.identity import tag

    atoms = cast(Atoms, read(recipe["path"], index=recipe["index"], format="extxyz"))  # one frame (int index)
    atoms.calc = None
    info = dict(atoms.info)
    atoms.info = {}
    extra = {k: info[k] for k in ("energy_per_atom", "energy_model", "mismatch") if k in info}
    if isinstance(info.get("labels"), dict):  # the class labels the frame was written with
        extra["labels"] = info["labels"]
    tag(
        atoms,
        info.get("family", "file"),
        info.get("params") or {"source": recipe["path"]},
        zone_axis=info.get("zone_axis"),
        **extra,
    )
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
    if kind == "defect" and "parent" in recipe:  # defects in a boundary (or any other recipe)
        return add_defects(build_structure(recipe["parent"]), recipe["defects"], seed=recipe["seed"])
    if kind == "rattled":
        return rattle(build_structure(recipe["parent"]), recipe["stdev"], recipe["seed"])
    if kind == "file":
        return _from_file(recipe)
    mat = recipe["material"]
    unit = _unit(mat)
    if kind == "gb":
        g1 = {"zone_axis": recipe.get("zone_axis", [1, 1, 0]), **recipe["grain1"]}
        g2 = {"zone_axis": recipe.get("zone_axis", [1, 1, 0]), **recipe["grain2"]}
        extra = {"name": recipe.get("name", "gb"), **(recipe.get("csl") or {})}
        options = {k: float(recipe[k]) for k in ("max_strain", "max_height") if k in recipe}
        return bicrystal(
            unit,
            g1,
            g2,
            fov=tuple(recipe["fov"]),
            thickness=recipe["thickness"],
            translation=tuple(recipe.get("translation", (0, 0, 0))),
            material=mat["name"],
            extra_params=extra,
            **options,
        )
    if kind == "twin":
        return coherent_twin(
            unit,
            fov=tuple(recipe["fov"]),
            thickness=recipe["thickness"],
            translation=tuple(recipe.get("translation", (0, 0, 0))),
            material=mat["name"],
        )
    slab = zone_axis_slab(
        unit, recipe["zone_axis"], mat.get("upward"), tuple(recipe["fov"]), recipe["thickness"], mat["name"]
    )
    if kind == "bulk":
        return slab
    if kind == "defect":
        return add_defects(slab, recipe["defects"], seed=recipe["seed"])
    raise ConfigError(f"unknown structure recipe kind {kind!r}: use bulk, defect, gb, twin or rattled")
