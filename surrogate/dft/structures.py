"""The CdTe structures labelled with DFT: a fixed, deterministic list built from the package's
structure builders, ordered so that the cheapest and most useful structures come first.

Every entry is an :class:`ase.Atoms` with ``info``: ``config_id`` (content hash), ``family`` (one
of :data:`FAMILIES`) and ``params`` (the generator's parameters, JSON-serialisable). Families:

``bulk``             the ideal 8-atom conventional cell (a = 6.481 Å, experiment)
``strain_iso``       isotropic strain of the 8-atom cell (-3 % ... +3 %)
``strain_shear``     pure shears and tetragonal/orthorhombic strains of the 8-atom cell
``strain_rattle``    random small strain (|e_ij| <= 3 %) plus a 0.05 Å rattle, 8 atoms
``rattle8``          Gaussian rattles (0.05, 0.10, 0.15 Å) of the 8-atom cell
``rattle16``         the same in the 16-atom 2x1x1 cell
``hot_rattle``       large rattles (0.20, 0.25 Å) with a small random strain, in 8- and 16-atom
                     cells: a *stand-in* for high-temperature MD snapshots (Gaussian displacements,
                     not molecular dynamics; u_rms 0.2-0.25 Å is roughly CdTe near 1000-1300 K)
``vacancy``          V_Cd and V_Te in 16-atom (and 8-atom) cells, ideal and rattled
``antisite``         Cd_Te and Te_Cd, same cells
``substitution``     Se_Te and Cl_Te, same cells
``alloy_se``         CdSe_xTe_(1-x) 8-atom cells with 1-2 Se on Te sites, rattled
``interstitial``     Cd_i and Te_i in 16- and 32-atom cells, ideal and rattled
``surface110``       a (110) slab of 16 atoms (8 atomic layers) with 12 Å of vacuum along z
``gb_twin``          the Sigma3 [110] twin bicrystal (25 atoms, two boundaries per cell)
``gb_tilt``          the Sigma9 [110] symmetric tilt bicrystal (25 atoms)
``twin111``          the coherent Sigma3 (111) twin (6 + 6 Cd-Te bilayers, two twin planes, 24 atoms)
                     and its twin-free reference (the same cell, 12 bilayers of bulk stacking):
                     their energy difference / (2 x area) is the twin boundary energy
``twin111_4``        the same twin and reference with 4 + 4 bilayers (16 atoms): a held-out check
                     (every frame of a family in :data:`HELD_OUT_FAMILIES` is in the test split)
"""

from __future__ import annotations

import hashlib
import json
from math import ceil
from typing import Iterable

import numpy as np
from ase import Atoms

from surrogate.structures import add_defects, bicrystal, crystal, orient, tag
from surrogate.structures import rattle as _rattle_once

__all__ = [
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "cdte_structures",
    "coherent_twin",
    "kpts_for",
    "estimated_cost",
    "split_of",
    "KPT_DENSITY",
]

FAMILIES = (
    "bulk",
    "strain_iso",
    "strain_shear",
    "strain_rattle",
    "rattle8",
    "rattle16",
    "hot_rattle",
    "vacancy",
    "antisite",
    "substitution",
    "alloy_se",
    "interstitial",
    "surface110",
    "gb_twin",
    "gb_tilt",
    "twin111",
    "twin111_4",
)

#: Families whose frames all go to the test split: physics checks on cells no model trains on.
HELD_OUT_FAMILIES = ("twin111_4",)

#: k-point density: number of k-points along a periodic direction = ceil(KPT_DENSITY / length[Å]);
#: 2x2x2 for the 8-atom cell (a = 6.48 Å), 1x2x2 for 16 atoms, Gamma-only along vacuum.
KPT_DENSITY = 12.0

#: Fraction of structures held out as the test split (by a hash of config_id).
TEST_FRACTION = 0.10


