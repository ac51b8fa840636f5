"""The neural potential: physics of the model, data checks, training, calculator, Si conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from surrogate.errors import StructureError
from surrogate.potential import PotentialError
from surrogate.potential.calculator import PotentialCalculator, load_calculator
from surrogate.potential.data import REF_ENERGY, REF_FORCES, atoms_to_graph, collate, read_frames
from surrogate.potential.model import Potential
from tests.conftest import REPO, SHARED

MLEARN = SHARED / "data" / "dft" / "mlearn" / "Si"


def _net(elements=("Si",), seed=0, **kw) -> Potential:
    torch.manual_seed(seed)
    kw = {"cutoff": 4.0, "features": 16, "layers": 2, **kw}
    net = Potential(list(elements), ref_energies=[-5.0] * len(elements), scale=0.5, **kw).double().eval()
    # random weights of a fresh model give a nearly flat surface: make it rugged enough to test
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
    return net


def _calc(net) -> PotentialCalculator:
    return PotentialCalculator(net, dtype="float64")


def _si8(rattle=0.05, seed=1) -> Atoms:
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.rattle(rattle, seed=seed)
    return a


@pytest.mark.parametrize("moments", [False, True], ids=["painn", "moments"])
def test_forces_are_minus_the_energy_gradient(moments):
    from ase.calculators.test import gradient_test

    a = _si8()
    a.calc = _calc(_net(moments=moments))
    f, fd = gradient_test(a)
    assert np.abs(f - fd).max() < 1e-5 and np.abs(f).max() > 1e-3


@pytest.mark.parametrize("moments", [False, True], ids=["painn", "moments"])
def test_stress_is_the_strain_derivative(moments):
    a = _si8()
    a.set_cell(a.cell.array @ np.array([[1.0, 0.02, 0.0], [0.0, 0.98, 0.01], [0.0, 0.0, 1.03]]), scale_atoms=True)
    a.calc = _calc(_net(moments=moments))
    s = a.get_stress()
    from ase.calculators.fd import calculate_numerical_stress

    num = calculate_numerical_stress(a, eps=1e-5)
    assert np.abs(s - num).max() < 1e-6 and np.abs(s).max() > 1e-4


@pytest.mark.parametrize("moments", [False, True], ids=["painn", "moments"])
def test_rotation_translation_permutation_invariance(moments):
    calc = _calc(_net(("Cd", "Te"), moments=moments))
    a = bulk("CdTe", "zincblende", 6.48, cubic=True)
    a.rattle(0.1, seed=2)
    a.calc = calc
    e, f = a.get_potential_energy(), a.get_forces()
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = a.copy()
    rot.set_cell(a.cell.array @ q.T, scale_atoms=False)
    rot.positions = a.positions @ q.T + np.array([0.3, -1.1, 2.0])
    rot.calc = calc
    assert rot.get_potential_energy() == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(rot.get_forces(), f @ q.T, atol=1e-9)
    perm = rng.permutation(len(a))
    p = a[perm]
    p.calc = calc
    assert p.get_potential_energy() == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(p.get_forces(), f[perm], atol=1e-9)


@pytest.mark.parametrize("moments", [False, True], ids=["painn", "moments"])
def test_energy_is_extensive(moments):
    calc = _calc(_net(moments=moments))
    a = _si8()
    a.calc = calc
    e1 = a.get_potential_energy()
    big = a.repeat((2, 1, 3))
    big.calc = calc
    assert big.get_potential_energy() == pytest.approx(6 * e1, rel=1e-10)
    np.testing.assert_allclose(big.get_stress(), a.get_stress(), atol=1e-10)


@pytest.mark.parametrize("moments", [False, True], ids=["painn", "moments"])
def test_batched_graphs_match_single_graphs(moments):
    net = _net(("Cd", "Te"), moments=moments)
    frames = [bulk("CdTe", "zincblende", 6.48, cubic=True), bulk("CdTe", "zincblende", 6.6).repeat((2, 1, 1))]
    for k, a in enumerate(frames):
        a.rattle(0.05, seed=k)
    graphs = [atoms_to_graph(a, net.elements, net.cutoff) for a in frames]
    out = net(collate(graphs, dtype=torch.float64), compute_forces=True, compute_stress=True)
    for k, g in enumerate(graphs):
        one = net(collate([g], dtype=torch.float64), compute_forces=True, compute_stress=True)
        assert float(out["energy"][k].detach()) == pytest.approx(float(one["energy"][0].detach()), abs=1e-10)
        np.testing.assert_allclose(out["stress"][k].detach(), one["stress"][0].detach(), atol=1e-12)


def test_unknown_element_and_overlapping_atoms_are_clear_errors():
    calc = _calc(_net())
    a = bulk("CdTe", "zincblende", 6.48)
    a.calc = calc
    with pytest.raises(PotentialError, match="element\\(s\\) Cd, Te unknown to this potential"):
        a.get_potential_energy()
    b = _si8(0.0)
    b.positions[1] = b.positions[0] + [0.1, 0.0, 0.0]
    b.calc = calc
    with pytest.raises(StructureError, match="overlapping atoms"):
        b.get_potential_energy()


def _write(path, frames):
    from ase.io import write

    write(path, frames, format="extxyz")
    return str(path)


def _labelled(a: Atoms, energy=-40.0, split="train") -> Atoms:
    a = a.copy()
    a.info.update({REF_ENERGY: energy, "split": split, "config_id": f"{split}{energy}"})
    a.arrays[REF_FORCES] = np.zeros((len(a), 3))
    return a


def test_missing_forces_and_unflagged_nan_labels_are_errors(tmp_path):
    a = _labelled(_si8())
    del a.arrays[REF_FORCES]
    with pytest.raises(PotentialError, match="no REF_forces \\(missing forces\\)"):
        read_frames(_write(tmp_path / "a.extxyz", [a]))
    b = _labelled(_si8(), energy=float("nan"))
    with pytest.raises(PotentialError, match="NaN labels but is not flagged"):
        read_frames(_write(tmp_path / "b.extxyz", [b]))
    c = b.copy()
    c.info["converged"] = False  # flagged non-converged DFT: excluded and counted
    frames, flagged = read_frames([_write(tmp_path / "c.extxyz", [c, _labelled(_si8())])])
    assert len(frames) == 1 and flagged == 1
    with pytest.raises(PotentialError, match="no DFT data file matches"):
        read_frames(str(tmp_path / "nothing_*.extxyz"))


def test_bad_checkpoints_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PotentialError, match="cannot read potential checkpoint"):
        load_calculator(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "surrogate": {"library_hash": "x"}}, other)
    with pytest.raises(PotentialError, match="not a surrogate potential checkpoint"):
        load_calculator(other)
    with pytest.raises(PotentialError, match="not found"):
        load_calculator(tmp_path / "missing.pt")


def _tiny_frames(aimd: int = 0):
    """Small frames of the shipped mlearn Si set: the four smallest (surfaces, 12-18 atoms, first one
    held out) and ``aimd`` 64-atom AIMD snapshots (forces of a few eV/Å)."""
    frames, _ = read_frames(str(REPO / "data" / "dft" / "si" / "train.extxyz"))
    small = sorted((a for a in frames if len(a) <= 18), key=len)[:4]
    for k, a in enumerate(small):
        a.info["split"] = "test" if k == 0 else "train"
    return small + [a for a in frames if a.info["group"] == "AIMD-NVT"][:aimd]


def test_tiny_model_overfits_a_few_structures():
    frames = _tiny_frames()
    from surrogate.potential.data import fit_reference_energies

    torch.manual_seed(0)
    net = Potential(
        ["Si"], cutoff=4.0, features=16, layers=2, ref_energies=fit_reference_energies(frames, ["Si"]), scale=1.0
    )
    batch = collate([atoms_to_graph(a, ["Si"], 4.0) for a in frames])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss_fn():
        out = net(batch, compute_forces=True)
        return (((out["energy"] - batch["energy"]) / batch["n_atoms"]) ** 2).mean() + 0.1 * (
            (out["forces"] - batch["forces"]) ** 2
        ).mean()

    net.train()
    first = float(loss_fn())
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert float(loss_fn()) < first / 10


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """train.py's potential task on five small Si frames, a few CPU epochs (composed real config)."""
    from hydra import compose, initialize_config_module

    from train import train

    tmp = tmp_path_factory.mktemp("pot")
    data = _write(tmp / "si_small.extxyz", _tiny_frames(aimd=2))
    overrides = [
        "experiment=potential_si",
        f"dft.files=[{data}]",
        "dft.val_fraction=0.0",
        f"paths.output_dir={tmp}",
        "model.net.features=16",
        "model.net.layers=2",
        "model.net.cutoff=4.0",
        "model.net.moments=true",
        "trainer.max_epochs=8",
        "model.optimizer.lr=0.01",
        "dft.batch_size=2",
    ]
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=False)
    return train(cfg), tmp, overrides


