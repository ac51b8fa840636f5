"""Which *kind* of structure is in the image: class votes of the nearest library configurations.

A microscopist first asks what the image shows — which material and zone axis, bulk or a defect
or a boundary, which boundary — before asking for the exact atomic positions. Each candidate
configuration carries class labels (:class:`surrogate.structures.labels.StructureLabels`); the
candidates vote for their classes at every level of the hierarchy with weights
``exp(-distance / temperature)`` (nearer configurations count more), and each level reports its
classes with their vote share. The share of the top class is the level's confidence: near 1 when
the near neighbours agree, near ``1 / n_classes`` when they do not.

Levels (coarse to fine):

- ``material_zone``: ``"CdTe [110]"``
- ``family``: ``bulk``, ``defect``, ``twin`` (Σ3), ``gb`` (other tilt boundaries)
- ``boundary``: ``Σ3(111)``, ``Σ9(221)``, ``low-angle``, ... (``none`` without a boundary)
- ``defect_kind``: ``vacancy``, ``antisite``, ``substitution``, ``interstitial``, ``mixed`` (``none``)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from surrogate.inference.rank import Candidate

__all__ = ["LEVELS", "class_of", "class_votes"]

LEVELS = ("material_zone", "family", "boundary", "defect_kind")


def class_of(labels) -> dict[str, str]:
    """The class of a configuration's labels at every level."""
    return {
        "material_zone": f"{labels.material} [{labels.zone_axis}]" if labels.zone_axis else labels.material,
        "family": labels.family,
        "boundary": labels.boundary or "none",
        "defect_kind": labels.defect_kind or "none",
    }


def class_votes(library, candidates: list[Candidate], temperature: float = 0.02) -> dict[str, Any]:
    """Vote shares per level over ``candidates`` (their ``distance`` to the image; a library's
    records give their labels). Returns ``{level: [{"class": name, "p": share}, ...]}`` (largest
    first) and ``"confidence"``: ``{level: share of the top class}``."""
    records = library.structures()
    if not candidates:
        return {}
    d = np.array([c.distance for c in candidates], dtype=np.float64)
    w = np.exp(-(d - d.min()) / max(float(temperature), 1e-9))
    out: dict[str, Any] = {}
    shares: dict[str, dict[str, float]] = {level: defaultdict(float) for level in LEVELS}
    for c, wi in zip(candidates, w):
        rec = records.get(c.config_id)
        if rec is None:
            continue
        for level, name in class_of(rec.labels).items():
            shares[level][name] += float(wi)
    for level in LEVELS:
        total = sum(shares[level].values()) or 1.0
        ranked = sorted(shares[level].items(), key=lambda kv: -kv[1])
        out[level] = [{"class": k, "p": round(v / total, 4)} for k, v in ranked]
    out["confidence"] = {level: out[level][0]["p"] if out[level] else 0.0 for level in LEVELS}
    return out
