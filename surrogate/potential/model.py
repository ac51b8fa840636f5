"""A compact PaiNN-style message-passing potential (pure torch, batched graphs, periodic cells).

Energy is a sum of atomic energies ``E_i = e_ref[Z_i] + scale * NN(s_i)``; forces are ``-dE/dr``
and the stress is ``(1/V) dE/d(strain)``, both by autograd. Radial features are a Bessel basis
times a smooth polynomial cutoff envelope, so energies and forces go to zero smoothly at ``cutoff``.
Reference: Schütt, Unke & Gastegger, "Equivariant message passing for the prediction of tensorial
properties and molecular spectra", ICML 2021 (PaiNN).

With ``moments=True`` every layer also builds each atom's neighbour-density moments (a scalar, a
vector and a traceless rank-2 tensor per channel, learned radial weights) and contracts them into
rotation invariants of body order 3 and 4 (|A1|^2, A2:A2, A1.A2.A1, tr A2^3), the Cartesian form of
the moment tensors of MTP (Shapeev 2016) and of MACE's correlation-order-3 product basis (Batatia et
al., NeurIPS 2022). PaiNN's messages are two-body per layer; these terms add the angular many-body
information that its forces lack.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Potential", "BesselBasis", "PolynomialCutoff", "KEYS"]

#: names of the tensors in a batch (see :mod:`surrogate.potential.data`)
KEYS = ("species", "positions", "cell", "batch", "edge_index", "shifts", "n_atoms")


class BesselBasis(nn.Module):
    freq: torch.Tensor  # registered buffer
    """``sqrt(2/rc) sin(n pi r / rc) / r`` for n = 1..num_basis [1/Å^(1/2)]."""

    def __init__(self, cutoff: float, num_basis: int = 8):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq * r) / r


class PolynomialCutoff(nn.Module):
    """Smooth envelope ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, x = r/rc,
    zero with its first two derivatives at ``rc`` (DimeNet)."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff, self.p = float(cutoff), int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p, x = self.p, r / self.cutoff
        env = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return env * (x < 1.0)


class _Message(nn.Module):
    def __init__(self, f: int, num_basis: int):
        super().__init__()
        self.f = f
        self.phi = nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, 3 * f))
        self.w = nn.Linear(num_basis, 3 * f, bias=False)  # acts on rbf * envelope: zero at the cutoff

    def forward(self, s, v, i, j, radial, unit, first: bool):
        x = self.phi(s).index_select(0, j) * self.w(radial)
        ds, dvv, dvs = torch.split(x, self.f, dim=-1)
        dv = unit.unsqueeze(-1) * dvs.unsqueeze(1)
        if not first:  # v = 0 before the first update
            dv = dv + v.index_select(0, j) * dvv.unsqueeze(1)
        return s.index_add(0, i, ds), v.index_add(0, i, dv)


class _Update(nn.Module):
    def __init__(self, f: int):
        super().__init__()
        self.f = f
        self.uv = nn.Linear(f, 2 * f, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * f, f), nn.SiLU(), nn.Linear(f, 3 * f))

    def forward(self, s, v):
        u, w = torch.split(self.uv(v), self.f, dim=-1)
        norm = torch.sqrt((w * w).sum(1) + 1e-8)
        a = self.mlp(torch.cat([s, norm], dim=-1))
        avv, asv, ass = torch.split(a, self.f, dim=-1)
        v = v + avv.unsqueeze(1) * u
        s = s + ass + asv * (u * w).sum(1)
        return s, v


