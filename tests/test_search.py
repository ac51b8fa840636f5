"""Energy-guided search: moves, basin hopping, GA, Pareto fronts, image mismatch, candidate files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from hypothesis import given, settings
from hypothesis import strategies as st

from surrogate.errors import ConfigError
from surrogate.search import (
    ImageObjective,
    basin_hopping,
    crowding_distance,
    export_for_library,
    genetic_search,
    image_mismatch,
    non_dominated_sort,
    pareto_front,
    propose,
    read_candidates,
    search_info,
    write_candidates,
)


# -- fixtures --------------------------------------------------------------------------------------
def cuau(ordered: bool = False) -> Atoms:
    """A 32-atom fcc Cu16Au16 cell, phase-separated (Cu and Au halves): EMT knows both."""
    from surrogate.structures import tag

    a = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
    a.numbers[:] = np.where(np.arange(len(a)) < 16, 29, 79)
    return tag(a, "bulk", {"material": "CuAu"}, zone_axis=[0, 0, 1])


def lj13() -> Atoms:
    grid = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(2)], float) * 1.12
    rng = np.random.default_rng(3)
    return Atoms("Ar13", positions=grid[:13] + rng.normal(0, 0.1, (13, 3)))


@pytest.fixture(scope="module")
def cdte_vacancy_pair():
    """Two CdTe [110] cells (16 sites) with a Te vacancy in different columns, and the first's image."""
    from surrogate.simulate import ImagingConditions, render
    from surrogate.structures import add_defects, crystal, zone_axis_slab

    slab = zone_axis_slab(crystal("CdTe"), [1, 1, 0], None, (6.4, 6.4), 8.0, "CdTe")
    target = add_defects(slab, [{"kind": "vacancy", "species": "Te", "position": [0.25, 0.25]}])
    start = add_defects(slab, [{"kind": "vacancy", "species": "Te", "position": [0.75, 0.75]}])
    conditions = ImagingConditions(sampling=0.2)
    image = render(target, [conditions], (32, 32), noise=False)[0]
    return target, start, image, conditions


def toy_lj():
    """Element-blind Lennard-Jones with its minimum near the CdTe bond length (a toy, not CdTe)."""
    return LennardJones(sigma=2.5, epsilon=0.1, rc=6.0)


# -- Pareto fronts ---------------------------------------------------------------------------------
def _brute_force_front(p: np.ndarray) -> np.ndarray:
    out = []
    for i in range(len(p)):
        if np.isnan(p[i]).any():
            out.append(False)
            continue
        dominated = any(
            not np.isnan(p[j]).any() and all(p[j] <= p[i]) and any(p[j] < p[i]) for j in range(len(p)) if j != i
        )
        out.append(not dominated)
    return np.array(out, bool)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda k: st.lists(
            st.lists(st.one_of(st.integers(0, 4).map(float), st.just(float("nan"))), min_size=k, max_size=k),
            min_size=1,
            max_size=25,
        )
    )
)
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    p = np.array(points, float)
    front = pareto_front(p)
    np.testing.assert_array_equal(front, _brute_force_front(p))
    ranks = non_dominated_sort(p)
    np.testing.assert_array_equal(ranks == 0, front if front.any() else ranks == 0)
    for r in range(1, ranks.max() + 1):  # every point of rank r is dominated by one of rank r - 1
        prev = p[ranks == r - 1]
        for q in p[(ranks == r) & ~np.isnan(p).any(axis=1)]:
            assert any(all(a <= q) and any(a < q) for a in prev)


def test_crowding_distance_prefers_extremes_and_isolated_points():
    d = crowding_distance([[0, 4], [1, 3], [1.1, 2.9], [4, 0]])
    assert np.isinf(d[0]) and np.isinf(d[3]) and d[1] > 0 and d[2] > 0
    assert np.isinf(crowding_distance([[0, 1], [1, 0]])).all()


