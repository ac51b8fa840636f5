"""End to end on a tiny library: a simulated query of a library configuration comes back first with
its energy; the report files exist and parse; bad inputs give their documented errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from surrogate.errors import ConfigError, ImageError, LibraryError


@pytest.fixture(scope="module")
def annotated_library(tiny_library):
    """The tiny library with energies from a Lennard-Jones stand-in for the potential."""
    from ase.calculators.lj import LennardJones

    from surrogate.library.energies import annotate_energies

    annotate_energies(tiny_library, LennardJones(sigma=2.1, epsilon=0.1, rc=5.0), model_id="lj-test", progress=False)
    return tiny_library


def test_library_image_retrieves_its_configuration_first_with_energy(annotated_library, embedder_ckpt, tmp_path):
    from surrogate.inference.pipeline import run_inference
    from surrogate.inference.report import write_report
    from surrogate.library import Library
    from surrogate.library.energies import read_energies
    from surrogate.library.store import int_to_id

    lib = Library(annotated_library)
    i = 4
    np.save(tmp_path / "query.npy", lib.image(i))
    truth = int_to_id(lib.config_ids()[i])
    result = run_inference(
        tmp_path / "query.npy",
        annotated_library,
        preprocess={"denoise": "none"},
        checkpoint=embedder_ckpt,
        pixel_size=lib.sampling,
        refine={"top": 1, "defocus_steps": (), "max_evals": 40},
        progress=False,
    )
    best = result.candidates[0]
    assert best.config_id == truth and best.distance < 1e-4
    assert best.energy == pytest.approx(read_energies(annotated_library)[truth])
    assert best.energy_above is not None and best.pareto
    assert {"fom", "fom_before", "ssim"} <= set(best.refinement) and best.refinement["fom"] <= best.refinement[
        "fom_before"
    ] + 1e-6
    files = write_report(result, tmp_path / "out")
    data = json.loads(files["candidates"].read_text())
    assert data["candidates"][0]["config_id"] == truth and data["candidates"][0]["rank"] == 1
    assert data["energy_model"] == "lj-test"
    from ase.io import read

    assert len(read(next((tmp_path / "out" / "structures").glob("rank01_*.extxyz")))) == len(lib.atoms(truth))
    assert files["overlay_1"].stat().st_size > 1000 and "<table>" in files["report"].read_text()


def test_shared_pose_fits_one_sibling_and_scores_the_rest_at_its_pose(annotated_library, embedder_ckpt, tmp_path):
    from surrogate.inference.pipeline import run_inference
    from surrogate.library import Library
    from surrogate.library.store import int_to_id

    lib = Library(annotated_library)  # one slab (Si [110]) and its point-defect variants: one group
    clean = [i for i in range(len(lib)) if lib.conditions(i).dose is None and lib.conditions(i).mode == "haadf"]
    np.save(tmp_path / "query.npy", lib.image(clean[0]))
    settings = {"defocus_steps": (), "max_evals": 40, "shared_pose": True, "score": "residual"}
    result = run_inference(
        tmp_path / "query.npy",
        annotated_library,
        preprocess={"denoise": "none"},
        checkpoint=embedder_ckpt,
        pixel_size=lib.sampling,
        refine=dict(settings, top=3),
        rank={"energy_weight": 0.0},
        progress=False,
    )
    refined = [c for c in result.candidates if c.refinement]
    assert len(refined) == 3
    first = [c for c in refined if "shared_pose_of" not in c.refinement]
    assert len(first) == 1 and first[0].refinement["retrieval_rank"] == 1
    assert all(
        c.refinement["shared_pose_of"] == first[0].config_id and c.refinement["evaluations"] == 0
        for c in refined
        if c is not first[0]
    )
    residuals = [c.refinement["residual"] for c in result.candidates[:3]]
    assert residuals == sorted(residuals) and residuals[0] < 0.01 < residuals[1]  # its own configuration explains it
    assert result.candidates[0].config_id == int_to_id(lib.config_ids()[clean[0]])
    from surrogate.inference.report import write_report

    data = json.loads(write_report(result, tmp_path / "out")["candidates"].read_text())
    assert all("residual" in c["refinement"] for c in data["candidates"][:3])
    with pytest.raises(ConfigError, match="refine.score"):
        run_inference(
            tmp_path / "query.npy",
            annotated_library,
            preprocess={"denoise": "none"},
            checkpoint=embedder_ckpt,
            pixel_size=lib.sampling,
            refine={"top": 1, "score": "ssim"},
            progress=False,
        )


def test_classical_matcher_runs_the_same_pipeline(tiny_library, tmp_path):
    from surrogate.inference.pipeline import run_inference
    from surrogate.library import Library
    from surrogate.library.store import int_to_id

    lib = Library(tiny_library)
    np.save(tmp_path / "q.npy", lib.image(7))
    result = run_inference(
        tmp_path / "q.npy",
        tiny_library,
        preprocess={"denoise": "none"},
        method="hog",
        pixel_size=lib.sampling,
        refine={"top": 0},
        rank={"energy_weight": 0.0},
        progress=False,
    )  # the library may carry energies from another test
    assert result.candidates[0].config_id == int_to_id(lib.config_ids()[7])


def test_mode_restricts_matches_to_library_images_of_that_mode(tiny_library, tmp_path):
    from surrogate.inference.pipeline import run_inference
    from surrogate.inference.retrieve import keep_allowed
    from surrogate.library import Library
    from surrogate.library.store import int_to_id
    from surrogate.simulate.conditions import MODES

    lib = Library(tiny_library)
    codes = lib.condition_column("mode").astype(int)
    i = 7
    mode = MODES[codes[i]]
    np.save(tmp_path / "q.npy", lib.image(i))
    result = run_inference(
        tmp_path / "q.npy",
        tiny_library,
        preprocess={"denoise": "none"},
        method="hog",
        pixel_size=lib.sampling,
        refine={"top": 0},
        rank={"energy_weight": 0.0},
        retrieval={"mode": mode},
        progress=False,
    )
    assert result.candidates[0].config_id == int_to_id(lib.config_ids()[i])
    assert all(codes[c.entry] == codes[i] for c in result.candidates) and result.info["mode"] == mode
    with pytest.raises(ConfigError, match="choose one of"):
        run_inference(
            tmp_path / "q.npy",
            tiny_library,
            preprocess={"denoise": "none"},
            method="hog",
            pixel_size=lib.sampling,
            retrieval={"mode": "stem"},
        )
    absent = [m for m in MODES if MODES.index(m) not in codes]
    if absent:
        with pytest.raises(ConfigError, match=f"no {absent[0]} images"):
            run_inference(
                tmp_path / "q.npy",
                tiny_library,
                preprocess={"denoise": "none"},
                method="hog",
                pixel_size=lib.sampling,
                retrieval={"mode": absent[0]},
            )
    # the filter keeps each window's order and pads with -1 / inf
    idx, dist = keep_allowed(
        np.array([[3, 1, 2, 0]]), np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([True, False, True, False])
    )
    assert idx.tolist() == [[2, 0, -1, -1]] and dist[0, :2].tolist() == [0.3, 0.4] and np.isinf(dist[0, 2:]).all()


def test_bad_inputs_give_documented_errors(tiny_library, embedder_ckpt, tmp_path):
    import torch

    from surrogate.inference.pipeline import run_inference

    np.save(tmp_path / "q.npy", np.random.default_rng(0).random((64, 64)))
    with pytest.raises(ImageError, match="pixel_size"):
        run_inference(tmp_path / "q.npy", tiny_library, preprocess={"denoise": "none"}, checkpoint=embedder_ckpt)
    with pytest.raises(ImageError, match="smaller than the model's field"):
        run_inference(
            tmp_path / "q.npy", tiny_library, preprocess={"denoise": "none"}, checkpoint=embedder_ckpt, pixel_size=0.05
        )  # 16 px at 0.2 Å/px
    with pytest.raises(ConfigError, match="unknown method"):
        run_inference(tmp_path / "q.npy", tiny_library, preprocess={"denoise": "none"}, method="orb", pixel_size=0.2)
    with pytest.raises(ConfigError, match="checkpoint not found"):
        run_inference(
            tmp_path / "q.npy",
            tiny_library,
            preprocess={"denoise": "none"},
            checkpoint=tmp_path / "none.pt",
            pixel_size=0.2,
        )
    other = torch.load(embedder_ckpt, weights_only=True)
    other["surrogate"]["library_hash"] = "0123456789abcdef"
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(LibraryError, match="0123456789abcdef"):
        run_inference(
            tmp_path / "q.npy",
            tiny_library,
            preprocess={"denoise": "none"},
            checkpoint=tmp_path / "other.pt",
            pixel_size=0.2,
        )


def test_infer_cli_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    np.save(tmp_path / "nan.npy", np.full((64, 64), np.nan))
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "infer.py"),
            f"image={tmp_path / 'nan.npy'}",
            "pixel_size=0.2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "NaN" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_energy_breaks_a_distance_tie_and_weight_zero_ignores_it():
    from surrogate.inference.rank import Candidate, rank_candidates

    def make():
        return [
            Candidate("a", 0.10, 0, 0, formula="CdTe", energy=-2.00),
            Candidate("b", 0.09, 0, 1, formula="CdTe", energy=-1.90),
        ]

    assert rank_candidates(make(), energy_weight=1.0)[0].config_id == "a"  # 0.10 + 0 < 0.09 + 0.10
    assert rank_candidates(make(), energy_weight=0.0)[0].config_id == "b"
    assert all(c.pareto for c in rank_candidates(make()))  # neither dominates the other


def test_refinement_recovers_a_known_rotation_scale_and_shift():
    """Registration finds the transform of a rotated, magnified, shifted, noisy simulation."""
    from surrogate.inference import refine as R
    from surrogate.simulate.conditions import ImagingConditions
    from surrogate.simulate.images import SimulationSettings
    from surrogate.structures.recipes import build_structure

    atoms = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 10.0, "fov": [12.8, 12.8]}
    )
    c = ImagingConditions(mode="haadf", method="incoherent", source_size=0.4, sampling=0.2)
    field = R.simulate_field(atoms, c, (64, 64), SimulationSettings(potential_sampling=0.1))
    clean = R.transform(field, (64, 64), angle=17.0, scale=1.04, shift=(2.0, -1.5), blur=0.8)
    exp = clean + np.random.default_rng(0).normal(0, 0.2 * clean.std(), clean.shape)
    ceiling = R.fom(exp, clean)[2]  # the SSIM of the truth itself against the noisy image
    fit = R.refine(exp, atoms, c, SimulationSettings(potential_sampling=0.1), defocus_steps=(), max_evals=300)
    # [110] CdTe projects with a 2-fold axis: 17 and 197 degrees are the same image
    assert min(abs(fit.angle - 17.0), abs(fit.angle - 197.0)) < 1.0
    assert fit.scale == pytest.approx(1.04, abs=0.01)
    assert fit.ssim > ceiling - 0.02 and fit.fom < fit.fom_before and fit.simulations == 1


def test_refinement_finds_a_boundary_away_from_the_window_centre_and_beats_bulk():
    """A coherent twin whose boundary sits 28 px right of the centre of a 96 px window: the fit must
    move the model's boundary there (a lattice correlates with itself one period away, so the nearest
    correlation peak alone leaves it at the centre) and then explain the image better than bulk."""
    from surrogate.inference import refine as R
    from surrogate.simulate.conditions import ImagingConditions
    from surrogate.simulate.images import SimulationSettings
    from surrogate.structures.recipes import build_structure

    grain = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1]}
    twin = build_structure(
        {
            "kind": "gb",
            "name": "twin111",
            "material": {"name": "CdTe"},
            "thickness": 5.0,
            "fov": [19.2, 19.2],
            "grain1": {**grain, "tilt": 35.26439},
            "grain2": {**grain, "tilt": -35.26439, "flip_species": True},
        }
    )
    bulk = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 5.0, "fov": [19.2, 19.2]}
    )
    c = ImagingConditions(mode="haadf", method="incoherent", source_size=0.4, sampling=0.2)
    st = SimulationSettings(potential_sampling=0.1)
    field = R.simulate_field(R.widen_boundary(twin, 2 * 96 * 0.2), c, (96, 96), st)
    exp = R.transform(field, (96, 96), angle=10.0, shift=(3.0, 28.0), blur=0.6)
    exp = exp + np.random.default_rng(0).normal(0, 0.2 * exp.std(), exp.shape)
    fit_twin = R.refine(exp, twin, c, st, defocus_steps=(), max_evals=300)
    fit_bulk = R.refine(exp, bulk, c, st, defocus_steps=(), max_evals=300)
    assert fit_twin.ssim > 0.8 and abs(fit_twin.angle - 10.0) < 1.0
    assert np.allclose(fit_twin.shift, (3.0, 28.0), atol=1.5)
    assert fit_twin.fom < fit_bulk.fom - 0.1


def test_siblings_scored_at_a_shared_pose_rank_by_structure():
    """A bulk fit's pose and defocus carry over to its point-defect sibling: scored at that pose, the
    configuration that made the image (a slab with one emptied Te column) wins, and re-scoring the
    fitted bulk itself reproduces its figure of merit."""
    from surrogate.inference import refine as R
    from surrogate.simulate.conditions import ImagingConditions
    from surrogate.simulate.images import SimulationSettings
    from surrogate.structures.recipes import build_structure

    bulk = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 10.0, "fov": [12.8, 12.8]}
    )
    te = bulk.positions[bulk.numbers == 52]
    column = te[np.argmin(np.linalg.norm(te[:, :2] - bulk.cell.diagonal()[:2] / 2, axis=1)), :2]
    defect = bulk[
        [
            i
            for i, (a, p) in enumerate(zip(bulk.numbers, bulk.positions))
            if not (a == 52 and np.linalg.norm(p[:2] - column) < 0.3)
        ]
    ]
    assert len(bulk) - len(defect) >= 2  # a whole column emptied
    c = ImagingConditions(mode="haadf", method="incoherent", source_size=0.4, sampling=0.2)
    st = SimulationSettings(potential_sampling=0.1)
    for truth in (defect, bulk):  # either way round: the structure that made the image wins
        exp = R.transform(R.simulate_field(truth, c, (64, 64), st), (64, 64), angle=17.0, shift=(2.0, -1.5), blur=0.8)
        exp = exp + np.random.default_rng(0).normal(0, 0.2 * exp.std(), exp.shape)
        fit = R.refine(exp, bulk, c, st, defocus_steps=(), max_evals=200)
        f_bulk, _, _, im_bulk = R.score_at_pose(exp, bulk, c, fit, st)
        f_defect, _, _, im_defect = R.score_at_pose(exp, defect, c, fit, st)
        assert f_bulk == pytest.approx(fit.fom, abs=1e-6)
        assert (f_defect < f_bulk) == (truth is defect), (f_defect, f_bulk)
        r_bulk, r_defect = R.residual(exp, im_bulk), R.residual(exp, im_defect)
        assert (r_defect < r_bulk) == (truth is defect), (r_defect, r_bulk)


def test_residual_is_zero_for_a_linear_copy_and_one_for_unrelated_noise():
    from surrogate.inference.refine import residual

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 64))
    assert residual(3.0 * x + 2.0, x) == pytest.approx(0.0, abs=1e-12)
    assert residual(x, rng.normal(size=(64, 64))) == pytest.approx(1.0, abs=0.05)


def test_refinement_with_relaxation_lowers_the_energy_and_reports_it():
    from ase.calculators.lj import LennardJones

    from surrogate.inference import refine as R
    from surrogate.simulate.conditions import ImagingConditions
    from surrogate.simulate.images import SimulationSettings
    from surrogate.structures.recipes import build_structure
    from surrogate.structures.thermal import rattle

    atoms = rattle(
        build_structure(
            {"kind": "bulk", "material": {"name": "Si"}, "zone_axis": [1, 1, 0], "thickness": 8.0, "fov": [9.6, 9.6]}
        ),
        0.05,
        0,
    )
    c = ImagingConditions(mode="haadf", method="incoherent", source_size=0.4, sampling=0.2)
    settings = SimulationSettings(potential_sampling=0.1)
    exp = R.transform(R.simulate_field(atoms, c, (48, 48), settings), (48, 48), angle=5.0)
    fit = R.refine(
        exp,
        atoms,
        c,
        settings,
        defocus_steps=(),
        max_evals=60,
        calculator=LennardJones(sigma=2.1, epsilon=0.1, rc=4.5),
        relax_steps=30,
    )
    s = fit.summary()
    assert s["energy_per_atom_relaxed"] < s["energy_per_atom_unrelaxed"]
    assert "fom_relaxed" in s and s["simulations"] == 2 and "relaxed_atoms" not in s


def test_energy_decides_between_variants_of_one_structure_not_between_boundary_and_bulk():
    from surrogate.inference.rank import Candidate, rank_candidates

    bulk = Candidate("b", distance=0.30, window=0, entry=0, family="bulk", formula="CdTe", kind="bulk", energy=-2.26)
    twin0 = Candidate("t0", distance=0.20, window=0, entry=1, family="gb", formula="CdTe", kind="twin", energy=-2.15)
    twin1 = Candidate("t1", distance=0.19, window=0, entry=2, family="gb", formula="CdTe", kind="twin", energy=-2.10)
    ranked = rank_candidates([bulk, twin0, twin1], energy_weight=1.0)
    assert twin0.energy_above == 0.0 and bulk.energy_above == 0.0  # a boundary is not penalised against bulk
    assert twin1.energy_above == pytest.approx(0.05)  # the costlier rigid translation is
    assert [c.config_id for c in ranked] == ["t0", "t1", "b"] and [c.rank for c in ranked] == [1, 2, 3]


def test_refined_candidates_are_ordered_by_their_fit():
    from surrogate.inference.rank import Candidate, rerank_refined

    cands = [
        Candidate(f"c{i}", distance=0.1 * i, window=0, entry=i, rank=i + 1, energy_above=e)
        for i, e in enumerate((0.0, 0.0, 0.2, 0.0))
    ]
    for c, f in zip(cands[:3], (0.6, 0.4, 0.3)):
        c.refinement = {"fom": f}
    out = rerank_refined(cands, 3, energy_weight=1.0)
    # c2 fits best but is 0.2 eV/atom above its kind's lowest: 0.3 + 0.2 > 0.4
    assert [c.config_id for c in out] == ["c1", "c2", "c0", "c3"] and [c.rank for c in out] == [1, 2, 3, 4]


def test_roi_crops_the_image_or_is_a_clear_error():
    from surrogate.inference.preprocess import crop
    from surrogate.io.readers import Micrograph

    m = Micrograph(np.arange(100 * 80, dtype=np.float32).reshape(100, 80), sampling=0.2)
    out = crop(m, [10, 20, 30, 40])
    assert out.data.shape == (30, 40) and out.data[0, 0] == m.data[10, 20] and out.metadata["roi"] == [10, 20, 30, 40]
    for bad in ([90, 0, 20, 20], [0, 0, 0, 10], [0, 0, 10], "abc"):
        with pytest.raises(ConfigError, match="roi"):
            crop(m, bad)


def test_boundary_score_finds_the_window_across_two_grains():
    from surrogate.inference import refine as R
    from surrogate.inference.preprocess import Window, boundary_score
    from surrogate.inference.refine import anchor_window as _anchor_window
    from surrogate.simulate.conditions import ImagingConditions
    from surrogate.simulate.images import SimulationSettings
    from surrogate.structures.recipes import build_structure

    grain = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1]}
    twin = build_structure(
        {
            "kind": "gb",
            "name": "twin111",
            "material": {"name": "CdTe"},
            "thickness": 5.0,
            "fov": [25.6, 19.2],
            "grain1": {**grain, "tilt": 35.26439},
            "grain2": {**grain, "tilt": -35.26439, "flip_species": True},
        }
    )
    c = ImagingConditions(mode="haadf", method="incoherent", source_size=0.4, sampling=0.2)
    field = R.simulate_field(
        R.widen_boundary(twin, 2 * 96 * 0.2), c, (96, 96), SimulationSettings(potential_sampling=0.1)
    )
    across = R.transform(field, (96, 96))  # the boundary through the middle
    inside = R.transform(field, (96, 96), shift=(0.0, 60.0))  # one grain only
    assert boundary_score(across) > 4 * boundary_score(inside)
    wins = [Window(inside, 0, 0), Window(across, 0, 48)]
    assert _anchor_window(wins, [], "boundary") == 1 and _anchor_window(wins, [], "0") == 0
    for bad in ("middle", "7"):
        with pytest.raises(ConfigError, match="refine.window"):
            _anchor_window(wins, [], bad)


def test_out_of_library_threshold_is_calibrated_on_held_out_conditions_and_cached(
    tiny_library, embedder_ckpt, tmp_path
):
    from surrogate.inference.retrieve import CNNMatcher
    from surrogate.library import Library
    from surrogate.library.dataset import split_indices

    lib = Library(tiny_library)
    index = tmp_path / "index.faiss"
    m = CNNMatcher(lib, embedder_ckpt, index_path=index)
    rec = json.loads(Path(str(index) + ".calibration.json").read_text())
    held = split_indices(lib, "test", "condition")
    assert rec["method"] == "heldout-conditions" and rec["held_out_images"] == len(held)
    assert 0 < m.threshold == rec["threshold"] <= 2  # cosine distance of unit vectors
    rec["threshold"] = 0.123  # the cached value is what a second matcher uses
    Path(str(index) + ".calibration.json").write_text(json.dumps(rec))
    assert CNNMatcher(lib, embedder_ckpt, index_path=index).threshold == 0.123


@pytest.fixture(scope="module")
def lattice_library(tmp_path_factory):
    """Si [110] at 64 px (12.8 Å, four lattice periods): the smallest field with measurable spacings."""
    from surrogate.library.cli import build
    from tests.conftest import tiny_library_config

    out = tmp_path_factory.mktemp("lattice") / "lib"
    build(
        tiny_library_config(
            out,
            **{
                "library.shape": "[64,64]",
                "structures.fov": "[12.8,12.8]",
                "structures.defects.per_slab": 1,
                "simulate": "haadf",
                "library.images_per_structure": 2,
            },
        )
    )
    return out


def test_lattice_check_flags_a_wrong_pixel_size_and_names_the_fix(lattice_library, tiny_library, tmp_path):
    """The embedding is scale invariant; the lattice check is not: the same image read with a pixel
    size 30 % too large matches no candidate's lattice, and the check says by how much to correct it."""
    from surrogate.inference.lattice import LatticeReference
    from surrogate.inference.pipeline import run_inference
    from surrogate.inference.report import lattice_warning, write_report
    from surrogate.library import Library
    from surrogate.library.store import int_to_id

    lib = Library(lattice_library)
    i = int(np.flatnonzero(lib.noise_free())[0])  # a noise-free image
    assert len(LatticeReference.of(lib).of_config(int(lib.config_ids()[i]))) >= 1
    np.save(tmp_path / "q.npy", lib.image(i))
    kw = dict(method="hog", refine={"top": 0}, rank={"energy_weight": 0.0}, progress=False)
    right = run_inference(
        tmp_path / "q.npy", lattice_library, preprocess={"denoise": "none"}, pixel_size=lib.sampling, **kw
    )
    assert not right.lattice["mismatch"] and right.candidates[0].config_id == int_to_id(lib.config_ids()[i])
    assert right.candidates[0].lattice_mismatch <= 0.02
    wrong = run_inference(
        tmp_path / "q.npy", lattice_library, preprocess={"denoise": "none"}, pixel_size=1.3 * lib.sampling, **kw
    )
    assert wrong.lattice["mismatch"] and all(c.lattice_mismatch > 0.1 for c in wrong.candidates)
    assert wrong.lattice["pixel_size_factor"] == pytest.approx(1 / 1.3, rel=0.05)
    assert "pixel size x 0.7" in lattice_warning(wrong.lattice)
    files = write_report(wrong, tmp_path / "out")
    assert "LATTICE MISMATCH" in files["report"].read_text(encoding="utf-8")
    assert json.loads(files["candidates"].read_text())["lattice"]["mismatch"] is True
    off = run_inference(
        tmp_path / "q.npy",
        lattice_library,
        preprocess={"denoise": "none"},
        pixel_size=1.3 * lib.sampling,
        lattice_check={"mode": "off"},
        **kw,
    )
    assert off.lattice == {} and off.candidates[0].lattice_mismatch is None
    with pytest.raises(ConfigError, match="lattice_check"):
        run_inference(
            tmp_path / "q.npy",
            lattice_library,
            preprocess={"denoise": "none"},
            pixel_size=lib.sampling,
            lattice_check={"mode": "strict"},
            **kw,
        )
    # 32 px windows resolve no spacing: the check says so instead of guessing
    small = Library(tiny_library)
    np.save(tmp_path / "s.npy", small.image(0))
    skipped = run_inference(
        tmp_path / "s.npy", tiny_library, preprocess={"denoise": "none"}, pixel_size=small.sampling, **kw
    ).lattice
    assert not skipped["mismatch"] and "32 px" in skipped["skipped"]


