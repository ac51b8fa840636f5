import numpy as np
import pytest
from ase import Atoms

from surrogate.errors import ConfigError, SimulationError
from surrogate.simulate import ImagingConditions, SimulationSettings, apply_dose, render, sample_conditions
from tests.conftest import ssim

SETTINGS = SimulationSettings(potential_sampling=0.05)


def three_columns(symbols=("Si", "Cd", "Te"), spacing=4.0, lz=8.0, period=2.0):
    """Isolated atomic columns of each species along the beam, ``spacing`` Å apart in x."""
    positions, names = [], []
    for i, s in enumerate(symbols):
        for z in np.arange(0, lz, period):
            positions.append([spacing * (i + 0.5), 2.0, z])
            names.append(s)
    return Atoms(names, positions=positions, cell=[spacing * len(symbols), 4.0, lz], pbc=True)


def column_intensity(image, x, sampling=0.2, lx=12.0):
    """Peak intensity near the column at x [Å] (image centred on the cell)."""
    col = int(round((x - (lx - image.shape[1] * sampling) / 2) / sampling - 0.5))
    return image[:, max(col - 2, 0): col + 3].max()


@pytest.mark.parametrize("mode, method", [("haadf", "multislice"), ("haadf", "incoherent")])
def test_haadf_column_intensity_rises_with_z(mode, method):
    atoms = three_columns()
    c = ImagingConditions(mode=mode, method=method, semiangle=25, inner=60, outer=200)
    image = render(atoms, [c], shape=(16, 56), settings=SimulationSettings(potential_sampling=0.04))[0]
    si, cd, te = (column_intensity(image, x) for x in (2.0, 6.0, 10.0))
    assert te > cd > si > 0
    assert cd / si > 3  # Z^1.7-like contrast: (48/14)^1.7 ~ 8


@pytest.mark.parametrize(
    "condition",
    [ImagingConditions(mode="haadf", method="incoherent"),
     ImagingConditions(mode="hrtem", method="multislice", defocus=50, cs=-1e4, semiangle=20),
     ImagingConditions(mode="abf", method="multislice", inner=11, outer=22)],
    ids=["incoherent", "hrtem", "abf"],
)
def test_mirror_symmetric_structure_gives_mirror_symmetric_image(condition):
    lx = 8.0
    atoms = Atoms("Te2Cd", positions=[[lx / 2 - 1.6, 2.0, 0.0], [lx / 2 + 1.6, 2.0, 0.0], [lx / 2, 2.0, 1.0]],
                  cell=[lx, 4.0, 2.0], pbc=True)
    image = render(atoms, [condition], shape=(20, 40), settings=SETTINGS)[0]
    assert np.allclose(image, image[:, ::-1], atol=1e-3 * np.abs(image).max())
    assert not np.allclose(image, image[::-1, :][::-1, :].mean(), atol=1e-3 * np.abs(image).max())  # not flat


def test_detector_beyond_the_simulated_angle_is_an_error():
    atoms = three_columns()
    c = ImagingConditions(mode="haadf", method="multislice", outer=250)
    with pytest.raises(SimulationError, match="beyond the maximum simulated angle.*potential_sampling <="):
        render(atoms, [c], shape=(16, 16), settings=SimulationSettings(potential_sampling=0.05))


def test_unconverged_sampling_is_an_error():
    with pytest.raises(SimulationError, match="unconverged sampling"):
        render(three_columns(), [ImagingConditions(mode="hrtem", method="multislice", semiangle=40)],
               shape=(16, 16), settings=SimulationSettings(potential_sampling=0.2))


def test_field_of_view_larger_than_cell_is_an_error():
    with pytest.raises(SimulationError, match="larger than the structure cell"):
        render(three_columns(), [ImagingConditions()], shape=(64, 64), settings=SETTINGS)


