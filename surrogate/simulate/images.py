"""Image simulation with abTEM: STEM (multislice, PRISM), HRTEM (CTF, partial coherence) and the
fast incoherent mode; the expensive pass is done once per structure and shared by all conditions.

The public entry point is :func:`render`: one structure, many imaging conditions, one array of
images at the canonical sampling.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from surrogate.errors import ConfigError, SimulationError, SurrogateError
from surrogate.simulate.conditions import ImagingConditions, wavelength
from surrogate.simulate.noise import apply_dose

__all__ = [
    "SimulationSettings",
    "render",
    "max_simulated_angle",
    "to_canonical",
    "memory_limit_bytes",
    "smatrix_bytes",
    "truncate",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationSettings:
    """How images are computed (not what the microscope does: that is :class:`ImagingConditions`).

    Attributes
    ----------
    potential_sampling
        Real-space sampling of the potential and wave functions [Å]. Sets the largest simulated
        scattering angle; a detector beyond it is an error.
    slice_thickness
        Multislice slice thickness [Å].
    parametrization
        Atomic potential parametrisation (``lobato`` or ``kirkland``).
    frozen_phonons
        Number of frozen-phonon configurations (1 = static lattice).
    sigma
        RMS thermal displacement per element [Å] (``default`` for the rest).
    incoherent_exponent
        Exponent applied to the projected potential in the incoherent mode (HAADF ~ Z^1.7).
    incoherent_scale
        Converts the incoherent image to the fraction of the beam reaching the detector, so the same
        dose gives the same counts as multislice (calibrated in ``benchmarks/simulation.py``).
    incoherent_thickness
        Thickness at which ``incoherent_scale`` was calibrated [Å]. An image taken at a thickness
        ``t`` (``ImagingConditions.thickness``) is scaled by (this / t)^(exponent - 1), so its
        signal grows linearly with thickness while the column contrast stays Z^exponent.
    scan_oversampling
        STEM scan step is the probe's Nyquist step divided by this; images are Fourier-
        interpolated to the canonical sampling.
    prism_interpolation
        PRISM interpolation factor.
    device
        ``cpu`` or ``gpu`` (CuPy through abTEM).
    fft
        abTEM's FFT library on the CPU. ``numpy`` (pocketfft) is bit-reproducible across
        processes, which makes a resumed library build identical to an uninterrupted one; ``fftw``
        with measured plans may differ in the last bit from run to run.
    seed
        Seed of the frozen-phonon displacements.
    memory_limit
        Largest working set of one expensive pass [GiB] (S-matrix, batch of probe wave functions).
        ``None``: a quarter of the available RAM, or 80% of the free GPU memory with
        ``device=gpu``. A PRISM S-matrix larger than this is never built: that group falls back to
        multislice with probe batches sized to the limit (same images, slower).
    """

    potential_sampling: float = 0.04
    slice_thickness: float = 2.0
    parametrization: str = "lobato"
    frozen_phonons: int = 1
    sigma: dict = field(default_factory=lambda: {"default": 0.08})
    incoherent_exponent: float = 2.0
    incoherent_scale: float = 8.9e-9
    incoherent_thickness: float = 20.0
    scan_oversampling: float = 1.0
    prism_interpolation: int = 1
    device: str = "cpu"
    fft: str = "numpy"
    seed: int = 0
    memory_limit: float | None = None

    def __post_init__(self):
        if self.memory_limit is not None and not (
            isinstance(self.memory_limit, (int, float))
            and not isinstance(self.memory_limit, bool)
            and self.memory_limit > 0
        ):
            raise ConfigError(
                f"simulate.settings.memory_limit must be a positive number of GiB or null, got {self.memory_limit!r}"
            )


def max_simulated_angle(potential_sampling: float, energy: float) -> float:
    """Largest scattering angle [mrad] represented without aliasing (abTEM's 2/3 antialias cutoff)."""
    return 2.0 / 3.0 * wavelength(energy) / (2.0 * potential_sampling) * 1e3


def _check(conditions: Sequence[ImagingConditions], settings: SimulationSettings) -> None:
    for c in conditions:
        limit = max_simulated_angle(settings.potential_sampling, c.energy)
        if c.mode != "hrtem" and c.method != "incoherent" and c.outer > limit:
            need = 2.0 / 3.0 * c.wavelength / (2.0 * c.outer * 1e-3)
            raise SimulationError(
                f"{c.mode} detector outer angle {c.outer:.0f} mrad is beyond the maximum simulated angle "
                f"{limit:.0f} mrad at {c.energy / 1e3:.0f} keV: set simulate.settings.potential_sampling <= {need:.3f} Å "
                "or lower the outer angle"
            )
        if 2 * c.semiangle > limit:
            raise SimulationError(
                f"unconverged sampling: the {c.semiangle:.0f} mrad aperture needs angles up to {2 * c.semiangle:.0f} mrad but "
                f"potential_sampling={settings.potential_sampling} Å reaches {limit:.0f} mrad; reduce potential_sampling"
            )


def _sigmas(atoms: Atoms, sigma: dict) -> dict:
    default = float(sigma.get("default", 0.08))
    return {s: float(sigma.get(s, default)) for s in set(atoms.get_chemical_symbols())}


def _frozen_phonons(atoms: Atoms, settings: SimulationSettings):
    """abTEM's frozen-phonon ensemble of ``atoms`` for these settings (one definition for every mode)."""
    import abtem

    return abtem.FrozenPhonons(
        atoms, num_configs=settings.frozen_phonons, sigmas=_sigmas(atoms, settings.sigma), seed=settings.seed
    )


def _effective_thickness(c: ImagingConditions, total: float) -> float:
    """The thickness [Å] an image is taken at: the condition's, at most the structure's."""
    return total if c.thickness is None else min(float(c.thickness), total)


def _exit_planes(
    atoms: Atoms, settings: SimulationSettings, conditions
) -> tuple[tuple[int, ...] | None, dict[int, int]]:
    """Exit planes (slice indices) serving every condition's thickness, and each condition's
    position among them. ``None`` when every condition takes the whole structure (one exit plane:
    the legacy potential, bit for bit)."""
    total = float(atoms.cell[2, 2])
    if all(c.thickness is None or c.thickness >= total for _, c in conditions):
        return None, {}
    n = max(1, int(np.ceil(total / settings.slice_thickness - 1e-9)))  # abTEM divides the cell evenly
    cum = np.arange(1, n + 1) * (total / n)
    index = {i: int(np.argmin(np.abs(cum - _effective_thickness(c, total)))) for i, c in conditions}
    planes = tuple(sorted(set(index.values())))
    return planes, {i: planes.index(k) for i, k in index.items()}


def _plane(array: np.ndarray, axes_metadata, position: int | None) -> np.ndarray:
    """The exit plane at ``position`` of an abTEM array (thickness axis located by its metadata),
    averaged over every other leading axis (frozen phonons) down to two dimensions."""
    if position is not None:
        names = [type(a).__name__ for a in axes_metadata]
        if "ThicknessAxis" in names:
            array = np.take(array, position, axis=names.index("ThicknessAxis"))
    while array.ndim > 2:
        array = array.mean(0)
    return array


def _potential(
    atoms: Atoms,
    settings: SimulationSettings,
    multiple_of: int = 1,
    exit_planes=None,
    slices: tuple[float, ...] | None = None,
):
    """abTEM potential at ``settings.potential_sampling`` or finer, its grid a multiple of
    ``multiple_of`` points (PRISM interpolation divides the grid exactly: normalisation preserved),
    with the given exit planes (slice indices; None = the exit surface). ``slices``: the thickness
    of every slice [Å] instead of ``settings.slice_thickness``."""
    import abtem

    grid: dict[str, Any] = {"sampling": settings.potential_sampling}
    if multiple_of > 1:
        extent = np.diag(atoms.cell.array)[:2]
        grid = {
            "gpts": tuple(int(np.ceil(L / settings.potential_sampling / multiple_of)) * multiple_of for L in extent)
        }
    if settings.frozen_phonons > 1:
        atoms = _frozen_phonons(atoms, settings)
    planes: dict[str, Any] = {"exit_planes": tuple(exit_planes)} if exit_planes is not None else {}
    return abtem.Potential(
        atoms,
        **grid,
        slice_thickness=settings.slice_thickness if slices is None else slices,
        parametrization=settings.parametrization,
        projection="infinite",
        device=settings.device,
        **planes,
    )


def _asnumpy(a) -> np.ndarray:
    if hasattr(a, "get"):
        a = a.get()
    return np.asarray(a)


def _fourier_filter(
    shape: tuple[int, int], sampling: tuple[float, float], cutoff: float, sigma: float = 0.0
) -> np.ndarray:
    """Transfer function that zeroes frequencies beyond ``cutoff`` [1/Å] and blurs with a Gaussian
    of standard deviation ``sigma`` [Å] (the source size), on the FFT grid of a periodic image."""
    kx = np.fft.fftfreq(shape[0], sampling[0])
    ky = np.fft.fftfreq(shape[1], sampling[1])
    k2 = kx[:, None] ** 2 + ky[None, :] ** 2
    return (k2 <= cutoff**2) * np.exp(-2 * np.pi**2 * sigma**2 * k2)


def _lowpass_fourier(image: np.ndarray, sampling: tuple[float, float], cutoff: float, sigma: float = 0.0) -> np.ndarray:
    """Low-pass a periodic image: zero frequencies beyond ``cutoff`` [1/Å] and apply a Gaussian
    blur of standard deviation ``sigma`` [Å]."""
    return np.fft.ifft2(np.fft.fft2(image) * _fourier_filter(image.shape, sampling, cutoff, sigma)).real


def fourier_crop(image: np.ndarray, sampling: tuple[float, float], target: float):
    """Band-limit a periodic image by cropping its spectrum to the grid of sampling >= ``target`` [Å].

    Returns the cropped image (same mean) and its sampling. Images already coarser are returned
    unchanged.
    """
    n0 = np.array(image.shape[-2:])
    extent = n0 * np.asarray(sampling)
    n1 = np.minimum(n0, np.maximum(2, np.ceil(extent / target).astype(int)))
    n1 += n1 % 2
    n1 = np.minimum(n0, n1)
    if (n1 == n0).all():
        return image, tuple(float(v) for v in sampling)
    f = np.fft.fftshift(np.fft.fft2(image), axes=(-2, -1))
    c0 = n0 // 2
    f = f[..., c0[0] - n1[0] // 2 : c0[0] - n1[0] // 2 + n1[0], c0[1] - n1[1] // 2 : c0[1] - n1[1] // 2 + n1[1]]
    out = np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))).real * (n1.prod() / n0.prod())
    return out, tuple(float(v) for v in extent / n1)


