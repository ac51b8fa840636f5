"""Library energies: per-atom energies from a calculator, flags, resumption, the sidecar, grouping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from surrogate.library.energies import (
    annotate_energies,
    energy_model,
    main,
    read_compositions,
    read_energies,
    relative_energies,
    run,
)


class CountingEMT(EMT):
    """EMT that counts its calculations (a stand-in for the neural potential)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        super().calculate(*args, **kwargs)


def _structures():
    from surrogate.structures import tag

    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    alloy = cu.copy()
    alloy.numbers[::2] = 79
    rattled = cu.copy()
    rattled.positions += np.random.default_rng(0).normal(0, 0.08, rattled.positions.shape)
    si = bulk("Si", "diamond", a=5.431, cubic=True)
    out = []
    for a, fam in ((cu, "bulk"), (alloy, "defect"), (rattled, "rattled"), (si, "bulk")):
        tag(a, fam, {"material": a.get_chemical_formula()}, zone_axis=[1, 0, 0])
        out.append(a)
    bad = cu.copy()  # two atoms on top of each other: tag() would refuse it, so it goes into the db raw
    bad.positions[1] = bad.positions[0] + [0.1, 0, 0]
    bad.info = {"config_id": "00000000000000ff", "family": "bulk", "params": {"material": "Cu"}, "zone_axis": [1, 0, 0]}
    out.append(bad)
    return out


@pytest.fixture
def library(tmp_path):
    """A library directory with only its structures.db, rows written as the library build writes them."""
    from ase.db import connect

    from surrogate.library.build import _write_row

    db = connect(tmp_path / "structures.db")
    for unit, atoms in enumerate(_structures()):
        _write_row(db, atoms, unit)
    return tmp_path


def test_energies_are_per_atom_and_flags_are_recorded(library):
    from ase.db import connect

    CountingEMT.calls = 0
    summary = annotate_energies(library, CountingEMT(), progress=False)
    rows = {r.config_id: r for r in connect(library / "structures.db").select()}
    for a in _structures()[:3]:
        ref = a.copy()
        ref.calc = EMT()
        row = rows[a.info["config_id"]]
        assert row.energy_flag == "ok"
        assert row.energy_per_atom == pytest.approx(ref.get_potential_energy() / len(a), rel=1e-12)
        assert row.energy_model == summary["energy_model"]
    overlap = rows["00000000000000ff"]
    assert overlap.energy_flag == "overlap" and "overlapping atoms" in overlap.energy_message
    assert "energy_per_atom" not in overlap.key_value_pairs
    si = rows[_structures()[3].info["config_id"]]
    assert si.energy_flag in ("unknown_element", "calculator_error") and "Si" in si.energy_message
    c = summary["counts"]
    assert (c["rows"], c["annotated"], c["flagged"], c["computed"]) == (5, 3, 2, 5)
    assert c["flags"]["overlap"] == 1
    sidecar = json.loads((library / "energies.json").read_text())
    assert sidecar["energy_model"] == energy_model(library) == summary["energy_model"]
    assert sidecar["counts"] == c and sidecar["date"]


def test_declared_elements_flag_unknown_elements_without_calling_the_model(library):
    summary = annotate_energies(library, EMT(), elements=["Cu", "Au"], progress=False)
    assert summary["counts"]["flags"] == {"overlap": 1, "unknown_element": 1}


def test_rerun_skips_done_rows_and_relax_adds_only_the_relaxation(library):
    from ase.db import connect

    annotate_energies(library, CountingEMT(), progress=False)
    CountingEMT.calls = 0
    summary = annotate_energies(library, CountingEMT(), progress=False)
    assert CountingEMT.calls == 0 and summary["counts"]["computed"] == 0 and summary["counts"]["annotated"] == 3
    summary = annotate_energies(library, CountingEMT(), relax=True, fmax=0.05, steps=100, progress=False)
    assert summary["counts"]["computed"] == 3 and summary["counts"]["relaxed"] == 3  # flagged rows are not retried
    rows = {r.config_id: r for r in connect(library / "structures.db").select()}
    rattled = rows[_structures()[2].info["config_id"]]
    assert rattled.relaxed_energy_per_atom < rattled.energy_per_atom
    assert rattled.data["relaxed_positions"].shape == (len(rattled.toatoms()), 3)
    assert rattled.relax_converged
    CountingEMT.calls = 0
    annotate_energies(library, CountingEMT(), relax=True, progress=False)
    assert CountingEMT.calls == 0


