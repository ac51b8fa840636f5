"""CSL enumeration, the ideal coherent twin, class labels and defect densities."""

import numpy as np
import pytest

from surrogate.errors import StructureError
from surrogate.structures import crystal
from surrogate.structures.crystals import shortest_distance
from surrogate.structures.csl import (
    coherent_twin,
    coordination,
    csl_boundaries,
    csl_misorientations,
    rotation_matrix,
    sigma_of_angle,
    sigma_of_rotation,
)
from surrogate.structures.labels import StructureLabels, labels_of
from surrogate.structures.recipes import build_structure, plan_structures


@pytest.mark.parametrize(
    "axis, sigma, angle",
    [
        ("110", 3, 70.5288),
        ("110", 9, 38.9424),
        ("110", 11, 50.4788),
        ("110", 19, 26.5254),
        ("100", 5, 36.8699),
        ("100", 13, 22.6199),
    ],
)
def test_enumerated_sigma_has_its_misorientation_and_a_rational_rotation(axis, sigma, angle):
    found = dict((round(t, 3), s) for s, t in csl_misorientations(axis, 99))
    assert found[round(angle, 3)] == sigma
    R = rotation_matrix({"110": (1, 1, 0), "100": (1, 0, 0)}[axis], angle)
    assert np.abs(sigma * R - np.round(sigma * R)).max() < 1e-4  # Σ·R is an integer matrix ...
    assert (
        sigma_of_rotation({"110": (1, 1, 0), "100": (1, 0, 0)}[axis], angle + 1.0) is None
    )  # ... and only at the CSL angle
    assert sigma_of_angle(axis, 180.0 - angle if axis == "110" else 90.0 - angle) == sigma  # symmetry-equivalent angle


def test_every_enumerated_sigma_is_odd_within_the_bound_and_matches_its_rotation():
    for axis, uvw in (("110", (1, 1, 0)), ("100", (1, 0, 0))):
        pairs = csl_misorientations(axis, 99)
        assert len(pairs) > 10 and all(s % 2 == 1 and 3 <= s <= 99 for s, _ in pairs)
        for s, t in pairs:
            assert sigma_of_rotation(uvw, t) == s


@pytest.mark.parametrize("material", ["CdTe", "Si"])
def test_csl_bicrystal_has_the_misorientation_and_the_csl_period(material):
    unit = crystal(material)
    bs = {b.labels(material).boundary: b for b in csl_boundaries(unit, "110", 11, 30.0)}
    assert {"Σ3(111)", "Σ3(112)", "Σ9(221)", "Σ9(114)", "Σ11(113)", "Σ11(332)"} <= set(bs)
    # CSL periods along the boundary of the symmetric [110] tilts: a·sqrt(3/2), a·sqrt(3), a·sqrt(9/2) ...
    a = unit.cell[0, 0]
    assert bs["Σ3(111)"].period == pytest.approx(a * np.sqrt(1.5))
    assert bs["Σ3(112)"].period == pytest.approx(a * np.sqrt(3))
    assert bs["Σ9(221)"].period == pytest.approx(a * np.sqrt(4.5))
    recipes = plan_structures(
        {
            "materials": [material],
            "zone_axes": [[1, 1, 0]],
            "thicknesses": [4.0],
            "fov": [12.8, 12.8],
            "bulk": False,
            "boundaries": [{"generate": "csl", "axes": [[1, 1, 0], [1, 0, 0]], "max_sigma": 11, "max_period": 20.0}],
        }
    )
    built = 0
    for r in recipes:
        if r["kind"] != "gb":
            continue
        gb = build_structure(r)
        p, lab = gb.info["params"], labels_of(gb)
        assert p["periodic_y"] and abs(abs(p["misorientation"]) - lab.misorientation) < 1e-3
        k = gb.cell[1, 1] / p["csl_period"]
        assert k == pytest.approx(round(k), abs=1e-4)  # the cell is a whole number of CSL periods
        assert shortest_distance(gb) >= p["collision_distance"] - 1e-9
        built += 1
    assert built >= 5
    sig5 = [r for r in recipes if r.get("csl", {}).get("sigma") == 5]
    assert sig5 and all(abs(r["csl"]["misorientation_csl"] - 36.8699) < 1e-3 for r in sig5)


