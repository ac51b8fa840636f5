"""Atom columns: measured (find_columns), projected, matched, and the candidate column score."""

import numpy as np
import pytest

from surrogate.errors import ImageError
from surrogate.inference.columns import (
    Columns,
    find_columns,
    match_columns,
    projected_columns,
    score_candidate,
    structure_to_window,
)

SAMPLING = 0.2


@pytest.fixture(scope="module")
def slab():
    from surrogate.structures import crystal, zone_axis_slab

    return zone_axis_slab(crystal("CdTe"), [1, 1, 0], None, (12.8, 12.8), 9.0, "CdTe")


@pytest.fixture(scope="module")
def haadf():
    from surrogate.simulate.conditions import ImagingConditions

    return ImagingConditions(mode="haadf", method="incoherent", sampling=SAMPLING, source_size=0.3)


@pytest.fixture(scope="module")
def image(slab, haadf):
    from surrogate.simulate.images import render

    return render(slab, [haadf], shape=(64, 64), noise=False)[0]


def _expected(slab, shape=(64, 64)):
    """The slab's projected columns in the rendered image's frame (field centred on the cell)."""
    cols = projected_columns(slab)
    xy = structure_to_window(cols.xy, (slab.cell[0, 0], slab.cell[1, 1]), SAMPLING, shape, 1.0, {})
    return Columns(xy, cols.intensity, cols.width, cols.species)


def test_found_columns_sit_on_the_projected_columns(slab, image):
    found = find_columns(image, SAMPLING, "haadf")
    expected = _expected(slab)
    inside = expected.subset((expected.xy > 1.5).all(axis=1) & (expected.xy < 64 * SAMPLING - 1.5).all(axis=1))
    m = match_columns(found, expected, tolerance=0.3, mirror=False, search=False)
    assert m.fraction == 1.0  # every found column is a real one ...
    assert len(found) >= len(inside)  # ... and every column away from the border is found
    d = np.hypot(*(found.xy[m.pairs[:, 0]] - expected.xy[m.pairs[:, 1]]).T)
    assert d.max() < 0.1 and m.rms < 0.05  # [Å]
    assert np.all((found.width > 0.2) & (found.width < 1.0))  # [Å]: a probe-sized Gaussian
    # HAADF Z contrast separates the species of the dumbbells (Te, Z=52, over Cd, Z=48)
    assert m.species_fraction is not None and m.species_fraction > 0.9


def test_dark_columns_and_hrtem_polarity(slab, image):
    bright = find_columns(image, SAMPLING, "haadf")
    dark = find_columns(-image, SAMPLING, "abf")
    assert dark.meta["polarity"] == -1
    m = match_columns(bright, dark, 0.1, mirror=False, search=False)
    assert m.fraction == 1.0
    # HRTEM: the sign is chosen by the fit, whichever way the contrast is
    for sign in (1, -1):
        found = find_columns(sign * image, SAMPLING, "hrtem")
        assert found.meta["polarity"] == sign
        assert match_columns(bright, found, 0.1, mirror=False, search=False).fraction > 0.95


def test_projected_columns_group_the_dumbbells(slab):
    cols = projected_columns(slab)
    per_column = len(slab) / len(cols)
    assert per_column == pytest.approx(2.0)  # 9 Å of CdTe [110] (period 4.58 Å): two atoms a column
    assert set(cols.species) == {"Cd", "Te"}
    z = np.where(np.array(cols.species) == "Te", 52, 48)
    np.testing.assert_allclose(cols.intensity, 2 * z**1.7)
    assert np.isnan(cols.width).all()


def test_match_recovers_a_rotation_translation_and_mirror(slab):
    cols = projected_columns(slab.repeat((3, 3, 1)))
    theta = np.deg2rad(17.0)
    r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (cols.xy * [1, -1]) @ r.T + [3.3, -7.1]
    centre = moved.mean(axis=0)
    keep = np.hypot(*(moved - centre).T) < 12.0  # a measured field smaller than the model
    measured = Columns(moved[keep], cols.intensity[keep], np.full(keep.sum(), 0.4))
    m = match_columns(measured, cols, tolerance=0.3)
    assert m.fraction == 1.0 and m.rms < 1e-6
    # a lattice has many equivalent alignments: the one found puts a model column on every measured one
    from scipy.spatial import cKDTree

    d, _ = cKDTree(m.transform(cols.xy)).query(measured.xy)
    assert d.max() < 1e-6
    # an asymmetric point set has one alignment: the one applied
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 20, (40, 2))
    pts = pts[np.min(np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1)) + np.eye(40) * 99, axis=1) > 1.0]
    target = (pts * [1, -1]) @ r.T + [3.3, -7.1]
    m = match_columns(
        Columns(target, np.ones(len(pts)), np.ones(len(pts))), Columns(pts, np.ones(len(pts)), np.ones(len(pts)))
    )
    assert m.fraction == 1.0 and m.mirror and m.rotation == pytest.approx(17.0, abs=1e-6)
    np.testing.assert_allclose(m.translation, [3.3, -7.1], atol=1e-6)


