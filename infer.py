"""Inference entry point: ``python infer.py image=<file>``.

The retrieval pipeline (read -> embed -> search -> rank -> refine -> report) is issue 6; this
version validates its inputs and says what is missing.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from surrogate.errors import ConfigError, exit_on_user_error


def infer(cfg: DictConfig) -> None:
    path = Path(cfg.image)
    if not path.is_file():
        raise ConfigError(f"image file not found: {path}; pass image=<path to a dm3/dm4/emd/tif/png/npy file>")
    from surrogate.library import Library

    Library(cfg.library_dir)
    raise ConfigError("inference needs a trained embedding index, which this version does not build yet (issue 6)")


@hydra.main(version_base="1.3", config_path="surrogate/configs", config_name="infer")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    infer(cfg)


if __name__ == "__main__":
    main()
