"""benchmarks/potential_universal.py: the comparison with the universal potentials runs end to end
on a two-structure split with our model (the universal venv is not part of the test environment)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
UNIVERSAL_PYTHON = Path("/work/venvs/universal/bin/python")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "_potential_universal", REPO / "benchmarks" / "potential_universal.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_run_on_two_structures_with_our_model(bench, tmp_path):
    # a universal model whose interpreter is missing is reported, not fatal
    res = bench.main(
        ["--smoke", "--models", "ours", "chgnet", "--universal-python", "/nonexistent/python", "--out", str(tmp_path)]
    )
    assert res["models"]["ours"]["error"] is None and res["models"]["chgnet"]["error"]
    saved = json.loads((tmp_path / "potential_universal_smoke.json").read_text())
    for material in ("Si", "CdTe"):
        acc = saved["accuracy"][material]["ours"]
        assert acc["n_frames"] == 2 and acc["n_train_frames"] == 2
        assert np.isfinite(acc["energy_mae_raw"]) and np.isfinite(acc["energy_mae_ref"])
        assert 0 < acc["forces_mae"] < 500  # meV/Å: a trained model, not noise
        assert saved["speed"][material]["ours"]["atoms"] == 64
    assert "chgnet" not in saved["accuracy"]["Si"]
    # physics (light): our Si a0 within 0.5 % of PBE; CdTe model and DFT on the same labelled cells
    assert saved["physics"]["Si"]["ours"]["a0"] == pytest.approx(5.469, rel=0.005)
    labelled = saved["physics"]["CdTe"]["ours"]["labelled"]
    pair = labelled["Schottky pair V_Cd + V_Te, ideal 8-atom cells [eV]"]
    assert pair["model"] == pytest.approx(pair["dft"], abs=0.3)
    md = (tmp_path / "potential_universal_smoke.md").read_text()
    assert "2 test frames" in md and "evenly spaced subsets" in md and "failed" in md
    assert (tmp_path / "potential_universal_smoke.ours.json").is_file()  # resumable per model


def test_per_element_reference_removes_a_constant_offset_per_element(bench):
    from ase.build import bulk

    frames = []
    for k, (n_cd, n_te) in enumerate([(4, 4), (3, 4), (4, 3), (5, 3)]):
        a = bulk("CdTe", "zincblende", 6.48, cubic=True)
        a = a[
            [i for i, s in enumerate(a.get_chemical_symbols()) if s == "Cd"][:n_cd]
            + [i for i, s in enumerate(a.get_chemical_symbols()) if s == "Te"][:n_te]
        ]
        a.info["REF_energy"] = -2.0 * len(a) + 0.01 * k
        frames.append(a)
    offset = {"Cd": 1.5, "Te": -0.7}  # a model whose atomic energies differ by a constant per element
    pred = {"energy": [a.info["REF_energy"] - sum(offset[s] for s in a.get_chemical_symbols()) for a in frames]}
    c = bench.fit_reference(frames, pred["energy"], ["Cd", "Te"])
    assert c == pytest.approx([1.5, -0.7], abs=1e-9)
    forces = {"f_abs": [0.0] * 4, "f_n": [3] * 4}
    acc = bench.accuracy(frames, {**pred, **forces}, frames, {**pred, **forces})
    assert acc["energy_mae_ref"] == pytest.approx(0.0, abs=1e-9) and acc["energy_mae_raw"] > 100
    assert bench._subset(list(range(10)), 3) == [0, 4, 9] and bench._subset([1, 2], None) == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(not UNIVERSAL_PYTHON.is_file(), reason="no universal venv (/work/venvs/universal)")
def test_universal_models_run_in_their_venv(bench, tmp_path):
    res = bench.main(
        ["--smoke", "--models", "chgnet", "sevennet", "--physics", "none", "--skip-speed", "--out", str(tmp_path)]
    )
    for model in ("chgnet", "sevennet"):
        assert res["models"][model]["error"] is None
        assert res["accuracy"]["Si"][model]["forces_mae"] < 1000
