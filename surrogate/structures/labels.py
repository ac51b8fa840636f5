"""Class labels of a configuration: what a microscopist asks about (material, zone axis, family,
boundary type, defect kind), as opposed to its exact atomic positions.

Every builder writes them into ``atoms.info["labels"]``; :func:`labels_of` also reads them from
configurations written before labels existed (inferred from ``info["family"]`` and
``info["params"]``). The library writes them as scalar key/value columns of ``structures.db``
(:data:`DB_COLUMNS`; ``None`` values are omitted).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from ase import Atoms

__all__ = [
    "FAMILIES",
    "DEFECT_KINDS",
    "DB_COLUMNS",
    "StructureLabels",
    "labels_of",
    "zone_axis_label",
    "boundary_name",
    "plane_label",
    "defect_summary",
    "MISORIENTATION_FOLD",
    "reduce_misorientation",
]

#: Structure families. ``twin``: Σ3 boundaries (coherent (111) and {112}); ``gb``: other tilt boundaries.
FAMILIES = ("bulk", "defect", "twin", "gb", "rattled", "file")
#: Defect kinds of the labels (``mixed``: more than one kind in one configuration).
DEFECT_KINDS = ("vacancy", "antisite", "substitution", "interstitial", "mixed")
#: structures.db key/value column of each label field. ``material`` is the library's own column
#: (same value); the library's ``family`` (the builder's: ``gb`` for every boundary) and ``zone_axis``
#: (``"[110]"``, the direction as built) columns keep their meaning, so the label family and the
#: zone-axis family are ``class_family`` and ``zone`` (written ``"<110>"``, as is ``tilt_axis``).
DB_COLUMNS = {
    "material": "material",
    "zone_axis": "zone",
    "family": "class_family",
    "boundary": "boundary",
    "sigma": "sigma",
    "misorientation": "misorientation",
    "inclination": "inclination",
    "tilt_axis": "tilt_axis",
    "defect_kind": "defect_kind",
    "defect_count": "defect_count",
}


def zone_axis_label(zone_axis) -> str:
    """``"110"`` for [1,1,0], [1,-1,0], [0,1,1] ...: the zone-axis family of a cubic crystal, written
    as :func:`plane_label` does (``"112"``, ``"100"``); ``""`` when unknown."""
    if zone_axis is None or len(zone_axis) == 0:
        return ""
    if isinstance(zone_axis, str):
        zone_axis = [int(c) for c in zone_axis.strip("[]<>") if c.isdigit()]
    return plane_label(zone_axis)


def plane_label(plane) -> str:
    """Family of a boundary plane as usually written: ``(hhl)`` for planes containing a <110>
    direction (``"112"``, ``"221"``, ``"114"``, ``"332"``), else the sorted absolute indices
    (``"310"``, ``"111"``)."""
    v = [abs(int(round(x))) for x in plane]
    g = int(np.gcd.reduce([x for x in v if x])) if any(v) else 1
    v = [x // g for x in v]
    for h in sorted(set(v)):
        if h and v.count(h) == 2:
            rest = [x for x in v if x != h]
            return f"{h}{h}{rest[0]}"
    return "".join(str(x) for x in sorted(v, reverse=True))


def boundary_name(sigma: int | None, planes=None, low_angle: bool = False) -> str:
    """``"Σ3(111)"``, ``"Σ9(221)"``, ``"Σ9(114)/(221)"`` (asymmetric: both grains' planes) or ``"low-angle"``."""
    if low_angle or sigma is None:
        return "low-angle"
    if not planes:
        return f"Σ{sigma}"
    fams = []
    for p in planes:
        f = p if isinstance(p, str) else plane_label(p)
        if f not in fams:
            fams.append(f)
    return f"Σ{sigma}" + "/".join(f"({f})" for f in sorted(fams))


@dataclass(frozen=True)
class StructureLabels:
    """Class labels of one configuration.

    Attributes
    ----------
    material
        Material name (``CdTe``, ``Si``).
    zone_axis
        Zone-axis family, e.g. ``"110"``.
    family
        ``bulk``, ``defect``, ``twin`` (Σ3), ``gb`` (other tilt boundaries), ``rattled``, ``file``.
    boundary
        Boundary type: ``"Σ3(111)"``, ``"Σ9(221)"``, ``"low-angle"``; None without a boundary.
    sigma
        Σ of a coincidence-site boundary (None for low-angle or no boundary).
    misorientation
        Tilt angle between the grains about the beam, reduced to [0, 90] for boundaries whose
        angle is only known up to the lattice symmetry [deg].
    inclination
        Rotation of the boundary plane from the symmetric position (0 = symmetric) [deg].
    tilt_axis
        Tilt axis family (``"110"``, ``"100"``); equal to the zone axis for edge-on tilt boundaries.
    defect_kind
        ``vacancy``, ``antisite``, ``substitution``, ``interstitial`` or ``mixed``; None without defects.
    defect_count
        Number of point defects (atoms removed, changed or added).
    """

    material: str
    zone_axis: str
    family: str
    boundary: str | None = None
    sigma: int | None = None
    misorientation: float | None = None
    inclination: float | None = None
    tilt_axis: str | None = None
    defect_kind: str | None = None
    defect_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``None`` kept)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StructureLabels":
        """Inverse of :meth:`to_dict`; unknown keys are ignored (labels written by newer versions)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def db_columns(self) -> dict[str, Any]:
        """Scalar key/value columns for ``structures.db`` (None omitted; see :data:`DB_COLUMNS`);
        the zone and tilt axes are written as families, ``"<110>"``."""
        out: dict[str, Any] = {}
        for name, column in DB_COLUMNS.items():
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool):
                v = int(v)
            if name in ("zone_axis", "tilt_axis"):  # "<110>": ASE refuses strings that read as numbers
                v = f"<{v}>"
            out[column] = round(float(v), 4) if isinstance(v, float) else v
        return out


def defect_summary(records) -> tuple[str | None, int]:
    """(kind or ``mixed``, count) of a list of defect records ``[{kind, count?}, ...]``."""
    kinds = {r.get("kind") for r in records or []}
    count = sum(int(r.get("count", 1)) for r in records or [])
    if not kinds or count == 0:
        return None, 0
    return (kinds.pop() if len(kinds) == 1 else "mixed"), count


#: Largest misorientation about each tilt axis before the lattice symmetry makes it a smaller one [deg].
MISORIENTATION_FOLD = {"110": 90.0, "100": 45.0}


def reduce_misorientation(angle: float, axis: str | None = None) -> float:
    """Tilt ``angle`` [deg] reduced by the lattice symmetry about ``axis`` (``"110"``: to [0, 90]°,
    ``"100"``: to [0, 45]°, any other or None: [0, 90]°)."""
    fold = MISORIENTATION_FOLD.get(axis or "", 90.0)
    a = abs(float(angle)) % (2 * fold)
    return min(a, 2 * fold - a)


def _reduce(angle: float | None) -> float | None:
    return None if angle is None else round(reduce_misorientation(angle), 4)


def _infer(info: Mapping[str, Any], atoms: Atoms | None) -> StructureLabels:
    family = str(info.get("family", "file"))
    params = info.get("params") or {}
    if family == "rattled":  # labels of the parent
        parent = {
            "family": params.get("parent_family", "bulk"),
            "params": params.get("parent_params") or {},
            "zone_axis": info.get("zone_axis"),
        }
        return (
            dataclasses.replace(_infer(parent, None), family="rattled")
            if parent["family"] != "rattled"
            else StructureLabels(str(params.get("material", "")), zone_axis_label(info.get("zone_axis")), "rattled")
        )
    material = str(params.get("material") or (atoms.get_chemical_formula() if atoms is not None else ""))
    za = zone_axis_label(info.get("zone_axis") or params.get("zone_axis"))
    kind, count = defect_summary(params.get("defects"))
    if family == "defect":
        parent = params.get("parent_params") or {}
        if "misorientation" in parent:  # defects in a bicrystal: the boundary labels of the parent
            b = _infer({"family": "gb", "params": parent, "zone_axis": info.get("zone_axis")}, None)
            return dataclasses.replace(b, family="defect", defect_kind=kind, defect_count=count)
        return StructureLabels(material, za, "defect", defect_kind=kind, defect_count=count)
    if family in ("gb", "twin"):
        mis = params.get("misorientation")
        name = str(params.get("name", ""))
        sigma = params.get("sigma")
        red = _reduce(mis)
        if sigma is None and red is not None and mis is not None:  # old configurations: Σ from the name or the angle
            from surrogate.structures.csl import sigma_of_angle

            sigma = sigma_of_angle(za or "110", float(mis))
        if sigma is not None and sigma > 0:
            planes = params.get("planes")
            if planes is None and "111" in name:
                planes = [[1, 1, 1]]
            elif planes is None and "112" in name:
                planes = [[1, 1, 2]]
            boundary = boundary_name(int(sigma), planes)
            fam = "twin" if int(sigma) == 3 else "gb"
        else:
            sigma, boundary, fam = None, "low-angle" if red is not None and red < 15.0 else "general", "gb"
        return StructureLabels(
            material,
            za,
            fam,
            boundary,
            None if sigma is None else int(sigma),
            red,
            params.get("inclination", 0.0 if sigma is not None else None),
            params.get("tilt_axis", za or None),
            kind,
            count,
        )
    return StructureLabels(material, za, family, defect_kind=kind, defect_count=count)


def labels_of(atoms: Atoms | Mapping[str, Any]) -> StructureLabels:
    """The class labels of a configuration (or of its ``info`` mapping).

    Reads ``info["labels"]`` when present; otherwise infers them from ``info["family"]`` and
    ``info["params"]`` (configurations and libraries built before labels existed).
    """
    info = atoms.info if isinstance(atoms, Atoms) else atoms
    if isinstance(info.get("labels"), Mapping):
        return StructureLabels.from_dict(info["labels"])
    return _infer(info, atoms if isinstance(atoms, Atoms) else None)
