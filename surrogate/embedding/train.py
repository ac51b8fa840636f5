"""Train the embedding network on a library (``python train.py experiment=embedding_demo``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from surrogate.errors import LibraryError


def checkpoint_library(path: str | Path) -> dict:
    """The ``surrogate`` block (library hash, sampling, ...) recorded in a checkpoint."""
    from surrogate.embedding.embed import read_checkpoint

    return read_checkpoint(path)["surrogate"]


def _size_proxy_loss(cfg: DictConfig, n_classes: int) -> None:
    """Proxy losses (one learned vector per configuration) get their sizes from the data and the net."""
    from omegaconf import open_dict

    loss = cfg.model.get("loss")
    if loss is None:
        return
    with open_dict(loss):
        if "num_classes" in loss and loss.num_classes is None:
            loss.num_classes = int(n_classes)
        if "embedding_size" in loss and loss.embedding_size is None:
            loss.embedding_size = int(cfg.model.net.dim)


def train_embedding(cfg: DictConfig) -> dict:
    """Report the library splits and, when a model is configured, train it; returns sizes and metrics."""
    from surrogate.embedding.datamodule import LibraryDataModule

    dm = LibraryDataModule(cfg.library_dir, **cfg.data)
    sizes = {"train": len(dm.train_set), "val": len(dm.val_set)}
    print(f"library {cfg.library_dir}: " + ", ".join(f"{k} {v} images" for k, v in sizes.items()))
    if cfg.get("model") is None:
        return {"sizes": sizes}
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint

    from surrogate.embedding.callbacks import EmbeddingTracker
    from surrogate.tracking.loggers import make_loggers

    lib = dm.library
    if cfg.get("ckpt_path"):  # a bad checkpoint fails before any work
        rec = checkpoint_library(cfg.ckpt_path)
        if rec.get("library_hash") != lib.hash or rec.get("sampling") != lib.sampling:
            raise LibraryError(
                f"checkpoint {cfg.ckpt_path} was trained on library {rec.get('library_hash')} at {rec.get('sampling')} Å/px, "
                f"not {lib.hash} at {lib.sampling} Å/px: use a checkpoint of this library or train anew"
            )
    L.seed_everything(int(cfg.seed), workers=True)
    _size_proxy_loss(cfg, len(dm.train_set.classes))
    label_groups = np.unique(dm.class_groups(), return_inverse=True)[1]  # group index of every label
    model = instantiate(
        cfg.model,
        library_hash=lib.hash,
        sampling=lib.sampling,
        image_shape=list(lib.manifest["image_shape"]),
        label_groups=[int(v) for v in label_groups],
    )
    loggers = make_loggers(cfg.get("logger")) or False
    out = Path(cfg.paths.output_dir)
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val/loss", mode="min")
    # last.ckpt after every epoch, improved or not (Lightning's save_last only follows the best), so a
    # killed run resumes from the epoch it reached
    latest = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    tracker = EmbeddingTracker(cfg, documents={"library_manifest": lib.manifest}, **(cfg.get("tracking") or {}))
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=[checkpoint, latest, tracker])
    trainer.fit(model, dm, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"checkpoints in {out / 'checkpoints'}; " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return {"sizes": sizes, "metrics": metrics, "checkpoint_dir": str(out / "checkpoints")}
