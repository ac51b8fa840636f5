"""Train the potential on DFT data: ``python train.py experiment=potential_si`` (or ``potential_cdte``).

Writes ``<run>/checkpoints/{best,last}.ckpt`` (Lightning, resumable with ``ckpt_path=``) and
``<run>/potential.pt`` (EMA weights of the best epoch + record; what the calculator loads), and
prints the held-out energy and force MAE.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig

from surrogate.cli import config_dict
from surrogate.potential.errors import PotentialError

__all__ = ["train_potential"]


def train_potential(cfg: DictConfig) -> dict:
    """Fit the potential of ``cfg.model`` on ``cfg.dft``; returns the data summary, test metrics and paths."""
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint

    from surrogate.potential.callbacks import PotentialTracker
    from surrogate.potential.checkpoint import export_potential, load_potential, read_record
    from surrogate.potential.data import PotentialDataModule
    from surrogate.potential.module import evaluate
    from surrogate.tracking.loggers import make_loggers

    if cfg.get("dft") is None or cfg.get("model") is None:
        raise PotentialError(
            "task=potential needs a dft data block and a model: use experiment=potential_si or potential_cdte"
        )
    ckpt_path = cfg.get("ckpt_path")
    record = read_record(ckpt_path) if ckpt_path else None  # a bad checkpoint fails before any work
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision("highest")  # forces need full fp32 (no TF32)
    out = Path(cfg.paths.output_dir)
    net_cfg = cfg.model.net
    dft = config_dict(cfg.dft)
    cutoff = record["cutoff"] if record else float(net_cfg.cutoff)
    dm = PotentialDataModule(**dft, cutoff=cutoff, elements=record["elements"] if record else None)
    print(f"potential data {dft['files']}: {dm.summary()}; data hash {dm.data_hash}")
    if record:
        if record["data_hash"] != dm.data_hash:
            print(f"note: resuming a run trained on data {record['data_hash']}; the data is now {dm.data_hash}")
        net = instantiate(net_cfg, _partial_=True)(
            **{k: v for k, v in record["config"].items()}, ref_energies=record["ref_energies"], scale=record["scale"]
        )
    else:
        ref = dm.reference_energies()
        print("reference energies [eV]: " + ", ".join(f"{e} {r:.4f}" for e, r in zip(dm.elements, ref)))
        net = instantiate(net_cfg, _partial_=True)(elements=dm.elements, ref_energies=ref, scale=dm.force_rms())
    model = instantiate(cfg.model, net=net, data_hash=dm.data_hash)
    loggers = make_loggers(cfg.get("logger")) or False
    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/loss", mode="min")
    # last.ckpt after every epoch (Lightning's save_last only follows the best): a killed run resumes where it was
    latest = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    tracker = PotentialTracker(
        cfg,
        documents={
            "potential_data": {
                "files": dft["files"],
                "data_hash": dm.data_hash,
                "elements": dm.elements,
                "flagged": dm.flagged,
                "frames": {k: len(v) for k, v in dm.frames.items()},
            }
        },
    )
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=[best, latest, tracker], inference_mode=False)
    t0 = time.perf_counter()
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    train_s = time.perf_counter() - t0
    best_path = best.best_model_path or latest.best_model_path
    if not best_path:
        raise PotentialError("training stopped before the first checkpoint; raise trainer.max_epochs / max_time")
    net = load_potential(best_path)
    record = read_record(best_path)
    exported = export_potential(net, record, out / "potential.pt")
    dm.setup()
    assert dm.graphs is not None  # setup() fills it
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.get("accelerator") == "gpu" else "cpu"
    metrics = {split: evaluate(net, dm.graphs[split], device=device) for split in ("val", "test") if dm.graphs[split]}
    result = {
        "data": {k: len(v) for k, v in dm.frames.items()},
        "flagged": dm.flagged,
        "data_hash": dm.data_hash,
        "elements": dm.elements,
        "train_seconds": train_s,
        "epochs": trainer.current_epoch,
        "checkpoint": str(best_path),
        "potential": str(exported),
        "metrics": metrics,
    }
    (out / "potential_metrics.json").write_text(json.dumps(result, indent=2))
    for split, m in metrics.items():
        print(
            f"{split} ({m['n_frames']} frames): energy MAE {m['energy_mae']:.2f} meV/atom, "
            f"force MAE {m['forces_mae']:.1f} meV/Å"
            + (f", stress MAE {m['stress_mae_gpa']:.2f} GPa" if "stress_mae_gpa" in m else "")
        )
    print(f"trained {train_s:.0f} s, {trainer.current_epoch} epochs; potential: {exported}")
    return result