def to_canonical(
    image: np.ndarray,
    sampling: tuple[float, float],
    shape: tuple[int, int],
    out_sampling: float,
    source_size: float = 0.0,
    prefiltered: bool = False,
) -> np.ndarray:
    """Resample a periodic image (x along axis 0) to ``shape`` pixels of ``out_sampling`` [Å], centred.

    The image is band-limited to the output Nyquist frequency (and blurred by the source size)
    in Fourier space, then sampled at the exact output grid with cubic splines (periodic). The
    output is indexed [row=y, col=x] as images are displayed, y pointing up. ``prefiltered``: the
    caller has already applied ``_fourier_filter`` (saves an FFT pair when it works in Fourier
    space anyway).
    """
    from scipy.ndimage import map_coordinates

    image = np.asarray(image, dtype=np.float64)
    extent = (image.shape[0] * sampling[0], image.shape[1] * sampling[1])
    fov = (shape[1] * out_sampling, shape[0] * out_sampling)  # (x, y)
    if fov[0] > extent[0] + 1e-6 or fov[1] > extent[1] + 1e-6:
        raise SimulationError(
            f"field of view {fov[0]:.1f}x{fov[1]:.1f} Å is larger than the structure cell "
            f"{extent[0]:.1f}x{extent[1]:.1f} Å: build structures with fov >= image shape x sampling"
        )
    if not prefiltered:
        image = _lowpass_fourier(image, sampling, 0.5 / out_sampling, source_size)
    x0 = (extent[0] - fov[0]) / 2
    y0 = (extent[1] - fov[1]) / 2
    # abTEM grids put sample k at k * sampling
    xs = (x0 + (np.arange(shape[1]) + 0.5) * out_sampling) / sampling[0]
    ys = (y0 + (np.arange(shape[0]) + 0.5) * out_sampling) / sampling[1]
    # rows = y from top (high y) to bottom so that y points up in the displayed image
    yy, xx = np.meshgrid(ys[::-1], xs, indexing="ij")
    return map_coordinates(image, [xx, yy], order=3, mode="grid-wrap").astype(np.float32)