def test_out_of_library_threshold_is_calibrated_through_the_queries_preprocessing(
    tiny_library, embedder_ckpt, tmp_path
):
    """Every window of a micrograph is normalised and denoised before it is embedded: the threshold
    is measured on images prepared the same way, and cached per denoising method."""
    from surrogate.inference.retrieve import CNNMatcher
    from surrogate.inference.settings import PreprocessSettings
    from surrogate.library import Library

    lib = Library(tiny_library)
    index = tmp_path / "index.faiss"
    plain = CNNMatcher(lib, embedder_ckpt, index_path=index).threshold
    gauss = CNNMatcher(lib, embedder_ckpt, index_path=index, preprocess=PreprocessSettings(denoise="gaussian"))
    rec = json.loads(Path(str(index) + ".calibration-gaussian.json").read_text())
    assert rec["denoise"] == "gaussian" and rec["threshold"] == gauss.threshold and 0 < gauss.threshold <= 2
    assert gauss.threshold != plain  # blurred queries sit at other distances than raw library images


def test_ingrained_fom_is_ingraineds_score_and_blinder_than_ours_to_contrast_offsets():
    """ingrained_fom is ingrained's ``1 - SSIM`` of min-max scaled images (no shift here): zero for the
    image itself, unchanged by a positive gain and offset of either image; our zero-mean SSIM is the
    stricter of the two on the same noisy pair."""
    from skimage.metrics import structural_similarity

    from surrogate.inference import refine as R

    yy, xx = np.mgrid[:64, :64]
    clean = np.cos(2 * np.pi * xx / 9.0) * np.cos(2 * np.pi * yy / 7.0) + 1.5
    noisy = clean + np.random.default_rng(1).normal(0, 0.4, clean.shape)
    f, s = R.ingrained_fom(noisy, noisy)
    assert f == pytest.approx(0.0, abs=1e-9) and s == pytest.approx(1.0)
    f, s = R.ingrained_fom(noisy, 3.0 * clean + 7.0)
    a, b = noisy[2:-2, 2:-2], clean[2:-2, 2:-2]  # the shared interior _aligned keeps at zero shift
    unit = [(x - x.min()) / (x.max() - x.min()) for x in (a, b)]
    assert s == pytest.approx(structural_similarity(*unit, data_range=1.0), abs=1e-3)  # sub-pixel shift
    assert f == pytest.approx(1.0 - s, abs=1e-2)
    assert R.fom(noisy, clean)[2] < s


def test_widening_the_ideal_twin_keeps_it_ideal():
    """widen_boundary rebuilds the ideal coherent twin (structures.csl), not a two-grain recipe: the
    widened cell is twice the field, and every atom keeps four bulk bonds (no gap at the twin plane)."""
    from surrogate.inference.refine import widen_boundary
    from surrogate.structures import build_structure
    from surrogate.structures.crystals import crystal, shortest_distance
    from surrogate.structures.csl import coordination

    twin = build_structure({"kind": "twin", "material": {"name": "CdTe"}, "thickness": 7.0, "fov": [20.0, 10.0]})
    wide = widen_boundary(twin, 30.0)
    assert wide.cell[0, 0] >= 60.0 > twin.cell[0, 0]
    assert wide.info["params"]["construction"] == twin.info["params"]["construction"]
    assert (coordination(wide, shortest_distance(crystal("CdTe"))) == 4).all()
