"""Console entry point: ``surrogate-build-library`` / ``python -m surrogate.library``.

Examples
--------
    surrogate-build-library                                   # demo library in ./demo_library
    surrogate-build-library library.output_dir=lib simulate=accurate library.images_per_structure=8
    surrogate-build-library library.scheduler=tcp://scheduler:8786
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from surrogate.errors import exit_on_user_error


def build(cfg: DictConfig):
    """Build the library described by a composed ``build_library`` config; returns its directory."""
    from surrogate.library.build import build_library

    root = build_library(cfg.structures, cfg.simulate, cfg.library, seed=int(cfg.seed), progress=bool(cfg.progress))
    summary = root / "summary.md"
    if summary.exists():
        print(summary.read_text())
    print(f"library written to {root.resolve()} (contact sheet: {root / 'contact_sheet.png'})")
    if cfg.get("logger"):  # manifest, counts, timing and the contact sheet to wandb / TensorBoard / CSV
        from surrogate.library.tracking import log_library_build

        log_library_build(cfg, root)
    return root


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_library")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    import distributed  # noqa: F401  (installs its console log handlers on import: quiet_console reroutes them)

    from surrogate.cli import quiet_console

    quiet_console(bool(cfg.get("verbose", False)))
    build(cfg)


def main(argv: list[str] | None = None) -> None:
    """``surrogate-build-library [key=value ...]``; a config typo is a one-line error."""
    from surrogate.cli import run_hydra

    run_hydra(_main, "build_library", argv)


if __name__ == "__main__":
    main()
