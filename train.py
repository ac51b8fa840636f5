"""Training entry point: ``python train.py [experiment=<name>] [key=value ...]``.

``task`` picks what is trained (experiments set it):

- ``experiment=embedding_demo`` (task ``embedding``) trains the embedding network on the library in
  ``library_dir``; resume with ``ckpt_path=<run>/checkpoints/last.ckpt``. Without a model it checks
  the library and reports the train/val/test splits.
- ``experiment=potential_si`` / ``potential_cdte`` (task ``potential``) trains the interatomic
  potential on DFT data.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from surrogate.errors import ConfigError, exit_on_user_error

TASKS = {
    "embedding": "surrogate.embedding.train:train_embedding",
    "potential": "surrogate.potential.train:train_potential",
}


def train(cfg: DictConfig) -> dict:
    """Run the training task named by ``cfg.task``; returns what it reports."""
    import importlib

    task = cfg.get("task", "embedding")
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; use task=" + " | ".join(TASKS))
    module, func = TASKS[task].split(":")
    return getattr(importlib.import_module(module), func)(cfg)


@hydra.main(version_base="1.3", config_path="surrogate/configs", config_name="train")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    train(cfg)


def main(argv: list[str] | None = None) -> None:
    """``python train.py [experiment=<name>] [key=value ...]``; a config typo is a one-line error."""
    from surrogate.cli import run_hydra

    run_hydra(_main, "train", argv)


if __name__ == "__main__":
    main()
