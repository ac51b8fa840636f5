"""Each benchmark runs on a tiny input and writes its JSON + markdown (the figures themselves come
from full runs: benchmarks/results/)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _run(script, *args, timeout=600):
    res = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_inference_benchmark_runs_the_shipped_pipeline(tiny_library, embedder_ckpt, tmp_path):
    from surrogate.library import Library

    np.save(tmp_path / "q.npy", np.tile(Library(tiny_library).image(4), (2, 2)))
    _run(
        "inference.py",
        "--library",
        tiny_library,
        "--checkpoint",
        embedder_ckpt,
        "--image",
        tmp_path / "q.npy",
        "--pixel-size",
        0.2,
        "--skip-sift",
        "--out",
        tmp_path / "inference",
    )
    rows = json.loads((tmp_path / "inference.json").read_text())["rows"]
    assert [r["path"].split(":")[0] for r in rows][-1] == "hog"
    assert all(r["fom"] is not None for r in rows if "refine" in r["path"])
    assert "| cnn + refine top 1 |" in (tmp_path / "inference.md").read_text()


def test_index_scale_benchmark_runs(tmp_path):
    _run("index_scale.py", "--sizes", 3000, "--queries", 20, "--hnsw-max", 0, "--dim", 64, "--out", tmp_path / "index")
    rows = json.loads((tmp_path / "index.json").read_text())["rows"]
    assert rows[0]["index"].startswith("flat") and rows[0]["recall@10"] == 1.0  # the exact baseline, same run
    assert any(r["index"].startswith("ivf-pq") for r in rows) and all(0 <= r["recall@10"] <= 1 for r in rows)


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py"))
def test_every_benchmark_explains_itself(script):
    """--help works (imports resolve, no sys.path hack needed) for every benchmark."""
    res = _run(script, "--help", timeout=120)
    assert "usage" in res.stdout.lower()


def test_retrieval_benchmark_runs_the_cnn_and_the_classical_matchers_side_by_side(
    tiny_library, embedder_ckpt, tmp_path
):
    _run(
        "retrieval.py",
        "--library",
        tiny_library,
        "--checkpoint",
        embedder_ckpt,
        "--quick",
        "--per-config",
        2,
        "--ood-per-config",
        1,
        "--threads",
        1,
        "--cache",
        tmp_path / "queries",
        "--out",
        tmp_path,
    )
    res = json.loads((tmp_path / "retrieval.json").read_text())
    text = (tmp_path / "retrieval.md").read_text()
    for method in ("cnn", "hog", "spectrum"):
        assert method in text
    assert res["n_ood"] >= 1


def test_refinement_benchmark_scores_a_boundary_against_its_truth(tmp_path):
    _run("refinement.py", "--quick", "--out", tmp_path / "refinement")
    rows = json.loads((tmp_path / "refinement.json").read_text())["simulated"]
    assert len(rows) == 1 and rows[0]["grain_fit_used"]
    assert rows[0]["truth_after"] >= rows[0]["truth_before"] and rows[0]["fom_after"] <= rows[0]["fom_before"] + 0.02
    assert "| query |" in (tmp_path / "refinement.md").read_text()
