"""ASE calculator over a trained potential checkpoint.

>>> from surrogate.potential import load_calculator
>>> atoms.calc = load_calculator("logs/train/runs/<time>/potential.pt")
>>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Inputs go through the same :func:`surrogate.potential.data.atoms_to_graph` / :func:`collate` as
training. An element the checkpoint was not trained on is a :class:`PotentialError`; atoms closer
than ``surrogate.structures.crystals.MIN_DISTANCE`` are a :class:`StructureError`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ase.calculators.calculator import Calculator, all_changes

from surrogate.potential.checkpoint import load_potential, read_record
from surrogate.potential.data import atoms_to_graph, collate
from surrogate.potential.model import Potential

__all__ = ["PotentialCalculator", "load_calculator"]


class PotentialCalculator(Calculator):
    """Energy [eV], free energy (= energy), forces [eV/Å] and stress (Voigt [eV/Å^3]) from a potential.

    Parameters
    ----------
    checkpoint
        Path of ``potential.pt`` or of a Lightning ``.ckpt`` of a potential run, or a
        :class:`Potential` instance.
    device
        Torch device (``"cpu"`` or ``"cuda"``).
    dtype
        ``"float32"`` (fast) or ``"float64"`` (for finite-difference checks and tight relaxations).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, checkpoint: str | Path | Potential, device: str = "cpu", dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if isinstance(checkpoint, Potential):
            self.net, self.checkpoint, self.record = checkpoint, None, {}
        else:
            self.net = load_potential(checkpoint)
            self.checkpoint = str(checkpoint)
            self.record = read_record(checkpoint)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[str(dtype)]
        self.device = torch.device(device)
        self.net = self.net.to(device=self.device, dtype=self.dtype).eval()

    @property
    def elements(self) -> list[str]:
        return list(self.net.elements)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        graph = atoms_to_graph(atoms, self.net.elements, self.net.cutoff, labels=False)
        batch = {k: v.to(self.device) for k, v in collate([graph], dtype=self.dtype).items()}
        want_stress = "stress" in properties and bool(atoms.pbc.all()) and atoms.cell.volume > 0
        out = self.net(batch, compute_forces=True, compute_stress=want_stress)
        energy = float(out["energy"].detach().cpu()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
            "energies": out["atomic_energies"].detach().cpu().double().numpy(),
        }
        if want_stress:
            self.results["stress"] = out["stress"].detach().cpu().double().numpy()[0]
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a periodic cell (pbc on all three axes)")


def load_calculator(path: str | Path, device: str = "cpu", dtype: str = "float32") -> PotentialCalculator:
    """The ASE calculator of a potential checkpoint (``potential.pt`` or a ``.ckpt``)."""
    return PotentialCalculator(path, device=device, dtype=dtype)
