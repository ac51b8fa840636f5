"""Resumable, parallel library build: structures -> abTEM images -> ASE db + zarr + manifest.

Work is split into units of one structure recipe x K imaging conditions. Unit ``u`` owns image
slots ``[u*K, (u+1)*K)``, i.e. exactly one zarr chunk of each array, so concurrent workers never
share a chunk. Workers build the structure, simulate and write their chunks; the driver alone
writes the SQLite row and then the unit's ``done/`` marker (atomic rename). Rerunning a killed build
skips units with markers and rewrites the rest, so it ends with exactly the content of an
uninterrupted build.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from surrogate import __version__
from surrogate.errors import ConfigError, LibraryError
from surrogate.library.store import (
    FORMAT_VERSION,
    atomic_write_text,
    create_images,
    encode_conditions,
    id_to_int,
    open_images,
)
from surrogate.simulate.conditions import MODES, sample_conditions
from surrogate.simulate.images import SimulationSettings, render
from surrogate.structures.labels import labels_of
from surrogate.structures.recipes import _plain, build_structure, plan_structures

__all__ = ["build_library", "run_unit", "config_hash"]


def config_hash(obj: Any) -> str:
    """Hash of a JSON-serialisable config (16 hex characters)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _settings(sim: Mapping[str, Any]) -> SimulationSettings:
    values = dict(sim.get("settings") or {})
    known = set(SimulationSettings.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown simulate.settings keys {sorted(unknown)}: valid keys are {sorted(known)}")
    return SimulationSettings(**values)


def unit_conditions(sim: Mapping[str, Any], unit: int, k: int, sampling: float, seed: int):
    """The K imaging conditions of one unit (deterministic in seed and unit index)."""
    return sample_conditions(
        k, sim.get("ranges") or {}, sim.get("modes") or [], seed=seed * 1_000_003 + unit, sampling=sampling
    )


def run_unit(
    root: str, unit: int, recipe: Mapping[str, Any], sim: Mapping[str, Any], k: int, shape, sampling: float, seed: int
) -> dict:
    """Build, simulate and write one unit's chunks; returns what the driver records."""
    atoms = build_structure(recipe)
    conditions = unit_conditions(sim, unit, k, sampling, seed)
    images = render(atoms, conditions, tuple(shape), _settings(sim))
    group = open_images(Path(root) / "images.zarr", mode="r+")
    sl = slice(unit * k, (unit + 1) * k)
    group["images"][sl] = images
    group["conditions"][sl] = encode_conditions(conditions)
    group["config_id"][sl] = np.full(k, id_to_int(atoms.info["config_id"]), dtype=np.uint64)
    return {"unit": unit, "atoms": atoms}


def _write_row(db, atoms, unit: int) -> None:
    info = dict(atoms.info)
    cid = info["config_id"]
    if db.count(config_id=cid):
        return
    params = info.get("params", {})
    kvp = {
        "config_id": cid,
        "family": info["family"],
        "material": str(params.get("material", atoms.get_chemical_formula())),
        "zone_axis": "[" + "".join(str(v) for v in info.get("zone_axis", [])) + "]",
        "n_atoms": len(atoms),
        "unit": unit,
    }
    # class labels as scalar columns (surrogate.structures.labels.DB_COLUMNS; None omitted); the
    # library's own family/material/zone_axis columns keep their meaning
    kvp.update({k: v for k, v in labels_of(atoms).db_columns().items() if k not in kvp})
    if "energy_per_atom" in info and "energy_model" in info:  # configurations from the search carry theirs
        kvp.update(
            energy_per_atom=float(info["energy_per_atom"]), energy_model=str(info["energy_model"]), energy_flag="ok"
        )
    db.write(atoms, key_value_pairs=kvp, data={"info": info})


def _client(lib: Mapping[str, Any]):
    scheduler = lib.get("scheduler") or "local"
    if scheduler == "synchronous":
        return None
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=int(lib.get("n_workers") or os.cpu_count() or 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=lib.get("dashboard_address"),
            silence_logs=40,
        )
        return Client(cluster)
    if "://" not in str(scheduler):
        raise ConfigError(
            f"library.scheduler={scheduler!r}: use local, synchronous or a dask scheduler address (tcp://host:8786)"
        )
    try:
        return Client(scheduler, timeout=float(lib.get("connect_timeout") or 30))
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach the dask scheduler {scheduler} ({type(exc).__name__}): start it, "
            "check the address, or use library.scheduler=local"
        ) from None


def _done_units(done_dir: Path) -> set[int]:
    return {int(p.stem) for p in done_dir.glob("*.done")}


