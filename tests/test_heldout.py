"""The independent held-out set: reader, library label lookup and label scorer (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from surrogate.evaluation.heldout import (
    HeldoutError,
    confusion_matrix,
    level_match,
    normalize_labels,
    read_heldout,
    reduce_misorientation,
    score_labels,
)

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "heldout"


def _labels(family="bulk", zone=(1, 1, 0), material="CdTe", **kw):
    base = {
        "material": material,
        "zone_axis": list(zone),
        "family": family,
        "boundary": None,
        "sigma": None,
        "misorientation": None,
        "inclination": None,
        "defect_kind": None,
        "defect_count": 0,
    }
    base.update(kw)
    return base


def _write_tiff(path: Path, data: np.ndarray, pixel: float) -> None:
    from rsciio.tiff import file_writer

    axes = [
        {"name": n, "size": s, "scale": pixel / 10, "units": "nm", "navigate": False, "offset": 0.0}
        for n, s in zip("yx", data.shape)
    ]
    file_writer(
        str(path),
        {
            "data": data.astype(np.float32),
            "axes": axes,
            "metadata": {"General": {"title": "t"}, "Signal": {}},
            "original_metadata": {},
        },
    )


def _tiny_set(root: Path) -> Path:
    """Two queries: a bulk CdTe [110] slab and a Σ9 CdTe [110] boundary."""
    from ase import Atoms
    from ase.io import write

    rng = np.random.default_rng(0)
    recs = []
    for name, labels in (
        ("bulk", _labels()),
        ("s9", _labels("gb", boundary="sigma9", sigma=9, misorientation=38.94, inclination=0.0)),
    ):
        _write_tiff(root / f"{name}.tif", rng.random((32, 32)), 0.14)
        write(
            root / f"{name}.extxyz",
            Atoms("CdTe", positions=[[0, 0, 0], [1.6, 0, 1.0]], cell=[5, 5, 5], pbc=True),
            format="extxyz",
        )
        recs.append(
            {
                "name": name,
                "image": f"{name}.tif",
                "structure": f"{name}.extxyz",
                "labels": labels,
                "mode": "haadf",
                "pixel_size": 0.14,
                "rotation": 10.0,
                "dose": 1e4,
                "seed": 1,
            }
        )
    (root / "labels.json").write_text(json.dumps({"version": 1, "images": recs}))
    return root


def test_reader_reads_pixel_size_labels_and_truth(tmp_path):
    qs = read_heldout(_tiny_set(tmp_path))
    assert [q.name for q in qs] == ["bulk", "s9"]
    m = qs[0].read_image()
    assert m.data.shape == (32, 32) and m.sampling == pytest.approx(0.14, rel=1e-4)
    assert qs[1].labels["zone_axis"] == "110" and qs[1].labels["boundary"] == "Σ9"
    assert qs[1].labels["tilt_axis"] == "110" and qs[0].labels["tilt_axis"] is None
    assert qs[0].atoms().get_chemical_symbols() == ["Cd", "Te"]


def test_scorer_matches_hand_computed_top1_top5(tmp_path):
    qs = read_heldout(_tiny_set(tmp_path))
    truths = [q.labels for q in qs]
    bulk_100 = normalize_labels(_labels(zone=(1, 0, 0)))
    defect = normalize_labels(_labels("defect", defect_kind="vacancy", defect_count=3))
    bulk = normalize_labels(_labels())
    s9_off = normalize_labels(_labels("gb", boundary="Σ9", sigma=9, misorientation=41.5))  # 2.56° off: wrong
    s9_near = normalize_labels(_labels("gb", boundary="Σ9", sigma=9, misorientation=140.0))  # 180-140 = 40: within 2°
    twin = normalize_labels(_labels("twin", boundary="Σ3(111)", sigma=3, misorientation=70.53))
    ranked = [
        [defect, bulk_100, bulk],  # bulk query: family right at rank 2 (bulk [100]), material+zone at 1
        [s9_off, twin, bulk, bulk, bulk, s9_near],  # Σ9 query: family at rank 1, boundary only at rank 6
    ]
    s = score_labels(truths, ranked)
    lv = s["levels"]
    assert s["per_query"][0] == {"material_zone": 1, "family": 2}  # the defect slab is CdTe [110] too
    assert s["per_query"][1] == {"material_zone": 1, "family": 1, "boundary": 6}
    assert lv["family"] == {"n": 2, "top1": 0.5, "top5": 1.0}
    assert lv["boundary"] == {"n": 1, "top1": 0.0, "top5": 0.0}
    assert lv["defect_kind"] == {"n": 0, "top1": None, "top5": None}
    cm = confusion_matrix(truths, [r[0] for r in ranked], classes=["bulk", "defect", "twin", "gb"])
    assert cm["matrix"] == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


def test_boundary_level_uses_axis_symmetry_and_axis():
    # [100]: 4-fold, so 53.13° is Σ5 36.87°; about [110] it is not
    assert reduce_misorientation(53.13, "100") == pytest.approx(36.87)
    assert reduce_misorientation(109.47, "110") == pytest.approx(70.53)
    t100 = normalize_labels(_labels("gb", zone=(1, 0, 0), sigma=5, boundary="Σ5", misorientation=36.87))
    c100 = normalize_labels(_labels("gb", zone=(1, 0, 0), sigma=5, boundary="Σ5", misorientation=53.13))
    c110 = normalize_labels(_labels("gb", zone=(1, 1, 0), sigma=5, boundary="Σ5", misorientation=36.87))
    assert level_match(t100, c100, "boundary")
    assert not level_match(t100, c110, "boundary")
    assert not level_match(t100, normalize_labels(_labels(zone=(1, 0, 0))), "boundary")
    d = normalize_labels(_labels("defect", defect_kind="antisite"))
    assert level_match(d, d, "defect_kind") and not level_match(
        d, normalize_labels(_labels("defect", defect_kind="vacancy")), "defect_kind"
    )


def test_missing_and_corrupt_files_raise_one_line(tmp_path):
    with pytest.raises(HeldoutError, match="not found"):
        read_heldout(tmp_path / "nowhere")
    root = _tiny_set(tmp_path)
    (root / "s9.tif").unlink()
    with pytest.raises(HeldoutError, match=r"s9\.tif .*not found"):
        read_heldout(root)
    _tiny_set(root)
    (root / "bulk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(HeldoutError, match=r"bulk\.tif is unreadable"):
        read_heldout(root)
    _tiny_set(root)
    (root / "labels.json").write_text('{"images": [')
    with pytest.raises(HeldoutError, match="not valid JSON") as exc:
        read_heldout(root)
    assert "\n" not in str(exc.value)
    (root / "labels.json").write_text(json.dumps({"images": [{"name": "x"}]}))
    with pytest.raises(HeldoutError, match="lacks image, structure, labels, pixel_size"):
        read_heldout(root)


def test_library_labels_reads_structures_db(tmp_path):
    from ase.db import connect

    from surrogate.evaluation.heldout import library_labels
    from surrogate.structures import crystal, zone_axis_slab

    slab = zone_axis_slab(crystal("Si"), (1, 0, 0), fov=(6, 6), thickness=6, material="Si")
    with connect(tmp_path / "structures.db") as db:
        db.write(
            slab,
            key_value_pairs={"config_id": slab.info["config_id"], "family": "bulk"},
            data={"info": dict(slab.info)},
        )
    labels = library_labels(tmp_path)
    assert labels[slab.info["config_id"]]["material"] == "Si"
    assert labels[slab.info["config_id"]]["zone_axis"] == "100"
    assert labels[slab.info["config_id"]]["family"] == "bulk"
    with pytest.raises(HeldoutError, match="no structures.db"):
        library_labels(tmp_path / "empty")


@pytest.mark.skipif(not (SHIPPED / "labels.json").exists(), reason="held-out set not generated")
def test_shipped_set_has_30_structures_with_pixel_sizes_and_labels():
    qs = read_heldout(SHIPPED, check_files=False)
    assert len({q.name for q in qs}) == len(qs)
    structures = {q.record.get("structure") for q in qs}
    assert len(structures) >= 30
    for q in qs:
        assert 0.12 <= q.pixel_size <= 0.16
        assert q.record["thickness"] >= 99.5  # >= 100 Å drawn, rounded to whole periods of the zone axis
        assert q.labels["family"] in ("bulk", "defect", "twin", "gb")
        if q.labels["family"] in ("twin", "gb"):
            assert q.labels["misorientation"] is not None
        if q.labels["family"] == "defect":
            assert q.labels["defect_kind"] and q.labels["defect_count"] > 0
    fams = {q.labels["family"] for q in qs}
    assert fams == {"bulk", "defect", "twin", "gb"}
    assert {q.labels["zone_axis"] for q in qs} >= {"110", "100"}
    # the TIFF calibration carries the pixel size
    assert qs[0].read_image().sampling == pytest.approx(qs[0].pixel_size, rel=1e-3)
    # every field is wider than the demo library's 25.6 Å window (infer refuses a smaller one)
    for q in qs[:4]:
        image = q.read_image()
        assert min(image.data.shape) * image.sampling >= 30.0
    total = sum(f.stat().st_size for f in SHIPPED.iterdir() if f.is_file())
    assert total < 8e6


def test_out_of_library_auroc_per_level_on_a_trivial_case():
    from surrogate.evaluation.heldout import auroc, in_library, out_of_library_auroc

    n = normalize_labels
    library = [
        n(_labels("bulk")),
        n(_labels("gb", boundary="Σ9", sigma=9, misorientation=38.94)),
        n(_labels("defect", defect_kind="vacancy", defect_count=1)),
        n(_labels("gb", material="Si", boundary="Σ11", sigma=11, misorientation=50.48)),
    ]
    s9 = n(_labels("gb", boundary="Σ9", sigma=9, misorientation=39.5))  # within 2°
    s11 = n(_labels("gb", boundary="Σ11", sigma=11, misorientation=50.48))  # only in Si: out for CdTe
    ge = n(_labels("bulk", material="Ge"))
    sub = n(_labels("defect", defect_kind="substitution", defect_count=2))
    assert in_library(s9, library, "boundary") and not in_library(s11, library, "boundary")
    assert in_library(s11, library, "family") and not in_library(ge, library, "family")
    assert in_library(sub, library, "family") and not in_library(sub, library, "defect_kind")
    assert auroc([3.0, 2.0], [1.0, 0.5]) == 1.0 and auroc([1.0], [1.0]) == 0.5 and auroc([], [1.0]) is None
    truths = [n(_labels("bulk")), s9, s11, ge, sub]
    res = out_of_library_auroc(truths, [0.1, 0.2, 0.9, 1.5, None], library)
    assert res["material_zone"] == {"auroc": 1.0, "n_out": 1, "n_in": 3, "out": [3]}
    assert res["boundary"]["auroc"] == 1.0 and res["boundary"]["out"] == [2]
    assert res["defect_kind"]["auroc"] is None  # the only defect query has no score
    # a score that ranks the novel class lowest has AUROC 0
    assert out_of_library_auroc(truths, [0.9, 0.9, 0.2, 0.1, 0.5], library)["material_zone"]["auroc"] == 0.0


def _inversion():
    import importlib.util

    spec = importlib.util.spec_from_file_location("inversion_bench", SHIPPED.parents[1] / "benchmarks" / "inversion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_inversion_subset_is_family_balanced_and_truth_columns_tile_the_cell(tmp_path):
    from types import SimpleNamespace

    inv = _inversion()
    fams = ["bulk"] * 5 + ["defect"] * 3 + ["twin"] + ["gb"] * 4
    qs = [SimpleNamespace(name=f"q{i}", labels={"family": f}) for i, f in enumerate(fams)]
    part = inv.balanced_subset(qs, 8)
    # round-robin over the families (the one twin once), returned in set order
    assert [q.name for q in part] == ["q0", "q1", "q2", "q5", "q6", "q8", "q9", "q10"]
    # truth columns: the 5 Å cell's two columns, tiled, inside a 12 Å square about the crop centre
    q = read_heldout(_tiny_set(tmp_path))[0]
    q.record["crop_centre"] = [2.5, 2.5]
    cols = inv.truth_columns(q, side=12.0)
    assert len(cols) > 2 and (abs(cols.xy - 2.5) <= 6.0 + 1e-9).all()
    assert sorted(set(cols.species)) == ["Cd", "Te"]
    # Cd at x, y in {0, 5} (-5 and 10 fall outside [-3.5, 8.5]); Te at x in {-3.4, 1.6, 6.6}, y in {0, 5}
    assert sum(s == "Cd" for s in cols.species) == 4 and sum(s == "Te" for s in cols.species) == 6