def split_of(config_id: str, test_fraction: float = TEST_FRACTION, family: str | None = None) -> str:
    """``"test"`` or ``"train"``, fixed by a hash of ``config_id`` (independent of list order);
    always ``"test"`` for a family in :data:`HELD_OUT_FAMILIES`."""
    if family in HELD_OUT_FAMILIES:
        return "test"
    h = int(hashlib.sha256(f"cdte-split:{config_id}".encode()).hexdigest()[:8], 16)
    return "test" if h / 0x100000000 < test_fraction else "train"


def kpts_for(atoms: Atoms, density: float = KPT_DENSITY) -> tuple[int, int, int]:
    """Monkhorst-Pack grid with ``ceil(density / L)`` points along each periodic axis.

    An axis counts as non-periodic (1 point) when it is not periodic or when the structure has a
    vacuum gap along it (``params["vacuum"]``, set for slabs).
    """
    lengths = atoms.cell.lengths()
    vac_axis = atoms.info.get("params", {}).get("vacuum_axis") if isinstance(atoms.info.get("params"), dict) else None
    out = []
    for i in range(3):
        if not atoms.pbc[i] or vac_axis == i:
            out.append(1)
        else:
            out.append(max(1, ceil(density / lengths[i] - 1e-6)))
    return out[0], out[1], out[2]


def estimated_cost(atoms: Atoms) -> float:
    """Relative cost of one SCF (8-atom cell at 2x2x2 = 1): ~ electrons^2 x irreducible k-points."""
    k = np.prod(kpts_for(atoms))
    nk = max(1.0, k / 2.0)  # time reversal halves an even Monkhorst-Pack grid
    vol = atoms.get_volume() / 272.2
    return (len(atoms) / 8.0) ** 2 * max(vol, len(atoms) / 8.0) ** 0.3 * nk / 4.0


#: Rattled structures are redrawn (seed + 10007) until no two atoms are closer than this [Å]
#: (or 0.95 x the unrattled structure's shortest distance, if smaller): Gaussian rattles otherwise
#: produce Cd-Te contacts near 1.4 Å that no thermal state reaches.
MIN_DISTANCE = 2.1


def _dmin(atoms: Atoms, cutoff: float = 3.0) -> float:
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else cutoff


