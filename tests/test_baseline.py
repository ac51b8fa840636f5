import numpy as np
import pytest
from scipy.ndimage import rotate

from surrogate.baseline import make_retriever
from surrogate.errors import ConfigError


@pytest.fixture(scope="module")
def gallery():
    """Incoherent HAADF images of CdTe and Si along four zone axes (8 lattices)."""
    from surrogate.simulate import ImagingConditions, SimulationSettings, render
    from surrogate.structures import crystal, zone_axis_slab

    images = []
    for material in ("CdTe", "Si"):
        for za in ((1, 1, 0), (1, 0, 0), (1, 1, 1), (1, 1, 2)):
            slab = zone_axis_slab(crystal(material), za, fov=(19.2, 19.2), thickness=10)
            images.append(
                render(slab, [ImagingConditions(semiangle=25)], (96, 96), SimulationSettings(potential_sampling=0.05))[
                    0
                ]
            )
    return np.stack(images)


@pytest.mark.parametrize("method", ["sift", "hog", "spectrum"])
def test_baseline_finds_an_exact_copy(gallery, method):
    r = make_retriever(method).fit(gallery)
    for i in range(len(gallery)):
        idx, dist = r.query(gallery[i], k=3)
        assert idx[0] == i
        assert np.all(np.diff(dist) >= 0)


def test_power_spectrum_matcher_is_rotation_robust(gallery):
    r = make_retriever("spectrum").fit(gallery)
    for angle in (17.0, 30.0, 90.0):
        hits = [
            r.query(rotate(im, angle, reshape=False, mode="grid-wrap"), 1)[0][0] == i for i, im in enumerate(gallery)
        ]
        assert np.mean(hits) == 1.0


def test_noisy_query_still_identifies_the_lattice(gallery):
    from surrogate.simulate import apply_dose

    r = make_retriever("spectrum").fit(gallery)
    hits = [r.query(apply_dose(im, 1e4, 0.2, seed=i), 1)[0][0] == i for i, im in enumerate(gallery)]
    assert np.mean(hits) >= 7 / 8


def test_bad_retrieval_input_is_a_clear_error(gallery):
    with pytest.raises(ConfigError, match="unknown retrieval method"):
        make_retriever("orb")
    r = make_retriever("hog")
    with pytest.raises(ConfigError, match="call fit"):
        r.query(gallery[0])
    bad = gallery[0].copy()
    bad[3, 3] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        r.fit(gallery).query(bad)


@pytest.mark.parametrize("method", ["sift", "hog", "spectrum"])
def test_a_saved_gallery_answers_as_the_fitted_one(gallery, method, tmp_path):
    """state() -> npz -> load_state() restores the fitted gallery: a fresh retriever that never saw
    the images returns the same neighbours and distances (what the library-side cache relies on)."""
    fitted = make_retriever(method).fit(gallery)
    np.savez(tmp_path / "g.npz", **fitted.state())
    with np.load(tmp_path / "g.npz") as state:
        loaded = make_retriever(method).load_state(state)
    query = np.roll(gallery[3], 5, axis=1)
    for a, b in zip(fitted.query(query, k=4), loaded.query(query, k=4)):
        np.testing.assert_allclose(a, b)


def test_classic_matcher_caches_its_gallery_and_refits_a_damaged_cache(tiny_library, tmp_path):
    import shutil

    from surrogate.inference.retrieve import ClassicMatcher
    from surrogate.library import Library

    lib = Library(shutil.copytree(tiny_library, tmp_path / "lib"))  # the shared fixture stays cache-free
    first = ClassicMatcher(lib, "hog")
    assert first.cache.is_file()
    windows = np.asarray(lib.group["images"][:2], dtype=np.float32)
    again = ClassicMatcher(lib, "hog")  # from the cache
    for a, b in zip(first.search(windows, 3), again.search(windows, 3)):
        np.testing.assert_allclose(a, b)
    first.cache.write_bytes(b"not an npz")
    mended = ClassicMatcher(lib, "hog")  # refits, rewrites
    np.testing.assert_allclose(mended.search(windows, 3)[1], first.search(windows, 3)[1])
    with np.load(mended.cache) as state:
        assert "gallery" in state