def test_asymmetric_boundaries_are_enumerated_with_their_inclination():
    unit = crystal("Si")
    sym = csl_boundaries(unit, "110", 9, 30.0, "symmetric")
    every = csl_boundaries(unit, "110", 9, 30.0, "all")
    asym = [b for b in every if not b.symmetric]
    assert len(every) > len(sym) and asym
    assert all(b.inclination == 0.0 for b in sym)
    assert all(0 < abs(b.inclination) <= 90 and "/" in b.labels("Si").boundary for b in asym)


@pytest.mark.parametrize("material", ["CdTe", "Si"])
def test_coherent_twin_has_no_under_coordinated_atom(material):
    unit = crystal(material)
    twin = coherent_twin(unit, fov=(16.0, 16.0), thickness=5.0, material=material)
    bond = shortest_distance(unit)
    assert (coordination(twin, bond) == 4).all()
    assert (coordination(twin, bond, tol=0.02) == 4).all()  # at the bulk bond length
    if material == "CdTe":  # every bond joins Cd and Te
        from ase.neighborlist import neighbor_list

        i, j = neighbor_list("ij", twin, 1.15 * bond)
        assert (twin.numbers[i] != twin.numbers[j]).all()
    # it is a twin, not bulk: the eclipsed third neighbours at 1.667 bond lengths exist only at the boundary
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", twin, 1.8 * bond) / bond
    assert ((d > 1.66) & (d < 1.68)).any()
    assert labels_of(twin) == StructureLabels(material, "110", "twin", "Σ3(111)", 3, 70.5288, 0.0, "110")
    shifted = coherent_twin(unit, fov=(16.0, 16.0), thickness=5.0, translation=(0.0, 1.0, 0.0))
    assert not (coordination(shifted, bond, tol=0.02) == 4).all()  # a rigid translation strains the boundary bonds


def test_labels_round_trip_and_are_inferred_for_old_configurations(cdte):
    old = build_structure(
        {
            "kind": "gb",
            "name": "tilt_sigma9",
            "material": {"name": "CdTe"},
            "thickness": 5.0,
            "fov": [12.8, 12.8],
            "grain1": {"tilt": -19.47},
            "grain2": {"tilt": 19.47},
        }
    )
    info = {k: v for k, v in old.info.items() if k != "labels"}  # written before labels existed
    lab = labels_of(info)
    assert (lab.family, lab.boundary, lab.sigma) == ("gb", "Σ9", 9) and lab.misorientation == pytest.approx(
        38.94, abs=0.01
    )
    assert StructureLabels.from_dict(lab.to_dict()) == lab
    low = labels_of({"family": "gb", "zone_axis": [1, 1, 0], "params": {"material": "Si", "misorientation": 4.0}})
    assert (low.boundary, low.sigma) == ("low-angle", None)
    bulk = labels_of({"family": "bulk", "zone_axis": [1, 0, 0], "params": {"material": "Si"}})
    assert (bulk.family, bulk.zone_axis, bulk.boundary, bulk.defect_count) == ("bulk", "100", None, 0)
    cols = lab.db_columns()
    assert cols["sigma"] == 9 and cols["class_family"] == "gb" and cols["zone"] == "<110>" and "defect_kind" not in cols


