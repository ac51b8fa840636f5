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
    return image[:, max(col - 2, 0) : col + 3].max()


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
    [
        ImagingConditions(mode="haadf", method="incoherent"),
        ImagingConditions(mode="hrtem", method="multislice", defocus=50, cs=-1e4, semiangle=20),
        ImagingConditions(mode="abf", method="multislice", inner=11, outer=22),
    ],
    ids=["incoherent", "hrtem", "abf"],
)
def test_mirror_symmetric_structure_gives_mirror_symmetric_image(condition):
    lx = 8.0
    atoms = Atoms(
        "Te2Cd",
        positions=[[lx / 2 - 1.6, 2.0, 0.0], [lx / 2 + 1.6, 2.0, 0.0], [lx / 2, 2.0, 1.0]],
        cell=[lx, 4.0, 2.0],
        pbc=True,
    )
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
        render(
            three_columns(),
            [ImagingConditions(mode="hrtem", method="multislice", semiangle=40)],
            shape=(16, 16),
            settings=SimulationSettings(potential_sampling=0.2),
        )


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
    ms, prism = render(
        atoms, conds, shape=(16, 56), settings=SimulationSettings(potential_sampling=0.05, prism_interpolation=1)
    )
    assert np.allclose(ms, prism, rtol=1e-3, atol=1e-3 * ms.max())


def test_one_scan_serves_all_detectors_consistently():
    atoms = three_columns(lz=4.0)
    base = dict(method="multislice", energy=200e3, semiangle=20)
    conds = [
        ImagingConditions(mode="bf", inner=0, outer=10, **base),
        ImagingConditions(mode="abf", inner=10, outer=20, **base),
        ImagingConditions(mode="haadf", inner=20, outer=160, **base),
    ]
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
    [
        ({"defocus": [50, -50]}, [{"mode": "haadf"}], "empty range"),
        ({}, [], "no imaging modes"),
        ({"energy": {"choices": []}}, [{"mode": "haadf"}], "empty choices"),
        ({}, [{"mode": "dark"}], "unknown imaging mode"),
        ({}, [{"mode": "abf", "method": "incoherent"}], "incoherent method models HAADF only"),
    ],
)
def test_bad_condition_ranges_are_clear_errors(ranges, modes, match):
    with pytest.raises(ConfigError, match=match):
        sample_conditions(3, ranges, modes)


def test_overlapping_atoms_are_refused_before_simulation():
    atoms = Atoms("Si2", positions=[[2, 2, 0], [2.05, 2, 0]], cell=[8, 8, 2], pbc=True)
    with pytest.raises(SimulationError, match="overlapping atoms"):
        render(atoms, [ImagingConditions()], shape=(16, 16), settings=SETTINGS)


# --- one expensive pass per structure (issue 9) ---------------------------------------------------


def _abtem_prism_reference(atoms, c, scan_sampling, shape):
    """abTEM's own per-image PRISM: an S-matrix for this probe alone, an annular detector."""
    import abtem

    from surrogate.simulate import to_canonical

    with abtem.config.set({"dask.lazy": False}):
        potential = abtem.Potential(
            atoms,
            sampling=SETTINGS.potential_sampling,
            slice_thickness=2.0,
            projection="infinite",
            parametrization="lobato",
        ).build()
        smatrix = abtem.SMatrix(
            potential=potential, energy=c.energy, semiangle_cutoff=c.semiangle, interpolation=1, downsample=False
        )
        scan = abtem.GridScan(
            start=(0, 0), end=(1, 1), fractional=True, endpoint=False, sampling=scan_sampling, potential=potential
        )
        ctf = abtem.CTF(semiangle_cutoff=c.semiangle, defocus=c.defocus, Cs=c.cs, energy=c.energy)
        arr = np.asarray(smatrix.scan(scan=scan, detectors=abtem.AnnularDetector(c.inner, c.outer), ctf=ctf).array)
    return to_canonical(arr, (atoms.cell[0, 0] / arr.shape[0], atoms.cell[1, 1] / arr.shape[1]), shape, c.sampling)


def test_one_smatrix_serves_every_probe_and_detector_as_abtem_per_image_prism():
    from surrogate.simulate.images import _scan_sampling

    atoms = three_columns(lz=4.0)
    conds = [
        ImagingConditions(mode=m, method="prism", semiangle=a, defocus=d, inner=i, outer=o)
        for a, d in ((20, 0.0), (15, 30.0), (20, -25.0))
        for m, i, o in (("haadf", 50, 150), ("bf", 0, 10))
    ]
    shared = render(atoms, conds, shape=(16, 56), settings=replace_settings(prism_interpolation=1))
    scan_sampling = _scan_sampling(conds[0], SETTINGS)  # the widest probe sets the scan step
    for image, c in zip(shared, conds):
        ref = _abtem_prism_reference(atoms, c, scan_sampling, (16, 56))
        assert np.allclose(image, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max()), c
    # the probes differ: defocus and aperture change the image
    assert not np.allclose(shared[0], shared[2], rtol=1e-2)