# -- moves -----------------------------------------------------------------------------------------
def test_moves_keep_composition_and_track_vacancies_and_grain_translation(cdte_vacancy_pair):
    _, start, _, _ = cdte_vacancy_pair
    rng = np.random.default_rng(0)
    info = search_info(start)
    assert len(info["vacancies"]) == 1 and info["vacancies"][0]["host"] == "Te"
    for name in ("swap", "vacancy_hop", "rattle"):
        moved, used = propose(start, rng, {name: 1.0})
        assert used == name
        assert sorted(moved.get_chemical_symbols()) == sorted(start.get_chemical_symbols())
    hopped, _ = propose(start, rng, {"vacancy_hop": 1.0})
    new_site = hopped.info["search"]["vacancies"][0]["position"]
    assert not np.allclose(new_site, info["vacancies"][0]["position"])
    assert np.linalg.norm(hopped.positions - new_site, axis=1).min() > 1.0  # the new vacant site is empty
    # a two-grain toy: only tag-2 atoms move, and the cell grows with the normal expansion
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 1, 1))
    a.set_tags(np.where(a.positions[:, 0] < 7.2, 1, 2))
    a.info.update(family="gb", params={"translation": [0, 0, 0], "boundary_x": 7.2})
    moved, _ = propose(a, rng, {"translate": 1.0}, translate=0.2)
    t = moved.info["search"]["translation"]
    assert moved.cell[0, 0] == pytest.approx(a.cell[0, 0] + t[0])
    grain1 = a.get_tags() == 1
    np.testing.assert_allclose(moved.positions[grain1], a.positions[grain1], atol=1e-12)
    with pytest.raises(ConfigError, match="unknown move"):
        propose(a, rng, {"teleport": 1.0})


# -- basin hopping ---------------------------------------------------------------------------------
def test_basin_hopping_lowers_the_energy_of_a_rattled_lj_cluster():
    start = lj13()
    start.calc = LennardJones(rc=2.5)
    e_start = start.get_potential_energy()
    result = basin_hopping(
        start,
        LennardJones(rc=2.5),
        steps=8,
        kT=0.8,
        moves={"rattle": 1},
        rattle=0.35,
        relax_steps=300,
        seed=0,
        progress=False,
    )
    first_minimum = [c for c in result.candidates if c.info["search_step"] == 0][0]
    best = result.best.info["energy_per_atom"] * len(start)
    assert best < first_minimum.info["energy_per_atom"] * len(start) < e_start
    assert best == min(c.info["energy_per_atom"] for c in result.candidates) * len(start)
    assert result.best.info["pareto"] and sum(c.info["pareto"] for c in result.candidates) >= 1


@pytest.mark.parametrize("kT", [0.05, 1e-9])
def test_basin_hopping_follows_the_metropolis_rule(kT):
    def run():
        return basin_hopping(
            cuau(),
            EMT(),
            steps=12,
            kT=kT,
            moves={"swap": 1, "rattle": 1},
            rattle=0.05,
            relax_steps=3,
            seed=7,
            progress=False,
        )

    result = run()
    current = None
    for h in result.history:
        d = h["objective_new"] - h["objective_old"]
        assert h["accepted"] == (d <= 0 or h["u"] < math.exp(-d / kT))
        if kT < 1e-6:
            assert not h["accepted"] or d <= 1e-9  # zero temperature: never uphill
        if current is not None:
            assert h["objective_old"] == current
        current = h["objective_new"] if h["accepted"] else h["objective_old"]
    if kT > 1e-6:
        assert any(h["accepted"] and h["objective_new"] > h["objective_old"] for h in result.history)
    again = run()
    assert json.dumps(again.history) == json.dumps(result.history)


