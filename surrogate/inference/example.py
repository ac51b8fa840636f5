"""Make the bundled example micrograph: a CdTe [110] twin boundary imaged in HAADF under conditions
the demo library never used (other pixel size, defocus, source size, dose, an in-plane rotation),
saved as a calibrated TIFF as a microscope would write it.

``python -m surrogate.inference.example [--out data/examples/cdte_twin_haadf.tif]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["make_example", "EXAMPLE", "TRUTH"]

EXAMPLE = Path("data/examples/cdte_twin_haadf.tif")
# the configuration behind the example: the demo config's CdTe twin (no rigid translation)
TRUTH = {
    "kind": "gb",
    "name": "twin_sigma3",
    "material": {"name": "CdTe", "substituents": ["Se", "Cl"]},
    "thickness": 20.0,
    "fov": [25.6, 25.6],
    "grain1": {"upward": [0, 0, 1], "tilt": 54.73561},
    "grain2": {"upward": [0, 0, 1], "tilt": 125.26439, "flip_species": True},
    "translation": [0, 0, 0],
}


def make_example(
    out: str | Path = EXAMPLE,
    pixel_size: float = 0.18,
    shape: tuple[int, int] = (192, 192),
    rotation: float = 12.0,
    dose: float = 1e5,
    seed: int = 7,
) -> Path:
    """Simulate the example and write it as a float32 TIFF calibrated in nm (as rosettasciio reads it)."""
    from rsciio.tiff import file_writer

    from surrogate.inference.refine import simulate_field, transform
    from surrogate.io.files import atomic_open
    from surrogate.simulate.conditions import ImagingConditions
    from surrogate.simulate.images import SimulationSettings
    from surrogate.simulate.noise import apply_dose
    from surrogate.structures.recipes import build_structure

    atoms = build_structure(TRUTH)
    c = ImagingConditions(
        mode="haadf",
        method="incoherent",
        energy=300e3,
        semiangle=24.0,
        defocus=15.0,
        inner=80.0,
        outer=190.0,
        source_size=0.55,
        sampling=pixel_size,
    )
    field = simulate_field(atoms, c, shape, SimulationSettings(potential_sampling=0.05), margin=1.5)
    image = transform(field, shape, angle=rotation)
    image = apply_dose(np.clip(image, 0, None), dose, pixel_size, seed=seed)
    scale_nm = pixel_size / 10
    axes = [
        {"name": n, "size": s, "scale": scale_nm, "units": "nm", "navigate": False, "offset": 0.0}
        for n, s in zip("yx", shape)
    ]
    signal = {
        "data": image.astype(np.float32),
        "axes": axes,
        "metadata": {"General": {"title": "CdTe [110] twin, simulated"}, "Signal": {}},
        "original_metadata": {},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.tif")
    file_writer(str(tmp), signal)
    with atomic_open(out, "wb") as f:
        f.write(tmp.read_bytes())
    tmp.unlink()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=str(EXAMPLE), help="output TIFF (default: %(default)s)")
    p.add_argument("--pixel-size", type=float, default=0.18, help="[Å/px] (default: %(default)s)")
    p.add_argument("--rotation", type=float, default=12.0, help="in-plane rotation [deg] (default: %(default)s)")
    p.add_argument("--dose", type=float, default=1e5, help="[e/Å²] (default: %(default)s)")
    a = p.parse_args(argv)
    print(make_example(a.out, a.pixel_size, rotation=a.rotation, dose=a.dose))


if __name__ == "__main__":
    main()
