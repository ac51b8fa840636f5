"""Training entry point: ``python train.py [experiment=<name>] [key=value ...]``.

Today it checks the library and reports the train/val/test splits the models will use; the
embedding (issue 5) and potential (issue 4) experiments plug in as ``experiment=`` configs.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from surrogate.errors import ConfigError, exit_on_user_error


def train(cfg: DictConfig) -> dict:
    """Validate the library and return the split sizes; raise if an experiment is requested that
    this version cannot train."""
    from surrogate.library import LibraryDataset

    sizes = {s: len(LibraryDataset(cfg.library_dir, s, by=cfg.split_by, fractions=list(cfg.split_fractions)))
             for s in ("train", "val", "test")}
    print(f"library {cfg.library_dir}: " + ", ".join(f"{k} {v} images" for k, v in sizes.items()))
    if cfg.get("model") is not None:
        raise ConfigError("this version has no trainable model yet: the embedding and potential experiments are not built")
    return sizes


@hydra.main(version_base="1.3", config_path="surrogate/configs", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
