"""Inference entry point: ``python infer.py image=<file>``.

The retrieval pipeline (read -> embed -> search -> rank -> refine -> report) is issue 6; this
version validates its inputs and says what is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from surrogate.errors import ConfigError, SurrogateError


def infer(cfg: DictConfig) -> None:
    path = Path(cfg.image)
    if not path.is_file():
        raise ConfigError(f"image file not found: {path}; pass image=<path to a dm3/dm4/emd/tif/png/npy file>")
    from surrogate.library import Library

    Library(cfg.library_dir)
    raise ConfigError("inference needs a trained embedding index, which this version does not build yet (issue 6)")


@hydra.main(version_base="1.3", config_path="surrogate/configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    try:
        infer(cfg)
    except SurrogateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
