"""Simulation throughput and fidelity: each mode vs abTEM's default multislice HAADF.

Structure: CdTe [110], ~5 nm thick (11 periods of 4.58 Å), rendered at 0.2 Å/px, 200 kV,
20 mrad probe, HAADF 70-180 mrad. Two fields:

- ``cell``: a 9.2 x 13.0 Å periodic patch (46 x 65 px). Every mode, including the reference abTEM
  default multislice (probe scanned at 0.2 Å, the library's pixel), is computed in full, so images/s
  and SSIM to multislice are measured, not extrapolated.
- ``field``: a 2.0 x 2.0 nm field (100 x 100 px). The fast modes are measured in full; abTEM's
  default multislice is timed on 40 scan positions and scaled to the 10^4 positions of the image
  (reported as such: a full image would take hours on 2 cores).

Usage: ``python benchmarks/simulation.py [--quick] [--out benchmarks/results]``; writes
``simulation.json`` and ``simulation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def ssim(a, b):
    from skimage.metrics import structural_similarity

    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return float(structural_similarity(a, b, data_range=float(np.ptp(b))))


def abtem_default_haadf(atoms, sampling, potential_sampling, region=None):
    """abTEM's documented HAADF recipe: Potential -> Probe.scan(GridScan at the pixel size) -> AnnularDetector."""
    import abtem

    potential = abtem.Potential(atoms, sampling=potential_sampling, slice_thickness=2.0, projection="infinite",
                                parametrization="lobato")
    probe = abtem.Probe(energy=200e3, semiangle_cutoff=20)
    if region is None:
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, endpoint=False, sampling=sampling,
                              potential=potential)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--quick", action="store_true", help="thinner slab and fewer conditions (smoke run)")
    ap.add_argument("--k", type=int, default=32, help="imaging conditions per structure for the shared-pass modes")
    args = ap.parse_args()
    from surrogate.simulate import ImagingConditions as C, SimulationSettings
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
    results["cell"] = {"n_atoms": len(cell), "extent": np.diag(cell.cell).round(2).tolist(), "shape": shape,
                       "abtem_default_s": t_ref, "positions": n_pos}
    rows.append(("cell", "abTEM default multislice HAADF (reference)", 1, t_ref, 1 / t_ref, 1.0, 1.0))
    base = dict(energy=200e3, semiangle=20, inner=70, outer=180)
    modes = [
        ("multislice HAADF+ABF+BF, Nyquist scan (1 scan -> 3 images)", [C(method="multislice", **base),
         C(mode="abf", method="multislice", energy=200e3, semiangle=20, inner=10, outer=20),
         C(mode="bf", method="multislice", energy=200e3, semiangle=20, inner=0, outer=10)], settings),
        ("PRISM HAADF, interpolation 1", [C(method="prism", **base)], settings),
        ("PRISM HAADF, interpolation 2", [C(method="prism", **base)], SimulationSettings(potential_sampling=0.04, prism_interpolation=2)),
        (f"incoherent HAADF, {k} conditions/structure",
         [C(method="incoherent", defocus=float(d), **base) for d in rng.uniform(-20, 20, k)], settings),
        (f"HRTEM (1 exit wave, {k} CTFs)",
         [C(mode="hrtem", method="multislice", energy=200e3, semiangle=20, defocus=float(d)) for d in rng.uniform(-100, 100, k)], settings),
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
    results["field"] = {"n_atoms": len(field), "extent": np.diag(field.cell).round(2).tolist(),
                        "abtem_default_band_s": t_band, "band_positions": n_band,
                        "abtem_default_s_extrapolated": t_ref_field}
    rows.append(("field", f"abTEM default multislice HAADF (from {n_band} positions, x{fshape[0] * fshape[1] / n_band:.0f})",
                 1, t_ref_field, 1 / t_ref_field, 1.0, 1.0))
    for name, conds, s in modes[3:]:
        images, t = timed_render(field, conds, fshape, s)
        rate = len(conds) / t
        print(f"field: {name}: {t:.1f} s", flush=True)
        rows.append(("field", name, len(conds), t, rate, rate * t_ref_field, None))
    results["rows"] = [dict(zip(("field", "mode", "images", "seconds", "images_per_s", "speedup", "ssim"), r)) for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation.json").write_text(json.dumps(results, indent=1))
    md = [f"# Simulation benchmark (CdTe [110], {thickness:.0f} Å thick, 0.2 Å/px, 200 kV, 20 mrad, HAADF 70-180 mrad)", "",
          f"Machine: {os.cpu_count()} CPU cores; `python benchmarks/simulation.py{' --quick' if args.quick else ''}`.", "",
          "| field | mode | images | seconds | images/s | speed-up vs abTEM multislice | SSIM to multislice |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for f, name, n, t, rate, sp, sc in rows:
        md.append(f"| {f} | {name} | {n} | {t:.2f} | {rate:.3g} | {sp:.3g}x | {'' if sc is None else f'{sc:.3f}'} |")
    (out / "simulation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
