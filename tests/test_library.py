import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from surrogate.errors import ConfigError, LibraryError
from surrogate.library import Library, LibraryDataset, split_indices
from surrogate.library.store import decode_conditions, encode_conditions, int_to_id
from surrogate.simulate import ImagingConditions
from tests.conftest import REPO, tiny_library_config

TINY = [
    "library.images_per_structure=3",
    "library.shape=[32,32]",
    "library.scheduler=synchronous",
    "structures.materials=[{name: Si}]",
    "structures.zone_axes=[[1,1,0]]",
    "structures.thicknesses=[8.0]",
    "structures.fov=[6.4,6.4]",
    "structures.defects.per_slab=3",
    "structures.boundaries=[]",
    "progress=false",
]


def test_manifest_round_trips_and_counts_are_right(tiny_library):
    lib = Library(tiny_library)
    m = lib.manifest
    assert m == json.loads((tiny_library / "manifest.json").read_text())
    assert m["counts"]["units"] == 4 and m["counts"]["images"] == 12 == len(lib)
    assert m["counts"]["per_family_structures"] == {"bulk": 1, "defect": 3}
    assert sum(m["counts"]["per_mode_images"].values()) == 12
    assert lib.sampling == 0.2 and m["image_shape"] == [32, 32]
    ids = {int_to_id(c) for c in lib.config_ids()}
    assert len(ids) == 4
    for cid in ids:
        atoms = lib.atoms(cid)
        assert atoms.info["config_id"] == cid
    img = lib.image(0)
    assert img.shape == (32, 32) and np.isfinite(img).all() and img.std() > 0
    assert (tiny_library / "contact_sheet.png").stat().st_size > 1000
    assert "| defect | 3 | 9 |" in (tiny_library / "summary.md").read_text()


def test_condition_encoding_round_trips():
    conds = [
        ImagingConditions(mode="hrtem", method="multislice", dose=None, defocus=-3.5, seed=7),
        ImagingConditions(mode="abf", method="prism", inner=10, outer=20, dose=1e3, seed=8),
    ]
    assert [decode_conditions(r) for r in encode_conditions(conds)] == conds


def test_dataset_splits_by_configuration_and_by_condition(tiny_library):
    lib = Library(tiny_library)
    cids = lib.config_ids()
    for by in ("configuration", "condition"):
        parts = [split_indices(lib, s, by=by, fractions=(0.5, 0.25, 0.25)) for s in ("train", "val", "test")]
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(lib)))
        if by == "configuration":
            sets = [set(cids[p].tolist()) for p in parts]
            assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        else:
            seeds = [set(lib.condition_column("seed")[p].tolist()) for p in parts]
            assert not (seeds[0] & seeds[1]) and not (seeds[0] & seeds[2])
    with pytest.raises(ConfigError, match="unknown split"):
        split_indices(lib, "dev")


def test_dataset_is_lazy_and_worker_safe(tiny_library):
    import torch

    ds = LibraryDataset(tiny_library)
    image, label, index = ds[5]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert np.allclose(image[0].numpy(), Library(tiny_library).image(index))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    labels = torch.cat([b[1] for b in loader])
    assert len(labels) == 12 and len(set(labels.tolist())) == 4


def _build_cmd(out):
    return [
        sys.executable,
        "-m",
        "surrogate.library",
        f"library.output_dir={out}",
        *TINY,
        "structures.defects.per_slab=11",
    ]


def _read_all(root):
    lib = Library(root)
    from ase.db import connect

    with connect(root / "structures.db") as db:
        rows = sorted((r.config_id, r.natoms) for r in db.select())
    return np.asarray(lib.group["images"][:]), lib.config_ids(), lib.condition_table(), rows


def test_killed_build_resumes_to_identical_content(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_build_cmd(ref), check=True, env=env, capture_output=True, cwd=tmp_path)
    proc = subprocess.Popen(
        _build_cmd(killed), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while (
        time.time() < deadline and not list((killed / "done").glob("*.done"))
        if (killed / "done").exists()
        else time.time() < deadline
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "done").glob("*.done")))
    assert 0 < done < 12, "the kill must land mid-build"
    assert not (killed / "manifest.json").exists()
    subprocess.run(_build_cmd(killed), check=True, env=env, capture_output=True, cwd=tmp_path)
    a, b = _read_all(ref), _read_all(killed)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[2], b[2], equal_nan=True)
    assert a[3] == b[3]  # same structures, no duplicates
    assert len({r[0] for r in b[3]}) == len(b[3])
    assert (b[1] != 0).all()  # no holes