def test_defect_densities_are_recorded_in_the_labels(cdte):
    base = {
        "material": {"name": "CdTe", "substituents": ["Se"]},
        "zone_axis": [1, 1, 0],
        "thickness": 20.0,
        "fov": [12.8, 12.8],
    }
    slab = build_structure({"kind": "bulk", **base})
    ncol = 4  # a [110] CdTe column of 18.3 Å holds 4 atoms
    column = build_structure(
        {
            "kind": "defect",
            **base,
            "seed": 1,
            "defects": [{"kind": "vacancy", "species": "Te", "fraction": 0.5, "depth": 0.0}],
        }
    )
    assert len(slab) - len(column) == ncol // 2
    assert labels_of(column).defect_kind == "vacancy" and labels_of(column).defect_count == 2
    cluster = build_structure(
        {
            "kind": "defect",
            **base,
            "seed": 2,
            "defects": [{"kind": "substitution", "element": "Se", "position": [0.5, 0.5]}] * 4,
        }
    )
    se = cluster.positions[np.array(cluster.get_chemical_symbols()) == "Se"]
    assert len(se) == 4 and np.ptp(se[:, 0]) < 6.0 and np.ptp(se[:, 1]) < 6.0  # four neighbouring columns
    twin = {"kind": "twin", "material": {"name": "CdTe"}, "thickness": 20.0, "fov": [16.0, 16.0]}
    seg = build_structure(
        {
            "kind": "defect",
            "parent": twin,
            "seed": 0,
            "defects": [
                {"kind": "substitution", "element": "Se", "species": "Te", "profile": {"peak": 1.0, "decay": 2.0}}
            ],
        }
    )
    lab = labels_of(seg)
    assert (lab.family, lab.boundary, lab.defect_kind) == ("defect", "Σ3(111)", "substitution") and lab.defect_count > 4
    x = seg.positions[np.array(seg.get_chemical_symbols()) == "Se", 0]
    xb = seg.info["params"]["boundary_x"]
    d = np.minimum(np.abs(x - xb), seg.cell[0, 0] - np.abs(x - xb))
    assert np.median(d) < 3.0  # segregated to the boundaries
    mixed = build_structure(
        {"kind": "defect", **base, "seed": 3, "defects": [{"kind": "vacancy"}, {"kind": "antisite"}]}
    )
    assert labels_of(mixed).defect_kind == "mixed" and labels_of(mixed).defect_count == 2
    with pytest.raises(StructureError, match="fraction"):
        build_structure({"kind": "defect", **base, "seed": 1, "defects": [{"kind": "vacancy", "fraction": 1.5}]})


def test_generators_plan_boundaries_defects_and_twins():
    cfg = {
        "materials": [{"name": "CdTe", "substituents": ["Se", "Cl"]}],
        "zone_axes": [[1, 1, 0]],
        "thicknesses": [10.0],
        "fov": [12.8, 12.8],
        "bulk": True,
        "defects": {
            "per_slab": 1,
            "kinds": ["vacancy", "substitution"],
            "clusters": {"per_slab": 1},
            "columns": {"per_slab": 1},
            "segregation": {"per_slab": 1},
            "per_boundary": 1,
        },
        "boundaries": [
            {"generate": "csl", "axes": [[1, 1, 0]], "max_sigma": 9, "max_period": 20.0, "polarities": [True, False]},
            {"generate": "low_angle", "angles": {"start": 1, "stop": 4, "step": 1.5}},
            {"generate": "twin", "translations": [[0, 0, 0], [0, 0, 2.29]]},
        ],
    }
    recipes = plan_structures(cfg)
    assert recipes == plan_structures(cfg)  # deterministic
    kinds = [r["kind"] for r in recipes]
    # the CSL's Σ3(111) is the ideal twin, proposed once though the twin generator asks for it too
    assert kinds.count("bulk") == 1 and kinds.count("twin") == 2
    low = [r for r in recipes if r["kind"] == "gb" and r["csl"]["sigma"] is None]
    assert [r["csl"]["misorientation_csl"] for r in low] == [1.0, 2.5, 4.0]
    on_boundaries = [r for r in recipes if r["kind"] == "defect" and "parent" in r]
    # one variant per density (single, cluster, column, segregation) of every boundary
    assert len(on_boundaries) == 4 * len([r for r in recipes if r["kind"] in ("gb", "twin")])
    with pytest.raises(Exception, match="unknown generator"):
        plan_structures({**cfg, "boundaries": [{"generate": "nope"}]})


def test_library_rows_carry_the_labels_as_columns(tiny_library):
    from ase.db import connect

    with connect(tiny_library / "structures.db") as db:
        rows = list(db.select())
    by_family = {r.class_family: r for r in rows}
    assert set(by_family) == {"bulk", "defect"}
    assert by_family["defect"].defect_count >= 1 and by_family["defect"].defect_kind in (
        "vacancy",
        "interstitial",
        "mixed",
    )
    assert (
        by_family["bulk"].zone == "<110>" and by_family["bulk"].defect_count == 0 and "sigma" not in by_family["bulk"]
    )
    for r in rows:
        assert labels_of(r.data["info"]).db_columns().items() <= {k: r[k] for k in r.key_value_pairs}.items()
