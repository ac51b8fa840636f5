"""Single-image inference CLI: ``python infer.py image=<file> [key=value ...]`` or ``surrogate-infer``.

Reads one micrograph, matches it against the library (CNN embedding + FAISS, or method=sift|hog),
ranks the candidates by image distance and energy, refines the top ones against the image, and
writes ``candidates.json``, structures, overlay PNGs and ``report.html`` into ``output_dir``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from surrogate.errors import exit_on_user_error


def infer(cfg: DictConfig) -> dict:
    """Run the job described by ``cfg`` (see surrogate/configs/infer.yaml); returns the written files."""
    from omegaconf import OmegaConf

    from surrogate.inference.pipeline import run_inference
    from surrogate.inference.report import lattice_warning, write_report

    from surrogate.errors import ConfigError

    if OmegaConf.is_missing(cfg, "image"):
        raise ConfigError("no image given: pass image=<dm3/dm4/emd/ser/mrc/tif/png/npy file>")
    for key in ("pixel_size", "retrieval.threshold", "retrieval.lattice_tolerance", "rank.energy_weight"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, bool):
            try:
                float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={value!r} is not a number") from None
    for key in ("retrieval.k", "retrieval.candidates", "refine.top"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
    refine = OmegaConf.to_container(cfg.refine, resolve=True)
    top = int(refine.pop("top"))
    result = run_inference(
        cfg.image, cfg.library_dir, method=cfg.method, checkpoint=cfg.checkpoint, index=cfg.index,
        pixel_size=cfg.pixel_size, channel=cfg.channel, frame=cfg.frame,
        roi=list(cfg.roi) if cfg.get("roi") is not None else None, denoise=cfg.preprocess.denoise,
        stride=cfg.preprocess.stride, k=cfg.retrieval.k, candidates=cfg.retrieval.candidates,
        elements=list(cfg.retrieval.elements) if cfg.retrieval.get("elements") else None,
        mode=cfg.retrieval.get("mode"),
        energy_weight=cfg.rank.energy_weight, threshold=cfg.retrieval.threshold,
        lattice=cfg.retrieval.get("lattice_check", "rerank"), lattice_tolerance=cfg.retrieval.get("lattice_tolerance"),
        refine_top=top,
        refine_settings=refine, device=cfg.device,
    )
    files = write_report(result, cfg.output_dir)
    if cfg.get("wandb"):
        from surrogate.inference.report import log_wandb

        log_wandb(result, files)
    best = result.candidates[0] if result.candidates else None
    if best is not None:
        fom = best.refinement.get("fom")
        print(f"best: {best.family} {best.config_id} distance {best.distance:.3f}"
              + (f", FOM {best.refinement['fom_before']:.3f} -> {fom:.3f}" if fom is not None else "")
              + (" (OUT OF LIBRARY: beyond the calibrated distance)" if result.out_of_library else ""))
    if result.lattice.get("mismatch"):
        print(lattice_warning(result.lattice))
    print(f"report: {files['report']}")
    return files


@hydra.main(version_base="1.3", config_path="../configs", config_name="infer")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    infer(cfg)


def main(argv: list[str] | None = None) -> None:
    """``surrogate-infer image=<file> [key=value ...]``; a config typo is a one-line error."""
    from surrogate.cli import run_hydra

    run_hydra(_main, "infer", argv)


if __name__ == "__main__":
    main()
