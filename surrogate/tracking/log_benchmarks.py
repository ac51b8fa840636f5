"""Log the benchmark tables (``benchmarks/results/*.md``, and ``*.json`` without a markdown twin) to
a logger: ``python -m surrogate.tracking.log_benchmarks benchmarks/results --logger wandb``.

Every markdown table becomes one logged table named ``<file>/<section>``; a JSON result without a
markdown table is logged flattened (``key | value``) and whole as a document.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from surrogate.errors import exit_on_user_error
from surrogate.tracking.errors import TrackingError

__all__ = ["read_markdown_tables", "flatten", "log_benchmarks", "main"]


def _value(cell: str):
    text = cell.strip().strip("`")
    try:
        return float(text) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text) else cell.strip()
    except ValueError:
        return cell.strip()


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def read_markdown_tables(path: str | Path) -> list[tuple[str, list[str], list[list]]]:
    """The tables of a markdown file as ``(section title, columns, rows)``; numbers become floats."""
    tables, heading, block = [], Path(path).stem, []
    lines = Path(path).read_text(encoding="utf-8").splitlines() + [""]
    for line in lines:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and re.fullmatch(r"\|?[\s:|-]+\|?", block[1].strip()):
            columns = _split_row(block[0])
            rows = [[_value(c) for c in _split_row(b)] for b in block[2:]]
            rows = [r + [""] * (len(columns) - len(r)) if len(r) < len(columns) else r[: len(columns)] for r in rows]
            tables.append((heading, columns, rows))
        block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def flatten(obj, prefix: str = "") -> dict:
    """Nested dicts/lists as ``{"a/b/0": value}``."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in flatten(val, f"{prefix}{key}/").items()}
    if isinstance(obj, list) and obj and any(isinstance(v, (dict, list)) for v in obj):
        return {k: v for i, val in enumerate(obj) for k, v in flatten(val, f"{prefix}{i}/").items()}
    return {prefix.rstrip("/"): obj if isinstance(obj, (int, float, str, bool)) or obj is None else json.dumps(obj)}


def _tag(stem: str, title: str, seen: dict) -> str:
    tag = f"benchmarks/{stem}/{re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_').lower() or 'table'}"
    seen[tag] = seen.get(tag, 0) + 1
    return tag if seen[tag] == 1 else f"{tag}_{seen[tag]}"


def log_benchmarks(results_dir: str | Path, loggers) -> list[str]:
    """Log every table of ``results_dir`` to ``loggers``; returns the table tags logged.

    Raises
    ------
    TrackingError
        When ``results_dir`` is not a folder or holds no ``.md`` / ``.json`` results.
    """
    from surrogate.tracking.loggers import log_dict, log_table

    root = Path(results_dir)
    if not root.is_dir():
        raise TrackingError(f"benchmark results folder not found: {root}; run a benchmark (benchmarks/*.py) first")
    files = sorted(root.glob("*.md")) + sorted(p for p in root.glob("*.json") if not p.with_suffix(".md").is_file())
    if not files:
        raise TrackingError(f"no benchmark results (*.md, *.json) in {root}; run a benchmark (benchmarks/*.py) first")
    tags: list[str] = []
    seen: dict[str, int] = {}
    for path in files:
        if path.suffix == ".md":
            for title, columns, rows in read_markdown_tables(path):
                tags.append(_tag(path.stem, title, seen))
                log_table(loggers, tags[-1], columns, rows)
        else:
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise TrackingError(f"corrupt benchmark result {path} ({exc}); rerun its benchmark") from None
            tags.append(_tag(path.stem, "values", seen))
            log_table(loggers, tags[-1], ["key", "value"], [[k, v] for k, v in flatten(data).items()])
            log_dict(loggers, f"benchmarks_{path.stem}", data if isinstance(data, dict) else {"value": data})
    return tags


def run(argv=None) -> list[str]:
    """Parse ``argv``, log the tables and close the loggers; returns the tags logged."""
    from surrogate.tracking.loggers import finish, make_loggers

    p = argparse.ArgumentParser(prog="python -m surrogate.tracking.log_benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default="benchmarks/results", help="folder of benchmark results")
    p.add_argument("--logger", default="csv", help="csv | tensorboard | wandb | many_loggers (default csv)")
    p.add_argument("--output-dir", default=None, help="where the logger writes (default logs/benchmarks/runs/<time>)")
    args = p.parse_args(argv)
    out = args.output_dir or f"logs/benchmarks/runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    loggers = make_loggers(args.logger, out)
    try:
        tags = log_benchmarks(args.results, loggers)
    except BaseException:
        finish(loggers, "failed")
        raise
    finish(loggers)
    print(f"logged {len(tags)} benchmark tables from {args.results} to {args.logger} in {out}")
    return tags


@exit_on_user_error
def main(argv=None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