def test_training_writes_loadable_checkpoints_with_their_record(trained_run):
    res, tmp, _ = trained_run
    assert res["data"] == {"train": 5, "val": 0, "test": 1} and res["metrics"]["test"]["n_frames"] == 1
    for path in (res["potential"], res["checkpoint"]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        rec = ckpt["surrogate"]
        assert rec["elements"] == ["Si"] and rec["cutoff"] == 4.0 and rec["data_hash"] == res["data_hash"]
        assert rec["config"]["moments"] is True
        assert len(rec["ref_energies"]) == 1
    a = _si8(0.0)
    e = [load_calculator(p).get_potential_energy(a) for p in (res["potential"], res["checkpoint"])]
    assert e[0] == pytest.approx(e[1], rel=1e-6)
    assert json.loads((tmp / "potential_metrics.json").read_text())["elements"] == ["Si"]


def test_calculator_relaxes_a_rattled_cell(trained_run):
    from ase.optimize import BFGS

    a = _si8(0.1, seed=3)
    a.calc = load_calculator(trained_run[0]["potential"], dtype="float64")
    e0 = a.get_potential_energy()
    BFGS(a, logfile=None).run(fmax=0.02, steps=200)
    assert a.get_potential_energy() < e0 and np.abs(a.get_forces()).max() < 0.05


def test_training_resumes_from_a_checkpoint(trained_run, tmp_path):
    from hydra import compose, initialize_config_module

    from train import train

    res, tmp, overrides = trained_run
    last = tmp / "checkpoints" / "last.ckpt"
    more = [o for o in overrides if not o.startswith(("trainer.max_epochs", "paths."))]
    more += ["trainer.max_epochs=9", f"ckpt_path={last}", f"paths.output_dir={tmp_path}"]
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        cfg = compose(config_name="train", overrides=more)
    out = train(cfg)
    assert out["epochs"] == 9 and out["data_hash"] == res["data_hash"]


def test_experiment_configs_compose_and_keep_the_embedding_data_block():
    from hydra import compose, initialize_config_module

    for name in ("potential_si", "potential_cdte"):
        with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
            cfg = compose(config_name="train", overrides=[f"experiment={name}", "trainer=gpu"])
        assert cfg.task == "potential" and cfg.trainer.precision == 32 and cfg.trainer.accelerator == "gpu"
        assert "files" in cfg.dft and "files" not in cfg.data


def test_cdte_held_out_split_comes_from_the_labels():
    from surrogate.potential.data import split_frames

    frames, _ = read_frames(str(REPO / "data" / "dft" / "cdte" / "batch_*.extxyz"))
    parts = split_frames(frames, 0.1)
    assert {a.info["config_id"] for a in parts["test"]} == {
        a.info["config_id"] for a in frames if a.info["split"] == "test"
    }
    assert len(parts["test"]) > 0 and len(parts["val"]) > 0


@pytest.mark.skipif(not MLEARN.is_dir(), reason="../shared/data/dft/mlearn is not present")
def test_si_conversion_round_trips_the_mlearn_json(tmp_path):
    from ase.io import read

    from surrogate.potential.convert_mlearn import convert

    assert convert(MLEARN, tmp_path) == {"train": 214, "test": 25}
    for split, name in (("train", "training.json"), ("test", "test.json")):
        items = json.loads((MLEARN / name).read_text())
        frames = read(tmp_path / f"{split}.extxyz", index=":")
        shipped = read(REPO / "data" / "dft" / "si" / f"{split}.extxyz", index=":")
        assert len(frames) == len(items) == len(shipped)
        for item, a, s in zip(items, frames, shipped):
            assert a.info[REF_ENERGY] == item["outputs"]["energy"] == s.info[REF_ENERGY]
            np.testing.assert_array_equal(a.arrays[REF_FORCES], np.asarray(item["outputs"]["forces"]))
            np.testing.assert_array_equal(s.arrays[REF_FORCES], a.arrays[REF_FORCES])
            assert a.info["split"] == split and a.info["doi"] == "10.1021/acs.jpca.9b08723"
    # stress: VASP kbar (+ = compressive, xx yy zz xy yz zx) -> ASE eV/Å^3; a stretched cell is in tension
    item = next(
        i
        for i in json.loads((MLEARN / "training.json").read_text())
        if i["description"] == "Si 2x2x2 cell, mode 3, strain 0.1"
    )
    a = next(f for f in read(tmp_path / "train.extxyz", index=":") if f.info["description"] == item["description"])
    from ase import units

    assert a.info["REF_stress"][5] == pytest.approx(20.630164487 * units.GPa)  # xy shear, kbar -> GPa, sign flipped


def test_a_non_finite_step_is_skipped_not_applied():
    """One NaN loss or gradient must not turn the weights (and their EMA) into NaN (seen on a GPU run)."""
    from surrogate.potential.module import PotentialModule

    net = Potential(["Si"], cutoff=4.0, features=8, layers=1, ref_energies=[-5.0], scale=1.0)
    module = PotentialModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=0.1))
    opt = module.configure_optimizers()
    batch = collate([atoms_to_graph(_tiny_frames()[1], ["Si"], 4.0)], dtype=torch.float32)
    before = [p.detach().clone() for p in net.parameters()]

    bad = dict(batch, energy=torch.full_like(batch["energy"], float("nan")))
    assert module.training_step(bad, 0) is None  # no loss to back-propagate

    loss = module.training_step(batch, 0)
    loss.backward()
    next(net.parameters()).grad[...] = float("inf")
    module.on_before_optimizer_step(opt)
    opt.step()
    assert module.skipped_steps == 2
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))

    opt.zero_grad()
    module.training_step(batch, 0).backward()
    module.on_before_optimizer_step(opt)
    opt.step()  # a finite step is applied
    assert module.skipped_steps == 2
    assert not all(torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_huber_force_loss_is_quadratic_below_delta_and_linear_above():
    from surrogate.potential.module import PotentialModule

    net = Potential(["Si"], cutoff=4.0, features=8, layers=1, ref_energies=[-5.0], scale=1.0)
    opt = lambda params: torch.optim.Adam(params)  # noqa: E731
    batch = {"n_atoms": torch.tensor([2]), "energy": torch.zeros(1), "forces": torch.zeros(2, 3)}

    def forces_term(module, residual):
        out = {"energy": torch.zeros(1), "forces": torch.full((2, 3), residual)}
        return module._losses(out, batch)[1]["forces"].item()

    mse = PotentialModule(net, optimizer=opt)
    huber = PotentialModule(net, optimizer=opt, forces_loss="huber", huber_delta=0.1)
    assert forces_term(huber, 0.05) == pytest.approx(forces_term(mse, 0.05)) == pytest.approx(0.0025)
    # beyond delta: 2 * delta * (|r| - delta / 2), i.e. linear, far below the square
    assert forces_term(huber, 1.0) == pytest.approx(2 * 0.1 * (1.0 - 0.05))
    assert forces_term(mse, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="forces_loss"):
        PotentialModule(net, optimizer=opt, forces_loss="l3")


def test_the_k_corrected_labels_are_trained_on_through_the_energy_key():
    from pathlib import Path

    from surrogate.potential.data import read_frames

    root = Path(__file__).resolve().parents[1] / "data" / "dft" / "cdte" / "kcorrected"
    if not any(root.glob("batch_*.extxyz")):
        pytest.skip("no k-corrected CdTe labels in this checkout")
    one = str(sorted(root.glob("batch_*.extxyz"))[0])
    fixed, _ = read_frames(one, "REF_energy_kfix")
    raw, _ = read_frames(one)
    assert len(fixed) == len(raw)
    for a, b in zip(fixed, raw):
        assert a.info["REF_energy"] == pytest.approx(b.info["REF_energy_kfix"])
        assert a.info["REF_energy_label"] == pytest.approx(b.info["REF_energy"])
    with pytest.raises(PotentialError, match="no REF_energy_nothing"):
        read_frames(one, "REF_energy_nothing")
