"""Retrieval-example figures (query | top-k) and logging them to whatever loggers a Trainer has."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["retrieval_figure", "log_figure"]


def retrieval_figure(queries: np.ndarray, retrieved: np.ndarray, correct: np.ndarray):
    """Grid of rows ``query | top-1 ... top-k``; retrieved images framed green (same configuration)
    or red. ``queries`` (Q, H, W), ``retrieved`` (Q, k, H, W), ``correct`` (Q, k) bool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q, k = correct.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.3 * (k + 1), 1.3 * q), squeeze=False)
    for r in range(q):
        axes[r, 0].imshow(queries[r], cmap="gray")
        axes[r, 0].set_title("query" if r == 0 else "", fontsize=7)
        for c in range(k):
            ax = axes[r, c + 1]
            ax.imshow(retrieved[r, c], cmap="gray")
            if r == 0:
                ax.set_title(f"top {c + 1}", fontsize=7)
            for side in ax.spines.values():
                side.set_edgecolor("tab:green" if correct[r, c] else "tab:red")
                side.set_linewidth(2.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.2)
    return fig


def log_figure(trainer, tag: str, fig, epoch: int, step: int) -> None:
    """TensorBoard: ``add_figure``; wandb: ``log_image``; CSV (or any logger with a ``log_dir``): a PNG
    ``<log_dir>/<tag>_epoch<N>.png``. Closes the figure."""
    import matplotlib.pyplot as plt

    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)  # closed below, after every logger
        elif kind == "WandbLogger":
            fig.canvas.draw()
            image = np.asarray(fig.canvas.buffer_rgba())[..., :3]
            logger.log_image(key=tag, images=[image], step=step)
        elif getattr(logger, "log_dir", None):
            path = Path(logger.log_dir) / f"{tag.replace('/', '_')}_epoch{epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=80)
    plt.close(fig)