def _incoherent(atoms, conditions, shape, settings) -> dict[int, np.ndarray]:
    """Projected potential^p convolved with the probe intensity: one projection per structure."""
    import abtem

    total = float(atoms.cell[2, 2])
    # the object each condition takes: its thickness [Å], or ("legacy", total) (see below)
    wanted: dict[int, float | tuple[str, float]] = {i: _effective_thickness(c, total) for i, c in conditions}
    objects: dict[float | tuple[str, float], np.ndarray]
    if all(c.thickness is None for _, c in conditions):
        # one slice through the whole thickness: the projection is all this mode needs
        potential = _potential(atoms, replace(settings, slice_thickness=total))
        projected = _asnumpy(potential.build().project().compute(progress_bar=False).array)
        if projected.ndim == 3:  # frozen phonons: thermal average of the object
            objects = {total: (np.maximum(projected, 0) ** settings.incoherent_exponent).mean(0)}
        else:
            objects = {total: np.maximum(projected, 0) ** settings.incoherent_exponent}
        scale: dict[float | tuple[str, float], float] = {total: 1.0}
    else:
        objects, potential = _incoherent_objects(atoms, sorted(set(wanted.values())), settings)
        p = settings.incoherent_exponent
        scale = {t: (settings.incoherent_thickness / t) ** (p - 1) for t in objects}
        # conditions without a thickness keep the legacy normalisation of the whole structure
        for i, c in conditions:
            if c.thickness is None:
                wanted[i] = ("legacy", total)
        if any(isinstance(v, tuple) for v in wanted.values()):
            objects[("legacy", total)] = objects[total]
            scale[("legacy", total)] = 1.0
    # the probe passes spatial frequencies below 2 x aperture / wavelength only, so the object
    # is band-limited first to a grid at least 4x finer than that (saves most of the FFT work)
    kmax = max(2 * c.semiangle * 1e-3 / c.wavelength for _, c in conditions)
    target = min(1.0 / (4 * kmax), min(c.sampling for _, c in conditions) / 2)
    spectra = {}
    for t, obj in objects.items():
        cropped, sampling = fourier_crop(obj, potential.sampling, target)
        spectra[t] = np.fft.fft2(cropped) * scale[t]
    shape_obj = cropped.shape
    extent = (shape_obj[0] * sampling[0], shape_obj[1] * sampling[1])
    out = {}
    probes: dict[tuple, np.ndarray] = {}
    for i, c in conditions:
        pk = (c.energy, c.semiangle, c.defocus, c.cs)
        if pk not in probes:
            probe = abtem.Probe(
                energy=c.energy,
                semiangle_cutoff=c.semiangle,
                defocus=c.defocus,
                Cs=c.cs,
                extent=extent,
                gpts=shape_obj,
                device="cpu",
            )
            intensity = _asnumpy(probe.build(scan=(0.0, 0.0)).intensity().compute(progress_bar=False).array)
            probes[pk] = np.fft.fft2(intensity / intensity.sum())
        # probe convolution, output band limit and source blur in one pass through Fourier space
        filt = _fourier_filter(shape_obj, sampling, 0.5 / c.sampling, c.source_size)
        image = np.fft.ifft2(spectra[wanted[i]] * probes[pk] * filt).real * settings.incoherent_scale
        out[i] = to_canonical(image, sampling, shape, c.sampling, prefiltered=True)
    return out


