"""Single-image inference CLI: ``python infer.py image=<file> [key=value ...]`` or ``surrogate-infer``.

Reads one micrograph, matches it against the library (CNN embedding + FAISS, or method=sift|hog|spectrum),
ranks the candidates by image distance and energy, refines the top ones against the image, and
writes ``candidates.json``, structures, overlay PNGs and ``report.html`` into ``output_dir``.
Every setting, with its default and meaning, is in :mod:`surrogate.inference.settings`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from surrogate.errors import exit_on_user_error
from surrogate.inference.settings import register

register()  # the schema infer.yaml builds on


def infer(cfg: DictConfig) -> dict:
    """Run the job described by ``cfg`` (surrogate/configs/infer.yaml); returns the written files."""
    from omegaconf import OmegaConf

    from surrogate.errors import ConfigError
    from surrogate.inference.pipeline import run_inference
    from surrogate.inference.report import boundary_line, classes_line, lattice_warning, write_report
    from surrogate.inference.settings import InferConfig

    if OmegaConf.is_missing(cfg, "image"):
        raise ConfigError("no image given: pass image=<dm3/dm4/emd/ser/mrc/tif/png/npy file>")
    settings = InferConfig.from_config(cfg)
    result = run_inference(settings.image, settings.library_dir, settings)
    files = write_report(result, settings.output_dir)
    if settings.wandb:
        from surrogate.inference.report import log_wandb

        log_wandb(result, files)
    best = result.candidates[0] if result.candidates else None
    if best is not None:
        r = best.refinement
        print(
            f"best: {best.family} {best.config_id} distance {best.distance:.3f}"
            + (f", FOM {r['fom_before']:.3f} -> {r['fom']:.3f}" if r else "")
            + (f", {100 * r['columns']['column_fraction']:.0f} % of columns matched" if r and r.get("columns") else "")
            + (" (OUT OF LIBRARY: beyond the calibrated distance)" if result.out_of_library else "")
        )
        if r and r.get("relax_steps") is not None:
            print(
                f"relaxed: {1000 * (r['energy_per_atom_unrelaxed'] - r['energy_per_atom_relaxed']):.0f} meV/atom lower "
                f"({r['relax_energy_drop_eV']:.1f} eV, largest move {r['relax_max_displacement_A']:.2f} Å, "
                f"{r['relax_steps']} steps, {r['relax_stopped']}); FOM {r['fom_relaxed']:.3f} relaxed, "
                + ("the relaxed structure kept" if r.get("relaxed_model_used") else "the unrelaxed fit kept")
            )
        elif r and r.get("relax_skipped"):
            print(f"relaxed: not ({r['relax_skipped']})")
    if result.boundary:
        print(boundary_line(result.boundary))
    if result.classes:
        print(classes_line(result.classes))
    if result.lattice.get("mismatch"):
        print(lattice_warning(result.lattice))
    print(f"report: {files['report']}")
    return files


@hydra.main(version_base="1.3", config_path="../configs", config_name="infer")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    from surrogate.cli import quiet_console

    quiet_console(bool(cfg.get("verbose", False)))
    infer(cfg)


def main(argv: list[str] | None = None) -> None:
    """``surrogate-infer image=<file> [key=value ...]``; a config typo is a one-line error."""
    from surrogate.cli import run_hydra

    run_hydra(_main, "infer", argv)


if __name__ == "__main__":
    main()
