"""Simulation throughput and fidelity: each mode vs abTEM's default multislice HAADF.

Structure: CdTe [110], ~5 nm thick (11 periods of 4.58 Å), rendered at 0.2 Å/px, 200 kV,
20 mrad probe, HAADF 70-180 mrad. Two fields:

- ``cell``: a 9.2 x 13.0 Å periodic patch (46 x 65 px). Every mode, including the reference abTEM
  default multislice (probe scanned at 0.2 Å, the library's pixel), is computed in full, so images/s
  and SSIM to multislice are measured, not extrapolated.
- ``field``: a 2.0 x 2.0 nm field (100 x 100 px). The fast modes are measured in full; abTEM's
  default multislice is timed on 40 scan positions and scaled to the 10^4 positions of the image
  (reported as such: a full image would take hours on 2 cores).

Usage: ``python benchmarks/simulation.py [--part modes|shared|library|all] [--quick] [--out benchmarks/results]``.

- ``modes`` (above) writes ``simulation.json`` / ``simulation.md``.
- ``shared`` (issue 9): K images of one structure from one expensive pass (PRISM S-matrix for all
  probes and detectors, one exit wave for all CTFs, one projection for all incoherent images,
  frozen phonons amortised) against abTEM's per-image multislice and PRISM on the same structure and
  conditions in the same run, with SSIM and RMS difference to multislice; a profile of where the
  time goes. Writes ``simulation_shared.json`` / ``.md``.
- ``large``: ``library=large`` (>= 10^5 images): a stratified sample of its work units timed in
  process and a partial resumable build for a fixed time, extrapolated. Writes ``library_large.json`` / ``.md``
  (not part of ``all``: run it on its own).
- ``thick``: the incoherent mode against PRISM with frozen phonons per thickness (1 - R², SSIM,
  signal ratio). Writes ``simulation_thickness.json`` / ``.md`` (not part of ``all``).
- ``library``: images/s of a fresh demo-library build (2 worker processes), with the per-image
  multislice cost of one of its structures measured on a band of scan positions in the same run.
  Writes ``simulation_library.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from common import write_results


def ssim(a, b):
    from skimage.metrics import structural_similarity

    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return float(structural_similarity(a, b, data_range=float(np.ptp(b))))


def abtem_default_haadf(atoms, sampling, potential_sampling, region=None):
    """abTEM's documented HAADF recipe: Potential -> Probe.scan(GridScan at the pixel size) -> AnnularDetector."""
    import abtem

    potential = abtem.Potential(
        atoms, sampling=potential_sampling, slice_thickness=2.0, projection="infinite", parametrization="lobato"
    )
    probe = abtem.Probe(energy=200e3, semiangle_cutoff=20)
    if region is None:
        scan = abtem.GridScan(
            start=(0, 0), end=(1, 1), fractional=True, endpoint=False, sampling=sampling, potential=potential
        )
    else:
        scan = abtem.GridScan(start=region[0], end=region[1], sampling=sampling, endpoint=False)
    detector = abtem.AnnularDetector(inner=70, outer=180)
    t = time.perf_counter()
    m = probe.scan(potential, scan=scan, detectors=detector).compute(progress_bar=False)
    return np.asarray(m.array), time.perf_counter() - t, int(np.prod(scan.shape))


def timed_render(atoms, conditions, shape, settings):
    from surrogate.simulate import render

    t = time.perf_counter()
    images = render(atoms, conditions, shape, settings)
    return images, time.perf_counter() - t