def test_killed_basin_hopping_resumes_bit_for_bit(tmp_path):
    kw = dict(kT=0.1, relax_steps=3, seed=2, progress=False, checkpoint_every=2)
    full = basin_hopping(cuau(), EMT(), steps=6, **kw)
    basin_hopping(cuau(), EMT(), steps=3, output_dir=tmp_path, **kw)  # "killed" after 3 steps
    resumed = basin_hopping(cuau(), EMT(), steps=6, output_dir=tmp_path, **kw)
    assert json.dumps(resumed.history) == json.dumps(full.history)
    assert [c.info["config_id"] for c in resumed.candidates] == [c.info["config_id"] for c in full.candidates]
    assert (tmp_path / "candidates.extxyz").is_file() and (tmp_path / "summary.json").is_file()
    with pytest.raises(ConfigError, match="another search"):
        basin_hopping(cuau(), EMT(), steps=6, output_dir=tmp_path, **{**kw, "kT": 0.2})


# -- genetic algorithm -----------------------------------------------------------------------------
def test_ga_improves_the_best_energy_over_generations_and_resumes(tmp_path):
    kw = dict(population=6, relax_steps=0, seed=1, progress=False)
    result = genetic_search(cuau(), EMT(), generations=4, **kw)
    best = [h["best_energy_per_atom"] for h in result.history]
    assert all(b1 <= b0 for b0, b1 in zip(best, best[1:]))  # elitist: never worse
    assert best[-1] < best[0]
    assert result.best.info["energy_per_atom"] == pytest.approx(best[-1])
    assert sorted(result.best.get_chemical_symbols()) == sorted(cuau().get_chemical_symbols())
    genetic_search(cuau(), EMT(), generations=2, output_dir=tmp_path, **kw)
    resumed = genetic_search(cuau(), EMT(), generations=4, output_dir=tmp_path, **kw)
    assert resumed.history == result.history
    assert [c.info["config_id"] for c in resumed.candidates] == [c.info["config_id"] for c in result.candidates]


def test_ga_refuses_a_configuration_it_cannot_change():
    with pytest.raises(ConfigError, match="no mutation applies"):
        genetic_search(bulk("Cu", "fcc", a=3.61, cubic=True), EMT(), generations=1, progress=False)


# -- image objective and multi-objective search ----------------------------------------------------
def test_image_mismatch_is_zero_for_the_same_image_and_ignores_scale():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert image_mismatch(a, a) == pytest.approx(0.0, abs=1e-12)
    assert image_mismatch(3 * a + 1, a) == pytest.approx(0.0, abs=1e-9)
    assert image_mismatch(rng.random((32, 32)), a) > 0.5
    assert image_mismatch(np.ones((32, 32)), a) == 1.0
    with pytest.raises(ConfigError, match="shapes differ"):
        image_mismatch(a, a[:16])


def test_multi_objective_ga_puts_the_target_configuration_on_the_front_at_zero_mismatch(cdte_vacancy_pair, tmp_path):
    target, start, image, conditions = cdte_vacancy_pair
    objective = ImageObjective(image, conditions)
    assert objective(start) > 0.1
    assert math.isnan(ImageObjective(np.zeros((64, 64)) + np.eye(64), conditions)(start))  # cell < field of view
    result = genetic_search(
        start,
        toy_lj(),
        generations=3,
        population=6,
        relax_steps=0,
        mutations={"vacancy": 1},
        image=objective,
        seed=0,
        output_dir=tmp_path,
        progress=False,
    )
    front = result.pareto()
    assert front and all(a.info["pareto"] for a in front)
    best_fit = min(front, key=lambda a: a.info["mismatch"])
    assert best_fit.info["mismatch"] < 1e-6
    vac = best_fit.info["search"]["vacancies"][0]["position"]
    target_vac = target.info["params"]["defects"][0]["position"]
    assert np.allclose(vac[:2], target_vac[:2], atol=1e-2)  # same column (depth is invisible in projection)
    points = np.array([[a.info["energy_per_atom"], a.info["mismatch"]] for a in result.candidates])
    np.testing.assert_array_equal(pareto_front(points), [a.info["pareto"] for a in result.candidates])
    on_disk = read_candidates(tmp_path / "candidates.extxyz")
    assert [a.info["config_id"] for a in on_disk] == [a.info["config_id"] for a in result.candidates]


