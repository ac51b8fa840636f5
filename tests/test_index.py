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


def test_ivfpq_compresses_finds_each_entry_and_round_trips(tmp_path):
    x = unit(2000, 32)
    index = EmbeddingIndex(32, kind="ivfpq", pq_m=8, nprobe=64).build(x)
    idx, _ = index.search(x[:50], k=5)
    assert (idx[:, 0] == np.arange(50)).mean() >= 0.9  # 8-byte codes: near neighbours may swap
    flat = EmbeddingIndex(32, kind="flat").build(x).save(tmp_path / "flat.faiss")
    path = index.save(tmp_path / "pq.faiss")
    assert path.stat().st_size < flat.stat().st_size / 2  # 8 B codes vs 128 B vectors, plus codebooks
    loaded = EmbeddingIndex.load(path)
    assert loaded.built_kind == "ivfpq" and loaded.nprobe == 64 and len(loaded) == 2000
    assert np.array_equal(loaded.search(x[:50], k=5)[0], idx)
    assert np.array_equal(loaded.set_search(nprobe=1).search(x[:5], k=1)[0].shape, (5, 1))
    with pytest.raises(ConfigError, match="pq_m=5 must divide"):
        EmbeddingIndex(32, kind="ivfpq", pq_m=5)
    with pytest.raises(ConfigError, match="needs >= 256"):
        EmbeddingIndex(32, kind="ivfpq", nlist=4).build(unit(100, 32))


def test_gpu_request_without_gpu_faiss_falls_back_to_the_cpu():
    import faiss

    x = unit(500, 16)
    if faiss.get_num_gpus() > 0:
        index = EmbeddingIndex(16, kind="ivf", gpu=True).build(x)
        assert index.on_gpu and (index.search(x[:10], 1)[0][:, 0] == np.arange(10)).all()
    else:
        with pytest.warns(UserWarning, match="no GPU"):
            index = EmbeddingIndex(16, kind="ivf", gpu=True).build(x)
        assert not index.on_gpu and (index.search(x[:10], 1)[0][:, 0] == np.arange(10)).all()
