"""The simulation path on the GPU (simulate.settings.device=gpu, abTEM + CuPy) against the CPU:
time per image and the largest relative difference, for the incoherent, multislice and PRISM modes.

    python benchmarks/gpu_simulation.py      # on a machine with CUDA and CuPy
"""
import time

import numpy as np

from surrogate.structures.recipes import build_structure
from surrogate.simulate import ImagingConditions, render
from surrogate.simulate.images import SimulationSettings
a = build_structure({"kind": "bulk", "material": {"name": "CdTe"}, "zone_axis": [1, 1, 0], "thickness": 20.0, "fov": [19.2, 19.2]})
conds = [ImagingConditions(mode="haadf", method=m, sampling=0.2) for m in ("incoherent", "multislice", "prism")]
for c in conds:
    out = {}
    for dev in ("cpu", "gpu"):
        s = SimulationSettings(device=dev, prism_interpolation=2)
        if dev == "gpu":
            render(a, [c], shape=(32, 32), settings=s, noise=False)  # warm-up: CUDA context, FFT plans
        t = time.perf_counter()
        out[dev] = render(a, [c], shape=(96, 96), settings=s, noise=False)[0]
        out[dev + "_s"] = time.perf_counter() - t
    rel = float(np.abs(out["gpu"] - out["cpu"]).max() / np.abs(out["cpu"]).max())
    print(f"{c.method}: {len(a)} atoms, 96x96 px at 0.2 A/px: cpu {out['cpu_s']:.2f} s, gpu {out['gpu_s']:.2f} s, max rel diff {rel:.2e}")
