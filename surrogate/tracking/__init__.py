"""Experiment tracking: one stage-independent logging layer for wandb (offline by default),
TensorBoard and CSV (tables, figures, documents), the :class:`RunTracker` callback, the benchmark
logger, and a static HTML summary of a run (docs/dashboards.md). It imports no stage: the stages'
trackers live with them (:mod:`surrogate.embedding.callbacks`, :mod:`surrogate.potential.callbacks`,
:mod:`surrogate.library.tracking`).

Names are imported on first use, so ``python -m surrogate.tracking.summary`` does not load torch.
"""

from __future__ import annotations

from surrogate.lazy import lazy_attributes

_LAZY = {
    **{
        name: "surrogate.tracking.loggers"
        for name in "log_hyperparams log_dict log_metrics log_figure log_image log_table make_loggers finish".split()
    },
    "RunTracker": "surrogate.tracking.callbacks",
    "log_benchmarks": "surrogate.tracking.log_benchmarks",
    "write_summary": "surrogate.tracking.summary",
    "TrackingError": "surrogate.tracking.errors",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(_LAZY)
