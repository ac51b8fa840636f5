"""FAISS index over embeddings: exact for small libraries, HNSW or IVF beyond a configurable size."""

from surrogate.index.faiss_index import EmbeddingIndex

__all__ = ["EmbeddingIndex"]
