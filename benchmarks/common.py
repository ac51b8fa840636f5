"""What every benchmark shares: its command-line arguments, the machine line, writing the JSON +
markdown result atomically, and the statistics several of them report.

Benchmarks are scripts (``python benchmarks/<name>.py``); Python puts their folder on ``sys.path``,
so ``from common import ...`` needs no path manipulation. They measure the shipped stages
(``surrogate.inference.*``), never copies of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REAL_TWIN = REPO.parent / "shared" / "data" / "real" / "cdte_110_twin" / "HAADF26.dm3"

__all__ = [
    "REPO",
    "RESULTS",
    "REAL_TWIN",
    "parser",
    "machine",
    "write_results",
    "markdown_table",
    "auroc",
    "real_twin_conditions",
]


def parser(
    doc: str,
    library: str | None = "demo_library",
    checkpoint: str | None = "checkpoints/embedding_demo.pt",
    out: str | Path | None = None,
    quick: bool = False,
) -> argparse.ArgumentParser:
    """An argument parser with the shared options: ``--library``, ``--checkpoint``, ``--out`` (the
    result's path stem or folder), ``--quick`` (a smoke-sized run), as the benchmark asks for them."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    if library is not None:
        p.add_argument("--library", default=library, help="library directory (default %(default)s)")
    if checkpoint is not None:
        p.add_argument("--checkpoint", default=checkpoint, help="embedding checkpoint (default %(default)s)")
    if out is not None:
        p.add_argument("--out", default=str(out), help="where the JSON + markdown results go (default %(default)s)")
    if quick:
        p.add_argument("--quick", action="store_true", help="a small, fast run (smoke test)")
    return p


def machine(threads: int | None = None) -> str:
    """``"<cpu>, <n> cores"`` (or threads) of the machine the benchmark ran on."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {threads} threads" if threads else f"{cpu}, {os.cpu_count()} cores"


def write_results(stem: str | Path, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically (an interrupted run leaves the old files)."""
    from surrogate.io.files import atomic_write_text

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    js, md = stem.with_suffix(".json"), stem.with_suffix(".md")
    atomic_write_text(js, json.dumps(result, indent=1, default=float))
    atomic_write_text(md, markdown if markdown.endswith("\n") else markdown + "\n")
    return js, md


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """A markdown table of ``rows`` (missing values blank)."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in columns) + " |" for r in rows]
    return out


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(out-of-library score > in-library score), ties counted half."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([in_scores, out_scores]))
    n_in, n_out = len(in_scores), len(out_scores)
    return float((r[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def real_twin_conditions(sampling: float):
    """Imaging conditions the refinements of the real CdTe twin start from (HAADF26.dm3: 200 kV, 22 mrad,
    80-200 mrad detector, 0.5 Å source), at ``sampling`` [Å/px]."""
    from surrogate.simulate.conditions import ImagingConditions

    return ImagingConditions(
        mode="haadf",
        method="incoherent",
        energy=200e3,
        semiangle=22.0,
        inner=80.0,
        outer=200.0,
        source_size=0.5,
        sampling=sampling,
    )
