"""A self-contained HTML page of one run, for people without a dashboard account:
``surrogate-summary <run_dir>`` (or ``python -m surrogate.tracking.summary <run_dir>``).

The run directory is a training or library-build output folder (``logs/<task>/runs/<time>``) with a
CSV logger (``logger=csv`` or ``many_loggers``). The page holds the metric curves (drawn here with
matplotlib), a table of the final metrics, every figure the loggers saved (PNG, embedded base64),
every logged table, the hyperparameters, and the logged documents (library manifest, potential
metrics). It is written atomically to ``<run_dir>/summary.html``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import time
from pathlib import Path

from surrogate.errors import exit_on_user_error
from surrogate.io.files import atomic_write_text
from surrogate.tracking.errors import TrackingError

__all__ = ["find_run", "read_metrics", "write_summary", "main"]

LOGGER_DIRS = ("", "*/", "*/*/")  # where a run's logger folders are, relative to the run
MAX_FIGURE_BYTES = 3_000_000  # larger PNGs are listed, not embedded
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #eee; } figcaption { font-size: 0.8em; color: #555; }
pre { background: #f7f7f7; padding: 0.6em; font-size: 0.8em; overflow-x: auto; max-height: 30em; }
.wide { overflow-x: auto; } .muted { color: #777; font-size: 0.85em; }
"""


def find_run(run_dir: str | Path) -> dict:
    """What a run directory holds: ``metrics`` (metrics.csv files), ``logger_dirs``, ``hydra_config``,
    ``hparams``.

    Raises
    ------
    TrackingError
        When the directory does not exist or holds none of ``metrics.csv``, ``hparams.yaml`` or
        ``.hydra/config.yaml``.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise TrackingError(
            f"run directory not found: {root}; give a training or build output folder (logs/<task>/runs/<time>)"
        )
    # a CSV logger writes <run>/<name>/version_<n>/metrics.csv; deeper files belong to other runs
    metrics = sorted(p for pattern in LOGGER_DIRS for p in root.glob(f"{pattern}metrics.csv"))
    hparams = sorted(p for pattern in LOGGER_DIRS for p in root.glob(f"{pattern}hparams.yaml"))
    hydra = root / ".hydra" / "config.yaml"
    if not metrics and not hparams and not hydra.is_file():
        raise TrackingError(
            f"{root} is not a run directory (no metrics.csv, hparams.yaml or .hydra/config.yaml); "
            "give a training or build output folder run with logger=csv (logs/<task>/runs/<time>)"
        )
    logger_dirs = sorted({p.parent for p in metrics + hparams})
    return {
        "root": root,
        "metrics": metrics,
        "hparams": hparams,
        "logger_dirs": logger_dirs,
        "hydra_config": hydra if hydra.is_file() else None,
    }


def read_metrics(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """``{metric: (steps, values)}`` of a Lightning ``metrics.csv`` (empty cells skipped)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = row.get("step") or row.get("epoch") or "0"
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                try:
                    v, s = float(value), float(step)
                except ValueError:
                    continue
                out.setdefault(key, ([], []))
                out[key][0].append(s)
                out[key][1].append(v)
    return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _img(data: bytes, caption: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode()
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _table(columns, rows, numeric: bool = True) -> str:
    def td(v):
        text = html.escape(_fmt(v))
        try:
            float(v)
            return f'<td class="num">{text}</td>' if numeric and text else f"<td>{text}</td>"
        except (TypeError, ValueError):
            return f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(td(v) for v in r) + "</tr>" for r in rows)
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def _flatten(obj, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), json.dumps(obj) if isinstance(obj, (list, dict)) else str(obj))]


def _curves(metrics: dict) -> list[str]:
    """One plot per metric name across prefixes (train/loss with val/loss, ...)."""
    from surrogate.tracking.figures import curves_figure

    groups: dict[str, list[str]] = {}
    for key in metrics:
        groups.setdefault(key.split("/", 1)[-1], []).append(key)
    out = []
    for name, keys in sorted(groups.items()):
        if all(len(metrics[k][0]) < 2 for k in keys):
            continue  # single values go to the table only
        fig = curves_figure({k: metrics[k][0] for k in keys}, {k: metrics[k][1] for k in keys}, name)
        out.append(_img(_png(fig), f"{name} vs step"))
    return out


