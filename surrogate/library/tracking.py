"""Log a finished library build (config, manifest, counts, timing, contact sheet) to the loggers of
the build config's ``logger`` group (``surrogate-build-library logger=wandb``)."""

from __future__ import annotations

from pathlib import Path

from surrogate.library.store import read_manifest
from surrogate.tracking.loggers import (
    finish,
    log_dict,
    log_hyperparams,
    log_image,
    log_metrics,
    log_table,
    make_loggers,
)

__all__ = ["log_library_build"]


def log_library_build(cfg, root: str | Path, loggers: list | None = None) -> list:
    """Log the library in ``root`` built from ``cfg`` to ``loggers`` (default: built from
    ``cfg.logger``; closed afterwards). Returns the loggers used."""
    root = Path(root)
    own = loggers is None
    loggers = make_loggers(cfg.get("logger")) if own else loggers
    if not loggers:
        return []
    manifest = read_manifest(root)
    counts, build = manifest.get("counts", {}), manifest.get("build", {})
    log_hyperparams(loggers, cfg)
    log_dict(loggers, "library_manifest", manifest)
    metrics = {f"library/{k}": counts[k] for k in ("units", "images", "structures") if k in counts}
    if "elapsed" in build:
        metrics["library/build_seconds"] = build["elapsed"]
        new_images = build.get("new_units", counts.get("units", 0)) * manifest.get("images_per_structure", 1)
        if build["elapsed"] > 0 and new_images:
            metrics["library/images_per_second"] = new_images / build["elapsed"]
    log_metrics(loggers, metrics, step=0)
    fam_s, fam_i = counts.get("per_family_structures", {}), counts.get("per_family_images", {})
    log_table(
        loggers,
        "library/families",
        ["family", "structures", "images"],
        [[f, fam_s.get(f, 0), fam_i.get(f, 0)] for f in sorted(set(fam_s) | set(fam_i))],
    )
    log_table(loggers, "library/modes", ["mode", "images"], sorted(counts.get("per_mode_images", {}).items()))
    sheet = root / "contact_sheet.png"
    if sheet.is_file():
        log_image(loggers, "library/contact_sheet", sheet)
    if own:
        finish(loggers)
    return loggers