# -- candidate files -------------------------------------------------------------------------------
def test_candidates_round_trip_and_export_for_the_library(tmp_path):
    result = basin_hopping(cuau(), EMT(), steps=4, kT=0.5, relax_steps=2, seed=3, progress=False)
    path = write_candidates(tmp_path / "c.extxyz", result.candidates)
    back = read_candidates(path)
    assert len(back) == len(result.candidates)
    for a, b in zip(result.candidates, back):
        assert b.info["config_id"] == a.info["config_id"]
        assert b.get_potential_energy() == pytest.approx(a.info["energy_per_atom"] * len(a))
        assert b.info["params"]["parent"] == cuau().info["config_id"]
        assert b.info["search_method"] == "basin" and b.info["family"] == "bulk"
    out = export_for_library(back, tmp_path / "for_library.extxyz", top=2)
    lib = read_candidates(out)
    assert len(lib) == 2 and lib[0].info["energy_per_atom"] <= lib[1].info["energy_per_atom"]
    assert set(lib[0].info) <= {
        "config_id",
        "family",
        "params",
        "zone_axis",
        "energy_per_atom",
        "energy_model",
        "mismatch",
        "energy",
    }
    assert lib[0].info["zone_axis"] == [0, 0, 1]
    text = (tmp_path / "c.extxyz").read_text().replace(back[0].info["config_id"], "0123456789abcdef", 1)
    (tmp_path / "edited.extxyz").write_text(text)
    with pytest.raises(ConfigError, match="does not match"):
        read_candidates(tmp_path / "edited.extxyz")


# -- command line ----------------------------------------------------------------------------------
def _compose(overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        return compose(config_name="search", overrides=overrides)


def test_cli_config_runs_a_multi_objective_ga_and_writes_library_input(tmp_path):
    from surrogate.search.cli import run_search

    small = "{kind: defect, material: {name: CdTe}, zone_axis: [1,1,0], thickness: 8.0, fov: [6.4,6.4], seed: 0, "
    cfg = _compose(
        [
            f"output_dir={tmp_path}",
            "progress=false",
            "search=ga",
            "search.generations=2",
            "search.population=4",
            "search.relax_steps=0",
            "search.mutations.antisite=0",
            "structure=" + small + "defects: [{kind: vacancy, species: Te, position: [0.75, 0.75]}]}",
            "target.from_structure=" + small + "defects: [{kind: vacancy, species: Te, position: [0.25, 0.25]}]}",
            "target.weight=0.05",
        ]
    )
    result = run_search(cfg)
    assert (tmp_path / "target.npy").is_file() and np.load(tmp_path / "target.npy").shape == (32, 32)
    lib = read_candidates(tmp_path / "for_library.extxyz")
    assert {a.info["config_id"] for a in lib} == {a.info["config_id"] for a in result.candidates}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_candidates"] == len(result.candidates) and summary["settings"]["multi_objective"]
    again = run_search(cfg)  # finished: resumes to the same result without new evaluations
    assert [a.info["config_id"] for a in again.candidates] == [a.info["config_id"] for a in result.candidates]


def test_cli_reports_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "surrogate.search",
            f"output_dir={tmp_path}",
            f"structure_file={tmp_path / 'missing.extxyz'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: structure_file not found")
    assert "Traceback" not in proc.stderr


def test_every_search_config_composes_and_its_calculator_builds(tmp_path):
    import hydra

    (tmp_path / "Si.tersoff").write_text(
        "Si Si Si 3.0 1.0 0.0 1.0039e5 16.217 -0.59825 0.78734 1.1e-6 1.7322 471.18 2.85 0.15 2.4799 1830.8\n"
    )
    for method in ("basin", "ga"):
        for calc, extra in (
            ("lj", []),
            ("emt", []),
            ("tersoff", [f"calculator.potential_file={tmp_path / 'Si.tersoff'}"]),
        ):
            cfg = _compose([f"search={method}", f"search/calculator={calc}", *extra])
            assert cfg.search.method == method
            assert hasattr(hydra.utils.instantiate(cfg.calculator), "get_potential_energy")