def _final_rows(metrics: dict) -> list[list]:
    rows = []
    for key, (steps, values) in sorted(metrics.items()):
        rows.append([key, values[-1], min(values), max(values), int(steps[-1]), len(values)])
    return rows


def write_summary(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the HTML summary of ``run_dir`` (default ``<run_dir>/summary.html``); returns its path."""
    import yaml

    run = find_run(run_dir)
    root = run["root"]
    output = Path(output) if output is not None else root / "summary.html"
    parts = [
        f"<h1>Run summary: {html.escape(root.resolve().name)}</h1>",
        f'<p class="muted">{html.escape(str(root.resolve()))} &middot; generated '
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} by surrogate-summary</p>",
    ]

    metrics: dict = {}
    for path in run["metrics"]:
        for key, (s, v) in read_metrics(path).items():
            ms, mv = metrics.setdefault(key, ([], []))
            ms.extend(s)
            mv.extend(v)
    if metrics:
        parts.append("<h2>Final metrics</h2>")
        parts.append(_table(["metric", "last", "min", "max", "last step", "points"], _final_rows(metrics)))
        curves = _curves(metrics)
        if curves:
            parts.append("<h2>Metric curves</h2>" + "".join(curves))

    figures = []
    for d in run["logger_dirs"]:
        for png in sorted(d.rglob("*.png")):
            rel = png.relative_to(root)
            if png.stat().st_size > MAX_FIGURE_BYTES:
                figures.append(
                    f'<p class="muted">{html.escape(str(rel))} ({png.stat().st_size // 1000} kB, not embedded)</p>'
                )
            else:
                figures.append(_img(png.read_bytes(), str(rel)))
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(figures))

    tables = [(p, d) for d in run["logger_dirs"] for p in sorted(d.rglob("tables/*.csv"))]
    if tables:
        parts.append("<h2>Tables</h2>")
        for path, d in tables:
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            if rows:
                parts.append(f"<h3>{html.escape(path.stem)}</h3>" + _table(rows[0], rows[1:]))

    config = run["hydra_config"] or (run["hparams"][0] if run["hparams"] else None)
    for path in ([config] if config else []) + [p for p in run["hparams"] if p != config]:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            data = {"(unreadable)": path.read_text()[:2000]}
        title = "Configuration" if path == run["hydra_config"] else f"Hyperparameters ({path.relative_to(root)})"
        parts.append(
            f"<h2>{html.escape(title)}</h2><details open><summary>{len(_flatten(data))} values</summary>"
            + _table(["key", "value"], _flatten(data), numeric=False)
            + "</details>"
        )
    overrides = root / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        parts.append("<h3>Command-line overrides</h3><pre>" + html.escape(overrides.read_text()) + "</pre>")

    docs = list(
        dict.fromkeys([p for d in run["logger_dirs"] for p in sorted(d.glob("*.json"))] + sorted(root.glob("*.json")))
    )
    if docs:
        parts.append("<h2>Documents</h2>")
        for path in docs:
            parts.append(
                f"<details><summary>{html.escape(str(path.relative_to(root)))}</summary><pre>"
                + html.escape(path.read_text()[:200_000])
                + "</pre></details>"
            )

    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(root.resolve().name)} summary</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    atomic_write_text(output, page)
    return output


def run(argv=None) -> Path:
    p = argparse.ArgumentParser(prog="surrogate-summary", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="training or library-build output folder (logs/<task>/runs/<time>)")
    p.add_argument("-o", "--output", default=None, help="output file (default <run_dir>/summary.html)")
    args = p.parse_args(argv)
    path = write_summary(args.run_dir, args.output)
    print(f"summary written to {path}")
    return path


@exit_on_user_error
def main(argv=None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