def test_rerun_with_another_config_is_refused(tiny_library):
    from surrogate.library.cli import build

    cfg = tiny_library_config(tiny_library, **{"library.images_per_structure": 5})
    with pytest.raises(LibraryError, match="another config"):
        build(cfg)


def test_rerun_of_a_finished_build_is_a_no_op(tiny_library):
    from surrogate.library.cli import build

    before = (tiny_library / "images.zarr").stat().st_mtime, len(Library(tiny_library))
    build(tiny_library_config(tiny_library))
    assert Library(tiny_library).manifest["build"]["new_units"] == 0
    assert len(Library(tiny_library)) == before[1]


def test_unwritable_output_is_a_clear_error(tmp_path):
    from surrogate.library.cli import build

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LibraryError, match="not writable"):
        build(tiny_library_config(blocker / "lib"))


def test_field_of_view_smaller_than_image_is_a_config_error(tmp_path):
    from surrogate.library.cli import build

    with pytest.raises(ConfigError, match="structures.fov"):
        build(tiny_library_config(tmp_path / "lib", **{"library.shape": "[64,64]"}))


def test_missing_or_corrupt_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(LibraryError, match="no manifest.json"):
        Library(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(LibraryError, match="corrupt manifest"):
        Library(tmp_path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("structures.materials=[{name: Qq}]", "unknown"),
        ("structures.zone_axes=[[0,0,0]]", "impossible zone axis"),
        ("simulate.ranges.defocus=[10,-10]", "empty range"),
        ("simulate.settings.potential_sampling=0.1", "beyond the maximum simulated angle"),
    ],
)
def test_cli_reports_bad_input_in_one_line(tmp_path, override, message):
    extra = ["simulate.modes=[{mode: haadf, method: multislice}]"] if "potential_sampling" in override else []
    cmd = [sys.executable, "-m", "surrogate.library", f"library.output_dir={tmp_path / 'lib'}", *TINY, override, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0]
    assert "Traceback" not in res.stderr


def test_cli_config_typo_is_reported_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "surrogate.library", "library.ouput_dir=x"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode != 0 and "ouput_dir" in res.stderr and "Traceback" not in res.stderr


def test_structure_files_join_the_library_with_their_energies(tmp_path):
    """Configurations written as extxyz (the search's for_library.extxyz) become library entries,
    keep their config_id and energy, and an edited file makes another library."""
    from ase.io import write

    from surrogate.library.cli import build
    from surrogate.library.energies import read_energies
    from surrogate.structures.recipes import build_structure
    from surrogate.structures.thermal import rattle

    base = build_structure(
        {"kind": "bulk", "material": {"name": "Si"}, "zone_axis": [1, 1, 0], "thickness": 8.0, "fov": [6.4, 6.4]}
    )
    frames = [rattle(base, 0.05, s) for s in (1, 2)]
    for i, a in enumerate(frames):
        a.info["energy_per_atom"], a.info["energy_model"] = -4.5 - i, "test-model"
    path = tmp_path / "found.extxyz"
    write(path, frames, format="extxyz")
    cfg = tiny_library_config(tmp_path / "lib", **{"structures.materials": "[]", "+structures.files": f"[{path}]"})
    build(cfg)
    energies = read_energies(tmp_path / "lib")
    assert sorted(energies.values()) == [-5.5, -4.5]
    assert set(energies) == {a.info["config_id"] for a in frames}
    write(path, frames[:1], format="extxyz")  # edited file: another library
    with pytest.raises(LibraryError, match="another config"):
        build(cfg)


