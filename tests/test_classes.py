"""Class votes: the near neighbours decide the structure class, with a share that says how sure."""

import pytest


def test_the_nearest_configurations_decide_the_class_and_shares_sum_to_one(tiny_library):
    from surrogate.inference.classes import LEVELS, class_votes
    from surrogate.inference.rank import Candidate
    from surrogate.library import Library

    lib = Library(tiny_library)
    records = lib.structures()
    bulk = next(c for c, r in records.items() if r.family == "bulk")
    defects = [c for c, r in records.items() if r.family == "defect"]
    assert defects and all(records[c].labels.defect_count >= 1 for c in defects)
    near_bulk = [Candidate(bulk, 0.01, 0, 0)] + [Candidate(c, 0.30, 0, 0) for c in defects]
    votes = class_votes(lib, near_bulk, temperature=0.02)
    assert votes["family"][0]["class"] == "bulk" and votes["confidence"]["family"] > 0.99
    for level in LEVELS:
        assert sum(v["p"] for v in votes[level]) == pytest.approx(1.0, abs=1e-3)
    assert votes["material_zone"][0]["class"] == "Si [110]"
    # equally near: no class is sure, the share says so
    tied = [Candidate(bulk, 0.05, 0, 0)] + [Candidate(c, 0.05, 0, 0) for c in defects]
    even = class_votes(lib, tied, temperature=0.02)
    assert even["family"][0]["class"] == "defect" and even["confidence"]["family"] == pytest.approx(
        len(defects) / (len(defects) + 1), abs=1e-3
    )
    assert class_votes(lib, []) == {}