def build_library(
    structures: Mapping[str, Any],
    simulate: Mapping[str, Any],
    library: Mapping[str, Any],
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Build (or resume) a library and return its directory.

    Parameters
    ----------
    structures
        Structure recipe config (see :func:`surrogate.structures.plan_structures`).
    simulate
        ``{settings: SimulationSettings fields, modes: [{mode, method, weight}], ranges: {...}}``.
    library
        ``{output_dir, images_per_structure, shape, sampling, scheduler, n_workers, contact_sheet}``;
        ``scheduler`` is ``local`` (dask LocalCluster), ``synchronous`` (in-process) or a
        scheduler address such as ``tcp://host:8786``.
    seed
        Seed of the imaging conditions and defect sites.
    """
    structures, simulate, library = _plain(structures), _plain(simulate), _plain(library)
    root = Path(library.get("output_dir") or "library").expanduser()
    k = int(library.get("images_per_structure", 1))
    rows, cols = (int(v) for v in library.get("shape", (128, 128)))
    shape = (rows, cols)
    sampling = float(library.get("sampling", 0.2))
    if k < 1 or min(shape) < 8 or sampling <= 0:
        raise ConfigError("library.images_per_structure >= 1, shape >= 8 px and sampling > 0 are required")
    fov = structures.get("fov")
    need = (shape[1] * sampling, shape[0] * sampling)
    if fov is None or fov[0] < need[0] - 1e-6 or fov[1] < need[1] - 1e-6:
        raise ConfigError(
            f"structures.fov {fov} is smaller than the image ({need[0]:.1f} x {need[1]:.1f} Å = shape x sampling): "
            "raise structures.fov or lower library.shape"
        )
    _settings(simulate)  # validate early
    unit_conditions(simulate, 0, max(k, 8), sampling, seed)  # validate the ranges early
    recipes = plan_structures(structures)
    n_units = len(recipes)
    content = {
        "structures": structures,
        "simulate": simulate,
        "seed": seed,
        "library": {"images_per_structure": k, "shape": list(shape), "sampling": sampling},
    }
    if structures.get("files"):  # an edited structure file makes another library
        from surrogate.io.files import file_hash

        content["files"] = {str(f): file_hash(Path(f).expanduser()) for f in structures["files"]}
    chash = config_hash(content)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "done").mkdir(exist_ok=True)
        probe = root / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise LibraryError(
            f"output directory {root} is not writable ({exc.strerror}): choose another library.output_dir"
        ) from None
    plan_path = root / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old.get("config_hash") != chash:
            raise LibraryError(
                f"{root} holds a library built with another config (hash {old.get('config_hash')} != {chash}): "
                "use a new library.output_dir or delete the old one"
            )
    else:
        atomic_write_text(plan_path, json.dumps({"config_hash": chash, "units": n_units, "config": content}, indent=1))
    create_images(
        root / "images.zarr",
        n_units * k,
        shape,
        k,
        {"canonical_sampling": sampling, "config_hash": chash, "format_version": FORMAT_VERSION},
    )
    done = _done_units(root / "done")
    todo = [u for u in range(n_units) if u not in done]
    from ase.db import connect
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=n_units * k, initial=len(done) * k, unit="img", desc="library", disable=not progress)
    db = connect(root / "structures.db")  # no `with`: every row commits on its own, before its marker

    def record(result):
        _write_row(db, result["atoms"], result["unit"])
        atomic_write_text(root / "done" / f"{result['unit']:08d}.done", result["atoms"].info["config_id"])
        bar.update(k)

    client = _client(library) if todo else None
    try:
        if client is None:
            for u in todo:
                record(run_unit(str(root), u, recipes[u], simulate, k, shape, sampling, seed))
        else:
            from distributed import as_completed

            futures = [
                client.submit(
                    run_unit,
                    str(root.resolve()),
                    u,
                    recipes[u],
                    simulate,
                    k,
                    shape,
                    sampling,
                    seed,
                    key=f"unit-{chash}-{u}",
                    pure=False,
                )
                for u in todo
            ]
            for fut in as_completed(futures):
                record(fut.result())
    finally:
        bar.close()
        if client is not None:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    elapsed = time.perf_counter() - t0
    missing = set(range(n_units)) - _done_units(root / "done")
    if missing:
        raise LibraryError(f"{len(missing)} units of {root} did not finish; rerun the build to resume")
    manifest = write_manifest(root, chash, content, n_units, k, shape, sampling, elapsed=elapsed, new_units=len(todo))
    if library.get("contact_sheet", True):
        from surrogate.library.report import contact_sheet, summary

        contact_sheet(root)
        summary(root, manifest)
    return root


def write_manifest(root: Path, chash: str, content: dict, n_units: int, k: int, shape, sampling, **timing) -> dict:
    """Count what the library holds and write ``manifest.json`` atomically."""
    import abtem
    from ase.db import connect

    group = open_images(root / "images.zarr")
    cids = np.asarray(group["config_id"][:])
    if (cids == 0).any():
        raise LibraryError(f"{int((cids == 0).sum())} empty image slots in {root}: rerun the build to fill them")
    modes = np.asarray(group["conditions"][:, 0]).astype(int)
    family_of = {
        row.config_id: row.family for row in connect(root / "structures.db").select(columns=["key_value_pairs"])
    }
    missing = {f"{int(c):016x}" for c in np.unique(cids)} - set(family_of)
    if missing:
        raise LibraryError(
            f"{len(missing)} configurations of {root} have images but no structure row: rebuild the library"
        )
    n_structures = len(family_of)
    per_family_images = Counter(family_of.get(f"{int(c):016x}", "?") for c in cids[::k])
    manifest = {
        "format_version": FORMAT_VERSION,
        "library_hash": chash,
        "config_hash": chash,
        "package_version": __version__,
        "abtem_version": abtem.__version__,
        "canonical_sampling": sampling,
        "image_shape": list(shape),
        "images_per_structure": k,
        "counts": {
            "units": n_units,
            "images": n_units * k,
            "structures": n_structures,
            "per_family_structures": dict(Counter(family_of.values())),
            "per_family_images": {f: n * k for f, n in per_family_images.items()},
            "per_mode_images": {MODES[m]: int(n) for m, n in zip(*np.unique(modes, return_counts=True))},
        },
        "build": {k2: float(v) for k2, v in timing.items()},
        "config": content,
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1))
    return manifest