def test_interrupted_build_never_redoes_a_finished_structures_pass(tmp_path, monkeypatch):
    """Each unit is one structure's one expensive pass: after an interruption only the unfinished
    units are simulated again (counted at the simulation call)."""
    import surrogate.library.build as build_module
    from surrogate.library.cli import build

    real_render, calls, state = build_module.render, [], {"interrupt_at": 2}

    def counting_render(atoms, conditions, *args, **kwargs):
        if len(calls) == state["interrupt_at"]:
            raise KeyboardInterrupt  # the interruption, mid-build
        calls.append(atoms.info["config_id"])
        return real_render(atoms, conditions, *args, **kwargs)

    monkeypatch.setattr(build_module, "render", counting_render)
    cfg = tiny_library_config(tmp_path / "lib")
    with pytest.raises(KeyboardInterrupt):
        build(cfg)
    first = list(calls)
    assert len(list((tmp_path / "lib" / "done").glob("*.done"))) == 2
    state["interrupt_at"] = None
    calls.clear()
    build(cfg)
    assert Library(tmp_path / "lib").manifest["counts"]["units"] == 4
    assert len(calls) == 2 and not set(calls) & set(first)  # the finished structures are not simulated again


def test_library_with_a_thickness_range_stores_each_images_thickness(tmp_path):
    from surrogate.library.cli import build

    out = tmp_path / "thick"
    build(tiny_library_config(out, **{"+simulate.ranges.thickness": "[2.0,8.0]"}))
    lib = Library(out)
    assert lib.condition_columns()[-1] == "thickness"
    t = lib.condition_column("thickness")
    assert t.shape == (len(lib),) and np.isfinite(t).all() and ((t >= 2.0) & (t <= 8.0)).all()
    assert len(np.unique(t)) == len(lib)  # drawn per image
    assert [lib.conditions(i).thickness for i in range(len(lib))] == t.tolist()
    # the seed column is found by name, wherever it sits
    assert lib.condition_column("seed").tolist() == [lib.conditions(i).seed for i in range(len(lib))]


def test_thickness_none_round_trips_as_nan():
    from surrogate.library.store import CONDITION_COLUMNS

    c = ImagingConditions(mode="haadf", method="incoherent", inner=60, outer=180, seed=3)
    rows = encode_conditions([c, c.replace(thickness=42.5)])
    assert np.isnan(rows[0, CONDITION_COLUMNS.index("thickness")])
    assert decode_conditions(rows[0]).thickness is None and decode_conditions(rows[1]).thickness == 42.5


def test_old_layout_without_thickness_decodes_by_column_name(tiny_library, tmp_path):
    """A store written before the thickness column (15 columns) reads with thickness None; resuming
    its build appends the column in place."""
    import shutil

    import zarr

    from surrogate.library.store import CONDITION_COLUMNS, condition_column, condition_columns, create_images

    old = tmp_path / "old"
    shutil.copytree(tiny_library, old)
    new = Library(tiny_library)
    table = new.condition_table()
    group = zarr.open_group(str(old / "images.zarr"), mode="a")
    del group["conditions"]
    legacy = list(CONDITION_COLUMNS[:-1])
    arr = group.create_array("conditions", shape=(len(table), 15), chunks=(3, 15), dtype="float64", fill_value=np.nan)
    arr[:] = table[:, : len(legacy)]
    arr.attrs["columns"] = legacy
    lib = Library(old)
    assert lib.condition_columns() == tuple(legacy)
    assert [lib.conditions(i) for i in range(len(lib))] == [new.conditions(i) for i in range(len(new))]
    assert all(lib.conditions(i).thickness is None for i in range(len(lib)))
    assert np.isnan(lib.condition_column("thickness")).all()
    assert (lib.condition_column("seed") == new.condition_column("seed")).all()
    assert (lib.noise_free() == new.noise_free()).all()
    # without column names the width tells the layout
    assert condition_columns(np.zeros((2, 15))) == tuple(legacy)
    with pytest.raises(LibraryError, match="no conditions column"):
        condition_column(arr, "colour")
    # a resumed build upgrades the array: the old rows keep their values, thickness reads NaN
    create_images(old / "images.zarr", len(table), (32, 32), 3, {})
    lib = Library(old)
    assert lib.condition_columns() == CONDITION_COLUMNS
    assert np.isnan(lib.condition_column("thickness")).all()
    assert [lib.conditions(i) for i in range(len(lib))] == [new.conditions(i) for i in range(len(new))]
