"""Lightning wrapper around :class:`EmbeddingNet`: metric learning on two corrupted views.

Positives are the same configuration under other imaging conditions (same label in the batch)
and other corruptions of the same image (two views); every other configuration in the batch is a
negative. The loss and miner come from pytorch-metric-learning.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch

from surrogate.augment import Corrupt

__all__ = ["EmbeddingModule"]


class EmbeddingModule(L.LightningModule):
    """Parameters
    ----------
    net
        The embedding network (an ``nn.Module`` returning unit vectors).
    optimizer, scheduler
        Partials (Hydra ``_partial_: true``) taking parameters / the optimizer.
    temperature
        Temperature of the supervised contrastive loss.
    augment
        Corruption applied to each view (a :class:`surrogate.augment.Corrupt`).
    library_hash, sampling
        Recorded in every checkpoint; loading against another library is refused.
    """

    def __init__(self, net: torch.nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 temperature: float = 0.1, augment: Corrupt | None = None, library_hash: str | None = None,
                 sampling: float | None = None):
        super().__init__()
        # only plain values go into the checkpoint, so it loads with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["net", "augment", "optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        from pytorch_metric_learning import losses

        self.net = net
        self.augment = augment or Corrupt()
        self.loss_fn = losses.SupConLoss(temperature=temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _views(self, images: torch.Tensor, labels: torch.Tensor):
        x = torch.cat([self.augment(images), self.augment(images)])
        return x, torch.cat([labels, labels])

    def training_step(self, batch, batch_idx):
        images, labels, _ = batch
        x, y = self._views(images, labels)
        loss = self.loss_fn(self(x), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels, _ = batch
        x, y = self._views(images, labels)
        z = self(x)
        loss = self.loss_fn(z, y)
        sim = z @ z.T
        sim.fill_diagonal_(-2.0)
        top1 = (y[sim.argmax(dim=1)] == y).float().mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=len(images))
        self.log("val/top1", top1, prog_bar=True, batch_size=len(images))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["surrogate"] = {"library_hash": self.hparams.library_hash, "sampling": self.hparams.sampling}