def _incoherent_objects(
    atoms: Atoms, thicknesses, settings: SimulationSettings
) -> tuple[dict[float | tuple[str, float], np.ndarray], Any]:
    """Thermal average of (projected potential)^p of the first t Å of ``atoms`` for every t in
    ``thicknesses`` [Å] (sorted): one potential whose slices end at those depths, projected slice
    by slice and accumulated (the infinite projection is additive), one frozen-phonon
    configuration at a time."""
    total = float(atoms.cell[2, 2])
    bounds = [t for t in thicknesses if t > 1e-6]
    widths = np.diff([0.0] + bounds + ([total] if bounds[-1] < total - 1e-6 else []))
    objects: dict[float | tuple[str, float], Any] = {t: 0.0 for t in bounds}  # sums of arrays
    n = 0
    potential = None
    for config in _phonon_configurations(atoms, settings):
        potential = _potential(config, replace(settings, frozen_phonons=1), slices=tuple(float(w) for w in widths))
        projected = 0.0
        for k, sl in enumerate(potential.generate_slices()):
            projected = projected + _asnumpy(sl.array).sum(0)
            if k < len(bounds):
                objects[bounds[k]] = objects[bounds[k]] + np.maximum(projected, 0) ** settings.incoherent_exponent
        n += 1
    return {t: v / n for t, v in objects.items()}, potential


