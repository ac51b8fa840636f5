import numpy as np
import pytest

from surrogate.errors import ConfigError, LibraryError
from surrogate.index import EmbeddingIndex


def unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_each_entry_retrieves_itself_first(kind):
    x = unit(2000, 32)
    index = EmbeddingIndex(32, kind=kind, nprobe=64).build(x)
    idx, dist = index.search(x[:50], k=5)
    assert (idx[:, 0] == np.arange(50)).mean() >= (1.0 if kind == "flat" else 0.98)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)
    assert np.allclose(dist[idx[:, 0] == np.arange(50), 0], 0.0, atol=1e-5)


def test_auto_switches_from_exact_to_hnsw():
    assert EmbeddingIndex(8, exact_max=100).build(unit(100, 8)).built_kind == "flat"
    assert EmbeddingIndex(8, exact_max=100).build(unit(101, 8)).built_kind == "hnsw"


def test_save_load_round_trip_and_provenance_check(tmp_path):
    x = unit(300, 16)
    path = EmbeddingIndex(16, metadata={"checkpoint": "abc", "library_hash": "L1"}).build(x).save(tmp_path / "i.faiss")
    loaded = EmbeddingIndex.load(path, expect={"checkpoint": "abc"})
    assert len(loaded) == 300 and loaded.metadata["library_hash"] == "L1"
    assert np.array_equal(loaded.search(x[:3], 1)[0][:, 0], [0, 1, 2])
    with pytest.raises(LibraryError, match="checkpoint='abc', not 'xyz'"):
        EmbeddingIndex.load(path, expect={"checkpoint": "xyz"})
    path.write_bytes(b"garbage")
    with pytest.raises(LibraryError, match="corrupt index"):
        EmbeddingIndex.load(path)
    with pytest.raises(LibraryError, match="no index"):
        EmbeddingIndex.load(tmp_path / "none.faiss")


def test_bad_embeddings_are_clear_errors():
    with pytest.raises(ConfigError, match="shape"):
        EmbeddingIndex(8).build(unit(10, 4))
    x = unit(10, 8)
    x[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        EmbeddingIndex(8).build(x)
    with pytest.raises(ConfigError, match="empty"):
        EmbeddingIndex(8).search(unit(1, 8))
