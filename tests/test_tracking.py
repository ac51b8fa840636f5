"""Dashboards: tiny training runs and a library build log their figures and tables to every kind of
logger, the HTML summary embeds them, and the CLIs fail with one line on bad folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from surrogate.tracking.errors import TrackingError
from tests.conftest import REPO


class _Page(HTMLParser):
    """Images (alt text, embedded or not), table headers and headings of an HTML page."""

    def __init__(self):
        super().__init__()
        self.images, self.headers, self.headings, self._tag = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("alt", ""), a.get("src", "").startswith("data:image/png;base64,")))
        self._tag = tag

    def handle_data(self, data):
        if self._tag == "th":
            self.headers.append(data)
        elif self._tag in ("h2", "h3"):
            self.headings.append(data)

    def handle_endtag(self, tag):
        self._tag = None


def _parse(path) -> _Page:
    page = _Page()
    page.feed(Path(path).read_text())
    return page


def _version_dir(run: Path) -> Path:
    (d,) = sorted((run / "csv").glob("version_*"))
    return d


@pytest.fixture(scope="module")
def energy_library(tiny_library, tmp_path_factory):
    """The tiny library with an energy per atom on every configuration (as surrogate-annotate-energies writes)."""
    from ase.db import connect

    root = tmp_path_factory.mktemp("elib") / "lib"
    shutil.copytree(tiny_library, root)
    with connect(root / "structures.db") as db:
        for k, row in enumerate(list(db.select())):
            db.update(row.id, energy_per_atom=-5.4 + 0.01 * k)
    return root


def test_embedding_run_logs_retrieval_table_projection_and_summary(energy_library, tmp_path):
    from surrogate.tracking.summary import write_summary
    from tests.test_training import compose_train
    from train import train

    run = tmp_path / "run"
    train(
        compose_train(
            energy_library, run, "data.fractions=[0.5,0.5,0.0]", "trainer.log_every_n_steps=1", "trainer.max_epochs=2"
        )
    )
    logs = _version_dir(run)
    assert (logs / "figures" / "val_embedding_projection.png").stat().st_size > 1000
    with open(logs / "tables" / "val_retrieval_table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"query config", "top5 config", "top5 distance", "top1 energy [eV/atom]"} <= set(rows[0])
    assert all(-5.5 < float(r["top1 energy [eV/atom]"]) < -5.3 and 0 <= float(r["top1 distance"]) <= 2 for r in rows)
    manifest = json.loads((logs / "library_manifest.json").read_text())
    assert manifest["library_hash"] == json.loads((energy_library / "manifest.json").read_text())["library_hash"]
    assert str(energy_library) in (logs / "hparams.yaml").read_text()  # the resolved config

    page = _parse(write_summary(run))
    alts = {alt for alt, embedded in page.images if embedded}
    assert any("val_embedding_projection" in a for a in alts)
    assert any("retrieval_examples" in a for a in alts)  # the module's per-epoch figure
    assert any(a.startswith("loss vs step") for a in alts)  # a curve drawn from metrics.csv
    assert "val_retrieval_table" in page.headings and "top1 distance" in page.headers


def test_potential_run_logs_parity_plots(tmp_path):
    from hydra import compose, initialize_config_module

    from tests.test_potential import _tiny_frames, _write
    from train import train

    data = _write(tmp_path / "si.extxyz", _tiny_frames())
    over = [
        "experiment=potential_si",
        f"dft.files=[{data}]",
        "dft.val_fraction=0.3",
        f"paths.output_dir={tmp_path}",
        "model.net.features=8",
        "model.net.layers=1",
        "model.net.cutoff=4.0",
        "trainer.max_epochs=2",
        "dft.batch_size=2",
        "logger=csv",
    ]
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        train(compose(config_name="train", overrides=over))
    logs = _version_dir(tmp_path)
    for name in ("parity_energy", "parity_forces"):
        assert (logs / "figures" / f"{name}.png").stat().st_size > 1000
    assert json.loads((logs / "potential_data.json").read_text())["elements"] == ["Si"]


def test_library_build_logs_manifest_counts_and_contact_sheet(tmp_path):
    from surrogate.library.cli import build
    from surrogate.tracking.summary import write_summary
    from tests.conftest import tiny_library_config

    cfg = tiny_library_config(
        tmp_path / "lib", logger="csv", **{"paths.output_dir": tmp_path / "run", "structures.defects.per_slab": 0}
    )
    build(cfg)
    logs = _version_dir(tmp_path / "run")
    with open(logs / "metrics.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["library/images"]) == 3 and float(row["library/build_seconds"]) > 0
    assert (logs / "figures" / "library_contact_sheet.png").is_file()
    assert json.loads((logs / "library_manifest.json").read_text())["counts"]["structures"] == 1
    page = _parse(write_summary(tmp_path / "run"))
    assert any("library_contact_sheet" in alt for alt, ok in page.images if ok) and "library_families" in page.headings


def _log_everything(loggers):
    import matplotlib.pyplot as plt

    from surrogate.tracking import log_dict, log_figure, log_hyperparams, log_metrics, log_table

    log_hyperparams(loggers, {"model": {"lr": 0.01}, "seed": 0})
    log_dict(loggers, "library_manifest", {"library_hash": "abc", "counts": {"images": 3}})
    log_metrics(loggers, {"val/top1": 0.5}, step=1)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    log_figure(loggers, "parity/energy", fig, step=1)
    image = np.linspace(0, 1, 64).reshape(8, 8)
    log_table(
        loggers,
        "val/retrieval_table",
        ["query", "top1 config", "top1 distance"],
        [[image, "0a22b5992227c9f4", 0.125], [image, "8ed13aae1cc0c53f", float("nan")]],
        step=1,
    )


def test_wandb_offline_run_holds_the_logged_table_beside_csv_and_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from surrogate.tracking import finish, make_loggers

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")  # never log in, never upload
    monkeypatch.setenv("WANDB_SILENT", "true")
    pytest.importorskip("tensorboard")
    import matplotlib.pyplot as plt

    from surrogate.embedding.figures import log_figure

    loggers = make_loggers("many_loggers", tmp_path)  # csv, tensorboard, wandb in one run
    _log_everything(loggers)
    log_figure(SimpleNamespace(loggers=loggers), "val/retrieval_examples", plt.figure(figsize=(1, 1)), 0, 0)
    finish(loggers)
    assert (_version_dir(tmp_path) / "val_retrieval_examples_epoch000.png").is_file()
    (run,) = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("*.wandb"))  # the record `wandb sync` uploads
    (table,) = sorted((run / "files" / "media" / "table").rglob("*.table.json"))
    data = json.loads(table.read_text())
    assert data["columns"] == ["query", "top1 config", "top1 distance"] and len(data["data"]) == 2
    assert list((run / "files" / "media" / "images").rglob("*.png"))
    assert json.loads((run / "files" / "library_manifest.json").read_text())["library_hash"] == "abc"


def test_tensorboard_events_hold_figures_and_tables(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from surrogate.tracking import finish, make_loggers

    loggers = make_loggers("tensorboard", tmp_path)
    _log_everything(loggers)
    finish(loggers)
    (events,) = sorted((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "parity/energy" in tags["images"] and "val/top1" in tags["scalars"]
    assert {"val/retrieval_table/text_summary", "library_manifest/text_summary"} <= set(tags["tensors"])


def test_unknown_loggers_are_skipped_and_folders_get_files(tmp_path):
    from surrogate.tracking import log_figure

    class Folder:  # any logger with a log_dir receives files
        log_dir = str(tmp_path / "folder")

    class Opaque:  # a logger this module does not know: skipped
        pass

    _log_everything([Opaque(), Folder()])
    assert (tmp_path / "folder" / "figures" / "parity_energy.png").is_file()
    rows = (tmp_path / "folder" / "tables" / "val_retrieval_table.csv").read_text().splitlines()
    assert rows == [
        "top1 config,top1 distance",
        "0a22b5992227c9f4,0.125",
        "8ed13aae1cc0c53f,",
    ]  # images dropped, NaN empty
    assert log_figure([], "x", __import__("matplotlib.pyplot").pyplot.figure()) is None


def test_benchmark_tables_are_logged(tmp_path):
    from surrogate.tracking.log_benchmarks import run

    results = tmp_path / "results"
    results.mkdir()
    (results / "retrieval.md").write_text(
        "# Retrieval\n\n## Accuracy\n\n| method | top-1 |\n|---|---|\n| cnn | 0.31 |\n| sift | 0.06 |\n"
    )
    (results / "speed.json").write_text(json.dumps({"cnn": {"latency_s": 2.6}}))
    tags = run([str(results), "--logger", "csv", "--output-dir", str(tmp_path / "out")])
    assert tags == ["benchmarks/retrieval/accuracy", "benchmarks/speed/values"]
    tables = _version_dir(tmp_path / "out") / "tables"
    assert (tables / "benchmarks_retrieval_accuracy.csv").read_text().splitlines() == [
        "method,top-1",
        "cnn,0.31",
        "sift,0.06",
    ]
    assert "cnn/latency_s,2.6" in (tables / "benchmarks_speed_values.csv").read_text()
    with pytest.raises(TrackingError, match="no benchmark results"):
        run([str(tmp_path), "--output-dir", str(tmp_path / "out2")])


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_summary_cli_rejects_a_directory_that_is_not_a_run(tmp_path, make):
    target = tmp_path / "nothing"
    if make == "empty":
        target.mkdir()
        (target / "notes.txt").write_text("not a run")
    res = subprocess.run(
        [sys.executable, "-m", "surrogate.tracking.summary", str(target)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    expected = "is not a run directory" if make == "empty" else "run directory not found"
    assert res.stderr.startswith("error: ") and expected in res.stderr
    assert not (target / "summary.html").exists()