def replace_settings(**changes):
    from dataclasses import replace

    return replace(SETTINGS, **changes)


@pytest.mark.parametrize(
    "mode, method, vary",
    [
        ("hrtem", "multislice", dict(defocus=[0.0, 60.0, -80.0], cs=[0.0, 2e4, -3e4], focal_spread=[0.0, 0.0, 20.0])),
        (
            "haadf",
            "incoherent",
            dict(defocus=[0.0, 15.0, -30.0], source_size=[0.0, 0.3, 0.6], outer=[150.0, 180.0, 200.0]),
        ),
    ],
    ids=["hrtem", "incoherent"],
)
def test_shared_pass_equals_one_render_per_condition(mode, method, vary):
    atoms = three_columns(lz=4.0)
    conds = [
        ImagingConditions(mode=mode, method=method, semiangle=20, **{k: v[j] for k, v in vary.items()})
        for j in range(3)
    ]
    shared = render(atoms, conds, shape=(16, 56), settings=SETTINGS)
    alone = np.stack([render(atoms, [c], shape=(16, 56), settings=SETTINGS)[0] for c in conds])
    assert np.allclose(shared, alone, rtol=1e-5, atol=1e-6 * np.abs(alone).max())
    assert not np.allclose(shared[0], shared[1], rtol=1e-2)


