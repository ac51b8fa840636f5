"""Experiment tracking: one stage-independent logging layer for wandb (offline by default),
TensorBoard and CSV (tables, figures, documents), the :class:`RunTracker` callback, the benchmark
logger, and a static HTML summary of a run (docs/dashboards.md). It imports no stage: the stages'
trackers live with them (:mod:`surrogate.embedding.callbacks`, :mod:`surrogate.potential.callbacks`,
:mod:`surrogate.library.tracking`).

Names are imported on first use, so ``python -m surrogate.tracking.summary`` does not load torch.
"""

from __future__ import annotations

import importlib

__all__ = [
    "log_hyperparams",
    "log_dict",
    "log_metrics",
    "log_figure",
    "log_image",
    "log_table",
    "make_loggers",
    "finish",
    "RunTracker",
    "log_benchmarks",
    "write_summary",
    "TrackingError",
]

_WHERE = {
    **{
        name: "loggers"
        for name in (
            "log_hyperparams",
            "log_dict",
            "log_metrics",
            "log_figure",
            "log_image",
            "log_table",
            "make_loggers",
            "finish",
        )
    },
    "RunTracker": "callbacks",
    "log_benchmarks": "log_benchmarks",
    "write_summary": "summary",
    "TrackingError": "errors",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"surrogate.tracking.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'surrogate.tracking' has no attribute {name!r}")
