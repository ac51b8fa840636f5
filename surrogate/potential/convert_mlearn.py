"""Convert the mlearn Si set (Zuo et al. 2020) to extxyz: ``python -m surrogate.potential.convert_mlearn``.

Input: ``<src>/training.json`` and ``<src>/test.json`` (pymatgen-dict JSON as published in
materialsvirtuallab/mlearn, data/Si). Output: ``<out>/train.extxyz`` and ``<out>/test.extxyz`` with,
per frame, ``info``: ``REF_energy`` [eV], ``REF_stress`` (Voigt xx yy zz yz xz xy [eV/Å^3], ASE sign),
``split``, ``config_id``, ``group``, ``description``, ``source``, ``doi``, ``dft_code``, ``dft_xc``;
and the per-atom array ``REF_forces`` [eV/Å].

Stress convention (checked on the "Elastic" group): mlearn's ``virial_stress`` is VASP's OUTCAR
``in kB`` line, i.e. order xx yy zz xy yz zx, unit kbar, positive = compressive. A cell stretched
by 2 % along x gives -29.5 kbar on xx, and the energy-strain slope of the neighbouring frames gives
+4.4 GPa in ASE's convention for the +2..4 % pair; so ``stress_ase = -0.1 GPa * virial[[0, 1, 2, 4, 5, 3]]``
(the conversion ASE's own VASP reader applies).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from ase import Atoms, units

from surrogate.errors import exit_on_user_error
from surrogate.io.files import atomic_open
from surrogate.potential.errors import PotentialError

__all__ = ["DEFAULT_SRC", "DEFAULT_OUT", "virial_to_ase_stress", "mlearn_to_atoms", "convert"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "dft" / "mlearn" / "Si"
DEFAULT_OUT = REPO / "data" / "dft" / "si"
SOURCE = "materialsvirtuallab/mlearn data/Si (BSD-3-Clause)"
DOI = "10.1021/acs.jpca.9b08723"
FILES = {"train": "training.json", "test": "test.json"}


def virial_to_ase_stress(virial) -> np.ndarray:
    """mlearn ``virial_stress`` (VASP order xx yy zz xy yz zx [kbar], + = compressive) -> ASE Voigt
    stress (xx yy zz yz xz xy [eV/Å^3], + = tensile)."""
    v = np.asarray(virial, float).reshape(6)
    return -0.1 * units.GPa * v[[0, 1, 2, 4, 5, 3]]


def _config_id(atoms: Atoms) -> str:
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, np.int64).tobytes())
    h.update(np.round(atoms.get_scaled_positions(wrap=True), 6).tobytes())
    h.update(np.round(atoms.cell.array, 6).tobytes())
    return h.hexdigest()[:16]


def mlearn_to_atoms(item: dict, split: str) -> Atoms:
    """One mlearn JSON record -> an ``Atoms`` frame with the REF_* labels and provenance."""
    st = item["structure"]
    cell = np.asarray(st["lattice"]["matrix"], float)
    symbols = [site["species"][0]["element"] for site in st["sites"]]
    positions = np.asarray([site["xyz"] for site in st["sites"]], float)
    atoms = Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True)
    out = item["outputs"]
    forces = np.asarray(out["forces"], float)
    if forces.shape != (len(atoms), 3):
        raise PotentialError(
            f"mlearn record {item.get('description')!r}: forces of shape {forces.shape} for "
            f"{len(atoms)} atoms; the JSON file is damaged: restore it"
        )
    atoms.arrays["REF_forces"] = forces
    atoms.info.update(
        {
            "config_id": _config_id(atoms),
            "split": split,
            "REF_energy": float(out["energy"]),
            "REF_stress": virial_to_ase_stress(out["virial_stress"]),
            "group": str(item["group"]),
            "description": str(item["description"]),
            "source": SOURCE,
            "doi": DOI,
            "dft_code": "vasp",
            "dft_xc": "PBE",
        }
    )
    return atoms


def convert(src: str | Path = DEFAULT_SRC, out: str | Path = DEFAULT_OUT) -> dict[str, int]:
    """Write ``<out>/train.extxyz`` and ``<out>/test.extxyz`` from the mlearn JSON in ``src``;
    returns the number of frames per split."""
    from ase.io import write

    src, out = Path(src), Path(out)
    counts = {}
    for split, name in FILES.items():
        path = src / name
        if not path.is_file():
            raise PotentialError(f"mlearn file not found: {path}; pass --src <folder with training.json and test.json>")
        try:
            items = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PotentialError(
                f"cannot parse {path} ({exc.__class__.__name__}); restore the original mlearn file"
            ) from None
        frames = [mlearn_to_atoms(item, split) for item in items]
        with atomic_open(out / f"{split}.extxyz") as fh:
            write(fh, frames, format="extxyz")
        counts[split] = len(frames)
    return counts


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default=str(DEFAULT_SRC), help="folder with mlearn training.json and test.json")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (train.extxyz, test.extxyz)")
    a = p.parse_args(argv)
    counts = convert(a.src, a.out)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v} frames" for k, v in counts.items()))


if __name__ == "__main__":
    main()
