"""The lattice-spacing check of inference: absolute spacings from the pixel size tell a lattice of
another size (material, pixel size) from the library's, where the scale-invariant embedding cannot."""

import numpy as np
import pytest

from surrogate.inference.lattice import mismatch, pixel_size_factor, signatures


def _lattice(a1, a2, shape=(128, 128), sigma=1.5, rotation=0.0, seed=0):
    """Gaussian columns on the 2D lattice spanned by a1, a2 [px], turned by ``rotation`` [deg],
    with a little noise."""
    t = np.deg2rad(rotation)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a1, a2 = rot @ np.asarray(a1, float), rot @ np.asarray(a2, float)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.zeros(shape)
    n = int(2 * max(shape) / min(np.linalg.norm(a1), np.linalg.norm(a2))) + 2
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            x, y = i * a1 + j * a2 + 3.3
            if -5 < x < shape[1] + 5 and -5 < y < shape[0] + 5:
                img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img + np.random.default_rng(seed).normal(0, 0.05, shape)


def test_signature_gives_absolute_spacings_and_angle_in_any_orientation():
    # rectangular lattice 20 x 14 px at 0.2 Å/px: reflections at d = 4.0 Å and 2.8 Å, 90° apart
    for rotation in (0.0, 17.0, 63.0):
        d1, d2, angle = signatures(_lattice((20, 0), (0, 14), rotation=rotation), 0.2)[0]
        assert sorted([d1, d2]) == pytest.approx([2.8, 4.0], rel=0.03)
        assert angle == pytest.approx(90.0, abs=3.0)


def test_mismatch_tells_a_magnified_lattice_and_the_pixel_size_factor_undoes_it():
    oblique = ((18, 0), (6, 15))
    ref = signatures(np.stack([_lattice(*oblique, rotation=r, seed=s) for s, r in enumerate((0, 40, 95))]), 0.2)
    same = signatures(_lattice(*oblique, rotation=222.0, seed=7), 0.2)
    big = signatures(_lattice(*(np.array(oblique) * 1.25), rotation=10.0, seed=8), 0.2)
    assert mismatch(same, ref)[0] < 0.03
    assert mismatch(big, ref)[0] > 0.15  # 25 % larger spacings
    factor, shape = pixel_size_factor(big[0], ref)
    assert factor == pytest.approx(1 / 1.25, rel=0.04) and shape < 0.03
    # another lattice of about the same size but another shape: no pixel size makes it fit
    square = signatures(_lattice((16, 0), (0, 16)), 0.2)
    assert mismatch(square, ref)[0] > 0.1 and pixel_size_factor(square[0], ref)[1] > 0.05
    assert np.isinf(mismatch(same, np.zeros((0, 3)))[0])
