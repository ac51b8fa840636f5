"""Boundary energy per area, point-defect formation energies and candidate relaxation
(surrogate.potential.interfaces), with the shipped CdTe and Si potentials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from surrogate.errors import ConfigError
from surrogate.potential.interfaces import (
    EV_PER_A2_IN_MJ_PER_M2,
    boundary_area,
    boundary_energy,
    boundary_energy_details,
    bulk_reference,
    chemical_potentials,
    formation_energy,
    formation_energy_details,
    relax_candidate,
)
from surrogate.structures import add_defects, bicrystal, crystal, zone_axis_slab

ROOT = Path(__file__).resolve().parents[1]
AX_110 = 6.481 / np.sqrt(2)  # CdTe [110] cell period along x (the [1-10] direction) [Å]
TWIN = (
    {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 54.73561},
    {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 125.26439, "flip_species": True},
)
SIGMA9 = (
    {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": -19.47},
    {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 19.47},
)


@pytest.fixture(scope="module")
def cdte_calc():
    from surrogate.potential.calculator import load_calculator

    return load_calculator(ROOT / "checkpoints" / "potential_cdte.pt", dtype="float64")


@pytest.fixture(scope="module")
def si_calc():
    from surrogate.potential.calculator import load_calculator

    return load_calculator(ROOT / "checkpoints" / "potential_si.pt", dtype="float64")


def test_two_identical_grains_have_zero_boundary_energy(cdte_calc):
    # width 2 * (fov/2 + 4 Å margin) = 6 periods: the cell-edge seam is bulk too
    g = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 0.0}
    same = bicrystal(crystal("CdTe"), g, g, fov=(6 * AX_110 - 8, 12.0), thickness=6.0, material="CdTe")
    d = boundary_energy_details(same, cdte_calc)
    assert d.excess_atoms == {}
    assert abs(d.gamma) < 1e-3  # mJ/m^2 (float64: round-off only)
    assert all(abs(v) < 1e-3 for v in d.gamma_limits.values())
    # a real boundary is not free, and it depends on the cell only through its area
    twin = bicrystal(crystal("CdTe"), *TWIN, fov=(20.0, 12.0), thickness=6.0, material="CdTe")
    assert boundary_energy(twin, cdte_calc) > 50.0


def test_energy_per_area_is_unchanged_by_doubling_along_the_beam(cdte_calc):
    gb = bicrystal(crystal("CdTe"), *SIGMA9, fov=(20.0, 12.0), thickness=6.0, material="CdTe")
    doubled = gb.repeat((1, 1, 2))
    assert boundary_area(doubled) == pytest.approx(2 * boundary_area(gb))
    one, two = boundary_energy_details(gb, cdte_calc), boundary_energy_details(doubled, cdte_calc)
    assert two.gamma == pytest.approx(one.gamma, rel=1e-9)
    assert two.gamma_limits == pytest.approx(one.gamma_limits, rel=1e-9)
    # the area is the cell's y-z face, two boundaries per cell
    e = one.energy - sum(n * one.mu[el] for el, n in zip(*np.unique(gb.get_chemical_symbols(), return_counts=True)))
    ly, lz = gb.cell.lengths()[1:]
    assert one.gamma == pytest.approx(e / (2 * ly * lz) * EV_PER_A2_IN_MJ_PER_M2, rel=1e-9)


def test_non_stoichiometric_cell_lies_between_the_rich_limits(cdte_calc):
    gb = bicrystal(crystal("CdTe"), *SIGMA9, fov=(20.0, 12.0), thickness=6.0, material="CdTe")
    d = boundary_energy_details(gb, cdte_calc)
    assert d.excess_atoms  # one atom removed at a collision: not stoichiometric
    lo, hi = sorted(d.gamma_limits.values())
    assert lo < d.gamma < hi and d.gamma == pytest.approx((lo + hi) / 2, rel=1e-9)
    # the two rich limits bracket the chemical potentials and keep mu_Cd + mu_Te = E_bulk
    ref = bulk_reference(gb, cdte_calc)
    for cond in ("Cd-rich", "Te-rich", "mid"):
        mu = chemical_potentials(ref, cdte_calc, cond)
        assert mu["Cd"] + mu["Te"] == pytest.approx(ref.energy_per_formula_unit, rel=1e-12)
    with pytest.raises(ConfigError, match="condition"):
        chemical_potentials(ref, cdte_calc, "Se-rich")


def test_vacancy_formation_energies_follow_the_chemical_potentials(cdte_calc, si_calc):
    slab = zone_axis_slab(crystal("CdTe"), (1, 1, 0), None, (9.0, 6.0), 6.0, "CdTe")
    vac = add_defects(slab, [{"kind": "vacancy", "species": "Cd"}], seed=0)
    f = formation_energy_details(vac, cdte_calc)
    # E_f = E_def - E_host + mu_Cd: Cd-rich makes a Cd vacancy more costly than Te-rich
    e_host = len(slab) / 2 * bulk_reference(slab, cdte_calc).energy_per_formula_unit
    for cond, ef in f.limits.items():
        mu = chemical_potentials(bulk_reference(vac, cdte_calc), cdte_calc, cond)
        assert ef == pytest.approx(f.energy - e_host + mu["Cd"], abs=1e-6)
    assert f.limits["Cd-rich"] > f.limits["Te-rich"]
    assert f.limits["Cd-rich"] - f.limits["Te-rich"] == pytest.approx(
        -(
            chemical_potentials(bulk_reference(vac, cdte_calc), cdte_calc, "Te-rich")["Cd"]
            - chemical_potentials(bulk_reference(vac, cdte_calc), cdte_calc, "Cd-rich")["Cd"]
        )
    )
    # elemental Si: no chemical-potential choice; a vacancy costs a few eV (DFT 3.6-3.7 eV)
    si = zone_axis_slab(crystal("Si"), (1, 0, 0), None, (10.0, 10.0), 10.0, "Si")
    ef = formation_energy(add_defects(si, [{"kind": "vacancy"}], seed=0), si_calc)
    assert 2.5 < ef < 5.0
    assert formation_energy(si, si_calc) == pytest.approx(0.0, abs=1e-6)


def test_relaxed_candidate_never_rises_and_keeps_the_cell(cdte_calc):
    gb = bicrystal(crystal("CdTe"), *SIGMA9, fov=(20.0, 12.0), thickness=6.0, material="CdTe")
    r = relax_candidate(gb, cdte_calc, fmax=0.05, steps=40)
    assert r.energy_after <= r.energy_before and r.energy_drop >= 0
    assert r.energy_drop > 0.1  # an unrelaxed boundary does relax
    assert np.allclose(r.atoms.cell.array, gb.cell.array)
    assert 0 < r.max_displacement < 1.5
    assert r.atoms.get_potential_energy() == pytest.approx(r.energy_after)
    assert boundary_energy(r.atoms, cdte_calc, energy=r.energy_after) < boundary_energy(gb, cdte_calc)
    # no step is no change
    r0 = relax_candidate(gb, cdte_calc, steps=0)
    assert r0.energy_drop == 0 and r0.max_displacement == 0
    # the guard against the potential's short-range hole: no pair below the limit
    from ase.neighborlist import neighbor_list

    assert len(neighbor_list("i", r.atoms, r.min_distance)) == 0


def test_relaxing_the_boundary_normal_changes_only_x(cdte_calc):
    gb = bicrystal(crystal("CdTe"), *SIGMA9, fov=(20.0, 12.0), thickness=6.0, material="CdTe")
    r = relax_candidate(gb, cdte_calc, steps=15, fix_cell_along_boundary=False)
    assert r.energy_after <= r.energy_before
    assert np.allclose(r.atoms.cell.lengths()[1:], gb.cell.lengths()[1:])
    assert np.allclose(r.atoms.cell.angles(), 90.0)


def test_bad_requests_are_one_line_errors(cdte_calc):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", 3.6, cubic=True)
    with pytest.raises(ConfigError, match="no material"):
        boundary_energy(atoms, cdte_calc)
    with pytest.raises(ConfigError, match="fmax"):
        relax_candidate(atoms, cdte_calc, fmax=0)
    with pytest.raises(ConfigError, match="elemental solid for Cl"):
        slab = zone_axis_slab(crystal("CdTe"), (1, 1, 0), None, (9.0, 6.0), 6.0, "CdTe")
        formation_energy(add_defects(slab, [{"kind": "substitution", "species": "Te", "element": "Cl"}]), cdte_calc)


# --------------------------------------------------------------------------- the same checks in Si
def test_si_identical_grains_are_bulk_and_the_twin_is_beam_length_independent(si_calc):
    from surrogate.potential.physics import twin_energy

    ax = 5.431 / np.sqrt(2)  # Si [110] period along x
    g = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 0.0}
    same = bicrystal(crystal("Si"), g, g, fov=(6 * ax - 8, 10.0), thickness=4.0, material="Si")
    assert abs(boundary_energy(same, si_calc)) < 1e-3
    one = twin_energy(si_calc, "Si", 5.431, thickness=4.0)
    two = twin_energy(si_calc, "Si", 5.431, thickness=8.0)  # two periods along the beam
    assert two == pytest.approx(one, rel=1e-6, abs=1e-6)


def test_relaxed_si_candidate_is_never_above_the_unrelaxed_one(si_calc):
    # whatever the optimiser, the returned configuration is the lowest visited (a rattled vacancy cell)
    cell = crystal("Si").repeat(2)
    del cell[0]
    cell.rattle(0.1, seed=3)
    for optimizer in ("FIRE", "BFGS"):
        r = relax_candidate(cell, si_calc, fmax=0.05, steps=8, optimizer=optimizer)
        assert r.energy_after <= r.energy_before
        assert r.atoms.get_potential_energy() == pytest.approx(r.energy_after)


# --------------------------------------------------------------------------- surrogate.potential.physics
def _dft_eos(frames):
    from ase.eos import EquationOfState
    from ase.units import GPa

    eos = [a for a in frames if a.info["family"] in ("strain_iso", "bulk")]
    v0, _, b = EquationOfState([a.get_volume() for a in eos], [a.info["REF_energy"] for a in eos]).fit()
    return float(np.cbrt(v0 * 8 / len(eos[0]))), float(b / GPa)


def test_equation_of_state_matches_the_dft(cdte_calc, si_calc):
    from surrogate.potential.data import read_frames
    from surrogate.potential.physics import bulk_modulus, equation_of_state, lattice_constant

    frames, _ = read_frames([str(ROOT / "data/dft/cdte/batch_*.extxyz")])
    a_dft, _ = _dft_eos(frames)  # GPAW PBE labels: E-V of the isotropic strains
    cdte = equation_of_state(cdte_calc, "CdTe")
    assert cdte.a0 == pytest.approx(a_dft, rel=0.005)
    # B: the labels' own E-V fit gives 26.5-27 GPa (9 cells, 8 on the compressed side of
    # their 6.62 Å minimum); experiment 42-45 GPa, PBE a little lower: only a physical range here
    assert 30 < cdte.bulk_modulus < 55
    # Si: PBE a0 5.469 Å, B 88 GPa (Materials Project mp-149)
    assert lattice_constant(si_calc, "Si") == pytest.approx(5.469, rel=0.005)
    assert 75 < bulk_modulus(si_calc, "Si") < 105
    with pytest.raises(ConfigError, match="points"):
        equation_of_state(si_calc, "Si", points=3)


def test_defect_formation_energies_relax_down_and_follow_the_rich_limits(cdte_calc):
    from surrogate.potential.physics import antisite_energy, vacancy_energy

    a0 = 6.59  # near the model's own
    v = vacancy_energy(cdte_calc, "CdTe", "Cd", a0=a0, steps=60)
    assert v.defect == "V_Cd" and v.atoms == 63
    for cond in ("Cd-rich", "Te-rich"):  # same chemical potentials: relaxing only lowers it
        assert v.limits[cond] <= v.unrelaxed_limits[cond] + 1e-9
    assert v.limits["Cd-rich"] > v.limits["Te-rich"]  # the removed Cd goes to a richer reservoir
    assert 0.5 < v.energy_formation < 4.0
    s = antisite_energy(cdte_calc, "CdTe", "Cd", a0=a0, steps=60)
    assert s.defect == "Cd_Te" and s.atoms == 64
    assert s.limits["Cd-rich"] < s.limits["Te-rich"]  # a Te swapped for a Cd: cheaper when Cd-rich
    assert s.energy_formation == pytest.approx(np.mean(list(s.limits.values())), abs=1e-9)
    with pytest.raises(ConfigError, match="binary compound"):
        antisite_energy(cdte_calc, "Si", "Si", a0=5.43, relax=False)
    with pytest.raises(ConfigError, match="no Se site"):
        vacancy_energy(cdte_calc, "CdTe", "Se", a0=a0, relax=False)


def test_coherent_twin_is_cheap_at_any_lattice_constant(cdte_calc):
    from surrogate.potential.physics import twin_energy

    # the coherent twin keeps every bond: a few mJ/m^2 (DFT on our labelled 4+4 bilayer cells: small)
    at_builtin, at_own = twin_energy(cdte_calc, "CdTe", 6.481), twin_energy(cdte_calc, "CdTe", 6.59)
    assert 0 < at_builtin < 50 and 0 < at_own < 50
    assert at_own == pytest.approx(at_builtin, abs=5.0)