def test_frozen_phonons_are_one_smatrix_each_and_averaged():
    import abtem

    atoms = three_columns(lz=4.0)
    c = ImagingConditions(method="prism", outer=150)
    settings = replace_settings(prism_interpolation=1, frozen_phonons=2, sigma={"default": 0.1})
    averaged = render(atoms, [c], shape=(16, 56), settings=settings)[0]
    configs = list(abtem.FrozenPhonons(atoms, num_configs=2, sigmas={s: 0.1 for s in "Si Cd Te".split()}, seed=0))
    each = [render(a, [c], shape=(16, 56), settings=replace_settings(prism_interpolation=1))[0] for a in configs]
    assert np.allclose(averaged, (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-6)
    assert not np.allclose(each[0], each[1], rtol=1e-2)  # the configurations differ


def test_smatrix_over_the_memory_limit_falls_back_to_batched_multislice_under_the_cap(caplog):
    import tracemalloc

    import abtem

    from surrogate.simulate import smatrix_bytes

    atoms = three_columns(lz=2.0) * (1, 2, 1)  # 12 x 8 Å: its S-matrix needs ~37 MiB
    c = ImagingConditions(method="prism", outer=150)
    potential = abtem.Potential(atoms, sampling=SETTINGS.potential_sampling, slice_thickness=2.0)
    need = smatrix_bytes(abtem.SMatrix(potential=potential, energy=c.energy, semiangle_cutoff=c.semiangle))
    cap = 32 / 1024  # GiB
    assert need > cap * 2**30  # the S-matrix alone would break the cap
    free = render(atoms, [c], shape=(32, 56), settings=replace_settings(prism_interpolation=1))[0]
    tracemalloc.start()
    try:
        capped = render(atoms, [c], shape=(32, 56), settings=replace_settings(prism_interpolation=1, memory_limit=cap))[
            0
        ]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "exceeds the memory limit" in caplog.text
    assert peak < cap * 2**30, f"peak {peak / 2**20:.1f} MiB"
    assert np.allclose(capped, free, rtol=1e-3, atol=1e-3 * free.max())  # PRISM(1) == multislice


def test_gpu_memory_limit_and_host_transfer_emulated_on_cpu(monkeypatch):
    """The GPU-only branches of the shared pass, with CuPy emulated: the memory limit comes from the
    device's free memory, and device arrays come back to the host through ``.get()``."""
    import sys
    import types

    from surrogate.simulate import memory_limit_bytes
    from surrogate.simulate.images import _asnumpy

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(mem_info=(10 * 2**30, 80 * 2**30)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert memory_limit_bytes(replace_settings(device="gpu")) == int(0.8 * 10 * 2**30)
    assert memory_limit_bytes(replace_settings(device="gpu", memory_limit=2.0)) == 2 * 2**30

    class DeviceArray:
        def get(self):
            return np.arange(4.0)

    assert np.array_equal(_asnumpy(DeviceArray()), np.arange(4.0))


@pytest.mark.parametrize("bad", [0, -1.0, "abc", True])
def test_memory_limit_must_be_a_positive_number_of_gib(bad):
    with pytest.raises(ConfigError, match="memory_limit must be a positive number of GiB"):
        SimulationSettings(memory_limit=bad)


def _cdte_slab(thickness, fov=(6.4, 6.4)):
    from surrogate.structures import crystal, zone_axis_slab

    return zone_axis_slab(crystal("CdTe"), (1, 1, 0), fov=fov, thickness=thickness)


def test_thickness_drawn_per_image_changes_hrtem_contrast():
    slab = _cdte_slab(60.0)
    c = ImagingConditions(mode="hrtem", method="multislice", energy=300e3, semiangle=20.0, sampling=0.2)
    thick = [10.0, 30.0, 60.0]
    images = render(slab, [c.replace(thickness=t) for t in thick] + [c], (32, 32), SETTINGS)
    contrast = [float(im.std() / im.mean()) for im in images]
    assert max(contrast[:3]) - min(contrast[:3]) > 0.05  # dynamical scattering: contrast depends on thickness
    assert ssim(images[0], images[2]) < 0.9
    assert np.array_equal(images[2], images[3])  # beyond... at the whole slab: the legacy image, bit for bit
    # the exit plane at 30 Å is the image of the first 30 Å (the truncated structure)
    from surrogate.simulate.images import truncate

    n = int(np.ceil(slab.cell[2, 2] / SETTINGS.slice_thickness))
    t = 14 * slab.cell[2, 2] / n  # an exit plane between atomic planes: the truncated cell has the same slices
    alone = render(truncate(slab, t), [c], (32, 32), SETTINGS)[0]
    mid = render(slab, [c.replace(thickness=t)], (32, 32), SETTINGS)[0]
    assert np.abs(alone - mid).max() < 1e-3
    # sampled per image and serialised with it
    conds = sample_conditions(30, {"thickness": [20.0, 200.0]}, [{"mode": "hrtem"}], seed=1)
    ts = [cc.thickness for cc in conds]
    assert min(ts) >= 20 and max(ts) <= 200 and len(set(ts)) == 30
    assert ImagingConditions.from_json(conds[0].to_json()).thickness == ts[0]
    assert ImagingConditions.from_dict({k: v for k, v in c.to_dict().items() if k != "thickness"}).thickness is None
    with pytest.raises(ConfigError, match="thickness must be positive"):
        c.replace(thickness=0.0)


def test_incoherent_signal_grows_linearly_with_thickness_and_keeps_its_contrast():
    period = 6.481 / np.sqrt(2)  # CdTe [110]: one atom per column per period
    slab = _cdte_slab(8 * period)
    c = ImagingConditions(mode="haadf", method="incoherent", energy=300e3, sampling=0.2, source_size=0.3)
    images = render(slab, [c.replace(thickness=k * period - 0.1) for k in (2, 4, 8)], (32, 32), SETTINGS)
    means = [float(im.mean()) for im in images]
    assert means[1] / means[0] == pytest.approx(2.0, rel=0.05) and means[2] / means[1] == pytest.approx(2.0, rel=0.05)
    assert ssim(images[0], images[2]) > 0.98  # a perfect crystal: the same columns at every depth


def test_the_store_round_trips_each_images_thickness():
    from surrogate.library.store import decode_conditions, encode_conditions

    c = ImagingConditions(mode="hrtem", method="multislice", thickness=57.5)
    assert decode_conditions(encode_conditions([c])[0]) == c
    assert decode_conditions(encode_conditions([c.replace(thickness=None)])[0]).thickness is None


def test_library_images_of_one_structure_differ_with_their_drawn_thickness(tmp_path):
    """The per-image thickness is stored with each image and is what changes its HRTEM contrast:
    one Si [110] slab, every other condition fixed, noise-free."""
    from surrogate.library import Library
    from surrogate.library.cli import build
    from tests.conftest import tiny_library_config

    fixed = {
        "simulate.modes": "[{mode: hrtem, method: multislice, weight: 1.0}]",
        "+simulate.ranges.thickness": "[4.0,16.0]",
        "simulate.ranges.dose": "null",
        "simulate.ranges.energy": "300000.0",
        "simulate.ranges.hrtem.semiangle": "20.0",
        "simulate.ranges.hrtem.defocus": "-60.0",
        "simulate.ranges.hrtem.cs": "0.0",
        "simulate.ranges.hrtem.focal_spread": "0.0",
        "structures.thicknesses": "[16.0]",
        "structures.defects.per_slab": "0",
        "library.images_per_structure": "4",
    }
    build(tiny_library_config(tmp_path / "lib", **fixed))
    lib = Library(tmp_path / "lib")
    conds = [lib.conditions(i) for i in range(len(lib))]
    assert len({(c.defocus, c.cs, c.semiangle, c.energy, c.dose) for c in conds}) == 1  # only thickness varies
    t = lib.condition_column("thickness")
    assert len(set(t.tolist())) == 4 and ((t >= 4.0) & (t <= 16.0)).all()
    thin, thick = int(np.argmin(t)), int(np.argmax(t))
    assert t[thick] - t[thin] > 4.0
    a, b = lib.image(thin), lib.image(thick)
    assert ssim(a, b) < 0.9  # the same structure, clearly another image
    contrast = [float(im.std() / im.mean()) for im in (lib.image(i) for i in range(len(lib)))]
    assert max(contrast) - min(contrast) > 0.03