def _scan_sampling(c: ImagingConditions, settings: SimulationSettings) -> float:
    nyquist = c.wavelength / (4 * c.semiangle * 1e-3)
    return min(nyquist / settings.scan_oversampling, nyquist)


def memory_limit_bytes(settings: SimulationSettings) -> int:
    """The working-set limit of one expensive pass [bytes] (see ``SimulationSettings.memory_limit``)."""
    if settings.memory_limit is not None:
        return int(settings.memory_limit * 2**30)
    if settings.device == "gpu":
        import cupy

        free, _ = cupy.cuda.Device().mem_info
        return int(0.8 * free)
    import psutil

    return int(0.25 * psutil.virtual_memory().available)


def smatrix_bytes(smatrix) -> int:
    """Memory of a built PRISM S-matrix and its reduction [bytes]: the plane waves at the
    downsampled grid (complex64), plus one build batch at the full grid and the potential."""
    n = len(smatrix)
    down = int(np.prod(smatrix.downsampled_gpts))
    full = int(np.prod(smatrix.gpts))
    n_slices = len(smatrix.potential) if smatrix.potential is not None else 1
    return 8 * n * down + 8 * min(n, 32) * full + 4 * n_slices * full


def _integrate(measurement, c: ImagingConditions, extent: tuple[float, float], plane: int | None = None):
    """Radially integrate a flexible annular measurement over the condition's detector (at exit
    plane ``plane`` when the measurement has several); returns the image and its sampling (the
    scan covers the periodic cell without its end point)."""
    m = measurement.integrate_radial(c.inner, c.outer)
    arr = _plane(_asnumpy(m.array), m.ensemble_axes_metadata, plane)
    return arr, (extent[0] / arr.shape[0], extent[1] / arr.shape[1])


def _grid_scan(potential, c: ImagingConditions, settings: SimulationSettings):
    """The probe positions of one image: the periodic cell without its end point, at the Nyquist
    step of probe ``c`` (the widest one when several share the scan)."""
    import abtem

    return abtem.GridScan(
        start=(0, 0),
        end=(1, 1),
        fractional=True,
        endpoint=False,
        sampling=_scan_sampling(c, settings),
        potential=potential,
    )


