"""One logging call for every kind of logger: wandb, TensorBoard, CSV (or any logger with a folder).

Each function takes the Lightning loggers of a run (``trainer.loggers``, or the list built by
:func:`make_loggers`) and writes one kind of record to each of them:

=================  =========================  ==========================  ==================================
record             wandb                      TensorBoard                 CSV (files in ``log_dir``)
=================  =========================  ==========================  ==================================
hyperparameters    run config                 ``hparams.yaml`` + text     ``hparams.yaml``
dict (manifest)    run config + JSON file     text (JSON)                 ``<name>.json``
metrics            history                    scalars                     ``metrics.csv``
figure / image     ``wandb.Image``            ``add_figure`` / image      ``figures/<tag>.png``
table              ``wandb.Table``            text (markdown table)       ``tables/<tag>.csv``
=================  =========================  ==========================  ==================================

A logger of another kind is skipped (a ``log_dir`` is enough to receive files). Table cells that
are 2-D/3-D arrays are images: wandb shows them in the table, the text and CSV forms drop them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from surrogate.io.files import atomic_open, atomic_write_text

__all__ = [
    "logger_kind",
    "make_loggers",
    "log_hyperparams",
    "log_dict",
    "log_metrics",
    "log_figure",
    "log_image",
    "log_table",
    "finish",
    "to_container",
]


def logger_kind(logger) -> str | None:
    """``"wandb"``, ``"tensorboard"``, ``"csv"``, ``"files"`` (any other logger with a ``log_dir``) or
    ``None`` (a logger this module does not know: skipped)."""
    names = {c.__name__ for c in type(logger).__mro__}
    for cls, kind in (("WandbLogger", "wandb"), ("TensorBoardLogger", "tensorboard"), ("CSVLogger", "csv")):
        if cls in names:
            return kind
    return "files" if isinstance(getattr(logger, "log_dir", None), (str, Path)) else None


def _loggers(loggers) -> list:
    if not loggers:
        return []
    return list(loggers) if isinstance(loggers, (list, tuple)) else [loggers]


def _file_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") or "untitled"


def _folder(logger) -> Path:
    return Path(logger.log_dir)


def to_container(cfg) -> Any:
    """A Hydra/OmegaConf config as plain dicts and lists, interpolations resolved where they can be
    (an unresolvable one, such as ``${hydra:...}`` outside a Hydra run, is kept as text)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # an interpolation that only resolves inside a Hydra run
            return OmegaConf.to_container(cfg, resolve=False)
    return cfg


def make_loggers(logger_cfg, output_dir: str | Path | None = None) -> list:
    """Instantiate the loggers of a ``logger`` config group (e.g. ``cfg.logger``) or of the named
    option (``"csv"``, ``"tensorboard"``, ``"wandb"``, ``"many_loggers"``) writing under ``output_dir``.

    Raises
    ------
    ConfigError
        For an unknown logger name, or a logger whose package is not installed.
    """
    from hydra.utils import instantiate

    from surrogate.errors import ConfigError

    if not logger_cfg:
        return []
    if isinstance(logger_cfg, str):
        from hydra import compose, initialize_config_module
        from hydra.errors import MissingConfigException

        over = [f"logger={logger_cfg}"] + ([f"paths.output_dir={output_dir}"] if output_dir is not None else [])
        try:
            with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
                logger_cfg = compose(config_name="train", overrides=over).logger
        except MissingConfigException:
            raise ConfigError(f"unknown logger {logger_cfg!r}: use csv, tensorboard, wandb or many_loggers") from None
    out = []
    for name, node in logger_cfg.items():
        try:
            out.append(instantiate(node))
        except Exception as exc:  # Lightning raises ModuleNotFoundError wrapped by Hydra
            cause: BaseException = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, (ImportError, ModuleNotFoundError)) or "install" in str(cause):
                raise ConfigError(
                    f"logger {name} needs a package that is not installed ({str(cause).splitlines()[0]}); "
                    "pip install 'surrogate[track]' or choose logger=csv"
                ) from None
            raise
    return out


def log_hyperparams(loggers, params: Mapping[str, Any]) -> None:
    """Record hyperparameters (e.g. the resolved Hydra config, nested dicts allowed)."""
    params = to_container(params)
    for logger in _loggers(loggers):
        kind = logger_kind(logger)
        if kind in ("wandb", "tensorboard", "csv"):
            logger.log_hyperparams(params)
        if kind == "tensorboard":
            logger.experiment.add_text("hparams", _code(_yaml(params)), global_step=0)
        elif kind == "files":
            atomic_write_text(_folder(logger) / "hparams.yaml", _yaml(params))


def log_dict(loggers, name: str, data: Mapping[str, Any]) -> None:
    """Record a document (e.g. the library manifest) under ``name``."""
    text = json.dumps(to_container(data), indent=1, default=str)
    for logger in _loggers(loggers):
        kind = logger_kind(logger)
        if kind == "wandb":
            run = logger.experiment
            run.config.update({name: json.loads(text)}, allow_val_change=True)
            atomic_write_text(Path(run.dir) / f"{_file_name(name)}.json", text)
        elif kind == "tensorboard":
            logger.experiment.add_text(name, _code(text), global_step=0)
        elif kind in ("csv", "files"):
            atomic_write_text(_folder(logger) / f"{_file_name(name)}.json", text)