class _Moments(nn.Module):
    """Neighbour-density moments A0 (scalar), A1 (vector), A2 (traceless symmetric 3x3) per channel,
    channel-mixed (equivariant linear maps) and contracted to invariants; ``s += MLP([s, invariants])``."""

    def __init__(self, f: int, num_basis: int, avg_neighbors: float):
        super().__init__()
        self.f, self.norm = f, 1.0 / float(avg_neighbors)
        self.proj = nn.Linear(f, f, bias=False)
        self.w = nn.Linear(num_basis, 3 * f, bias=False)  # acts on rbf * envelope: zero at the cutoff
        self.mix1 = nn.Linear(f, 2 * f, bias=False)
        self.mix2 = nn.Linear(f, 3 * f, bias=False)
        self.mlp = nn.Sequential(nn.Linear(6 * f, f), nn.SiLU(), nn.Linear(f, f))
        # the 9 entries of a symmetric 3x3 matrix from its 6 components (xx yy zz xy xz yz); moves with
        # the module, not part of the state dict
        self.register_buffer("sym6", torch.tensor([0, 3, 4, 3, 1, 5, 4, 5, 2]), persistent=False)

    def forward(self, s, i, j, radial, unit, quad):
        n, f = s.shape[0], self.f
        x = self.proj(s).index_select(0, j)
        r0, r1, r2 = (self.w(radial).view(-1, 3, f) * (x * self.norm).unsqueeze(1)).unbind(1)
        a0 = s.new_zeros(n, f).index_add(0, i, r0)
        a1 = s.new_zeros(n, 3, f).index_add(0, i, unit.unsqueeze(-1) * r1.unsqueeze(1))
        a2 = s.new_zeros(n, 6, f).index_add(0, i, quad.unsqueeze(-1) * r2.unsqueeze(1))  # xx yy zz xy xz yz
        p, q = torch.split(self.mix1(a1), f, dim=-1)
        full = self.mix2(a2).index_select(1, self.sym6).reshape(n, 3, 3, 3 * f)  # per atom: cheap
        a, b, c = torch.split(full, f, dim=-1)
        inv = [
            a0,
            (p * q).sum(1),
            (a * b).sum((1, 2)),
            torch.einsum("nkf,nklf,nlf->nf", p, a, q),
            torch.einsum("nklf,nlmf,nmkf->nf", a, b, c),
        ]
        return s + self.mlp(torch.cat([s, *inv], dim=-1))