def test_another_model_recomputes_and_reading_follows_the_recorded_model(library):
    first = annotate_energies(library, EMT(), relax=True, steps=20, progress=False)
    second = annotate_energies(library, EMT(), model_id="other-model", progress=False)
    assert second["counts"]["computed"] == 5 and second["energy_model"] == "other-model" != first["energy_model"]
    from ase.db import connect

    for row in connect(library / "structures.db").select():
        assert row.energy_model == "other-model" and "relaxed_energy_per_atom" not in row.key_value_pairs
    energies = read_energies(library)
    assert set(energies) == {a.info["config_id"] for a in _structures()}
    assert sum(math.isfinite(e) for e in energies.values()) == 3
    assert all(math.isnan(e) for e in read_energies(library, model=first["energy_model"]).values())
    assert all(math.isnan(e) for e in read_energies(library, relaxed=True).values())
    history = json.loads((library / "energies.json").read_text())["history"]
    assert history[-1]["energy_model"] == first["energy_model"]


def test_relative_energies_group_by_composition(library):
    energies = {"a": -1.0, "b": -1.5, "c": -0.2, "d": float("nan"), "e": 3.0}
    compositions = {"a": "CdTe", "b": "CdTe", "c": "Cd47Te48", "d": "CdTe"}
    rel = relative_energies(energies, compositions)
    assert rel["a"] == pytest.approx(0.5) and rel["b"] == 0.0 and rel["c"] == 0.0 and rel["e"] == 0.0
    assert math.isnan(rel["d"])
    comp = read_compositions(library)
    s = _structures()
    assert comp[s[0].info["config_id"]] == "Cu" and comp[s[1].info["config_id"]] == "AuCu"


def test_cli_annotates_and_reports_bad_input_in_one_line(library, tmp_path, capsys):
    summary = run(["--library", str(library), "--calculator", "ase.calculators.emt:EMT", "--no-progress"])
    assert summary["counts"]["annotated"] == 3
    assert "3/5 annotated" in capsys.readouterr().out
    # the console script returns None (exit status 0), not the summary (which sys.exit would print and fail on)
    assert main(["--library", str(library), "--calculator", "ase.calculators.emt:EMT", "--no-progress"]) is None
    with pytest.raises(SystemExit) as exc:
        main(["--library", str(tmp_path / "nowhere"), "--calculator", "ase.calculators.emt:EMT"])
    assert exc.value.code == 2
    assert "no structures.db" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--library", str(library), "--checkpoint", str(tmp_path / "missing.ckpt")])
    assert "checkpoint not found" in capsys.readouterr().err


def test_checkpoint_is_identified_by_its_hash(tmp_path, monkeypatch):
    """A checkpoint path goes through surrogate.potential.calculator.load_calculator, lazily."""
    import hashlib
    import sys
    import types

    from surrogate.potential.energy import resolve_calculator

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights")
    fake = types.ModuleType("surrogate.potential.calculator")
    fake.load_calculator = lambda path: EMT()
    monkeypatch.setitem(sys.modules, "surrogate.potential", types.ModuleType("surrogate.potential"))
    monkeypatch.setitem(sys.modules, "surrogate.potential.calculator", fake)
    model = resolve_calculator(checkpoint=ckpt)
    assert model.model_id == hashlib.sha256(b"weights").hexdigest()[:16]
    assert model.checkpoint == str(ckpt.resolve()) and isinstance(model.calculator, EMT)


def test_several_checkpoints_each_configuration_gets_the_potential_of_its_elements(tmp_path):
    """CdTe and Si potentials together: each row from the one that knows its elements, the rest flagged."""
    from ase.build import bulk
    from ase.db import connect

    from surrogate.library.build import _write_row
    from surrogate.potential.calculator import load_calculator
    from surrogate.potential.energy import checkpoint_model_id
    from surrogate.structures import tag
    from tests.conftest import REPO

    ckpts = [REPO / "checkpoints" / "potential_cdte.pt", REPO / "checkpoints" / "potential_si.pt"]
    cdte = bulk("CdTe", "zincblende", a=6.48, cubic=True)
    si = bulk("Si", "diamond", a=5.431, cubic=True)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    db = connect(tmp_path / "structures.db")
    for unit, a in enumerate((cdte, si, cu)):
        tag(a, "bulk", {"material": a.get_chemical_formula()}, zone_axis=[1, 0, 0])
        _write_row(db, a, unit)
    summary = annotate_energies(tmp_path, checkpoint=[str(c) for c in ckpts], progress=False)
    ids = [checkpoint_model_id(c) for c in ckpts]
    assert summary["energy_model"] == "+".join(ids) == energy_model(tmp_path)
    assert summary["counts"]["annotated"] == 2 and summary["counts"]["flags"] == {"unknown_element": 1}
    rows = {r.formula: r.key_value_pairs for r in connect(tmp_path / "structures.db").select()}
    assert rows["Cd4Te4"]["energy_model"] == ids[0] and rows["Si8"]["energy_model"] == ids[1]
    energies = read_energies(tmp_path)
    for atoms, ckpt in ((cdte, ckpts[0]), (si, ckpts[1])):
        b = atoms.copy()
        b.calc = load_calculator(str(ckpt))
        assert energies[atoms.info["config_id"]] == pytest.approx(b.get_potential_energy() / len(b), abs=1e-5)
    assert np.isnan(energies[cu.info["config_id"]])
    assert annotate_energies(tmp_path, checkpoint=[str(c) for c in ckpts], progress=False)["counts"]["computed"] == 0