def test_incoherent_matches_multislice_haadf():
    from surrogate.structures import crystal, zone_axis_slab

    slab = zone_axis_slab(crystal("CdTe"), (1, 1, 0), fov=(6.4, 6.4), thickness=10)
    conds = [ImagingConditions(method="multislice", outer=180), ImagingConditions(method="incoherent", outer=180)]
    ms, inc = render(slab, conds, shape=(32, 32), settings=SimulationSettings(potential_sampling=0.045))
    assert ssim(inc, ms) > 0.9
    assert 0.3 < inc.mean() / ms.mean() < 3  # calibrated to the fraction of the beam on the detector


def test_prism_equals_multislice_at_interpolation_one():
    atoms = three_columns(lz=4.0)
    conds = [ImagingConditions(method="multislice", outer=150), ImagingConditions(method="prism", outer=150)]
    ms, prism = render(atoms, conds, shape=(16, 56), settings=SimulationSettings(potential_sampling=0.05, prism_interpolation=1))
    assert np.allclose(ms, prism, rtol=1e-3, atol=1e-3 * ms.max())


def test_one_scan_serves_all_detectors_consistently():
    atoms = three_columns(lz=4.0)
    base = dict(method="multislice", energy=200e3, semiangle=20)
    conds = [ImagingConditions(mode="bf", inner=0, outer=10, **base), ImagingConditions(mode="abf", inner=10, outer=20, **base),
             ImagingConditions(mode="haadf", inner=20, outer=160, **base)]
    bf, abf, adf = render(atoms, conds, shape=(16, 56), settings=SETTINGS)
    # the three rings partition the beam up to 160 mrad: total close to 1
    assert np.allclose(bf + abf + adf, 1.0, atol=0.05)
    # BF is dark and ADF bright on a heavy column
    assert bf[:, 45:55].min() < bf.mean() and adf[:, 45:55].max() > adf.mean()


def test_dose_noise_preserves_mean_and_scales_as_poisson():
    image = np.full((200, 200), 0.05, np.float32)
    low = apply_dose(image, 1e3, 0.2, seed=0)
    high = apply_dose(image, 1e5, 0.2, seed=0)
    assert low.mean() == pytest.approx(0.05, rel=0.05)
    electrons = 1e3 * 0.04
    assert low.std() == pytest.approx(np.sqrt(0.05 * electrons) / electrons, rel=0.1)
    assert high.std() < low.std() / 5
    assert np.array_equal(apply_dose(image, 1e3, 0.2, seed=0), low)


def test_conditions_round_trip_and_sampling_is_deterministic():
    modes = [{"mode": "haadf", "method": "incoherent"}, {"mode": "hrtem", "method": "multislice"}]
    ranges = {"defocus": [-50, 50], "dose": {"choices": [None, 1e3]}, "hrtem": {"semiangle": [15, 20]}}
    a = sample_conditions(20, ranges, modes, seed=4)
    assert a == sample_conditions(20, ranges, modes, seed=4)
    assert a != sample_conditions(20, ranges, modes, seed=5)
    for c in a:
        assert ImagingConditions.from_json(c.to_json()) == c
        assert -50 <= c.defocus <= 50
        if c.mode == "hrtem":
            assert 15 <= c.semiangle <= 20


@pytest.mark.parametrize(
    "ranges, modes, match",
    [({"defocus": [50, -50]}, [{"mode": "haadf"}], "empty range"),
     ({}, [], "no imaging modes"),
     ({"energy": {"choices": []}}, [{"mode": "haadf"}], "empty choices"),
     ({}, [{"mode": "dark"}], "unknown imaging mode"),
     ({}, [{"mode": "abf", "method": "incoherent"}], "incoherent method models HAADF only")],
)
def test_bad_condition_ranges_are_clear_errors(ranges, modes, match):
    with pytest.raises(ConfigError, match=match):
        sample_conditions(3, ranges, modes)


def test_overlapping_atoms_are_refused_before_simulation():
    atoms = Atoms("Si2", positions=[[2, 2, 0], [2.05, 2, 0]], cell=[8, 8, 2], pbc=True)
    with pytest.raises(SimulationError, match="overlapping atoms"):
        render(atoms, [ImagingConditions()], shape=(16, 16), settings=SETTINGS)