def rattle(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    """:func:`surrogate.structures.rattle` redrawn until the shortest distance is acceptable;
    ``params["seed"]`` records the seed actually used."""
    dmin = min(MIN_DISTANCE, 0.95 * _dmin(atoms))
    for k in range(100):
        out = _rattle_once(atoms, stdev, seed=seed + 10007 * k)
        if _dmin(out) >= dmin:
            return out
    raise RuntimeError(f"no rattle of stdev {stdev} keeps atoms {dmin:.2f} Å apart")  # pragma: no cover


def _retag(atoms: Atoms, family: str, params: dict) -> Atoms:
    """Re-stamp ``atoms`` with the DFT family and the full generator parameters."""
    builder = {"family": atoms.info.get("family"), "params": atoms.info.get("params")}
    keep = {k: v for k, v in atoms.info.items() if k in ("zone_axis", "upward")}
    atoms.info = keep
    return tag(atoms, family, {**params, "builder": builder})


def _strained(unit: Atoms, eps: np.ndarray) -> Atoms:
    out = unit.copy()
    out.info = {}
    out.set_cell(unit.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def _sym(rng: np.random.Generator, amp: float) -> np.ndarray:
    e = rng.uniform(-amp, amp, (3, 3))
    return 0.5 * (e + e.T)


def _bulk_families(unit: Atoms) -> dict[str, list[Atoms]]:
    fam: dict[str, list[Atoms]] = {}
    fam["bulk"] = [_retag(unit.copy(), "bulk", {"cell": "conventional", "a": 6.481})]
    iso = []
    for s in (-0.03, -0.02, -0.01, -0.005, 0.005, 0.01, 0.02, 0.03):
        iso.append(_retag(_strained(unit, s * np.eye(3)), "strain_iso", {"strain": s, "cell": "conventional"}))
    fam["strain_iso"] = iso
    shears = []
    for comp, label in (((0, 1), "xy"), ((1, 2), "yz"), ((0, 2), "xz")):
        for s in (0.01, 0.02, -0.02):
            e = np.zeros((3, 3))
            e[comp] = e[comp[::-1]] = s / 2  # engineering shear s
            shears.append(_retag(_strained(unit, e), "strain_shear", {"shear": label, "gamma": s}))
    for s in (0.02, -0.02):
        e = np.diag([s, s, -2 * s])
        shears.append(_retag(_strained(unit, e), "strain_shear", {"tetragonal": s}))
    e = np.diag([0.02, -0.01, 0.0])
    shears.append(_retag(_strained(unit, e), "strain_shear", {"orthorhombic": [0.02, -0.01, 0.0]}))
    fam["strain_shear"] = shears
    sr = []
    for seed in range(20):
        eps = _sym(np.random.default_rng(1000 + seed), 0.03)
        r = rattle(_strained(unit, eps), 0.05, seed=1000 + seed)
        sr.append(_retag(r, "strain_rattle", {"strain": eps.round(6).tolist(), "stdev": 0.05, "seed": 1000 + seed}))
    fam["strain_rattle"] = sr
    r8 = []
    for seed in range(20):
        for sd in (0.05, 0.10, 0.15):
            r8.append(_retag(rattle(unit, sd, seed=seed), "rattle8", {"cell": "1x1x1", "stdev": sd, "seed": seed}))
    fam["rattle8"] = r8
    u16 = unit.repeat((2, 1, 1))
    r16 = []
    for seed in range(15):
        for sd in (0.05, 0.10, 0.15):
            r16.append(
                _retag(rattle(u16, sd, seed=100 + seed), "rattle16", {"cell": "2x1x1", "stdev": sd, "seed": 100 + seed})
            )
    fam["rattle16"] = r16
    hot = []
    for seed in range(20):
        for cell, rep in (("1x1x1", (1, 1, 1)), ("2x1x1", (2, 1, 1))):
            sd = (0.20, 0.25)[seed % 2]
            eps = _sym(np.random.default_rng(2000 + seed), 0.02)
            base = _strained(unit.repeat(rep), eps)
            hot.append(
                _retag(
                    rattle(base, sd, seed=2000 + seed),
                    "hot_rattle",
                    {
                        "cell": cell,
                        "stdev": sd,
                        "seed": 2000 + seed,
                        "strain": eps.round(6).tolist(),
                        "note": "stand-in for a high-temperature MD snapshot: Gaussian displacements, not MD",
                    },
                )
            )
    fam["hot_rattle"] = hot
    return fam


_POINT_DEFECTS = {
    "vacancy": [("V_Cd", {"kind": "vacancy", "species": "Cd"}), ("V_Te", {"kind": "vacancy", "species": "Te"})],
    "antisite": [
        ("Cd_Te", {"kind": "antisite", "species": "Te", "element": "Cd"}),
        ("Te_Cd", {"kind": "antisite", "species": "Cd", "element": "Te"}),
    ],
    "substitution": [
        ("Se_Te", {"kind": "substitution", "species": "Te", "element": "Se"}),
        ("Cl_Te", {"kind": "substitution", "species": "Te", "element": "Cl"}),
    ],
}


def _defect_families(unit: Atoms) -> dict[str, list[Atoms]]:
    fam: dict[str, list[Atoms]] = {}
    rattles: tuple[float, ...]  # rattle amplitudes [Å] per cell (tuples of several lengths below)
    for family, defects in _POINT_DEFECTS.items():
        items = []
        for name, spec in defects:
            for cell, rep, rattles in (
                ("1x1x1", (1, 1, 1), (0.05, 0.10, 0.15)),
                ("2x1x1", (2, 1, 1), (0.05, 0.10, 0.05, 0.10, 0.15, 0.05, 0.10, 0.15)),
            ):
                host = unit.repeat(rep)
                host.info = {}
                d = add_defects(host, [{**spec, "depth": 0.5}], seed=0)
                base = {"defect": name, "cell": cell}
                items.append(_retag(d.copy(), family, {**base, "stdev": 0.0}))
                for i, sd in enumerate(rattles):
                    items.append(_retag(rattle(d, sd, seed=300 + i), family, {**base, "stdev": sd, "seed": 300 + i}))
        fam[family] = items
    alloy = []
    for n_se in (1, 2):
        host = unit.copy()
        host.info = {}
        d = add_defects(
            host, [{"kind": "substitution", "species": "Te", "element": "Se", "depth": 0.5}] * n_se, seed=n_se
        )
        for i, sd in enumerate((0.0, 0.05, 0.10, 0.15)):
            a = d.copy() if sd == 0 else rattle(d, sd, seed=400 + i)
            alloy.append(_retag(a, "alloy_se", {"n_se": n_se, "x": n_se / 4, "stdev": sd, "seed": 400 + i}))
    fam["alloy_se"] = alloy
    inter = []
    for cell, rep, rattles in (
        ("2x1x1", (2, 1, 1), (0.05, 0.10, 0.05, 0.10, 0.15)),
        ("2x2x1", (2, 2, 1), (0.05, 0.10)),
    ):
        for el in ("Cd", "Te"):
            host = unit.repeat(rep)
            host.info = {}
            d = add_defects(host, [{"kind": "interstitial", "species": el, "element": el, "depth": 0.5}], seed=0)
            base = {"defect": f"{el}_i", "cell": cell}
            inter.append(_retag(d.copy(), "interstitial", {**base, "stdev": 0.0}))
            for i, sd in enumerate(rattles):
                inter.append(
                    _retag(rattle(d, sd, seed=500 + i), "interstitial", {**base, "stdev": sd, "seed": 500 + i})
                )
    fam["interstitial"] = inter
    return fam


def _surface_and_gb(unit: Atoms) -> dict[str, list[Atoms]]:
    fam: dict[str, list[Atoms]] = {}
    cell = orient(unit, (1, 1, 0))  # 4 atoms, z along [110]
    slab = cell.repeat((1, 1, 4))  # 8 (220) layers, 16 atoms
    vacuum = 12.0
    slab.cell[2, 2] += vacuum
    slab.positions[:, 2] += vacuum / 2
    slab.info = {}
    base = {"surface": "(110)", "layers": 8, "vacuum": vacuum, "vacuum_axis": 2}
    surf = [_retag(slab.copy(), "surface110", {**base, "stdev": 0.0})]
    for i, sd in enumerate((0.05, 0.10, 0.05, 0.10, 0.15, 0.10)):
        r = rattle(slab, sd, seed=600 + i)
        surf.append(_retag(r, "surface110", {**base, "stdev": sd, "seed": 600 + i}))
    fam["surface110"] = surf
    twin = []
    g1 = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 54.73561}
    g2 = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 125.26439, "flip_species": True}
    for tr in ((0.0, 0.0, 0.0), (0.0, 0.0, 2.29)):
        b = bicrystal(unit, g1, g2, fov=(4.0, 4.0), thickness=4.0, margin=0.0, max_height=30.0, translation=tr)
        base = {"boundary": "Sigma3 [110] twin", "translation": list(tr)}
        twin.append(_retag(b.copy(), "gb_twin", {**base, "stdev": 0.0}))
        for i, sd in enumerate((0.05, 0.10)):
            twin.append(_retag(rattle(b, sd, seed=700 + i), "gb_twin", {**base, "stdev": sd, "seed": 700 + i}))
    fam["gb_twin"] = twin
    g1 = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": -19.47}
    g2 = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1], "tilt": 19.47}
    b = bicrystal(unit, g1, g2, fov=(4.0, 4.0), thickness=4.0, margin=0.0, max_height=30.0)
    base = {"boundary": "Sigma9 [110] symmetric tilt"}
    tilt = [_retag(b.copy(), "gb_tilt", {**base, "stdev": 0.0})]
    for i, sd in enumerate((0.05, 0.10, 0.05)):
        tilt.append(_retag(rattle(b, sd, seed=800 + i), "gb_tilt", {**base, "stdev": sd, "seed": 800 + i}))
    fam["gb_tilt"] = tilt
    return fam


