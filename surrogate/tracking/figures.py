"""Figures the dashboards show: potential parity plots, an embedding projection coloured by family,
and metric curves."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["pca_2d", "parity_figure", "projection_figure", "curves_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of the rows of ``x`` (N, D); returns the (N, 2) coordinates and
    the fraction of the variance each explains. Signs are fixed (largest loading positive), so the
    same data always gives the same picture."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:2]
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
    coords = x @ vt.T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = s**2
    frac = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return coords, np.pad(frac, (0, 2 - len(frac)))


def parity_figure(reference: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], quantity: str, unit: str):
    """Predicted against reference values, one colour per split, with the y = x line and each
    split's MAE in the legend. ``reference`` / ``predicted``: ``{split: values}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    lo, hi = np.inf, -np.inf
    for split, ref in reference.items():
        ref, pred = np.ravel(ref), np.ravel(predicted[split])
        if not len(ref):
            continue
        mae = float(np.mean(np.abs(pred - ref)))
        ax.scatter(
            ref, pred, s=6 if len(ref) > 200 else 14, alpha=0.6, label=f"{split} ({len(ref)}): MAE {mae:.3g} {unit}"
        )
        lo, hi = min(lo, ref.min(), pred.min()), max(hi, ref.max(), pred.max())
    if np.isfinite(lo):
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=0.8, zorder=0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"reference {quantity} [{unit}]")
    ax.set_ylabel(f"predicted {quantity} [{unit}]")
    ax.set_title(f"{quantity} parity", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()
    return fig


def projection_figure(embeddings: np.ndarray, labels: Sequence[str], title: str = "embedding (PCA)"):
    """2-D PCA projection of unit embeddings (N, D), one colour per label (structure family)."""
    plt = _plt()
    coords, frac = pca_2d(embeddings)
    names = np.asarray([str(v) for v in labels])
    fig, ax = plt.subplots(figsize=(4.8, 4.0), dpi=100)
    for k, name in enumerate(sorted(set(names))):
        m = names == name
        ax.scatter(coords[m, 0], coords[m, 1], s=10, alpha=0.7, color=plt.cm.tab10(k % 10), label=f"{name} ({m.sum()})")
    ax.set_xlabel(f"PC1 ({100 * frac[0]:.0f} %)")
    ax.set_ylabel(f"PC2 ({100 * frac[1]:.0f} %)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, title="family", title_fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def curves_figure(steps: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray], title: str, xlabel: str = "step"):
    """Line plot of several metric series (``{name: x}``, ``{name: y}``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=100)
    for name in values:
        x, y = np.asarray(steps[name]), np.asarray(values[name])
        ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, lw=1.2, label=name)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
