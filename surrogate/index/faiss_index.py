"""Nearest-neighbour search over L2-normalised embeddings with FAISS.

Embeddings are unit vectors, so inner product = cosine similarity and the reported distance is
``1 - cosine``. Up to ``exact_max`` entries the index is exact (``IndexFlatIP``); above it, HNSW
(``kind="hnsw"``, no training) or IVF-Flat (``kind="ivf"``, k-means trained on the data). The index
is saved with a JSON sidecar that records what produced it (checkpoint hash, library hash,
dimension, count), and loading checks it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.errors import ConfigError, LibraryError
from surrogate.io.files import atomic_write_text

__all__ = ["EmbeddingIndex"]


class EmbeddingIndex:
    """Build, search, save and load a FAISS index.

    Parameters
    ----------
    dim
        Embedding dimension.
    kind
        ``auto`` (exact up to ``exact_max`` entries, then HNSW), ``flat``, ``hnsw`` or ``ivf``.
    exact_max
        Largest size kept exact under ``auto``.
    metadata
        Provenance stored with the index (e.g. ``checkpoint``, ``library_hash``).
    """

    def __init__(self, dim: int, kind: str = "auto", exact_max: int = 50_000, hnsw_m: int = 32,
                 ef_search: int = 128, nlist: int | None = None, nprobe: int = 16, metadata: dict[str, Any] | None = None):
        if kind not in ("auto", "flat", "hnsw", "ivf"):
            raise ConfigError(f"unknown index kind {kind!r}: choose auto, flat, hnsw or ivf")
        if dim < 1:
            raise ConfigError(f"embedding dimension must be >= 1, got {dim}")
        self.dim, self.kind, self.exact_max = int(dim), kind, int(exact_max)
        self.hnsw_m, self.ef_search, self.nlist, self.nprobe = hnsw_m, ef_search, nlist, nprobe
        self.metadata = dict(metadata or {})
        self.index = None

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"embeddings must have shape (N, {self.dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ConfigError("embeddings contain NaN or inf: check the model and its input")
        return x

    def build(self, embeddings: np.ndarray) -> "EmbeddingIndex":
        import faiss

        x = self._check(embeddings)
        n = len(x)
        kind = self.kind if self.kind != "auto" else ("flat" if n <= self.exact_max else "hnsw")
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
        else:
            nlist = self.nlist or max(1, int(4 * np.sqrt(n)))
            if n < nlist:
                raise ConfigError(f"an IVF index with {nlist} lists needs >= {nlist} embeddings, got {n}: use kind=flat")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = self.nprobe
        index.add(x)
        self.index, self.built_kind = index, kind
        return self

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(Q, k)`` and distances ``1 - cosine`` ``(Q, k)``, nearest first."""
        if self.index is None:
            raise ConfigError("the index is empty: build() or load() it first")
        sims, idx = self.index.search(self._check(queries), int(k))
        return idx, 1.0 - sims

    def save(self, path: str | os.PathLike) -> Path:
        import faiss

        if self.index is None:
            raise ConfigError("nothing to save: build() the index first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        meta = {"dim": self.dim, "kind": self.built_kind, "count": len(self), **self.metadata}
        atomic_write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expect: dict[str, Any] | None = None) -> "EmbeddingIndex":
        """Load an index; ``expect`` (e.g. ``{"checkpoint": ..., "library_hash": ...}``) must match
        what the index recorded, else :class:`LibraryError`."""
        import faiss

        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not path.is_file() or not side.is_file():
            raise LibraryError(f"no index at {path} (or its .json sidecar): build it first")
        meta = json.loads(side.read_text())
        for key, value in (expect or {}).items():
            if meta.get(key) != value:
                raise LibraryError(
                    f"index {path} was built with {key}={meta.get(key)!r}, not {value!r}: rebuild the index for this {key}"
                )
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise LibraryError(f"corrupt index file {path} ({str(exc).splitlines()[0]}): rebuild it") from None
        out = cls(meta["dim"], kind=meta["kind"], metadata={k: v for k, v in meta.items() if k not in ("dim", "kind", "count")})
        out.index, out.built_kind = index, meta["kind"]
        return out
