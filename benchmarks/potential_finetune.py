"""Fine-tune CHGNet 0.3.0 on our CdTe training split (issue 23), for ``benchmarks/potential_universal.py``.

    /work/venvs/universal/bin/python benchmarks/potential_finetune.py [--epochs 40] [--freeze none]
        [--energy-weight 10] [--batch-size 4] [--lr 1e-3] [--val-every 10] [--max-minutes 25] [--resume]
        [--out /work/venvs/chgnet_cdte_ft]

The defaults are the shipped recipe (~11 min on the shared 2-core VM, 1 thread; 8-25 s per epoch).

Runs in the universal virtualenv (see ``benchmarks/potential_universal.py``'s docstring). Our data
readers need the project's venv (``surrogate.potential.data`` imports Lightning), so
``--project-python`` writes the training split to a temporary extxyz (``split_data`` +
``write_data``, as ``potential_universal.py``'s main does for its worker) and this process reads it.

Data: exactly ``potential_universal.split_data()["CdTe"]["train"]`` (every converged non-test frame of
our GPAW labels); the test split is never read. Every ``--val-every``-th training frame is held out
as the validation slice that picks the epoch; the rest is fitted. Targets: energy per atom and
forces (CHGNet's ``"ef"``); no stress (our CdTe labels carry an isotropic Pulay offset).

Recipe: (1) the per-element offset between CHGNet's Materials Project energies and our GPAW PBE is
fitted on the fitted frames (least squares of (E_DFT - E_CHGNet)/N on the element fractions) and
added to CHGNet's composition model (AtomRef), which then stays frozen; (2) ``--freeze none``
(default) trains every other weight; ``embeddings`` freezes the three embeddings; ``conv`` (CHGNet's
own fine-tuning example) also freezes the basis expansions, the first three atom-conv layers, the
bond-conv and angle layers, training only the last atom-conv layer and the readout; (3) Adam, MSE on
energy/atom [eV] + forces [eV/Å] (weights ``--energy-weight``:1; 10 was picked over 1 by the same
validation score), batch 4, cosine learning rate over ``--epochs``; after each epoch the validation
MAEs are logged and the best epoch (lowest e/e0 + f/f0, relative to the validation MAEs before
fine-tuning) is kept.

Outputs in ``--out`` (outside git): ``checkpoint.pt`` (every epoch, written to a temp file and
renamed; ``--resume`` continues from it), ``best.pt`` (``CHGNet.from_file`` loads it), ``log.json``
(options, the offset, per-epoch train/validation MAEs, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("/work/venvs/chgnet_cdte_ft")


def _universal_module():
    """``benchmarks/potential_universal.py`` as a module (its ``split_data`` defines the splits)."""
    for path in (REPO, REPO / "benchmarks"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import potential_universal

    return potential_universal


def cdte_train(project_python: str, max_train: int | None = None) -> list:
    """``split_data(max_train=...)["CdTe"]["train"]``. Our data readers need the project's venv
    (``surrogate.potential.data`` imports Lightning), so the split is written to extxyz by
    ``project_python`` (``write_data``, as ``potential_universal.py``'s main does for its worker)
    and read back here."""
    import subprocess
    import tempfile

    from ase.io import read

    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "import importlib.util as u; s = u.spec_from_file_location('pu', sys.argv[1] + '/benchmarks/potential_universal.py'); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); "
            "n = int(sys.argv[3]) or None; d = m.split_data(max_train=n)['CdTe']; "
            "m.write_data({'CdTe': {'train': d['train']}}, Path(sys.argv[2]))"
        )
        subprocess.run([project_python, "-c", code, str(REPO), tmp, str(max_train or 0)], check=True)
        return read(Path(tmp) / "CdTe_train.extxyz", ":", format="extxyz")


def split_train_val(frames: list, val_every: int) -> tuple[list, list]:
    """(fitted, validation): every ``val_every``-th frame (starting at the middle of the first
    block) is validation, the rest is fitted. Deterministic; disjoint; their union is ``frames``."""
    if val_every < 2:
        raise ValueError("val_every must be >= 2")
    val_idx = set(range(val_every // 2, len(frames), val_every))
    fit = [a for i, a in enumerate(frames) if i not in val_idx]
    val = [a for i, a in enumerate(frames) if i in val_idx]
    return fit, val


def element_offset(frames: list, predicted_per_atom: list[float]) -> dict[str, float]:
    """Per-element energies c [eV/atom] minimising sum ((E_DFT/N - e_pred) - sum_el x_el c_el)^2."""
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    x = np.array([[a.get_chemical_symbols().count(el) / len(a) for el in elements] for a in frames])
    y = np.array([a.info["REF_energy"] / len(a) - e for a, e in zip(frames, predicted_per_atom)])
    return dict(zip(elements, map(float, np.linalg.lstsq(x, y, rcond=None)[0])))


def _structures(frames: list) -> list:
    from pymatgen.io.ase import AseAtomsAdaptor

    return [AseAtomsAdaptor.get_structure(a) for a in frames]


def _dataset(frames: list):
    from chgnet.data.dataset import StructureData

    return StructureData(
        structures=_structures(frames),
        energies=[float(a.info["REF_energy"]) / len(a) for a in frames],
        forces=[np.asarray(a.arrays["REF_forces"]).tolist() for a in frames],
        shuffle=False,
    )


def freeze(model, mode: str) -> int:
    """Freezes parts of a CHGNet ``model`` (the composition model always); returns the trainable count."""
    groups = {
        "none": [],
        "embeddings": [model.atom_embedding, model.bond_embedding, model.angle_embedding],
        "conv": [
            model.atom_embedding,
            model.bond_embedding,
            model.angle_embedding,
            model.bond_basis_expansion,
            model.angle_basis_expansion,
            model.atom_conv_layers[:3],
            model.bond_conv_layers,
            model.angle_layers,
        ],
    }[mode]
    for p in model.parameters():
        p.requires_grad = True
    for layer in [*groups, model.composition_model]:
        for p in layer.parameters():
            p.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description="Fine-tune CHGNet 0.3.0 on our CdTe training split (energy/atom + forces, no stress). "
        "Run with the universal venv's python; see the module docstring for the recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=40, help="epochs of the cosine schedule")
    p.add_argument("--freeze", choices=("conv", "embeddings", "none"), default="none", help="what stays frozen")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--energy-weight", type=float, default=10.0, help="energy loss weight (forces: 1)")
    p.add_argument("--val-every", type=int, default=10, help="every N-th training frame is validation")
    p.add_argument("--max-train", type=int, default=None, help="evenly spaced N training frames (smoke runs)")
    p.add_argument("--max-minutes", type=float, default=25.0, help="stop after the epoch that would overrun this")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project-python", default=str(REPO / ".venv" / "bin" / "python"), help="reads our data")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder of checkpoint.pt, best.pt, log.json")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    import warnings

    warnings.filterwarnings("ignore")
    from chgnet.data.dataset import collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from torch.utils.data import DataLoader

    t0 = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train = cdte_train(a.project_python, a.max_train)  # the test split is never written out
    fit, val = split_train_val(train, a.val_every)
    print(f"CdTe training split: {len(train)} frames -> {len(fit)} fitted, {len(val)} validation", flush=True)

    ckpt_path = out / "checkpoint.pt"
    state = torch.load(ckpt_path, weights_only=False) if a.resume and ckpt_path.is_file() else None
    model = CHGNet.load(model_name="0.3.0", verbose=False, use_device="cpu")
    if state is None:
        # (1) per-element offset on the fitted frames, folded into the (then frozen) AtomRef
        pred = model.predict_structure(_structures(fit), task="e", batch_size=a.batch_size)
        offset = element_offset(fit, [float(r["e"]) for r in pred])
        from ase.data import atomic_numbers

        with torch.no_grad():
            for el, c in offset.items():
                model.composition_model.fc.weight[0, atomic_numbers[el] - 1] += c
        print(f"per-element offset [eV/atom]: {offset}", flush=True)
        log: dict = {"options": vars(a), "offset_ev_per_atom": offset, "n_fit": len(fit), "n_val": len(val)}
        log["epochs"], start, best_score, prior_s = [], 0, None, 0.0
    else:
        model.load_state_dict(state["model"])
        log, start, best_score, prior_s = state["log"], state["epoch"] + 1, state["best_score"], state["wall_s"]
        print(f"resumed after epoch {state['epoch']}", flush=True)
    log["trainable_parameters"] = freeze(model, a.freeze)

    trainer = Trainer(
        model=model,
        targets="ef",
        energy_loss_ratio=a.energy_weight,
        force_loss_ratio=1,
        optimizer="Adam",
        scheduler="CosLR",
        criterion="MSE",
        epochs=a.epochs,
        learning_rate=a.lr,
        use_device="cpu",
        print_freq=10**9,
    )
    if state is not None:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
    gen = torch.Generator().manual_seed(a.seed)
    fit_loader = DataLoader(
        _dataset(fit), batch_size=a.batch_size, shuffle=True, collate_fn=collate_graphs, generator=gen
    )
    val_loader = DataLoader(_dataset(val), batch_size=a.batch_size, shuffle=False, collate_fn=collate_graphs)
    if state is None:
        v0 = trainer._validate(val_loader)
        log["val_before"] = {"e_mev_per_atom": 1000 * v0["e"], "f_mev_per_a": 1000 * v0["f"]}
        print(
            f"validation before fine-tuning: e {1000 * v0['e']:.1f} meV/atom, f {1000 * v0['f']:.1f} meV/Å", flush=True
        )
        _save({"model": model.as_dict()}, out / "best.pt")
    e0, f0 = log["val_before"]["e_mev_per_atom"], log["val_before"]["f_mev_per_a"]

    for epoch in range(start, a.epochs):
        te = time.perf_counter()
        model.train()
        tr = trainer._train(fit_loader, epoch)
        v = trainer._validate(val_loader)
        row = {
            "epoch": epoch,
            "train_e_mev_per_atom": 1000 * tr["e"],
            "train_f_mev_per_a": 1000 * tr["f"],
            "val_e_mev_per_atom": 1000 * v["e"],
            "val_f_mev_per_a": 1000 * v["f"],
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - te,
        }
        score = row["val_e_mev_per_atom"] / e0 + row["val_f_mev_per_a"] / f0
        row["best"] = best_score is None or score < best_score
        if row["best"]:
            best_score = score
            log["best_epoch"] = epoch
            _save({"model": model.as_dict(), "epoch": epoch, "val": row}, out / "best.pt")
        log["epochs"].append(row)
        wall = prior_s + time.perf_counter() - t0
        log["wall_s"] = wall
        _save(
            {
                "model": model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(),
                "scheduler": trainer.scheduler.state_dict(),
                "epoch": epoch,
                "best_score": best_score,
                "log": log,
                "wall_s": wall,
            },
            ckpt_path,
        )
        (out / "log.json").write_text(json.dumps(log, indent=1, default=float))
        print(
            f"epoch {epoch + 1}/{a.epochs}: train e {row['train_e_mev_per_atom']:.1f} meV/atom, "
            f"f {row['train_f_mev_per_a']:.1f} meV/Å | val e {row['val_e_mev_per_atom']:.1f}, "
            f"f {row['val_f_mev_per_a']:.1f} | {row['seconds']:.0f} s{' (best)' if row['best'] else ''}",
            flush=True,
        )
        if epoch + 1 < a.epochs and wall + row["seconds"] > 60 * a.max_minutes:
            print(f"stopping: the next epoch would pass --max-minutes {a.max_minutes}", flush=True)
            log["stopped_early"] = True
            break
    log["wall_s"] = prior_s + time.perf_counter() - t0
    (out / "log.json").write_text(json.dumps(log, indent=1, default=float))
    print(f"best epoch {log.get('best_epoch')}, weights {out / 'best.pt'}, {log['wall_s']:.0f} s", flush=True)
    return log


if __name__ == "__main__":
    main()
