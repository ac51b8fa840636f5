"""Lightning wrapper around :class:`EmbeddingNet`: metric learning on corrupted views.

Positives are the same configuration under other imaging conditions (same label in the batch) and
other corruptions of the same image (two views); every other configuration in the batch is a
negative. With the family sampler (:class:`surrogate.embedding.datamodule.FamilyBatchSampler`) a
batch holds whole families (same material and zone axis: bulk, its point-defect variants, boundary
translations), so the hardest negatives, near-identical configurations, are always present; an
optional pytorch-metric-learning miner picks the hard pairs among them.

Validation is retrieval: corrupted views of the validation images (unseen imaging conditions and
noise seeds, fixed corruption seeds) query the clean validation images; ``val/top1`` and
``val/top5`` count the configuration of the nearest other images, and a figure of retrieval
examples (query | top 5) goes to every logger.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import lightning as L
import torch

from surrogate.augment import Corrupt
from surrogate.embedding.embed import standardise

__all__ = ["EmbeddingModule"]


class EmbeddingModule(L.LightningModule):
    """Parameters
    ----------
    net
        The embedding network (an ``nn.Module`` returning unit vectors, with a ``config`` dict).
    optimizer, scheduler
        Partials (Hydra ``_partial_: true``) taking parameters / the optimizer.
    loss
        A pytorch-metric-learning loss (default: ``SupConLoss(temperature=0.1)``).
    miner
        Optional pytorch-metric-learning miner; its pairs/triplets are passed to the loss.
    augment
        Corruption applied to each view (a :class:`surrogate.augment.Corrupt`).
    clean_fraction
        Fraction of second views that are the clean (only standardised) library image, so clean
        library renderings embed near their corrupted versions.
    scheduler_interval
        ``epoch`` or ``step``: when the scheduler steps.
    examples_every
        Log the retrieval-examples figure every this many validation epochs (0: never).
    library_hash, sampling, image_shape
        Recorded in every checkpoint; loading against another library is refused.
    label_groups
        Group (same material and zone axis) of every configuration label, as integers; given, the
        validation also logs ``val/group_top1`` (the nearest image is of the right material and zone
        axis), the coarse retrieval that refinement then resolves within the group.
    group_weight
        Weight of a second loss term on the group labels (0: off). Configurations of one group
        that no image can tell apart (a point defect out of view or too faint at the dose) give the
        configuration term contradictory targets; the group term is always learnable.
    """

    label_group: torch.Tensor  # buffer: group of every configuration label (empty without label_groups)

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        loss: torch.nn.Module | None = None,
        miner: torch.nn.Module | None = None,
        augment: Corrupt | None = None,
        clean_fraction: float = 0.25,
        scheduler_interval: str = "epoch",
        examples_every: int = 1,
        library_hash: str | None = None,
        sampling: float | None = None,
        image_shape: Sequence[int] | None = None,
        label_groups: list[int] | None = None,
        group_weight: float = 0.0,
    ):
        super().__init__()
        if group_weight and label_groups is None:
            from surrogate.errors import ConfigError

            raise ConfigError("model.group_weight > 0 needs label_groups (train.py passes them from the library)")
        label_groups = None if label_groups is None else [int(v) for v in label_groups]
        image_shape = None if image_shape is None else [int(v) for v in image_shape]  # no ListConfig in checkpoints
        # only plain values go into the checkpoint, so it loads with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["net", "augment", "optimizer", "scheduler", "loss", "miner"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        from pytorch_metric_learning import losses

        self.net = net
        self.augment = augment or Corrupt()
        self.loss_fn = loss if loss is not None else losses.SupConLoss(temperature=0.1)
        self.miner = miner
        self._val: list[tuple] = []
        groups = torch.as_tensor(label_groups if label_groups is not None else [], dtype=torch.long)
        self.register_buffer("label_group", groups, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _views(self, images: torch.Tensor, labels: torch.Tensor):
        a = self.augment(images)
        b = self.augment(images)
        if self.hparams["clean_fraction"] > 0:
            keep = torch.rand(len(images), device=images.device) < self.hparams["clean_fraction"]
            b = torch.where(keep[:, None, None, None], standardise(images.float()), b)
        return torch.cat([a, b]), torch.cat([labels, labels])

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = z.float()
        if self.miner is None:
            return self.loss_fn(z, y)
        return self.loss_fn(z, y, self.miner(z, y))

    def training_step(self, batch, batch_idx):
        images, labels, _ = batch
        x, y = self._views(images, labels)
        z = self(x)
        loss = self._loss(z, y)
        if self.hparams["group_weight"]:
            group_loss = self._loss(z, self.label_group[y])
            self.log("train/group_loss", group_loss, batch_size=len(images))
            loss = loss + self.hparams["group_weight"] * group_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels, index = batch
        g = torch.Generator(device=images.device).manual_seed(10_000 + batch_idx)  # same corruption every epoch
        query = self.augment(images, g)
        zq, zc = self(query), self(standardise(images.float()))
        self.log(
            "val/loss",
            self._loss(torch.cat([zq, zc]), torch.cat([labels, labels])),
            prog_bar=True,
            batch_size=len(images),
        )
        self._val.append((zq.float().cpu(), zc.float().cpu(), labels.cpu(), query.cpu(), images.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        zq, zc, y, query, clean = (torch.cat(t) for t in zip(*self._val))
        self._val = []
        sim = zq @ zc.T
        sim.fill_diagonal_(-2.0)  # the clean copy of the query's own image does not count
        k = min(5, len(zc) - 1)
        top = sim.topk(max(k, 1), dim=1).indices
        hits = y[top] == y[:, None]
        self.log("val/top1", hits[:, 0].float().mean(), prog_bar=True)
        self.log("val/top5", hits.any(dim=1).float().mean())
        if len(self.label_group):
            g = self.label_group.cpu()
            self.log("val/group_top1", (g[y[top[:, 0]]] == g[y]).float().mean())
        every = int(self.hparams["examples_every"] or 0)
        if every and (self.current_epoch + 1) % every == 0 and not self.trainer.sanity_checking:
            self._log_examples(query, clean, y, top)

    def _log_examples(self, query, clean, y, top, n: int = 6) -> None:
        from surrogate.embedding.figures import log_figure, retrieval_figure

        pick = torch.linspace(0, len(query) - 1, min(n, len(query))).long()
        fig = retrieval_figure(
            query[pick, 0].numpy(), clean[top[pick], 0].numpy(), (y[top[pick]] == y[pick, None]).numpy()
        )
        log_figure(self.trainer, "val/retrieval_examples", fig, self.current_epoch, self.global_step)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.scheduler_factory(optimizer=optimizer),
                "interval": self.hparams["scheduler_interval"],
            },
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        shape = self.hparams["image_shape"]
        checkpoint["surrogate"] = {
            "library_hash": self.hparams["library_hash"],
            "sampling": self.hparams["sampling"],
            "image_shape": None if shape is None else [int(v) for v in shape],
            "net": dict(getattr(self.net, "config", {})),
        }