def log_metrics(loggers, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Record scalar metrics at ``step``."""
    metrics = {k: float(v) for k, v in metrics.items()}
    for logger in _loggers(loggers):
        if logger_kind(logger) in ("wandb", "tensorboard", "csv"):
            logger.log_metrics(metrics, step=step)


def _rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def log_figure(loggers, tag: str, fig, step: int = 0, close: bool = True) -> None:
    """Record a matplotlib figure under ``tag`` (CSV: ``<log_dir>/figures/<tag>.png``, the latest)."""
    rgb = None
    for logger in _loggers(loggers):
        kind = logger_kind(logger)
        if kind == "wandb":
            rgb = _rgb(fig) if rgb is None else rgb
            logger.log_image(key=tag, images=[rgb], step=step)
        elif kind == "tensorboard":
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)
        elif kind in ("csv", "files"):
            with atomic_open(_folder(logger) / "figures" / f"{_file_name(tag)}.png", "wb") as fh:
                fig.savefig(fh, format="png", dpi=fig.dpi)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)


def log_image(loggers, tag: str, image: np.ndarray | str | Path, step: int = 0) -> None:
    """Record an image array (H x W grey or H x W x 3/4 colour) or a PNG file under ``tag``."""
    png = None
    if isinstance(image, (str, Path)):
        png = Path(image).read_bytes()
        import imageio.v3 as iio

        image = iio.imread(png, extension=".png")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    for logger in _loggers(loggers):
        kind = logger_kind(logger)
        if kind == "wandb":
            logger.log_image(key=tag, images=[image], step=step)
        elif kind == "tensorboard":
            logger.experiment.add_image(
                tag, _uint8(image), global_step=step, dataformats="HW" if image.ndim == 2 else "HWC"
            )
        elif kind in ("csv", "files"):
            with atomic_open(_folder(logger) / "figures" / f"{_file_name(tag)}.png", "wb") as fh:
                if png is not None:
                    fh.write(png)
                else:
                    import imageio.v3 as iio

                    fh.write(iio.imwrite("<bytes>", _uint8(image), extension=".png"))


def _uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    return (255 * (image - lo) / (hi - lo if hi > lo else 1.0)).clip(0, 255).astype(np.uint8)


def _is_image(value) -> bool:
    return isinstance(value, np.ndarray) and value.ndim in (2, 3) and min(value.shape[:2]) > 1


def _type(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    return type(value).__name__


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.6g}"
    return str(value)


def log_table(loggers, tag: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], step: int = 0) -> None:
    """Record a table: ``columns`` names, ``rows`` of cells (numbers, text, or image arrays).

    Image cells become ``wandb.Image`` in wandb; TensorBoard (markdown) and CSV files keep only the
    columns without images. NaN cells are written empty.
    """
    columns, rows = list(columns), [list(r) for r in rows]
    if any(len(r) != len(columns) for r in rows):
        raise ValueError(f"table {tag}: every row needs {len(columns)} cells")
    image_cols = {j for j in range(len(columns)) if any(_is_image(r[j]) for r in rows)}
    keep = [j for j in range(len(columns)) if j not in image_cols]
    text_rows = [[_cell(r[j]) for j in keep] for r in rows]
    for logger in _loggers(loggers):
        kind = logger_kind(logger)
        if kind == "wandb":
            import wandb

            data = [
                [
                    wandb.Image(_uint8(c))
                    if j in image_cols
                    else (None if isinstance(c, float) and math.isnan(c) else c)
                    for j, c in enumerate(r)
                ]
                for r in rows
            ]
            for j in range(len(columns)):  # wandb wants one type per column: mixed text and numbers become text
                if len({_type(r[j]) for r in data} - {None}) > 1:
                    for r in data:
                        r[j] = None if r[j] is None else _cell(r[j])
            logger.log_table(key=tag, columns=columns, data=data, step=step)
        elif kind == "tensorboard":
            logger.experiment.add_text(tag, markdown_table([columns[j] for j in keep], text_rows), global_step=step)
        elif kind in ("csv", "files"):
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow([columns[j] for j in keep])
            writer.writerows(text_rows)
            atomic_write_text(_folder(logger) / "tables" / f"{_file_name(tag)}.csv", buf.getvalue())


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-style markdown table."""
    esc = lambda v: _cell(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def finish(loggers, status: str = "success") -> None:
    """Flush and close loggers used outside a Trainer (and end the wandb run, so the next one starts
    a new run in the same process)."""
    for logger in _loggers(loggers):
        kind = logger_kind(logger)
        if kind in ("wandb", "tensorboard", "csv"):
            logger.finalize(status)
        if kind == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=0 if status == "success" else 1)


def _yaml(params) -> str:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_yaml(OmegaConf.create(params))
    except Exception:
        return json.dumps(params, indent=1, default=str)


def _code(text: str) -> str:
    """Preformatted markdown (indented 4 spaces, as TensorBoard's text tab renders it)."""
    return "\n".join("    " + line for line in text.splitlines())
