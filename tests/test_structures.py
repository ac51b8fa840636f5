import numpy as np
import pytest
from ase import Atoms

from surrogate.errors import StructureError
from surrogate.structures import (
    add_defects,
    bicrystal,
    columns,
    config_id,
    crystal,
    orient,
    rattle,
    shortest_distance,
    zone_axis_slab,
)


@pytest.mark.parametrize(
    "zone_axis, periods",
    [
        ((1, 1, 0), (1 / np.sqrt(2), 1, 1 / np.sqrt(2))),
        ((1, 0, 0), (1, 1, 1)),
        ((1, 1, 1), (1 / np.sqrt(2), np.sqrt(6) / 2, np.sqrt(3))),
        ((1, 1, 2), (1 / np.sqrt(2), np.sqrt(3), np.sqrt(6) / 2)),
    ],
)
def test_zone_axis_cells_have_the_lattice_periods(cdte, zone_axis, periods):
    cell = orient(cdte, zone_axis)
    a = 6.481
    assert np.allclose(np.diag(cell.cell), np.array(periods) * a, atol=1e-3)
    assert np.allclose(cell.cell.array, np.diag(np.diag(cell.cell.array)))
    # bulk density and stoichiometry are preserved
    assert len(cell) / cell.get_volume() == pytest.approx(8 / a**3, rel=1e-6)
    assert cell.get_chemical_symbols().count("Cd") == cell.get_chemical_symbols().count("Te")
    # the beam axis is a projection direction: atoms form columns along z
    assert shortest_distance(cell) == pytest.approx(a * np.sqrt(3) / 4, rel=1e-4)


def test_slab_covers_field_of_view_and_thickness(cdte):
    slab = zone_axis_slab(cdte, (1, 1, 0), fov=(20, 30), thickness=50, material="CdTe")
    lx, ly, lz = np.diag(slab.cell)
    assert lx >= 20 and ly >= 30 and abs(lz - 50) <= 4.583 / 2 + 1e-6
    assert slab.info["family"] == "bulk" and slab.info["zone_axis"] == [1, 1, 0]
    assert slab.info["params"]["material"] == "CdTe"
    # every column along [110] holds atoms of one species
    symbols = np.array(slab.get_chemical_symbols())
    assert all(len(set(symbols[c])) == 1 for c in columns(slab))


@pytest.mark.parametrize("bad", [(0, 0, 0), (1, 2)])
def test_impossible_zone_axis_is_a_clear_error(cdte, bad):
    with pytest.raises(StructureError, match="impossible zone axis"):
        orient(cdte, bad)


def test_non_perpendicular_upward_is_rejected(cdte):
    with pytest.raises(StructureError, match="not perpendicular"):
        orient(cdte, (1, 1, 0), upward=(1, 0, 0))


@pytest.mark.parametrize("name", ["Xx", "CdQ", "cdte"])
def test_unknown_formula_is_a_clear_error(name):
    with pytest.raises(StructureError, match="unknown"):
        crystal(name, "zincblende", 6.0)


def test_config_id_is_a_content_hash():
    a = Atoms("SiGe", positions=[[0, 0, 0], [1.2, 1.2, 1.2]], cell=[5, 5, 5], pbc=True)
    b = Atoms("GeSi", positions=[[1.2, 1.2, 1.2], [5.0, 0, 0]], cell=[5, 5, 5], pbc=True)  # permuted, wrapped image
    assert config_id(a) == config_id(b)
    c = a.copy()
    c.positions[1, 0] += 0.01
    assert config_id(c) != config_id(a)


@pytest.fixture
def slab(cdte):
    return zone_axis_slab(cdte, (1, 1, 0), fov=(12, 12), thickness=20, material="CdTe")


def test_vacancy_antisite_substitution_interstitial_counts(slab):
    n = len(slab)
    nat = {s: slab.get_chemical_symbols().count(s) for s in ("Cd", "Te")}
    out = add_defects(slab, [{"kind": "vacancy", "species": "Cd"}, {"kind": "vacancy", "species": "Te"}], seed=1)
    assert len(out) == n - 2 and out.info["family"] == "defect"
    out = add_defects(slab, [{"kind": "antisite", "species": "Cd"}])
    assert out.get_chemical_symbols().count("Te") == nat["Te"] + 1
    out = add_defects(
        slab,
        [
            {"kind": "substitution", "species": "Te", "element": "Se"},
            {"kind": "substitution", "species": "Te", "element": "Cl"},
        ],
    )
    assert out.get_chemical_symbols().count("Se") == 1 and out.get_chemical_symbols().count("Cl") == 1
    assert out.get_chemical_symbols().count("Te") == nat["Te"] - 2
    out = add_defects(slab, [{"kind": "interstitial", "element": "Cd"}])
    assert len(out) == n + 1
    assert shortest_distance(out) > 2.0  # placed in an open site, not on top of an atom
    assert out.info["config_id"] != slab.info["config_id"]


def test_defect_depth_selects_the_atom_along_the_column(slab):
    zs = []
    for depth in (0.0, 0.5, 1.0):
        spec = {"kind": "substitution", "species": "Te", "element": "Se", "depth": depth, "position": (0.5, 0.5)}
        out = add_defects(slab, [spec])
        z = out.positions[out.get_chemical_symbols().index("Se"), 2]
        assert abs(z - depth * slab.cell[2, 2]) <= 4.583 + 1e-6  # within one period of the column
        zs.append(z)
    assert zs[0] < zs[1] < zs[2]