def _multislice_stem(
    potential, conditions, shape, settings, planes: dict[int, int] | None = None
) -> dict[int, np.ndarray]:
    """One multislice STEM scan per probe with a flexible annular detector, integrated per condition.

    Probe wave functions are propagated in batches sized to the memory limit."""
    import abtem

    c0 = conditions[0][1]
    scan = _grid_scan(potential, c0, settings)
    probe = abtem.Probe(
        energy=c0.energy, semiangle_cutoff=c0.semiangle, defocus=c0.defocus, Cs=c0.cs, device=settings.device
    )
    # a batch holds the waves, propagator/transmission products, their FFTs and the detector's
    # diffraction patterns: ~6 complex copies measured with tracemalloc, 8 with margin
    per_probe = 8 * 8 * int(np.prod(potential.gpts))
    # half the limit for the batch: the rest for the potential, the task graph and the result
    max_batch = int(max(1, min(len(scan), memory_limit_bytes(settings) // (2 * per_probe))))
    detector = abtem.FlexibleAnnularDetector(step_size=1.0)
    if max_batch >= len(scan):  # everything fits: one eager batch
        m = probe.scan(potential, scan=scan, detectors=detector)
    else:  # abTEM honours max_batch only lazily: batches one after the other, in this process
        m = probe.scan(potential, scan=scan, detectors=detector, max_batch=max_batch, lazy=True)
        m = m.compute(progress_bar=False, scheduler="synchronous")
    out = {}
    for i, c in conditions:
        arr, sampling = _integrate(m, c, potential.extent, (planes or {}).get(i))
        out[i] = to_canonical(arr, sampling, shape, c.sampling, c.source_size)
    return out


def _phonon_configurations(atoms: Atoms, settings: SimulationSettings):
    """The frozen-phonon configurations (the static structure when there is one), the same ones
    abTEM's ``FrozenPhonons`` ensemble uses for the multislice and HRTEM modes."""
    if settings.frozen_phonons <= 1:
        yield atoms
        return
    yield from _frozen_phonons(atoms, settings)


def _prism(atoms, conditions, shape, settings) -> dict[int, np.ndarray]:
    """PRISM: one S-matrix per frozen-phonon configuration serves every probe and detector.

    The S-matrix is expanded to the widest convergence angle of the group; each distinct probe
    (convergence angle, defocus, Cs) is one reduction of it, and every detector of that probe is a
    radial integration of one flexible annular measurement. Frozen phonons are built one at a time
    (memory = one S-matrix) and averaged. When the S-matrix would exceed the memory limit, the
    group falls back to batched multislice instead of running out of memory.
    """
    import abtem

    c0 = max((c for _, c in conditions), key=lambda c: c.semiangle)
    by_probe: dict[tuple, list] = defaultdict(list)
    for i, c in conditions:
        by_probe[(c.semiangle, c.defocus, c.cs)].append((i, c))
    # keep the scattering angles the widest detector needs (the detector reaches 2/3 of the
    # downsampled grid's Nyquist angle), not the whole simulated range: less memory per plane wave
    nyquist = 1e3 * c0.wavelength / (2 * settings.potential_sampling)
    downsample = 1.5 * 1.02 * max(c.outer for _, c in conditions)
    downsample = float(downsample) if downsample < nyquist else False
    sums: dict[int, np.ndarray] = {}
    n = 0
    for config in _phonon_configurations(atoms, settings):
        potential = _potential(config, replace(settings, frozen_phonons=1), settings.prism_interpolation).build()
        smatrix = abtem.SMatrix(
            potential=potential,
            energy=c0.energy,
            semiangle_cutoff=c0.semiangle,
            interpolation=settings.prism_interpolation,
            device=settings.device,
            downsample=downsample,
        )
        need, limit = smatrix_bytes(smatrix), memory_limit_bytes(settings)
        if need > limit:
            log.warning(
                "PRISM S-matrix of %.2f GiB exceeds the memory limit of %.2f GiB: falling back to batched multislice "
                "(raise simulate.settings.memory_limit or prism_interpolation to keep PRISM)",
                need / 2**30,
                limit / 2**30,
            )
            return _stem_fallback(atoms, conditions, shape, settings)
        built = smatrix.build(lazy=False)
        scan = _grid_scan(potential, c0, settings)
        window = 4 * 8 * int(np.prod(built.window_gpts))
        max_batch = int(max(1, min(len(scan), (limit - need) // window)))
        for (semiangle, defocus, cs), group in by_probe.items():
            ctf = abtem.CTF(semiangle_cutoff=semiangle, defocus=defocus, Cs=cs, energy=c0.energy)
            m = built.reduce(
                scan=scan,
                ctf=ctf,
                detectors=abtem.FlexibleAnnularDetector(step_size=1.0),
                max_batch_reduction=max_batch,
            )
            for i, c in group:
                arr, _ = _integrate(m, c, potential.extent)
                sums[i] = sums[i] + arr if i in sums else arr.astype(np.float64)
        n += 1
        del built
    out = {}
    for i, c in conditions:
        arr = sums[i] / n
        sampling = (atoms.cell[0, 0] / arr.shape[0], atoms.cell[1, 1] / arr.shape[1])
        out[i] = to_canonical(arr, sampling, shape, c.sampling, c.source_size)
    return out


def truncate(atoms: Atoms, thickness: float) -> Atoms:
    """The first ``thickness`` Å of a structure along the beam (atoms with z below it; the cell
    ends there). The whole structure when ``thickness`` reaches its cell."""
    total = float(atoms.cell[2, 2])
    if thickness >= total - 1e-6:
        return atoms
    z = atoms.get_positions(wrap=True)[:, 2]
    part = atoms[z < thickness]
    if len(part) == 0:
        raise SimulationError(f"no atom in the first {thickness:.1f} Å of the structure: draw thicker samples")
    part.set_cell(np.diag([atoms.cell[0, 0], atoms.cell[1, 1], thickness]))
    part.pbc = [True, True, False]  # a slab: its surfaces do not meet across the cell
    return part


def _by_thickness(atoms: Atoms, conditions):
    """(structure truncated at a thickness, its conditions) for every thickness the conditions ask for."""
    total = float(atoms.cell[2, 2])
    groups: dict[float, list] = defaultdict(list)
    for i, c in conditions:
        groups[round(_effective_thickness(c, total), 2)].append((i, c))
    for t, sub in sorted(groups.items()):
        yield truncate(atoms, t), sub


def _stem_fallback(atoms, conditions, shape, settings) -> dict[int, np.ndarray]:
    """Batched multislice for PRISM conditions whose S-matrix does not fit: one scan per probe."""
    potential = _potential(atoms, settings).build()
    groups: dict[tuple, list] = defaultdict(list)
    for i, c in conditions:
        groups[c.replace(method="multislice").probe_key()].append((i, c))
    out = {}
    for group in groups.values():
        out.update(_multislice_stem(potential, group, shape, settings))
    return out


def _hrtem(potential, conditions, shape, settings, planes: dict[int, int] | None = None) -> dict[int, np.ndarray]:
    """One plane-wave exit wave per structure and energy; a CTF (with partial coherence) per condition."""
    import abtem

    c0 = conditions[0][1]
    exit_waves = abtem.PlaneWave(energy=c0.energy, device=settings.device).multislice(potential)
    exit_waves = exit_waves.compute(progress_bar=False)
    # keep the angles the widest objective aperture passes, on a grid fine enough for |psi|^2
    # (twice that frequency) with 2x margin for interpolation
    widest = max(c.semiangle for _, c in conditions)
    canonical = 1e3 * c0.wavelength / (2 * min(c.sampling for _, c in conditions))
    max_angle = max(4 * widest, 2 * canonical)
    if max_angle < min(exit_waves.cutoff_angles):
        exit_waves = exit_waves.downsample(max_angle=max_angle)
    all_waves = exit_waves
    names = [type(a).__name__ for a in all_waves.ensemble_axes_metadata]
    at_plane: dict = {}

    def waves_at(position):
        """The exit waves at one exit plane (all of them when the potential has one)."""
        if position is None or "ThicknessAxis" not in names:
            return all_waves
        if position not in at_plane:
            at_plane[position] = all_waves[(slice(None),) * names.index("ThicknessAxis") + (position,)]
        return at_plane[position]

    out = {}
    for i, c in conditions:
        exit_waves = waves_at((planes or {}).get(i))
        ctf = abtem.CTF(
            semiangle_cutoff=c.semiangle, defocus=c.defocus, Cs=c.cs, focal_spread=c.focal_spread, energy=c.energy
        )
        if c.focal_spread > 0:
            # partial temporal coherence as an incoherent focal series (quasi-coherent envelope
            # applies only to linear imaging; this is exact for thick specimens)
            n = 5
            offsets = np.linspace(-2, 2, n) * c.focal_spread
            weights = np.exp(-0.5 * (offsets / c.focal_spread) ** 2)
            weights /= weights.sum()
            arr: Any = 0.0  # the weighted sum of the focal series
            for w, dz in zip(weights, offsets):
                ctf_dz = abtem.CTF(semiangle_cutoff=c.semiangle, defocus=c.defocus + dz, Cs=c.cs, energy=c.energy)
                arr = arr + w * _asnumpy(
                    exit_waves.apply_transform(ctf_dz).intensity().compute(progress_bar=False).array
                )
        else:
            arr = _asnumpy(exit_waves.apply_transform(ctf).intensity().compute(progress_bar=False).array)
        while arr.ndim > 2:
            arr = arr.mean(0)
        out[i] = to_canonical(arr, exit_waves.sampling, shape, c.sampling, c.source_size)
    return out


def render(
    atoms: Atoms,
    conditions: Sequence[ImagingConditions],
    shape: tuple[int, int] = (128, 128),
    settings: SimulationSettings | None = None,
    noise: bool = True,
) -> np.ndarray:
    """Simulate ``atoms`` under every condition.

    The potential is built once; conditions that share a probe share one STEM scan (all detectors
    and source sizes from one flexible annular detector) or one HRTEM exit wave (all CTFs); the
    incoherent mode shares one projected potential. Noise (dose) is applied last, seeded by the
    condition's seed.

    Parameters
    ----------
    atoms
        Structure with the beam along z and an orthogonal cell at least as large as the field of view.
    conditions
        Imaging conditions; all must share the canonical sampling.
    shape
        Output image shape (rows, cols) [px].
    settings
        Numerical settings; defaults to :class:`SimulationSettings`.
    noise
        Apply the dose noise of each condition.

    Returns
    -------
    numpy.ndarray
        ``(len(conditions), *shape)`` float32 images: fraction of the beam on the detector (STEM) or
        of the incident intensity (HRTEM), with Poisson noise when a dose is given.
    """
    settings = settings or SimulationSettings()
    conditions = list(conditions)
    if not conditions:
        return np.zeros((0, *shape), np.float32)
    if len(atoms) == 0:
        raise SimulationError("cannot simulate an empty structure: check the structure builder's output")
    cell = atoms.cell.array
    if not np.allclose(cell, np.diag(np.diag(cell)), atol=1e-6):
        raise SimulationError("structure cell is not orthogonal: build it with surrogate.structures (beam along z)")
    _check(conditions, settings)
    from surrogate.structures.crystals import check_overlaps

    try:
        check_overlaps(atoms)
    except SurrogateError as exc:
        raise SimulationError(str(exc)) from None
    import abtem

    groups: dict[tuple, list] = defaultdict(list)
    for i, c in enumerate(conditions):
        groups[c.probe_key()].append((i, c))
    images: dict[int, np.ndarray] = {}
    # eager abTEM: parallelism is across structures (library workers), not inside one
    # one potential serves every multislice and HRTEM condition, with an exit plane per thickness
    exit_planes, plane_of = _exit_planes(
        atoms, settings, [(i, c) for i, c in enumerate(conditions) if c.method == "multislice"]
    )
    with abtem.config.set({"dask.lazy": False, "device": settings.device, "fft": settings.fft}):
        potential = None
        for key, group in groups.items():
            if key[0] == "incoherent":
                images.update(_incoherent(atoms, group, shape, settings))
                continue
            if key[0] == "prism":  # one S-matrix per thickness (PRISM has no intermediate exit planes)
                for part, sub in _by_thickness(atoms, group):
                    images.update(_prism(part, sub, shape, settings))
                continue
            if potential is None:
                potential = _potential(atoms, settings, exit_planes=exit_planes).build()
            if key[0] == "hrtem":
                images.update(_hrtem(potential, group, shape, settings, plane_of))
            else:
                images.update(_multislice_stem(potential, group, shape, settings, plane_of))
    out = np.stack([images[i] for i in range(len(conditions))]).astype(np.float32)
    if noise:
        for i, c in enumerate(conditions):
            if c.dose is not None:
                out[i] = apply_dose(out[i], c.dose, c.sampling, seed=c.seed, mode=c.mode)
    if not np.isfinite(out).all():
        raise SimulationError("simulation produced non-finite values: check the structure for overlapping atoms")
    return out