def coherent_twin(a: float, layers: int = 6) -> tuple[Atoms, Atoms]:
    """The coherent Sigma3 (111) twin of zinc-blende CdTe and its twin-free reference cell.

    Grain 1 is ``layers`` Cd-Te (111) bilayers (z along [111]); grain 2 is grain 1 rotated by 180 deg
    about [111] (the Sigma3 twin operation, which keeps every bond Cd-Te) and stacked on top, shifted
    in-plane so that every atom keeps four hetero-nuclear neighbours at the bulk bond length. The
    periodic cell then holds two twin planes. The reference is ``2 * layers`` bilayers of bulk
    stacking in the identical cell (same k-points, so DFT errors cancel in the difference).
    """
    from ase.build import bulk, surface
    from ase.neighborlist import neighbor_list

    prim = bulk("CdTe", "zincblende", a=a)
    g1 = surface(prim, (1, 1, 1), layers, periodic=True)
    g1.wrap()
    ref = surface(prim, (1, 1, 1), 2 * layers, periodic=True)
    c = g1.cell[2].copy()
    bond = a * np.sqrt(3) / 4
    for i in range(3):
        for j in range(3):
            g2 = g1.copy()
            g2.positions[:, :2] *= -1  # 180 deg about z = [111]
            g2.positions += c + (i * g1.cell[0] + j * g1.cell[1]) / 3
            twin = g1 + g2
            twin.set_cell([g1.cell[0], g1.cell[1], 2 * c])
            twin.wrap()
            first, second, d = neighbor_list("ijd", twin, 1.15 * bond)
            if (
                (np.bincount(first, minlength=len(twin)) == 4).all()
                and np.allclose(d, bond, atol=1e-6)
                and (twin.numbers[first] != twin.numbers[second]).all()
            ):
                assert np.allclose(twin.cell.array, ref.cell.array)
                return twin, ref
    raise RuntimeError("no coherent stacking of the twinned grain found")  # pragma: no cover


