"""The stage-independent Lightning callback that sends what a training run did to its loggers.

:class:`RunTracker` logs the resolved config and documents (library manifest, data summary) when
fitting starts; without loggers it does nothing. The stages' trackers derive from it and live with
their stages: :class:`surrogate.embedding.callbacks.EmbeddingTracker` (retrieval table, embedding
projection) and :class:`surrogate.potential.callbacks.PotentialTracker` (parity plots).
"""

from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.callbacks import Callback

from surrogate.tracking.loggers import log_dict, log_hyperparams, to_container

__all__ = ["RunTracker"]


class RunTracker(Callback):
    """Log ``config`` as hyperparameters and each of ``documents`` (``{name: dict}``) at fit start.

    Parameters
    ----------
    config
        The run's (Hydra) config; logged resolved.
    documents
        Named dicts logged whole, e.g. ``{"library_manifest": manifest}``.
    """

    def __init__(self, config: Any = None, documents: Mapping[str, Mapping] | None = None):
        self.config = to_container(config) if config is not None else None
        self.documents = dict(documents or {})

    @staticmethod
    def _active(trainer) -> bool:
        return bool(trainer.loggers) and trainer.is_global_zero

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        if self.config:
            log_hyperparams(trainer.loggers, self.config)
        for name, doc in self.documents.items():
            log_dict(trainer.loggers, name, doc)