def test_species_aware_match():
    xy = np.array([[x, y] for x in range(6) for y in range(6)], float) * 3.0
    sp = ["Cd" if (i + j) % 2 else "Te" for i in range(6) for j in range(6)]
    a = Columns(xy, np.ones(36), np.full(36, 0.4), sp)
    b = Columns(xy + 0.05, np.ones(36), np.full(36, np.nan), ["Te" if s == "Cd" else "Cd" for s in sp])
    plain = match_columns(a, b, 0.3, mirror=False, search=False)
    assert plain.fraction == 1.0 and plain.species_fraction == 0.0
    assert match_columns(a, b, 0.3, mirror=False, search=False, species=True).fraction == 0.0


def test_half_period_shift_scores_lower(slab, haadf):
    from surrogate.inference.refine import Fit, simulate_field, transform

    shape = (64, 64)
    window = transform(simulate_field(slab, haadf, shape), shape)
    fit = Fit()
    fit.extra["margin"] = 2.0
    aligned = score_candidate(window, SAMPLING, slab, haadf, fit)
    shifted = slab.copy()
    shifted.translate([slab.cell[0, 0] / 2 / 3, 0.0, 0.0])  # half the [1-10] period (cell = 3 periods)
    shifted.wrap()
    off = score_candidate(window, SAMPLING, shifted, haadf, fit)
    assert aligned["column_fraction"] > 0.95 and aligned["column_rms"] < 0.1
    assert off["column_fraction"] < 0.5 * aligned["column_fraction"]
    assert set(aligned) >= {"column_fraction", "column_rms", "n_columns", "species_fraction"}


def test_round_trip(tmp_path, slab):
    cols = projected_columns(slab)
    back = Columns.from_json(cols.to_json(tmp_path / "c.json"))
    np.testing.assert_allclose(back.xy, cols.xy, atol=1e-4)
    assert back.species == cols.species
    text = cols.to_csv(tmp_path / "c.csv").read_text().splitlines()
    assert text[0] == "x_A,y_A,intensity,width_A,species" and len(text) == len(cols) + 1


def test_bad_images():
    with pytest.raises(ImageError, match="NaN"):
        find_columns(np.full((32, 32), np.nan), SAMPLING)
    with pytest.raises(ImageError, match="mode"):
        find_columns(np.zeros((32, 32)), SAMPLING, "sem")


def test_blobs_cut_by_the_edge_are_not_reported_off_their_columns():
    """Gaussian columns on a square lattice whose outer row and column the window's edge cuts
    (centres 1 px outside, on, and 1 px inside the border): every column find_columns reports sits
    within 0.1 Å of a true centre; a half-cut blob would pull its fitted centre off by several px."""
    from surrogate.inference.columns import gaussian_image

    period, sigma = 14.0, 2.5  # [px]: 2.8 Å apart at 0.2 Å/px, 0.5 Å wide
    for offset in (-1.0, 0.0, 1.0):
        grid = np.arange(offset, 72.0, period)
        rr, cc = np.meshgrid(grid, grid, indexing="ij")
        rows, cols = rr.ravel(), cc.ravel()
        img = gaussian_image((64, 64), rows, cols, np.ones(rows.size), np.full(rows.size, sigma)) + 0.05
        found = find_columns(img, SAMPLING, "haadf", min_separation=2.4)
        truth = np.stack([cols, rows], axis=1) * SAMPLING  # (x, y) [Å]
        d = np.hypot(*(found.xy[:, None, :] - truth[None, :, :]).transpose(2, 0, 1)).min(axis=1)
        assert len(found) >= 16 and d.max() < 0.1, (offset, d.max())  # [Å]
