"""ingrained config.json -> bicrystal recipe (surrogate.structures.ingrained)."""

import json

import numpy as np
import pytest
from conftest import SHARED

from surrogate.errors import ConfigError
from surrogate.structures.ingrained import ingrained_bicrystal, ingrained_recipe, read_ingrained_config

REAL_CONFIG = SHARED / "data" / "real" / "cdte_110_twin" / "config.json"


def _twin_config(**slab2):
    s1 = {
        "chemical_formula": "CdTe",
        "space_group": "F-43m",
        "uvw_project": [1, 1, 0],
        "uvw_upward": [0, 0, 1],
        "tilt_angle": 54.73538,
        "max_dimension": 34.4,
        "flip_species": False,
    }
    s2 = dict(s1, tilt_angle=125.26462, flip_species=True, **slab2)
    return {
        "slab_1": s1,
        "slab_2": s2,
        "constraints": {"min_width": 20, "max_width": 60, "min_depth": 8, "max_depth": 12},
    }


def test_recipe_maps_fields():
    r = ingrained_recipe(_twin_config())
    assert r["kind"] == "gb" and r["material"] == {"name": "CdTe"}
    assert r["grain1"] == {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 54.73538, "flip_species": False}
    assert r["grain2"]["tilt"] == 125.26462 and r["grain2"]["flip_species"] is True
    assert r["fov"] == [20.0, 20.0] and r["thickness"] == 10.0


@pytest.mark.skipif(not REAL_CONFIG.is_file(), reason="../shared/data/real not present")
def test_real_config_builds_the_sigma3_twin():
    recipe = read_ingrained_config(REAL_CONFIG)
    assert recipe["ingrained"]["structure_file"] == "bicrystal.POSCAR.vasp"
    atoms = ingrained_bicrystal(REAL_CONFIG, fov=(20.0, 20.0), thickness=9.0)
    p = atoms.info["params"]
    assert atoms.info["family"] == "gb"
    assert p["misorientation"] == pytest.approx(70.5288, abs=1e-3)  # Σ3: 2 x arctan(1/sqrt(2)) about [110]
    assert p["periodic_y"]
    # the species are swapped in grain 2: its brighter (Te) columns sit where grain 1 has Cd
    tags = atoms.get_tags()
    sym = np.array(atoms.get_chemical_symbols())
    assert set(sym[tags == 1]) == set(sym[tags == 2]) == {"Cd", "Te"}
    # a twin: grain 2 is the mirror image of grain 1 across the boundary plane (x = boundary_x),
    # up to a translation along the boundary: its projected columns match the mirrored grain 1's
    from surrogate.inference.columns import match_columns, projected_columns

    bx = p["boundary_x"]
    g1 = projected_columns(atoms[tags == 1])
    g2 = projected_columns(atoms[tags == 2])
    mirrored = g1.xy * np.array([-1.0, 1.0]) + np.array([2 * bx, 0.0])
    from surrogate.inference.columns import Columns

    g1m = Columns(mirrored, g1.intensity, g1.width, g1.species)
    inner = (g2.xy[:, 0] > bx + 1.0) & (g2.xy[:, 0] < 2 * bx - 1.0)
    m = match_columns(
        g2.subset(inner & (g2.xy[:, 1] > 2) & (g2.xy[:, 1] < atoms.cell[1, 1] - 2)),
        g1m,
        tolerance=0.2,
        mirror=False,
        max_rotation=0.5,
    )
    assert m.fraction > 0.95


def _write(tmp_path, cfg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.parametrize(
    "change, message",
    [
        ({"chemical_formula": "Unobtainium"}, "not a known material"),
        ({"uvw_project": [0, 0, 0]}, "zero vector"),
        ({"uvw_upward": [2, 2, 0]}, "parallel"),
    ],
)
def test_bad_configs_give_one_clear_error(tmp_path, change, message):
    cfg = _twin_config()
    cfg["slab_2"].update(change)
    with pytest.raises(ConfigError, match=message) as info:
        read_ingrained_config(_write(tmp_path, cfg))
    assert "\n" not in str(info.value)


def test_missing_keys_and_files(tmp_path):
    cfg = _twin_config()
    del cfg["slab_1"]["uvw_upward"]
    with pytest.raises(ConfigError, match="slab_1.uvw_upward is missing"):
        read_ingrained_config(_write(tmp_path, cfg))
    with pytest.raises(ConfigError, match="missing 'slab_2'"):
        read_ingrained_config(_write(tmp_path, {"slab_1": _twin_config()["slab_1"]}))
    with pytest.raises(ConfigError, match="not found"):
        read_ingrained_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{slab_1")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_ingrained_config(tmp_path / "bad.json")
