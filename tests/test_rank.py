"""Ranking with energies: boundary energy per area compares boundaries of different kinds."""

import pytest


def _cand(cid, distance, family="gb", kind="", energy=None, gb=None, formula="CdTe"):
    from surrogate.inference.rank import Candidate

    return Candidate(cid, distance, 0, 0, family=family, formula=formula, kind=kind or cid, energy=energy, gb_energy=gb)


def test_a_low_energy_twin_beats_a_slightly_nearer_high_energy_tilt_boundary():
    from surrogate.inference.rank import rank_candidates

    # per-atom energies of two kinds never compare (each is lowest of its own kind) ...
    twin, tilt = _cand("twin", 0.10, energy=-2.0, gb=15.0), _cand("tilt", 0.08, energy=-1.9, gb=650.0)
    ranked = rank_candidates([twin, tilt], energy_weight=1.0, boundary_weight=0.1)
    # ... the boundary energy does: 0.10 + 0 < 0.08 + 0.1 * 0.635
    assert [c.config_id for c in ranked] == ["twin", "tilt"]
    assert ranked[1].gb_energy_above == pytest.approx(635.0) and ranked[1].score == pytest.approx(0.08 + 0.0635)
    assert twin.pareto and tilt.pareto  # nearer vs lower: both on the front
    # without a boundary weight the image decides
    assert rank_candidates([twin, tilt], boundary_weight=0.0)[0].config_id == "tilt"


def test_candidates_without_a_boundary_energy_keep_the_per_atom_rule():
    from surrogate.inference.rank import rank_candidates

    bulk = _cand("bulk", 0.05, family="bulk", energy=-3.0)
    d1 = _cand("d1", 0.04, family="defect", kind="defect", energy=-2.95)
    d2 = _cand("d2", 0.045, family="defect", kind="defect", energy=-3.0)
    ranked = rank_candidates([bulk, d1, d2], energy_weight=1.0, boundary_weight=0.1)
    assert [c.config_id for c in ranked] == ["d2", "bulk", "d1"]  # d1: 0.04 + 0.05 eV/atom above d2
    assert all(c.gb_energy_above is None for c in ranked)
