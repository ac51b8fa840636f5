"""Test-split accuracy of several potential checkpoints and of their committee (mean prediction).

Usage: ``python benchmarks/potential_committee.py checkpoints/potential_si.pt <other.pt> [...]
[--data data/dft/si/test.extxyz]``; writes ``benchmarks/results/potential_committee.{json,md}``.
A committee of n models costs n times one model's inference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    from ase.io import read

    from surrogate.io.files import atomic_write_text
    from surrogate.potential.calculator import load_calculator

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=str(REPO / "data" / "dft" / "si" / "test.extxyz"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args(argv)
    frames = read(a.data, ":")
    e_ref = np.array([f.info["REF_energy"] / len(f) for f in frames])
    f_ref = np.concatenate([f.arrays["REF_forces"] for f in frames])
    energies, forces = [], []
    for path in a.checkpoints:
        calc = load_calculator(path)
        e, f = [], []
        for frame in frames:
            atoms = frame.copy()
            atoms.calc = calc
            e.append(atoms.get_potential_energy() / len(atoms))
            f.append(atoms.get_forces())
        energies.append(np.array(e))
        forces.append(np.concatenate(f))

    def mae(e, f):
        return {
            "energy_meV_atom": round(1e3 * float(np.abs(e - e_ref).mean()), 2),
            "forces_meV_A": round(1e3 * float(np.abs(f - f_ref).mean()), 1),
        }

    res = {
        "data": a.data,
        "frames": len(frames),
        "models": {path: mae(e, f) for path, e, f in zip(a.checkpoints, energies, forces)},
        "committee": mae(np.mean(energies, 0), np.mean(forces, 0)),
        "command": "python benchmarks/potential_committee.py " + " ".join(a.checkpoints),
    }
    lines = [
        "# Potential committee",
        "",
        f"Test data `{a.data}` ({len(frames)} frames).",
        "",
        "| model | energy [meV/atom] | forces [meV/Å] |",
        "|---|---|---|",
    ]
    for name, m in [*res["models"].items(), (f"committee (mean of {len(a.checkpoints)})", res["committee"])]:
        lines.append(f"| {name} | {m['energy_meV_atom']:.2f} | {m['forces_meV_A']:.1f} |")
    lines += ["", f"Reproduce: `{res['command']}`.", ""]
    out = Path(a.out)
    atomic_write_text(out / "potential_committee.json", json.dumps(res, indent=1))
    atomic_write_text(out / "potential_committee.md", "\n".join(lines))
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
