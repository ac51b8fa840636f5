"""benchmarks/potential_finetune.py: the validation slice is carved out of the training split only,
the per-element offset that is folded into CHGNet's AtomRef is recovered exactly, and (in the
universal venv only) the freeze modes leave the right parameters trainable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ft():
    spec = importlib.util.spec_from_file_location("_potential_finetune", REPO / "benchmarks" / "potential_finetune.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_validation_slice_is_a_disjoint_part_of_the_training_frames(ft):
    frames = list(range(25))
    fit, val = ft.split_train_val(frames, 10)
    assert val == [5, 15] and len(fit) == 23
    assert sorted(fit + val) == frames and not set(fit) & set(val)
    with pytest.raises(ValueError):
        ft.split_train_val(frames, 1)


def test_element_offset_recovers_a_constant_per_element_shift(ft):
    from ase.build import bulk

    frames = []
    for k, (n_cd, n_te) in enumerate([(4, 4), (3, 4), (4, 3), (5, 3)]):
        a = bulk("CdTe", "zincblende", 6.48, cubic=True)
        sym = a.get_chemical_symbols()
        a = a[[i for i, s in enumerate(sym) if s == "Cd"][:n_cd] + [i for i, s in enumerate(sym) if s == "Te"][:n_te]]
        a.info["REF_energy"] = -2.0 * len(a) + 0.01 * k
        frames.append(a)
    shift = {"Cd": 0.25, "Te": 0.6}  # DFT minus model, eV per atom of each element
    pred = [(a.info["REF_energy"] - sum(shift[s] for s in a.get_chemical_symbols())) / len(a) for a in frames]
    assert ft.element_offset(frames, pred) == pytest.approx(shift, abs=1e-9)


def test_freeze_modes_train_fewer_parameters_and_never_the_composition_model(ft):
    pytest.importorskip("chgnet")
    from chgnet.model import CHGNet

    model = CHGNet.load(model_name="0.3.0", verbose=False, use_device="cpu")
    total = sum(p.numel() for p in model.parameters())
    counts = {mode: ft.freeze(model, mode) for mode in ("none", "embeddings", "conv")}
    assert total > counts["none"] > counts["embeddings"] > counts["conv"] > 0
    assert not any(p.requires_grad for p in model.composition_model.parameters())
    assert all(p.requires_grad for p in model.mlp.parameters())  # the readout is trained in every mode