# --------------------------------------------------------------------------- boundary / formation energies
def _cdte_library(tmp_path):
    """A library of CdTe [110] configurations: bulk slab, a Cd vacancy, the Sigma3 twin and the Sigma9 tilt."""
    from ase.db import connect

    from surrogate.library.build import _write_row
    from surrogate.structures import add_defects, bicrystal, crystal, zone_axis_slab

    unit = crystal("CdTe")
    slab = zone_axis_slab(unit, (1, 1, 0), None, (9.0, 6.0), 6.0, "CdTe")
    vac = add_defects(slab, [{"kind": "vacancy", "species": "Cd"}], seed=0)
    z = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1]}
    twin = bicrystal(
        unit,
        {**z, "tilt": 54.73561},
        {**z, "tilt": 125.26439, "flip_species": True},
        fov=(20.0, 12.0),
        thickness=6.0,
        material="CdTe",
    )
    tilt = bicrystal(
        unit, {**z, "tilt": -19.47}, {**z, "tilt": 19.47}, fov=(20.0, 12.0), thickness=6.0, material="CdTe"
    )
    db = connect(tmp_path / "structures.db")
    for unit_index, atoms in enumerate((slab, vac, twin, tilt)):
        _write_row(db, atoms, unit_index)
    return tmp_path, {"slab": slab, "vac": vac, "twin": twin, "tilt": tilt}


CDTE_CKPT = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "checkpoints" / "potential_cdte.pt")


def test_bicrystals_get_boundary_energies_and_defects_formation_energies(tmp_path):
    from ase.db import connect

    from surrogate.library.energies import read_boundary_energies, read_formation_energies
    from surrogate.potential.energy import resolve_calculator
    from surrogate.potential.interfaces import boundary_energy, formation_energy

    lib, s = _cdte_library(tmp_path)
    summary = annotate_energies(lib, checkpoint=CDTE_CKPT, progress=False)
    assert summary["counts"]["gb_energy"] == 2 and summary["counts"]["formation_energy"] == 1
    assert summary["settings"]["condition"] == "mid"
    side = json.loads((lib / "energies.json").read_text())
    assert side["settings"]["condition"] == "mid"
    gb = read_boundary_energies(lib)
    assert set(gb) == {s["twin"].info["config_id"], s["tilt"].info["config_id"]}  # bicrystals only
    calc = resolve_calculator(checkpoint=CDTE_CKPT).calculator
    for name in ("twin", "tilt"):
        assert gb[s[name].info["config_id"]] == pytest.approx(boundary_energy(s[name], calc), rel=1e-5)
        assert 50 < gb[s[name].info["config_id"]] < 5000  # mJ/m^2, unrelaxed
    ef = read_formation_energies(lib)
    assert list(ef) == [s["vac"].info["config_id"]]
    assert ef[s["vac"].info["config_id"]] == pytest.approx(formation_energy(s["vac"], calc), rel=1e-5)
    row = connect(lib / "structures.db").get(config_id=s["tilt"].info["config_id"])
    assert set(row.data["excess"]["limits"]) == {"Cd-rich", "Te-rich"} and row.data["excess"]["n_boundaries"] == 2
    assert "info" in row.data  # the builder's info survives the update


def test_old_libraries_read_as_nan_and_are_completed_with_relaxed_values(tmp_path):
    from ase.db import connect

    from surrogate.library.energies import read_boundary_energies

    lib, s = _cdte_library(tmp_path)
    annotate_energies(lib, checkpoint=CDTE_CKPT, progress=False)
    db = connect(lib / "structures.db")
    for row in db.select(family="gb"):  # a library annotated before gb_energy existed
        db.update(row.id, delete_keys=["gb_energy", "excess_condition"])
    assert all(np.isnan(v) for v in read_boundary_energies(lib).values())
    summary = annotate_energies(lib, checkpoint=CDTE_CKPT, relax=True, steps=10, progress=False)
    assert summary["counts"]["computed"] == 4  # all rows: the relaxation was asked for
    gb, gb_relaxed = read_boundary_energies(lib), read_boundary_energies(lib, relaxed=True)
    for cid in gb:
        assert np.isfinite(gb[cid]) and gb_relaxed[cid] <= gb[cid] + 1e-9  # relaxing never raises it
    row = db.get(config_id=s["twin"].info["config_id"])
    assert row.relax_energy_drop >= 0 and row.relax_max_displacement > 0
    assert row.relax_stopped in ("converged", "steps", "short_contact")
    # a second pass with the same settings computes nothing
    assert annotate_energies(lib, checkpoint=CDTE_CKPT, relax=True, steps=10, progress=False)["counts"]["computed"] == 0
