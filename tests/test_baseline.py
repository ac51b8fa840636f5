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
