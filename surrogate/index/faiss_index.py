"""Nearest-neighbour search over L2-normalised embeddings with FAISS.

Embeddings are unit vectors, so inner product = cosine similarity and the reported distance is
``1 - cosine``. Up to ``exact_max`` entries the index is exact (``IndexFlatIP``); above it, HNSW
(``kind="hnsw"``, no training), IVF-Flat (``kind="ivf"``, k-means trained on the data) or IVF-PQ
(``kind="ivfpq"``: product-quantised codes of ``pq_m`` bytes per entry instead of ``4 * dim``, for
indices beyond memory). With ``gpu=True`` and a GPU build of FAISS (``faiss.get_num_gpus() > 0``)
flat and IVF indices are built and searched on the GPUs (HNSW stays on the CPU).

The index is saved with a JSON sidecar that records what produced it (checkpoint hash, library
hash, dimension, count), and loading checks it. Saving removes the old sidecar first, replaces the
index file atomically and writes the new sidecar last, so a reader (or a killed writer's rerun)
never pairs an index with a sidecar that is not its own: an index without a sidecar is "not built".
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
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
        ``auto`` (exact up to ``exact_max`` entries, then HNSW), ``flat``, ``hnsw``, ``ivf`` or
        ``ivfpq``.
    exact_max
        Largest size kept exact under ``auto``.
    hnsw_m, ef_search
        HNSW graph degree and search breadth.
    nlist, nprobe
        IVF lists (default ``4 * sqrt(N)``) and lists visited per query.
    pq_m, pq_bits
        IVF-PQ: sub-quantisers (bytes per entry at 8 bits; must divide ``dim``) and bits per code.
    train_size
        IVF/IVF-PQ: at most this many embeddings (a seeded random subset) train the quantisers.
    gpu
        Build and search on the GPUs when FAISS has them (``faiss.get_num_gpus() > 0``); without a
        GPU build of FAISS it falls back to the CPU with a warning.
    metadata
        Provenance stored with the index (e.g. ``checkpoint``, ``library_hash``).
    """

    KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")

    def __init__(
        self,
        dim: int,
        kind: str = "auto",
        exact_max: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        pq_m: int = 16,
        pq_bits: int = 8,
        train_size: int = 200_000,
        gpu: bool = False,
        metadata: dict[str, Any] | None = None,
    ):
        if kind not in self.KINDS:
            raise ConfigError(f"unknown index kind {kind!r}: choose " + ", ".join(self.KINDS))
        if dim < 1:
            raise ConfigError(f"embedding dimension must be >= 1, got {dim}")
        if kind == "ivfpq" and (pq_m < 1 or dim % pq_m):
            raise ConfigError(
                f"pq_m={pq_m} must divide the embedding dimension {dim}: choose e.g. pq_m={max(1, dim // 8)}"
            )
        self.dim, self.kind, self.exact_max = int(dim), kind, int(exact_max)
        self.hnsw_m, self.ef_search, self.nlist, self.nprobe = hnsw_m, ef_search, nlist, nprobe
        self.pq_m, self.pq_bits, self.train_size, self.gpu = int(pq_m), int(pq_bits), int(train_size), bool(gpu)
        self.metadata = dict(metadata or {})
        self.index = None
        self.on_gpu = False

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
        index: Any
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
        else:
            nlist = self.nlist or max(1, int(4 * np.sqrt(n)))
            if n < nlist:
                raise ConfigError(
                    f"an IVF index with {nlist} lists needs >= {nlist} embeddings, got {n}: use kind=flat"
                )
            if kind == "ivfpq" and n < 2**self.pq_bits:
                raise ConfigError(
                    f"an IVF-PQ index with {self.pq_bits}-bit codes needs >= {2**self.pq_bits} embeddings, "
                    f"got {n}: use kind=flat or lower pq_bits"
                )
            quantizer = faiss.IndexFlatIP(self.dim)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFPQ(
                    quantizer, self.dim, nlist, self.pq_m, self.pq_bits, faiss.METRIC_INNER_PRODUCT
                )
            index.nprobe = self.nprobe
        index = self._to_gpu(index, kind)
        if kind in ("ivf", "ivfpq"):
            train = (
                x
                if n <= self.train_size
                else x[np.sort(np.random.default_rng(0).choice(n, self.train_size, replace=False))]
            )
            index.train(train)
        index.add(x)
        self.index, self.built_kind = index, kind
        return self

    def _to_gpu(self, index, kind: str):
        """``index`` on all GPUs when ``gpu`` is set and FAISS has GPUs (not HNSW), else unchanged."""
        import faiss

        if not self.gpu or kind == "hnsw":
            return index
        if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
            warnings.warn("index gpu=True but FAISS sees no GPU (faiss-cpu?): building on the CPU", stacklevel=3)
            return index
        co = faiss.GpuMultipleClonerOptions()
        co.useFloat16 = True  # IVF-PQ with > 48 sub-quantisers needs float16 lookup tables on the GPU
        out = faiss.index_cpu_to_all_gpus(index, co)
        self.on_gpu = True
        return out

    def cpu_index(self):
        """The FAISS index on the CPU (a copy when it lives on GPUs), e.g. to save it."""
        import faiss

        return faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def set_search(self, nprobe: int | None = None, ef_search: int | None = None) -> "EmbeddingIndex":
        """Change the search breadth of a built or loaded index: IVF lists visited (``nprobe``) or
        the HNSW candidate list (``ef_search``); more is slower and closer to exact."""
        import faiss

        if self.index is None:
            raise ConfigError("the index is empty: build() or load() it first")
        if nprobe is not None and self.built_kind in ("ivf", "ivfpq"):
            self.nprobe = int(nprobe)
            space = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
            space.set_index_parameter(self.index, "nprobe", self.nprobe)
        if ef_search is not None and self.built_kind == "hnsw":
            self.ef_search = int(ef_search)
            self.index.hnsw.efSearch = self.ef_search
        return self

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
        side = path.with_name(path.name + ".json")
        side.unlink(missing_ok=True)  # from here until the new sidecar exists, the index reads as "not built"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self.cpu_index(), tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {"dim": self.dim, "kind": self.built_kind, "count": len(self), **self.metadata}
        atomic_write_text(side, json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expect: dict[str, Any] | None = None, gpu: bool = False) -> "EmbeddingIndex":
        """Load an index; ``expect`` (e.g. ``{"checkpoint": ..., "library_hash": ...}``) must match
        what the index recorded, else :class:`LibraryError`. ``gpu`` moves it to the GPUs (see
        the class)."""
        import faiss

        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not path.is_file() or not side.is_file():
            raise LibraryError(f"no index at {path} (or its .json sidecar): build it first")
        try:
            meta = json.loads(side.read_text())
            dim, kind, count = int(meta["dim"]), str(meta["kind"]), int(meta["count"])
        except (ValueError, KeyError, TypeError):
            raise LibraryError(f"corrupt index sidecar {side}: delete {path} and its sidecar and rebuild") from None
        for key, value in (expect or {}).items():
            if meta.get(key) != value:
                raise LibraryError(
                    f"index {path} was built with {key}={meta.get(key)!r}, not {value!r}: rebuild the index for this {key}"
                )
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise LibraryError(f"corrupt index file {path} ({str(exc).splitlines()[0]}): rebuild it") from None
        if index.d != dim or index.ntotal != count:
            raise LibraryError(
                f"index {path} holds {index.ntotal} x {index.d} entries but its sidecar says {count} x {dim}: "
                "delete both and rebuild"
            )
        out = cls(
            dim, kind=kind, gpu=gpu, metadata={k: v for k, v in meta.items() if k not in ("dim", "kind", "count")}
        )
        out.index, out.built_kind = out._to_gpu(index, kind), kind
        if kind in ("ivf", "ivfpq"):
            out.nprobe = int(faiss.extract_index_ivf(index).nprobe)
        return out