def test_bad_defect_requests_are_errors(slab):
    with pytest.raises(StructureError, match="unknown defect kind"):
        add_defects(slab, [{"kind": "hole"}])
    with pytest.raises(StructureError, match="not in the host"):
        add_defects(slab, [{"kind": "vacancy", "species": "Si"}])
    with pytest.raises(StructureError, match="depth"):
        add_defects(slab, [{"kind": "vacancy", "depth": 2}])
    with pytest.raises(StructureError, match="unknown element"):
        add_defects(slab, [{"kind": "substitution", "element": "Qq"}])


def _grain_misfit(atoms, grain, unit_cell, tilt, origin):
    """RMS distance of a grain's atoms from the lattice of the grain rotated by ``tilt``, up to a
    rigid half-period translation of the grain."""
    pos = atoms.positions[atoms.get_tags() == grain] - origin
    t = np.radians(-tilt)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    xy = pos[:, :2] @ rot.T
    ref = unit_cell.positions[:, :2]
    per = np.diag(unit_cell.cell)[:2]
    best = np.inf
    for shift in ((0, 0), (0.5, 0), (0, 0.5), (0.5, 0.5)):
        d = xy[:, None, :] - ref[None, :, :] - np.array(shift) * per
        d -= np.round(d / per) * per
        best = min(best, float(np.sqrt((np.linalg.norm(d, axis=-1).min(axis=1) ** 2).mean())))
    return best


@pytest.mark.parametrize(
    "tilts, flip",
    [((54.73561, 125.26439), True), ((-19.47, 19.47), False), ((-2.0, 2.0), False), ((0.0, 70.5288), False)],
)  # twin, sigma9, low angle, asymmetric
def test_bicrystal_has_the_requested_misorientation(cdte, tilts, flip):
    gb = bicrystal(
        cdte,
        {"zone_axis": (1, 1, 0), "tilt": tilts[0]},
        {"zone_axis": (1, 1, 0), "tilt": tilts[1], "flip_species": flip},
        fov=(25.6, 25.6),
        thickness=10,
    )
    p = gb.info["params"]
    assert gb.info["family"] == "gb"
    assert p["misorientation"] == pytest.approx(tilts[1] - tilts[0], abs=1.5)
    unit = orient(cdte, (1, 1, 0))
    origin = np.array([p["boundary_x"], gb.cell[1, 1] / 2, 0])
    for grain, tilt in ((1, p["grain1"]["tilt_actual"]), (2, p["grain2"]["tilt_actual"])):
        assert _grain_misfit(gb, grain, unit, tilt, origin) < 0.15  # grain lies on its rotated lattice
        assert _grain_misfit(gb, grain, unit, tilt + 10.0, origin) > 0.5  # and not on a wrong one
    assert shortest_distance(gb) >= p["collision_distance"] - 1e-9
    assert np.allclose(gb.cell.array, np.diag(np.diag(gb.cell.array)))


def test_twin_is_periodic_along_y(cdte):
    gb = bicrystal(cdte, {"tilt": 54.73561}, {"tilt": 125.26439, "flip_species": True}, fov=(20, 20), thickness=5)
    assert gb.info["params"]["periodic_y"]
    # the Sigma3 period along y in [110] is a*sqrt(3) = 11.225 Å
    assert gb.cell[1, 1] / (6.481 * np.sqrt(3)) == pytest.approx(round(gb.cell[1, 1] / (6.481 * np.sqrt(3))), abs=0.02)


def test_collision_removal_respects_the_threshold(cdte):
    gb = bicrystal(cdte, {"tilt": -2}, {"tilt": 2}, fov=(20, 20), thickness=5, collision_distance=2.5)
    assert shortest_distance(gb) >= 2.5
    assert gb.info["params"]["removed"] > 0


def test_rattle_is_seeded_and_tagged(slab):
    a, b = rattle(slab, 0.1, seed=3), rattle(slab, 0.1, seed=3)
    assert np.allclose(a.positions, b.positions)
    d = a.positions - slab.positions
    assert d.std() == pytest.approx(0.1, rel=0.15)
    assert a.info["family"] == "rattled" and a.info["params"]["parent"] == slab.info["config_id"]


def test_overlapping_atoms_are_a_clear_error():
    from surrogate.structures import tag

    atoms = Atoms("Si2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(StructureError, match="overlapping atoms"):
        tag(atoms, "bulk", {})


def test_any_cif_builds_zone_axis_slabs(tmp_path, si):
    from ase.io import write

    path = tmp_path / "si.cif"
    write(path, si)
    unit = crystal(cif=str(path))
    assert np.allclose(
        np.diag(orient(unit, (1, 1, 0)).cell), np.array([1 / np.sqrt(2), 1, 1 / np.sqrt(2)]) * 5.431, atol=1e-3
    )
    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a oops\n")
    with pytest.raises(StructureError, match="cannot read CIF"):
        crystal(cif=str(tmp_path / "bad.cif"))
    with pytest.raises(StructureError, match="CIF file not found"):
        crystal(cif=str(tmp_path / "missing.cif"))
