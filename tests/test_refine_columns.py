"""The column stage of the refinement (surrogate.inference.refine.fit_columns) and the column ranking."""

import numpy as np
import pytest

SHAPE = (96, 96)
MARGIN = 2.0


@pytest.fixture(scope="module")
def twin_case(rotated):
    """The Σ3 twin candidate, its truth (grain 2 rotated 1°, moved) imaged, and the rigid fit (conftest.py)."""
    return rotated


def test_column_stage_fits_the_second_grain_and_reports_it(twin_case, conditions):
    import dataclasses

    from surrogate.inference.refine import Refinement, fit_columns, measure_columns
    from surrogate.inference.settings import RefineSettings

    cand, truth, window, fit0 = twin_case
    fit = dataclasses.replace(fit0, extra=dict(fit0.extra))
    measured = measure_columns(window, 0.2, "haadf")
    assert measured is not None and len(measured) > 30
    ref = Refinement(fit, 0.0, conditions.to_dict(), 1, atoms=cand)
    fom_rigid = fit.fom
    fit_columns(ref, window, 0.2, cand, conditions, measured, RefineSettings(), None)
    rec = ref.record()
    assert rec["grains"]["used"] and rec["grains"]["fit"]["columns_before"]["column_fraction"] < 0.7
    assert rec["columns"]["column_fraction"] >= 0.95 and rec["columns"]["column_rms"] < 0.1
    assert fit.fom < fom_rigid and rec["fom"] == pytest.approx(fit.fom, abs=1e-4)  # the image is the fitted one
    assert "grain_fit" in ref.atoms.info["params"]  # the structure written out is the fitted one
    assert len(ref.model_columns) > 30 and ref.measured_columns is measured


def test_column_stage_leaves_a_single_crystal_to_the_rigid_fit(conditions):
    from surrogate.inference.refine import Fit, Refinement, fit_columns, fom, measure_columns, simulate_field, transform
    from surrogate.inference.settings import RefineSettings
    from surrogate.structures import build_structure

    slab = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 9.0, "fov": [25.6, 25.6]}
    )
    image = transform(simulate_field(slab, conditions, SHAPE), SHAPE)
    fit = Fit(image=image.astype(np.float32))
    fit.extra["margin"] = MARGIN
    fit.fom, _, fit.ssim = fom(image, image)
    ref = Refinement(fit, 0.0, conditions.to_dict(), 1, atoms=slab)
    fit_columns(ref, image, 0.2, slab, conditions, measure_columns(image, 0.2, "haadf"), RefineSettings(), None)
    assert ref.grains is None and ref.columns["column_fraction"] >= 0.95  # its own image: every column explained


def test_refined_candidates_rank_by_columns_explained_when_asked():
    from surrogate.inference.rank import Candidate, rerank_refined

    cands = [Candidate(f"c{i}", distance=0.1 * i, window=0, entry=i, rank=i + 1, energy_above=0.0) for i in range(3)]
    for c, (f, frac) in zip(cands, ((0.3, 0.6), (0.5, 0.95), (0.4, 0.95))):
        c.refinement = {"fom": f, "columns": {"column_fraction": frac}}
    assert [c.config_id for c in rerank_refined(cands, 3, 1.0)] == ["c0", "c2", "c1"]  # by FOM
    by_columns = rerank_refined(cands, 3, 1.0, score="columns")
    assert [c.config_id for c in by_columns] == ["c2", "c1", "c0"]  # most columns, ties by FOM


def test_score_columns_needs_the_column_stage():
    from surrogate.errors import ConfigError
    from surrogate.inference.settings import RefineSettings

    with pytest.raises(ConfigError, match="refine.columns"):
        RefineSettings(score="columns", columns=False)
    with pytest.raises(ConfigError, match="refine.search"):
        RefineSettings(search=-1)


def test_unresolved_dumbbells_are_found_and_scored_as_one_column_each(conditions):
    from surrogate.inference.columns import find_columns, match_columns, merge_columns, window_columns
    from surrogate.inference.refine import simulate_field, transform
    from surrogate.structures import build_structure

    slab = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 9.0, "fov": [25.6, 25.6]}
    )
    blurred = conditions.replace(source_size=0.75)  # the 1.6 Å Cd-Te dumbbells merge into blobs
    image = transform(simulate_field(slab, blurred, SHAPE), SHAPE)
    found = find_columns(image, 0.2, "haadf")
    model = window_columns(slab, blurred, SHAPE, margin=MARGIN)
    assert found.meta["merge_distance"] > 1.62  # the image's resolution, not the atoms', sets what a column is
    blobs = merge_columns(model, found.meta["merge_distance"])
    assert 0.4 * len(model) < len(blobs) < 0.6 * len(model)  # one blob a dumbbell
    assert match_columns(found, blobs, tolerance=0.3, mirror=False, search=False).fraction >= 0.75  # blobs on blobs
    # ... and the model explains itself by the image only when merged: unmerged, half its columns have no blob
    inside = blobs.subset((blobs.xy > 1.0).all(axis=1) & (blobs.xy < 18.2).all(axis=1))
    everyone = model.subset((model.xy > 1.0).all(axis=1) & (model.xy < 18.2).all(axis=1))
    assert match_columns(inside, found, tolerance=0.3, mirror=False, search=False).fraction >= 0.75
    assert match_columns(everyone, found, tolerance=0.3, mirror=False, search=False).fraction < 0.6


def test_species_aware_matching_prefers_the_alignment_whose_species_agree():
    from surrogate.inference.columns import Columns, match_columns, projected_columns
    from surrogate.structures import build_structure

    slab = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 9.0, "fov": [19.2, 19.2]}
    )
    cols = projected_columns(slab)
    inner = cols.subset((cols.xy > 3.0).all(axis=1) & (cols.xy < 16.0).all(axis=1))
    # the model turned by 180° about the field's centre: geometrically it fits unturned (Cd on Te) and turned back
    centre = inner.xy.mean(axis=0)
    turned = Columns(2 * centre - inner.xy, inner.intensity, inner.width, inner.species)
    # the image side knows no species, only intensities (HAADF: Te brighter); its first columns sit a little off
    measured = Columns(inner.xy + np.where(np.arange(len(inner))[:, None] < 4, 0.25, 0.0), inner.intensity, inner.width)
    m = match_columns(measured, turned, tolerance=0.3, mirror=False, species=True)
    assert m.fraction >= 0.8 and m.species_fraction == 1.0


def test_rigid_starts_keep_magnification_one_when_the_spectra_misjudge_it(monkeypatch, conditions):
    """The query is resampled to the library's sampling, so magnification 1 stays a start even when
    the power spectra's estimate is off (as for a Si twin rotated 30°: every start came out at x0.8)."""
    from surrogate.inference import preprocess
    from surrogate.inference.refine import _initial, simulate_field, transform
    from surrogate.structures import build_structure

    slab = build_structure(
        {"kind": "bulk", "material": {"name": "Si"}, "zone_axis": [1, 1, 0], "thickness": 8.0, "fov": [19.2, 19.2]}
    )
    field = simulate_field(slab, conditions, SHAPE)
    window = transform(field, SHAPE, angle=30.0)
    monkeypatch.setattr(preprocess, "estimate_rotation", lambda a, b: (0.0, 0.8))  # a wrong magnification
    best = _initial(window, field)[0]
    assert abs(best["log_scale"]) < 1e-9 and abs((best["angle"] - 30.0 + 90) % 180 - 90) < 3.0
