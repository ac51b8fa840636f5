"""Point-defect evidence (surrogate.inference.defects) on Gaussian-column images with known truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from surrogate.errors import ConfigError, ImageError
from surrogate.inference.columns import gaussian_image
from surrogate.inference.defects import defect_evidence

SAMPLING = 0.2  # [Å/px]
SHAPE = (140, 140)


def dumbbells(ramp: float = 0.0, dim: int | None = None, factor: float = 0.5, angle: float = 10.0):
    """A rotated lattice of dumbbells (4 x 4.5 Å cell, columns 1.6 Å apart, the second 0.7 x the first:
    two sublattices); ``ramp``: intensity growing by that fraction across the image (a thickness
    wedge); ``dim``: the index of a column multiplied by ``factor``. Returns (image, rows, cols) [px]."""
    h, w = SHAPE
    a, b = np.array([4.0, 0.0]), np.array([0.0, 4.5])
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    found: list[np.ndarray] = []
    heights: list[float] = []
    for i in range(-8, 12):
        for j in range(-8, 12):
            base = i * a + j * b
            for off, am in ((np.zeros(2), 1.0), (np.array([0.0, 1.6]), 0.7)):
                p = rot @ (base + off) + np.array([3.0, 3.0])
                if 0.5 < p[0] < w * SAMPLING - 0.5 and 0.5 < p[1] < h * SAMPLING - 0.5:
                    found.append(p)
                    heights.append(am)
    pts, amp = np.array(found), np.array(heights)
    amp = amp * (1.0 + ramp * pts[:, 0] / (w * SAMPLING))
    if dim is not None:
        amp[dim] *= factor
    rows, cols = pts[:, 1] / SAMPLING, pts[:, 0] / SAMPLING
    img = gaussian_image(SHAPE, rows, cols, amp, np.full(len(amp), 0.4 / SAMPLING))
    img += np.random.default_rng(0).normal(0.0, 0.01, SHAPE)
    return img, rows, cols


def central_index(rows, cols) -> int:
    return int(np.argmin(np.hypot(rows - SHAPE[0] / 2, cols - SHAPE[1] / 2)))


def columns_of(img, mode: str = "haadf"):
    """The columns as the pipeline finds them, at the separation these images resolve (one search)."""
    from surrogate.inference.columns import find_columns

    return find_columns(img, SAMPLING, mode, min_separation=1.0)


@pytest.fixture(scope="module")
def perfect():
    img, rows, cols = dumbbells()
    return img, rows, cols, columns_of(img)


def test_perfect_lattice_is_bulk(perfect):
    img = perfect[0]
    ev = defect_evidence(img, SAMPLING, "haadf")  # columns found inside
    assert ev.verdict == "bulk", ev.describe()
    assert ev.outliers == ()
    assert ev.n_used >= 40 and ev.n_sublattices == 2
    assert ev.scatter < 0.05
    assert ev.describe().startswith("defects: none seen")
    json.dumps(ev.summary())


def test_one_dim_column_is_found_as_vacancy(perfect):
    _, rows, cols, _ = perfect
    k = central_index(rows, cols)
    img, rows, cols = dumbbells(dim=k, factor=0.5)
    ev = defect_evidence(img, SAMPLING, "haadf", columns_of(img))
    assert ev.verdict == "defect" and ev.kind == "vacancy", ev.describe()
    assert len(ev.outliers) == 1
    o = ev.outliers[0]
    assert np.hypot(o.x - cols[k] * SAMPLING, o.y - rows[k] * SAMPLING) < 0.3
    assert o.darker and -0.65 < o.deviation < -0.35 and o.z < -5
    assert "weaker" in ev.describe() and "vacancy-like" in ev.describe()
    assert json.loads(json.dumps(ev.summary()))["outliers"][0]["darker"] is True


def test_bright_column_is_a_substitution_and_abf_sign(perfect):
    _, rows, cols, _ = perfect
    k = central_index(rows, cols)
    img, _, _ = dumbbells(dim=k, factor=1.6)
    ev = defect_evidence(img, SAMPLING, "haadf", columns_of(img))
    assert ev.verdict == "defect" and ev.kind == "substitution" and len(ev.outliers) == 1
    assert not ev.outliers[0].darker and ev.outliers[0].deviation > 0.3
    # ABF: columns are dark; the same column contrast inverted is a weaker column that looks brighter
    img, _, _ = dumbbells(dim=k, factor=0.5)
    ev = defect_evidence(-img, SAMPLING, "abf", columns_of(-img, "abf"))
    assert ev.verdict == "undecided" and len(ev.outliers) == 1  # measured, but no ABF verdict
    assert ev.outliers[0].deviation < 0 and not ev.outliers[0].darker
    assert ev.kind is None


def test_thickness_wedge_stays_bulk():
    img, _, _ = dumbbells(ramp=1.0)  # intensity doubles across the image
    ev = defect_evidence(img, SAMPLING, "haadf", columns_of(img))
    assert ev.verdict == "bulk" and ev.outliers == (), ev.describe()


def test_too_few_columns(perfect):
    img, _, _, cols = perfect
    few = cols.subset(np.arange(5))
    ev = defect_evidence(img, SAMPLING, "haadf", few)
    assert ev.verdict == "undecided" and "too few columns" in ev.reason


def test_noise_only_and_hrtem_are_undecided(perfect):
    noise = np.random.default_rng(1).normal(size=(64, 64))
    ev = defect_evidence(noise, SAMPLING, "haadf", columns_of(noise))
    assert ev.verdict == "undecided" and ev.outliers == ()
    assert ev.describe().startswith("defects: undecided")
    img, _, _, cols = perfect
    assert defect_evidence(img, SAMPLING, "hrtem", cols).verdict == "undecided"
    assert defect_evidence(img, SAMPLING, None, cols).verdict == "undecided"
    assert defect_evidence(np.zeros((32, 32)), SAMPLING, "haadf").verdict == "undecided"  # constant: no columns


def test_bad_input_raises_one_line_errors(perfect):
    img = perfect[0]
    bad = img.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        defect_evidence(bad, SAMPLING, "haadf")
    with pytest.raises(ImageError, match="2-D"):
        defect_evidence(img[None], SAMPLING, "haadf")
    for s in (0.0, -0.1, float("nan")):
        with pytest.raises(ImageError, match="sampling"):
            defect_evidence(img, s, "haadf")
    with pytest.raises(ConfigError, match="mode"):
        defect_evidence(img, SAMPLING, "stem")
    with pytest.raises(ConfigError, match="threshold"):
        defect_evidence(img, SAMPLING, "haadf", threshold=0.0)