def _twin111(unit: Atoms) -> dict[str, list[Atoms]]:
    a = float(unit.cell.lengths()[0])
    out = {}
    for family, layers in (("twin111", 6), ("twin111_4", 4)):
        twin, ref = coherent_twin(a, layers)
        base = {
            "boundary": "Sigma3 (111) coherent twin",
            "a": a,
            "bilayers_per_grain": layers,
            "boundaries_per_cell": 2,
        }
        out[family] = [_retag(ref, family, {**base, "twin": False}), _retag(twin, family, {**base, "twin": True})]
    return out


def _fair_order(families: dict[str, list[Atoms]]) -> list[Atoms]:
    """Merge the families so that each gets an equal share of compute: repeatedly take the next
    structure of the family whose spent cost plus that structure's cost is smallest."""
    queues = {name: list(items) for name, items in families.items()}
    spent = {name: 0.0 for name in queues}
    out: list[Atoms] = []
    order = list(queues)
    while any(queues.values()):
        best = min(
            (n for n in order if queues[n]), key=lambda n: (spent[n] + estimated_cost(queues[n][0]), order.index(n))
        )
        a = queues[best].pop(0)
        spent[best] += estimated_cost(a)
        out.append(a)
    return out


def cdte_structures(families: Iterable[str] | None = None) -> list[Atoms]:
    """The ordered list of CdTe structures to label (deterministic; ~300 entries).

    Parameters
    ----------
    families
        Restrict to these families (default: all of :data:`FAMILIES`).
    """
    unit = crystal("CdTe")
    unit.info = {}
    fam = {**_bulk_families(unit), **_defect_families(unit), **_surface_and_gb(unit), **_twin111(unit)}
    if families is not None:
        wanted = list(families)
        unknown = sorted(set(wanted) - set(FAMILIES))
        if unknown:
            from surrogate.errors import ConfigError

            raise ConfigError(f"unknown structure families {unknown}: choose from {', '.join(FAMILIES)}")
        fam = {k: v for k, v in fam.items() if k in wanted}
    fam = {k: fam[k] for k in FAMILIES if k in fam}
    out = _fair_order(fam)
    for a in out:
        json.dumps(a.info["params"])
    return out
