"""The simulation path on the GPU (simulate.settings.device=gpu, abTEM + CuPy) against the CPU:
time per image and the largest relative difference, for the incoherent, multislice and PRISM modes.

    python benchmarks/gpu_simulation.py      # on a machine with CUDA and CuPy
"""

from __future__ import annotations

import sys
import time

import numpy as np

from common import parser


def main(argv=None) -> None:
    p = parser(__doc__, library=None, checkpoint=None)
    p.add_argument("--size", type=int, default=96, help="image side [px] at 0.2 Å/px (default %(default)s)")
    a = p.parse_args(argv)
    try:
        import cupy  # noqa: F401
    except ImportError:
        sys.exit("error: CuPy is not installed: this benchmark needs a CUDA GPU with cupy (pip install cupy-cuda12x)")

    from surrogate.simulate import ImagingConditions, render
    from surrogate.simulate.images import SimulationSettings
    from surrogate.structures.recipes import build_structure

    atoms = build_structure(
        {"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 20.0, "fov": [19.2, 19.2]}
    )
    for c in [ImagingConditions(mode="haadf", method=m, sampling=0.2) for m in ("incoherent", "multislice", "prism")]:
        out = {}
        for dev in ("cpu", "gpu"):
            s = SimulationSettings(device=dev, prism_interpolation=2)
            if dev == "gpu":
                render(atoms, [c], shape=(32, 32), settings=s, noise=False)  # warm-up: CUDA context, FFT plans
            t = time.perf_counter()
            out[dev] = render(atoms, [c], shape=(a.size, a.size), settings=s, noise=False)[0]
            out[dev + "_s"] = time.perf_counter() - t
        rel = float(np.abs(out["gpu"] - out["cpu"]).max() / np.abs(out["cpu"]).max())
        print(
            f"{c.method}: {len(atoms)} atoms, {a.size}x{a.size} px at 0.2 A/px: cpu {out['cpu_s']:.2f} s, "
            f"gpu {out['gpu_s']:.2f} s, max rel diff {rel:.2e}"
        )


if __name__ == "__main__":
    main()
