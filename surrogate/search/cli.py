"""Console entry point: ``python -m surrogate.search`` / ``surrogate-search`` (Hydra).

Examples
--------
    python -m surrogate.search                                        # BH on a CdTe Te-vacancy cell (LJ toy)
    python -m surrogate.search checkpoint=ckpt.ckpt search=ga search.generations=20
    python -m surrogate.search target.image=target.npy target.weight=0.05
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import hydra
import numpy as np
from omegaconf import DictConfig

from surrogate.cli import config_dict, run_hydra
from surrogate.errors import ConfigError, exit_on_user_error

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["run_search", "main"]


def _start(cfg: DictConfig):
    from surrogate.structures import build_structure, tag

    if cfg.get("structure_file"):
        from ase.io import read

        path = Path(cfg.structure_file)
        if not path.is_file():
            raise ConfigError(f"structure_file not found: {path}; give an existing extxyz/cif path")
        atoms = cast("Atoms", read(path, index=int(cfg.get("structure_index", 0))))  # one frame (int index)
        atoms.calc = None
        if "config_id" not in atoms.info or "family" not in atoms.info:
            tag(
                atoms,
                atoms.info.get("family", "file"),
                atoms.info.get("params") or {"source": str(path)},
                zone_axis=atoms.info.get("zone_axis"),
            )
        return atoms
    if not cfg.get("structure"):
        raise ConfigError("no starting configuration: set structure (a recipe) or structure_file")
    return build_structure(config_dict(cfg.structure))


def _calculator(cfg: DictConfig):
    from surrogate.potential.energy import resolve_calculator

    if cfg.get("checkpoint"):
        return resolve_calculator(checkpoint=cfg.checkpoint)
    if not cfg.get("calculator"):
        raise ConfigError("no energy model: set checkpoint=<potential checkpoint> or calculator._target_")
    try:
        calc = hydra.utils.instantiate(cfg.calculator)
    except Exception as exc:  # noqa: BLE001 - hydra wraps import and argument errors
        raise ConfigError(
            f"cannot build calculator {cfg.calculator.get('_target_')}: {str(exc).splitlines()[0]}"
        ) from None
    return resolve_calculator(calc)


def _target(cfg: DictConfig, out: Path):
    from surrogate.search.objectives import ImageObjective
    from surrogate.simulate import ImagingConditions

    t = cfg.get("target")
    if not t or (not t.get("image") and not t.get("from_structure")):
        return None
    conditions = ImagingConditions.from_dict(config_dict(t.conditions))
    if t.get("image"):
        path = Path(t.image)
        if path.suffix != ".npy" or not path.is_file():
            raise ConfigError(f"target.image {path} must be an existing .npy file (H x W, at conditions.sampling)")
        image = np.load(path, allow_pickle=False)
    else:
        from surrogate.simulate import render
        from surrogate.structures import build_structure

        recipe = config_dict(t.from_structure)
        atoms = build_structure(recipe)
        fov = recipe.get("fov", [12.8, 12.8])
        shape = (
            tuple(t.shape) if t.get("shape") else (int(fov[1] / conditions.sampling), int(fov[0] / conditions.sampling))
        )
        image = render(atoms, [conditions], shape, noise=False)[0]
        out.mkdir(parents=True, exist_ok=True)
        from surrogate.io.files import atomic_open

        with atomic_open(out / "target.npy", "wb") as f:
            np.save(f, image)
    return ImageObjective(image, conditions)


def run_search(cfg: DictConfig):
    """Run (or resume) the search described by a composed ``search`` config; returns the
    :class:`surrogate.search.SearchResult` (candidates also in ``output_dir``)."""
    from surrogate.search.basin import basin_hopping
    from surrogate.search.candidates import export_for_library
    from surrogate.search.ga import genetic_search

    out = Path(cfg.output_dir)
    start = _start(cfg)
    model = _calculator(cfg)
    image = _target(cfg, out)
    s = config_dict(cfg.search)
    method = s.pop("method", "basin")
    weight = float(cfg.target.get("weight") or 0.0) if cfg.get("target") else 0.0
    common = dict(image=image, image_weight=weight, seed=int(cfg.seed), output_dir=out, progress=bool(cfg.progress))
    if method == "basin":
        result = basin_hopping(start, model, **s, **common)
    elif method == "ga":
        result = genetic_search(start, model, **s, **common)
    else:
        raise ConfigError(f"unknown search method {method!r}: use search=basin or search=ga")
    e = config_dict(cfg.export) if cfg.get("export") else {}
    export_for_library(result.candidates, out / "for_library.extxyz", **e)
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="search")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    result = run_search(cfg)
    best = result.best.info
    print(
        f"{len(result.candidates)} candidates ({len(result.pareto())} on the Pareto front) in {result.output_dir}; "
        f"best {best['config_id']}: {best['energy_per_atom']:.4f} eV/atom"
        + (f", mismatch {best['mismatch']:.3f}" if np.isfinite(best["mismatch"]) else "")
        + f"; for the library: {result.output_dir / 'for_library.extxyz'}"
    )


def main(argv: list[str] | None = None) -> None:
    """``surrogate-search [key=value ...]``; a config typo is a one-line error."""
    run_hydra(_main, "search", argv)


if __name__ == "__main__":
    main()