class Potential(nn.Module):
    """PaiNN-style potential.

    Parameters
    ----------
    elements
        Chemical symbols the model knows, in the order of its species index.
    cutoff
        Radial cutoff [Å].
    features, layers, num_basis
        Width of the scalar/vector features, number of message-passing layers, Bessel functions.
    ref_energies
        Per-element reference energies [eV] (fitted by least squares on the training set).
    scale
        Scale of the network's atomic-energy output [eV] (e.g. the RMS force of the training set).
    moments
        Add the many-body moment-tensor invariants to every layer (see the module docstring).
    avg_neighbors
        Normalisation of the density moments (about the number of neighbours within ``cutoff``).
    """

    def __init__(
        self,
        elements,
        cutoff: float = 5.0,
        features: int = 64,
        layers: int = 3,
        num_basis: int = 8,
        envelope_p: int = 6,
        ref_energies=None,
        scale: float = 1.0,
        moments: bool = False,
        avg_neighbors: float = 20.0,
    ):
        super().__init__()
        self.elements = [str(e) for e in elements]
        self.cutoff = float(cutoff)
        self.config = dict(
            elements=self.elements,
            cutoff=self.cutoff,
            features=int(features),
            layers=int(layers),
            num_basis=int(num_basis),
            envelope_p=int(envelope_p),
        )
        if moments:  # only when on: checkpoints of PaiNN-only models keep their config
            self.config.update(moments=True, avg_neighbors=float(avg_neighbors))
        n = len(self.elements)
        self.embedding = nn.Embedding(n, features)
        self.rbf = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff, envelope_p)
        self.messages = nn.ModuleList([_Message(features, num_basis) for _ in range(layers)])
        self.updates = nn.ModuleList([_Update(features) for _ in range(layers)])
        self.moments = (
            nn.ModuleList([_Moments(features, num_basis, avg_neighbors) for _ in range(layers)]) if moments else None
        )
        self.readout = nn.Sequential(nn.Linear(features, features // 2), nn.SiLU(), nn.Linear(features // 2, 1))
        ref = torch.zeros(n) if ref_energies is None else torch.as_tensor(ref_energies, dtype=torch.get_default_dtype())
        self.register_buffer("ref_energies", ref.clone())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def atomic_energies(self, species, vectors, edge_index):
        i, j = edge_index[0], edge_index[1]
        r = torch.linalg.norm(vectors, dim=-1)
        unit = vectors / r.unsqueeze(-1)
        radial = self.rbf(r) * self.envelope(r).unsqueeze(-1)
        s = self.embedding(species)
        v = s.new_zeros(s.shape[0], 3, s.shape[1])
        if self.moments is not None:
            x, y, z = unit.unbind(-1)  # traceless u u^T - I/3, its 6 independent entries (edges are many)
            quad = torch.stack([x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, x * z, y * z], dim=-1)
        for k, (msg, upd) in enumerate(zip(self.messages, self.updates)):
            s, v = msg(s, v, i, j, radial, unit, k == 0)
            s, v = upd(s, v)
            if self.moments is not None:
                s = self.moments[k](s, i, j, radial, unit, quad)
        return self.ref_energies.index_select(0, species) + self.scale * self.readout(s).squeeze(-1)

    def forward(self, batch: dict, compute_forces: bool = True, compute_stress: bool = False) -> dict:
        """Energies [eV] per graph, and forces [eV/Å] / stress (Voigt xx yy zz yz xz xy [eV/Å^3]) on request.

        ``batch`` holds ``species`` (n,), ``positions`` (n, 3), ``cell`` (B, 3, 3), ``batch`` (n,) graph
        index, ``edge_index`` (2, E) with edges i <- j, ``shifts`` (E, 3) integer cell shifts
        (``r_ij = r_j - r_i + shifts @ cell``) and ``n_atoms`` (B,).
        """
        import contextlib

        need_grad = compute_forces or compute_stress
        with torch.enable_grad() if need_grad else contextlib.nullcontext():
            return self._forward(batch, compute_forces, compute_stress)

    def _forward(self, batch, compute_forces, compute_stress):
        pos, cell, gi = batch["positions"], batch["cell"], batch["batch"]
        n_graphs = cell.shape[0]
        inputs = []
        if compute_forces:
            pos = pos.detach().requires_grad_(True)
            inputs.append(pos)
        if compute_stress:
            strain = torch.zeros(n_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            inputs.append(strain)
            pos = pos + torch.einsum("nk,nkl->nl", pos, sym.index_select(0, gi))
            cell = cell + torch.bmm(cell, sym)
        i, j = batch["edge_index"][0], batch["edge_index"][1]
        # r_ij = r_j - r_i + S_ij @ cell: shifts are integers, so S @ cell is exact per graph
        shifts = batch["shifts"].to(pos.dtype)
        if n_graphs == 1:
            shift = shifts @ cell[0]
        else:
            shift = torch.einsum("ek,ekl->el", shifts, cell.index_select(0, gi.index_select(0, i)))
        vectors = pos.index_select(0, j) - pos.index_select(0, i) + shift
        e_atom = self.atomic_energies(batch["species"], vectors, batch["edge_index"])
        energy = torch.zeros(n_graphs, dtype=e_atom.dtype, device=e_atom.device).index_add(0, gi, e_atom)
        out = {"energy": energy, "atomic_energies": e_atom}
        if inputs:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training, allow_unused=True)
            k = 0
            if compute_forces:
                out["forces"] = -grads[0] if grads[0] is not None else torch.zeros_like(pos)
                k = 1
            if compute_stress:
                g = grads[k] if grads[k] is not None else torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(batch["cell"]))
                sigma = g / volume.clamp_min(1e-12).view(-1, 1, 1)
                out["stress"] = torch.stack(
                    [sigma[:, 0, 0], sigma[:, 1, 1], sigma[:, 2, 2], sigma[:, 1, 2], sigma[:, 0, 2], sigma[:, 0, 1]],
                    dim=1,
                )
        return out
