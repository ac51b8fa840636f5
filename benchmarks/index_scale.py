"""FAISS index scale-out: recall@10 and query latency of IVF-Flat, IVF-PQ (and HNSW) against the exact
flat index, at 10^5 and 10^6 entries, all in one run on the same machine.

    python benchmarks/index_scale.py [--sizes 100000 1000000] [--dim 128] [--queries 1000]

Embeddings are synthetic but shaped like a library's: ``N / 64`` configurations (random unit
centres), each rendered under 64 imaging conditions (centre + Gaussian spread, re-normalised, cosine
~0.9 to the centre), queries are fresh draws around random centres. recall@10 is the fraction of the
exact top 10 that the approximate index returns in its top 10; ``config@1`` is how often the top hit
belongs to the query's configuration (what retrieval needs). Writes benchmarks/results/index_scale.json
and index_scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_CONFIG = 64
SPREAD = 0.5  # norm of the per-image deviation from its configuration's centre (cosine ~ 1/sqrt(1 + 0.25))


def synthetic(n: int, dim: int, n_queries: int, seed: int = 0):
    """``(n, dim)`` library embeddings with their configuration labels, and ``(n_queries, dim)`` queries
    with theirs; all float32 unit vectors."""
    rng = np.random.default_rng(seed)
    n_config = max(1, n // PER_CONFIG)
    centres = rng.standard_normal((n_config, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(labels):
        out = np.empty((len(labels), dim), np.float32)
        for s in range(0, len(labels), 100_000):  # chunks keep the temporaries small at 10^6
            lab = labels[s : s + 100_000]
            x = centres[lab] + SPREAD / np.sqrt(dim) * rng.standard_normal((len(lab), dim), dtype=np.float32)
            out[s : s + len(lab)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    labels = np.arange(n) // PER_CONFIG % n_config
    q_labels = rng.integers(0, n_config, n_queries)
    return draw(labels), labels, draw(q_labels), q_labels


def _size_mb(index) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = index.save(Path(d) / "i.faiss")
        return path.stat().st_size / 2**20


def _measure(index, queries, exact_idx, q_labels, labels, k=10, single=200):
    t = time.perf_counter()
    idx, _ = index.search(queries, k)
    batch_ms = (time.perf_counter() - t) / len(queries) * 1e3
    lat = []
    for q in queries[:single]:
        t = time.perf_counter()
        index.search(q[None], k)
        lat.append(time.perf_counter() - t)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, exact_idx)]))
    return {
        "recall@10": round(recall, 4),
        "config@1": round(float(np.mean(labels[idx[:, 0]] == q_labels)), 4),
        "batch_ms_per_query": round(batch_ms, 4),
        "single_query_ms_p50": round(float(np.median(lat)) * 1e3, 3),
        "single_query_ms_p95": round(float(np.quantile(lat, 0.95)) * 1e3, 3),
    }


def run_size(n: int, dim: int, n_queries: int, hnsw_max: int) -> list[dict]:
    from surrogate.index import EmbeddingIndex

    t = time.perf_counter()
    x, labels, queries, q_labels = synthetic(n, dim, n_queries)
    print(f"n={n}: data {time.perf_counter() - t:.1f} s", flush=True)
    rows = []

    def add(label, index, build_s, params):
        m = _measure(index, queries, exact_idx, q_labels, labels)
        row = {
            "n": n,
            "dim": dim,
            "index": label,
            **params,
            "build_s": round(build_s, 2),
            "size_mb": round(_size_mb(index), 1),
            **m,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    t = time.perf_counter()
    flat = EmbeddingIndex(dim, kind="flat").build(x)
    flat_s = time.perf_counter() - t
    exact_idx, _ = flat.search(queries, 10)
    add("flat (exact)", flat, flat_s, {})
    del flat
    t = time.perf_counter()
    ivf = EmbeddingIndex(dim, kind="ivf").build(x)
    build = time.perf_counter() - t
    for nprobe in (16, 64):
        add("ivf-flat", ivf.set_search(nprobe=nprobe), build, {"nlist": ivf.index.nlist, "nprobe": nprobe})
    del ivf
    for pq_m in (16, 32):
        t = time.perf_counter()
        pq = EmbeddingIndex(dim, kind="ivfpq", pq_m=pq_m).build(x)
        build = time.perf_counter() - t
        for nprobe in (16, 64):
            add(
                f"ivf-pq{pq_m}",
                pq.set_search(nprobe=nprobe),
                build,
                {"nlist": pq.index.nlist, "nprobe": nprobe, "bytes_per_entry": pq_m},
            )
        del pq
    if n <= hnsw_max:
        t = time.perf_counter()
        hnsw = EmbeddingIndex(dim, kind="hnsw").build(x)
        add("hnsw32", hnsw, time.perf_counter() - t, {"ef_search": hnsw.ef_search})
    return rows


def _markdown(rows: list[dict], meta: dict) -> str:
    cols = [
        "n",
        "index",
        "nlist",
        "nprobe",
        "bytes_per_entry",
        "size_mb",
        "build_s",
        "recall@10",
        "config@1",
        "batch_ms_per_query",
        "single_query_ms_p50",
        "single_query_ms_p95",
    ]
    lines = [
        "# FAISS index at scale",
        "",
        f"Synthetic {meta['dim']}-d unit embeddings, {PER_CONFIG} per configuration (cosine ~0.9 to its centre), "
        f"{meta['queries']} queries; exact flat index as the baseline in the same run. {meta['machine']}, "
        f"{meta['threads']} FAISS threads (a niced DFT job shares the cores). `python benchmarks/index_scale.py`",
        "",
        "recall@10: share of the exact top 10 found in the approximate top 10; config@1: top hit from the "
        "query's configuration; batch: all queries in one call; single: one query per call.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (resnet18/efficientnet/convnext: 128)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument(
        "--hnsw-max", type=int, default=100_000, help="largest size with an HNSW row (its build is slow on 2 cores)"
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "index_scale"))
    a = p.parse_args(argv)

    import faiss

    from surrogate.io.files import atomic_write_text

    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    meta = {
        "dim": a.dim,
        "queries": a.queries,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": threads,
        "faiss": faiss.__version__,
        "gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
    }
    rows = []
    for n in a.sizes:
        rows += run_size(n, a.dim, a.queries, a.hnsw_max)
    atomic_write_text(a.out + ".json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write_text(a.out + ".md", _markdown(rows, meta))
    print(f"wrote {a.out}.json and .md")


if __name__ == "__main__":
    main()