def rms(a, b):
    """RMS difference relative to the RMS of the reference."""
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def part_modes(args):
    from surrogate.simulate import ImagingConditions as C
    from surrogate.simulate import SimulationSettings
    from surrogate.structures import crystal, zone_axis_slab

    thickness = 20.0 if args.quick else 50.0
    k = 4 if args.quick else args.k
    unit = crystal("CdTe")
    settings = SimulationSettings(potential_sampling=0.04)
    rows, results = [], {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    rng = np.random.default_rng(0)

    # --- periodic patch: everything measured in full -------------------------------------------
    cell = zone_axis_slab(unit, (1, 1, 0), fov=(9.0, 12.9), thickness=thickness)
    shape = (int(cell.cell[1, 1] / 0.2), int(cell.cell[0, 0] / 0.2))
    ref_raw, t_ref, n_pos = abtem_default_haadf(cell, 0.2, 0.04)
    print(f"cell: abTEM default multislice {t_ref:.1f} s for {n_pos} positions", flush=True)
    from surrogate.simulate import to_canonical

    ref = to_canonical(ref_raw, (cell.cell[0, 0] / ref_raw.shape[0], cell.cell[1, 1] / ref_raw.shape[1]), shape, 0.2)
    results["cell"] = {
        "n_atoms": len(cell),
        "extent": np.diag(cell.cell).round(2).tolist(),
        "shape": shape,
        "abtem_default_s": t_ref,
        "positions": n_pos,
    }
    rows.append(("cell", "abTEM default multislice HAADF (reference)", 1, t_ref, 1 / t_ref, 1.0, 1.0))
    base = dict(energy=200e3, semiangle=20, inner=70, outer=180)
    modes = [
        (
            "multislice HAADF+ABF+BF, Nyquist scan (1 scan -> 3 images)",
            [
                C(method="multislice", **base),
                C(mode="abf", method="multislice", energy=200e3, semiangle=20, inner=10, outer=20),
                C(mode="bf", method="multislice", energy=200e3, semiangle=20, inner=0, outer=10),
            ],
            settings,
        ),
        ("PRISM HAADF, interpolation 1", [C(method="prism", **base)], settings),
        (
            "PRISM HAADF, interpolation 2",
            [C(method="prism", **base)],
            SimulationSettings(potential_sampling=0.04, prism_interpolation=2),
        ),
        (
            f"incoherent HAADF, {k} conditions/structure",
            [C(method="incoherent", defocus=float(d), **base) for d in rng.uniform(-20, 20, k)],
            settings,
        ),
        (
            f"HRTEM (1 exit wave, {k} CTFs)",
            [
                C(mode="hrtem", method="multislice", energy=200e3, semiangle=20, defocus=float(d))
                for d in rng.uniform(-100, 100, k)
            ],
            settings,
        ),
    ]
    for name, conds, s in modes:
        images, t = timed_render(cell, conds, shape, s)
        haadf = [i for i, c in enumerate(conds) if c.mode == "haadf"]
        score = ssim(images[haadf[0]], ref) if haadf and conds[haadf[0]].defocus == 0 else None
        if "incoherent" in name:  # compare the in-focus image
            inc, _ = timed_render(cell, [C(method="incoherent", **base)], shape, s)
            score = ssim(inc[0], ref)
        rate = len(conds) / t
        rows.append(("cell", name, len(conds), t, rate, rate * t_ref, score))
        print(f"cell: {name}: {t:.1f} s", flush=True)
    # --- 2 nm field ------------------------------------------------------------------------------
    field = zone_axis_slab(unit, (1, 1, 0), fov=(20.0, 20.0), thickness=thickness)
    fshape = (100, 100)
    band = ((0.0, 0.0), (40 * 0.2, 0.2))  # 40 positions of one scan row (abTEM needs ~1 s each here)
    _, t_band, n_band = abtem_default_haadf(field, 0.2, 0.04, region=band)
    t_ref_field = t_band / n_band * (fshape[0] * fshape[1])
    results["field"] = {
        "n_atoms": len(field),
        "extent": np.diag(field.cell).round(2).tolist(),
        "abtem_default_band_s": t_band,
        "band_positions": n_band,
        "abtem_default_s_extrapolated": t_ref_field,
    }
    rows.append(
        (
            "field",
            f"abTEM default multislice HAADF (from {n_band} positions, x{fshape[0] * fshape[1] / n_band:.0f})",
            1,
            t_ref_field,
            1 / t_ref_field,
            1.0,
            1.0,
        )
    )
    for name, conds, s in modes[3:]:
        images, t = timed_render(field, conds, fshape, s)
        rate = len(conds) / t
        print(f"field: {name}: {t:.1f} s", flush=True)
        rows.append(("field", name, len(conds), t, rate, rate * t_ref_field, None))
    results["rows"] = [
        dict(zip(("field", "mode", "images", "seconds", "images_per_s", "speedup", "ssim"), r)) for r in rows
    ]
    md = [
        f"# Simulation benchmark (CdTe [110], {thickness:.0f} Å thick, 0.2 Å/px, 200 kV, 20 mrad, HAADF 70-180 mrad)",
        "",
        f"Machine: {os.cpu_count()} CPU cores; `python benchmarks/simulation.py{' --quick' if args.quick else ''}`.",
        "",
        "| field | mode | images | seconds | images/s | speed-up vs abTEM multislice | SSIM to multislice |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for f, name, n, t, rate, sp, sc in rows:
        md.append(f"| {f} | {name} | {n} | {t:.2f} | {rate:.3g} | {sp:.3g}x | {'' if sc is None else f'{sc:.3f}'} |")
    _write(Path(args.out) / "simulation", results, md)


def abtem_per_image(atoms, c, settings, scan_sampling, shape, method):
    """abTEM's documented per-image recipe for one condition: its own potential, its own probe
    (multislice) or S-matrix (PRISM), one annular detector; resampled like ours."""
    import abtem

    from surrogate.simulate import to_canonical

    t = time.perf_counter()
    with abtem.config.set({"dask.lazy": False}):
        potential = abtem.Potential(
            atoms,
            sampling=settings.potential_sampling,
            slice_thickness=settings.slice_thickness,
            projection="infinite",
            parametrization="lobato",
        ).build()
        scan = abtem.GridScan(
            start=(0, 0), end=(1, 1), fractional=True, endpoint=False, sampling=scan_sampling, potential=potential
        )
        detector = abtem.AnnularDetector(c.inner, c.outer)
        if method == "multislice":
            probe = abtem.Probe(energy=c.energy, semiangle_cutoff=c.semiangle, defocus=c.defocus, Cs=c.cs)
            m = probe.scan(potential, scan=scan, detectors=detector)
        else:
            smatrix = abtem.SMatrix(
                potential=potential, energy=c.energy, semiangle_cutoff=c.semiangle, interpolation=method
            )
            ctf = abtem.CTF(semiangle_cutoff=c.semiangle, defocus=c.defocus, Cs=c.cs, energy=c.energy)
            m = smatrix.scan(scan=scan, detectors=detector, ctf=ctf)
        arr = np.asarray(m.array)
    image = to_canonical(arr, (atoms.cell[0, 0] / arr.shape[0], atoms.cell[1, 1] / arr.shape[1]), shape, c.sampling)
    return image, time.perf_counter() - t


def part_shared(args):
    """K images of one structure from one expensive pass vs abTEM per image."""
    import cProfile
    import io
    import pstats
    from dataclasses import replace

    from surrogate.simulate import ImagingConditions as C
    from surrogate.simulate import SimulationSettings, render
    from surrogate.simulate.images import _scan_sampling
    from surrogate.structures import crystal, zone_axis_slab

    thickness = 20.0 if args.quick else 40.0
    n_probes = 2 if args.quick else 6
    cell = zone_axis_slab(crystal("CdTe"), (1, 1, 0), fov=(9.0, 12.9), thickness=thickness)
    shape = (int(cell.cell[1, 1] / 0.2), int(cell.cell[0, 0] / 0.2))
    rng = np.random.default_rng(1)
    probes = [
        (float(a), float(d))
        for a, d in zip(rng.choice([18.0, 20.0, 22.0, 25.0], n_probes), rng.uniform(-40, 40, n_probes))
    ]
    probes[0] = (25.0, 0.0)  # the widest probe in focus: compared with multislice
    detectors = [("haadf", 70, 180), ("abf", 11, 22), ("bf", 0, 10)]
    stem = [
        C(mode=m, method="prism", energy=200e3, semiangle=a, defocus=d, inner=i, outer=o)
        for a, d in probes
        for m, i, o in detectors
    ]
    k = len(stem)
    base = SimulationSettings(potential_sampling=0.04)
    scan_sampling = _scan_sampling(stem[0], base)
    compare = [0, 3]  # HAADF of the first two probes
    print(f"shared: {len(cell)} atoms, {k} STEM conditions ({n_probes} probes x 3 detectors)", flush=True)
    refs, t_ms = {}, []
    for j in compare:
        refs[j], t = abtem_per_image(cell, stem[j], base, scan_sampling, shape, "multislice")
        t_ms.append(t)
    t_ms = float(np.mean(t_ms))
    rows = [("abTEM per-image multislice (reference)", "1 scan per image", 1, t_ms, 1 / t_ms, 1.0, 1.0, 0.0)]
    t_pp = []
    for j in compare:
        img, t = abtem_per_image(cell, stem[j], base, scan_sampling, shape, 2)
        t_pp.append(t)
    t_pp = float(np.mean(t_pp))
    rows.append(
        (
            "abTEM per-image PRISM, interpolation 2",
            "1 S-matrix per image",
            1,
            t_pp,
            1 / t_pp,
            t_ms / t_pp,
            ssim(img, refs[compare[-1]]),
            rms(img, refs[compare[-1]]),
        )
    )

    def ours(name, how, conds, settings, ref_index):
        images, t = timed_render(cell, conds, shape, settings)
        rate = len(conds) / t
        scores = [ssim(images[j], refs[j]) for j in ref_index]
        diffs = [rms(images[j], refs[j]) for j in ref_index]
        rows.append(
            (
                name,
                how,
                len(conds),
                t,
                rate,
                rate * t_ms,
                float(np.mean(scores)) if scores else None,
                float(np.mean(diffs)) if diffs else None,
            )
        )
        print(f"shared: {name}: {t:.1f} s for {len(conds)}", flush=True)
        return images

    ours(
        "ours: PRISM, interpolation 1",
        "1 S-matrix -> all probes x detectors",
        stem,
        replace(base, prism_interpolation=1),
        compare,
    )
    ours(
        "ours: PRISM, interpolation 2",
        "1 S-matrix -> all probes x detectors",
        stem,
        replace(base, prism_interpolation=2),
        compare,
    )
    haadf = [c.replace(method="incoherent") for c in stem if c.mode == "haadf"]
    inc = [haadf[i % len(haadf)].replace(source_size=float(s), seed=i) for i, s in enumerate(rng.uniform(0, 0.6, k))]
    inc[0], inc[1] = haadf[0], haadf[1]
    ref_map = {0: 0, 1: 3}
    images, t = timed_render(cell, inc, shape, base)
    rows.append(
        (
            "ours: incoherent HAADF",
            "1 projection -> all probes",
            k,
            t,
            k / t,
            k / t * t_ms,
            float(np.mean([ssim(images[i], refs[j]) for i, j in ref_map.items()])),
            float(np.mean([rms(images[i], refs[j]) for i, j in ref_map.items()])),
        )
    )
    hr = [
        C(mode="hrtem", method="multislice", energy=200e3, semiangle=20, defocus=float(d), cs=float(cs))
        for d, cs in zip(rng.uniform(-150, 150, k), rng.uniform(-1.5e5, 1.5e5, k))
    ]
    images, t = timed_render(cell, hr, shape, base)
    rows.append(("ours: HRTEM", "1 exit wave -> all CTFs", k, t, k / t, k / t * t_ms, None, None))
    # frozen phonons: 4 configurations, each one S-matrix shared by every condition
    fp = replace(base, prism_interpolation=2, frozen_phonons=4, sigma={"default": 0.08, "Cd": 0.11, "Te": 0.09})
    images, t = timed_render(cell, stem, shape, fp)
    rows.append(
        (
            "ours: PRISM interp. 2, 4 frozen phonons",
            "4 S-matrices -> all probes x detectors",
            k,
            t,
            k / t,
            k / t * 4 * t_ms,
            None,
            None,
        )
    )
    # where the time goes: the shared PRISM pass
    prof = cProfile.Profile()
    prof.enable()
    render(cell, stem, shape, replace(base, prism_interpolation=2))
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
    profile = [ln for ln in buf.getvalue().splitlines() if ln.strip()][-9:]

    results = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "structure": {
            "n_atoms": len(cell),
            "extent": np.diag(cell.cell).round(2).tolist(),
            "shape": shape,
            "probes": probes,
            "detectors": detectors,
            "scan_sampling": scan_sampling,
        },
        "rows": [
            dict(
                zip(
                    (
                        "mode",
                        "shared_pass",
                        "images",
                        "seconds",
                        "images_per_s",
                        "speedup_vs_multislice",
                        "ssim_to_multislice",
                        "rms_to_multislice",
                    ),
                    r,
                )
            )
            for r in rows
        ],
        "profile_prism_interp2": profile,
    }
    md = [
        f"# One expensive pass per structure (CdTe [110], {len(cell)} atoms, {thickness:.0f} Å thick, "
        f"{cell.cell[0, 0]:.1f} x {cell.cell[1, 1]:.1f} Å, 0.2 Å/px, 200 kV)",
        "",
        f"Machine: {os.cpu_count()} CPU cores (one also running a niced DFT job); "
        f"`python benchmarks/simulation.py --part shared{' --quick' if args.quick else ''}`. "
        f"{n_probes} probes (convergence 18-25 mrad, defocus -40..40 Å) x 3 detectors (HAADF 70-180, ABF 11-22, "
        "BF 0-10 mrad) = the STEM conditions of one structure. abTEM per-image rows: its documented recipe for "
        "one image (own potential, own probe or S-matrix, one annular detector), timed on the in-focus HAADF "
        "images, which are also the SSIM/RMS references. Speed-up = images/s relative to abTEM per-image "
        "multislice (x4 for the frozen-phonon row, whose multislice reference would need 4 passes).",
        "",
        "| mode | shared pass | images | seconds | images/s | speed-up vs abTEM multislice | SSIM to multislice | RMS diff. |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, how, n, t, rate, sp, sc, d in rows:
        md.append(
            f"| {name} | {how} | {n} | {t:.2f} | {rate:.3g} | {sp:.3g}x | "
            f"{'' if sc is None else f'{sc:.3f}'} | {'' if d is None else f'{100 * d:.1f}%'} |"
        )
    md += [
        "",
        "Profile of the shared PRISM pass (interpolation 2), top functions by own time:",
        "",
        "```",
        *profile,
        "```",
    ]
    _write(Path(args.out) / "simulation_shared", results, md)


def part_library(args):
    """Fresh demo-library build: images/s, vs abTEM per-image multislice of one of its structures."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from hydra import compose, initialize_config_module

    from surrogate.library.build import _settings, build_structure, unit_conditions
    from surrogate.structures.recipes import plan_structures

    overrides = ["library.n_workers=2", "progress=false", "library.contact_sheet=false"]
    if args.quick:
        overrides += ["library.images_per_structure=8", "structures.thicknesses=[20.0]"]
    elif args.library_k:
        overrides += [f"library.images_per_structure={args.library_k}"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_lib_"))
    cmd = [
        sys.executable,
        "-m",
        "surrogate.library",
        f"library.output_dir={tmp / 'lib'}",
        *overrides,
        f"hydra.run.dir={tmp / 'run'}",
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    elapsed = time.perf_counter() - t
    manifest = json.loads((tmp / "lib" / "manifest.json").read_text())
    n_images = manifest["counts"]["images"]
    # abTEM per-image multislice for the first structure and its first HAADF condition, timed on a
    # band of scan positions and scaled to the image (a full image takes hours on 2 cores)
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        cfg = compose(config_name="build_library", overrides=overrides)
    recipes = plan_structures(cfg.structures)
    atoms = build_structure(recipes[0])
    conds = unit_conditions(
        cfg.simulate, 0, int(cfg.library.images_per_structure), float(cfg.library.sampling), int(cfg.seed)
    )
    c = next(c for c in conds if c.mode == "haadf")
    settings = _settings(cfg.simulate)
    import abtem

    potential = abtem.Potential(
        atoms,
        sampling=settings.potential_sampling,
        slice_thickness=settings.slice_thickness,
        projection="infinite",
        parametrization="lobato",
    )
    probe = abtem.Probe(energy=c.energy, semiangle_cutoff=c.semiangle, defocus=c.defocus)
    step = float(cfg.library.sampling)
    n_band = 10 if args.quick else 20
    scan = abtem.GridScan(start=(0.0, 0.0), end=(n_band * step, step), sampling=step, endpoint=False)
    t = time.perf_counter()
    probe.scan(potential, scan=scan, detectors=abtem.AnnularDetector(c.inner, c.outer)).compute(progress_bar=False)
    t_band = time.perf_counter() - t
    h, w = cfg.library.shape
    t_ms = t_band / len(scan) * (h * w)
    shutil.rmtree(tmp, ignore_errors=True)
    rate = n_images / elapsed
    res = {
        "images": n_images,
        "structures": manifest["counts"]["structures"],
        "seconds": elapsed,
        "images_per_s": rate,
        "per_mode_images": manifest["counts"]["per_mode_images"],
        "abtem_multislice_image_s_extrapolated": t_ms,
        "abtem_band_positions": len(scan),
        "abtem_band_s": t_band,
        "n_atoms_first": len(atoms),
        "speedup": rate * t_ms,
        "overrides": overrides,
        "hours_for_10k_images": 1e4 / rate / 3600,
    }
    name = f"simulation_library_k{args.library_k}" if args.library_k else "simulation_library"
    md = [
        "# Library build throughput (demo library config, fresh build)",
        "",
        f"Machine: {os.cpu_count()} CPU cores, 2 worker processes, load average {os.getloadavg()[0]:.1f} at the end; "
        f"`python benchmarks/simulation.py --part library{' --quick' if args.quick else ''}`.",
        "",
        f"Overrides: `{' '.join(overrides)}`.",
        "",
        "| library | images | structures | seconds | images/s | abTEM per-image multislice [s/image] | speed-up | 10,000 images |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| demo ({', '.join(f'{k} {v}' for k, v in res['per_mode_images'].items())}) | {n_images} | "
        f"{res['structures']} | {elapsed:.0f} | {rate:.3g} | {t_ms:.0f} (from {len(scan)} positions) | {res['speedup']:.3g}x | "
        f"{res['hours_for_10k_images']:.2f} h (at this rate) |",
    ]
    _write(Path(args.out) / name, res, md)


def part_thick(args):
    """The fast incoherent mode against PRISM (frozen phonons) on thick samples, per thickness:
    1 - R² of the best linear map of the incoherent image onto PRISM's, SSIM of the standardised
    images, and the ratio of their mean signals (the incoherent scale's drift with thickness)."""
    from surrogate.simulate import ImagingConditions as C
    from surrogate.simulate import SimulationSettings, render
    from surrogate.structures import crystal, zone_axis_slab

    thicknesses = [20.0, 60.0] if args.quick else [20.0, 50.0, 100.0, 150.0]
    rows = []
    for material in args.thick_materials.split(","):
        slab = zone_axis_slab(crystal(material), (1, 1, 0), fov=(9.0, 12.9), thickness=max(thicknesses))
        shape = (int(slab.cell[1, 1] / 0.2), int(slab.cell[0, 0] / 0.2))
        settings = SimulationSettings(
            potential_sampling=0.05,
            frozen_phonons=args.thick_phonons,
            prism_interpolation=2,
            sigma={"default": 0.08, "Cd": 0.11, "Te": 0.09, "Si": 0.075},
        )
        base = C(mode="haadf", energy=300e3, semiangle=24.0, inner=60.0, outer=130.0, sampling=0.2, source_size=0.3)
        for t in thicknesses:
            t0 = time.perf_counter()
            prism = render(slab, [base.replace(method="prism", thickness=t)], shape, settings)[0].astype(np.float64)
            t_prism = time.perf_counter() - t0
            t0 = time.perf_counter()
            inc = render(slab, [base.replace(method="incoherent", thickness=t)], shape, settings)[0].astype(np.float64)
            t_inc = time.perf_counter() - t0
            A = np.stack([inc.ravel(), np.ones(inc.size)], 1)
            coef, *_ = np.linalg.lstsq(A, prism.ravel(), rcond=None)
            fit = A @ coef
            r2 = 1 - np.sum((prism.ravel() - fit) ** 2) / np.sum((prism.ravel() - prism.mean()) ** 2)
            row = {
                "material": material,
                "thickness": t,
                "one_minus_r2": float(1 - r2),
                "ssim": ssim(inc, prism),
                "mean_ratio_incoherent_over_prism": float(inc.mean() / prism.mean()),
                "prism_s": t_prism,
                "incoherent_s": t_inc,
            }
            rows.append(row)
            print(row, flush=True)
    res = {
        "rows": rows,
        "settings": {
            "energy": 300e3,
            "semiangle": 24.0,
            "detector": [60.0, 130.0],
            "frozen_phonons": args.thick_phonons,
            "prism_interpolation": 2,
            "potential_sampling": 0.05,
            "cell": "9.0 x 12.9 Å [110] patch",
        },
    }
    md = [
        "# Incoherent HAADF vs PRISM (frozen phonons) by thickness",
        "",
        f"`python benchmarks/simulation.py --part thick --thick-materials {args.thick_materials} --thick-phonons {args.thick_phonons}"
        f"{' --quick' if args.quick else ''}`; [110] patch 9.0 x 12.9 Å, "
        "300 kV, 24 mrad, HAADF 60-130 mrad (potential sampling 0.05 Å), source 0.3 Å, PRISM interpolation 2 with "
        f"{args.thick_phonons} frozen phonons; the incoherent image is mapped linearly onto PRISM's (scale, offset) "
        "before 1 - R²; Combs et al. 2019 report 1 - R² 0.010-0.015 for a learned correction of the convolution image.",
        "",
        "| material | thickness [Å] | 1 - R² | SSIM | mean incoherent / PRISM | PRISM [s] | incoherent [s] |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['material']} | {r['thickness']:.0f} | {r['one_minus_r2']:.3f} | {r['ssim']:.3f} | "
        f"{r['mean_ratio_incoherent_over_prism']:.2f} | {r['prism_s']:.0f} | {r['incoherent_s']:.1f} |"
        for r in rows
    ]
    _write(Path(args.out) / "simulation_thickness", res, md)


def part_large(args):
    """library=large build rate on this machine: a stratified sample of its work units timed in
    process (one core), then a partial resumable build (2 worker processes) for a fixed time, both
    extrapolated to the whole library."""
    import signal
    import subprocess
    import sys

    from hydra import compose, initialize_config_module

    from surrogate.library.build import _settings, unit_conditions
    from surrogate.simulate import render
    from surrogate.structures.labels import labels_of
    from surrogate.structures.recipes import build_structure, plan_structures

    overrides = ["structures=large", "simulate=thick", "library=large"]
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        cfg = compose(config_name="build_library", overrides=overrides)
    recipes = plan_structures(cfg.structures)
    k = int(cfg.library.images_per_structure)
    n_images = len(recipes) * k
    shape = tuple(cfg.library.shape)
    units = np.linspace(0, len(recipes) - 1, args.large_sample).round().astype(int)
    sample = []
    for u in units:
        t = time.perf_counter()
        atoms = build_structure(recipes[int(u)])
        conds = unit_conditions(cfg.simulate, int(u), k, float(cfg.library.sampling), int(cfg.seed))
        render(atoms, conds, shape, _settings(cfg.simulate))
        lab = labels_of(atoms)
        sample.append(
            {
                "unit": int(u),
                "family": lab.family,
                "boundary": lab.boundary,
                "defect_kind": lab.defect_kind,
                "atoms": len(atoms),
                "cell": [round(float(v), 1) for v in atoms.cell.lengths()],
                "seconds": time.perf_counter() - t,
            }
        )
        print(sample[-1], flush=True)
    per_unit = float(np.mean([s_["seconds"] for s_ in sample]))
    # partial build: a fixed time, then killed (it resumes when rerun)
    root = Path(args.large_dir)
    before = len(list((root / "done").glob("*.done"))) if (root / "done").exists() else 0
    cmd = [
        sys.executable,
        "-m",
        "surrogate.library",
        *overrides,
        f"library.output_dir={root}",
        "progress=false",
        f"hydra.run.dir={root}_run",
    ]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=args.large_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    elapsed = time.perf_counter() - t
    after = len(list((root / "done").glob("*.done")))
    built = (after - before) * k
    rate = built / elapsed if built else float("nan")
    res = {
        "images": n_images,
        "structures": len(recipes),
        "images_per_structure": k,
        "sample_units": sample,
        "sample_s_per_unit_one_core": per_unit,
        "sample_images_per_s_2_cores": 2 * k / per_unit,
        "sample_hours_2_cores": n_images / (2 * k / per_unit) / 3600,
        "partial_build_s": elapsed,
        "partial_build_units": after - before,
        "partial_build_images_per_s": rate,
        "partial_build_hours_extrapolated": n_images / rate / 3600 if built else None,
        "partial_build_dir": str(root),
        "load_average": os.getloadavg()[0],
        "overrides": overrides,
    }
    md = [
        "# library=large build rate (structures=large simulate=thick library=large)",
        "",
        f"Machine: {os.cpu_count()} CPU cores shared with other jobs (load average {res['load_average']:.1f} at the end); "
        f"`python benchmarks/simulation.py --part large --large-seconds {args.large_seconds} --large-sample {args.large_sample}`.",
        "",
        f"{len(recipes)} configurations x {k} conditions = {n_images:,} images, 128 x 128 px at 0.2 Å/px, 200 Å slabs, "
        "each image at its own thickness (20-200 Å); HAADF (incoherent) 60 %, HRTEM 40 %.",
        "",
        "| measurement | images/s | hours for the library |",
        "|---|---:|---:|",
        f"| stratified sample of {len(sample)} units, one core each, x2 cores | {res['sample_images_per_s_2_cores']:.2f} | "
        f"{res['sample_hours_2_cores']:.1f} |",
        f"| partial build, 2 workers, {elapsed:.0f} s, {after - before} units | {rate:.2f} | "
        f"{res['partial_build_hours_extrapolated'] or float('nan'):.1f} |",
        "",
        "| unit | family | boundary | defect | atoms | cell [Å] | s (64 images) |",
        "|---:|---|---|---|---:|---|---:|",
    ]
    md += [
        f"| {x['unit']} | {x['family']} | {x['boundary'] or ''} | {x['defect_kind'] or ''} | {x['atoms']} | "
        f"{' x '.join(str(v) for v in x['cell'])} | {x['seconds']:.1f} |"
        for x in sample
    ]
    _write(Path(args.out) / "library_large", res, md)


def _write(stem: Path, result: dict, md: list[str]) -> None:
    """``<stem>.json`` and ``<stem>.md`` (atomically, :func:`common.write_results`); the table to the console."""
    write_results(stem, result, "\n".join(md))
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--part", choices=["modes", "shared", "library", "large", "thick", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="thinner slab and fewer conditions (smoke run)")
    ap.add_argument("--k", type=int, default=32, help="imaging conditions per structure for the shared-pass modes")
    ap.add_argument(
        "--library-k",
        type=int,
        default=None,
        help="--part library: images per structure (320 -> a 10,240-image build of the 32 demo structures)",
    )
    ap.add_argument(
        "--large-dir", default="/tmp/large_library", help="--part large: where the partial build goes (resumable)"
    )
    ap.add_argument("--large-seconds", type=float, default=480.0, help="--part large: how long the partial build runs")
    ap.add_argument("--large-sample", type=int, default=8, help="--part large: work units timed in process")
    ap.add_argument("--thick-materials", default="CdTe", help="--part thick: comma-separated materials")
    ap.add_argument("--thick-phonons", type=int, default=2, help="--part thick: frozen phonons of both modes")
    args = ap.parse_args()
    for name, part in (
        ("modes", part_modes),
        ("shared", part_shared),
        ("library", part_library),
        ("large", part_large),
        ("thick", part_thick),
    ):
        if args.part == name or (args.part == "all" and name not in ("large", "thick")):
            part(args)


if __name__ == "__main__":
    main()
