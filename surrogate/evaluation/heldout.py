"""The independent held-out query set: reader, library label lookup and the label scorer.

The set (``data/heldout``, made by ``benchmarks/heldout/make_heldout.py`` with a second simulation
pipeline) holds one float32 TIFF per image (pixel size in its calibration), the ground-truth cell
as ``<name>.extxyz`` and ``labels.json``::

    {"version": 1, "images": [{"name", "image", "structure", "labels": {material, zone_axis, family,
      boundary, sigma, misorientation, inclination, tilt_axis, defect_kind, defect_count},
      "mode", "pixel_size", "rotation", "dose", "seed", "conditions", ...}, ...]}

Scoring compares the class labels (:class:`surrogate.structures.labels.StructureLabels` fields) of
the ranked candidates with the truth at four levels (those of :mod:`surrogate.inference.classes`):

- ``material_zone``: same material and zone-axis family;
- ``family``: ``bulk``, ``defect``, ``twin`` (Σ3) or ``gb`` (other tilt boundaries);
- ``boundary`` (twin and gb images): a twin or tilt boundary about the same axis whose
  misorientation, reduced by the lattice symmetry about it ([110]: [0, 90]°, [100]: [0, 45]°),
  is within ``tolerance`` (2°) of the truth;
- ``defect_kind`` (defect images): the same kind (vacancy, antisite, substitution, interstitial, mixed).

A query is correct at top-k when any of its first k candidates matches.

Out-of-library detection (:func:`out_of_library_auroc`): a query is *in the library at a level*
when some library configuration matches it there and at every coarser level (a Σ11 CdTe [110]
boundary is out of a library whose only [110] boundaries are 4° and Σ9, even if Si holds a Σ11);
the AUROC of a novelty score (e.g. the embedding distance of the top candidate) separates the
out-of-library queries from the in-library ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from surrogate.errors import SurrogateError

__all__ = [
    "LEVELS",
    "HeldoutError",
    "HeldoutQuery",
    "read_heldout",
    "normalize_labels",
    "library_labels",
    "reduce_misorientation",
    "level_class",
    "level_applies",
    "level_match",
    "score_labels",
    "confusion_matrix",
    "in_library",
    "auroc",
    "out_of_library_auroc",
]

#: Levels of the class hierarchy, coarse to fine.
LEVELS = ("material_zone", "family", "boundary", "defect_kind")
#: Families whose configurations hold a boundary.
BOUNDARY_FAMILIES = ("twin", "gb")
_LABEL_KEYS = (
    "material",
    "zone_axis",
    "family",
    "boundary",
    "sigma",
    "misorientation",
    "inclination",
    "tilt_axis",
    "defect_kind",
    "defect_count",
)
_RECORD_KEYS = ("name", "image", "structure", "labels", "pixel_size")


class HeldoutError(SurrogateError, ValueError):
    """A held-out set that is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class HeldoutQuery:
    """One held-out image with its ground truth.

    Attributes
    ----------
    name
        Image name (file stem).
    image, structure
        Paths of the TIFF and of the ground-truth extxyz.
    labels
        Class labels of the truth (normalised, :func:`normalize_labels`).
    mode
        ``haadf``, ``abf`` or ``hrtem``.
    pixel_size
        [Å/px] (also in the TIFF's calibration).
    rotation
        In-plane rotation of the structure in the image, counter-clockwise [deg].
    dose
        Electron dose [e/Å²] (None: noise-free).
    seed
        Seed of the image (structure draw, conditions, noise).
    record
        The whole labels.json record (imaging conditions, thickness, crop centre ...).
    """

    name: str
    image: Path
    structure: Path
    labels: dict[str, Any]
    mode: str = "haadf"
    pixel_size: float = 0.0
    rotation: float = 0.0
    dose: float | None = None
    seed: int = 0
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def read_image(self):
        """The micrograph (:class:`surrogate.io.readers.Micrograph`, pixel size from the file)."""
        from surrogate.errors import ImageError
        from surrogate.io.readers import read_image

        try:
            return read_image(self.image)
        except ImageError as exc:
            raise HeldoutError(
                f"held-out image {self.image} is unreadable ({exc}): regenerate it with "
                "benchmarks/heldout/make_heldout.py"
            ) from None

    def atoms(self):
        """The ground-truth configuration (:class:`ase.Atoms`)."""
        from ase.io import read

        try:
            return read(self.structure, format="extxyz")
        except Exception as exc:
            raise HeldoutError(
                f"held-out structure {self.structure} is corrupt ({type(exc).__name__}): regenerate it "
                "with benchmarks/heldout/make_heldout.py"
            ) from None


def _zone_label(z) -> str:
    from surrogate.structures.labels import zone_axis_label

    return zone_axis_label(z) if z is not None else ""


def reduce_misorientation(angle: float | None, axis: str | None) -> float | None:
    """Misorientation reduced by the lattice symmetry about the tilt ``axis`` (``"110"``: [0, 90]°,
    ``"100"``: [0, 45]°, otherwise [0, 90]°) [deg]; None stays None."""
    from surrogate.structures.labels import reduce_misorientation as reduce

    return None if angle is None else round(reduce(angle, axis), 4)


def _boundary_name(raw: Any, sigma: Any, misorientation: float | None) -> str | None:
    """Boundary names as :mod:`surrogate.structures.labels` writes them (``Σ3(111)``, ``Σ9``, ``low-angle``,
    ``general``), also from the generator's short names (``sigma3_111``, ``low_angle_4deg``)."""
    if raw is None:
        return None
    s = str(raw)
    m = re.fullmatch(r"sigma(\d+)(?:_(\d+))?", s)
    if m:
        return f"Σ{m.group(1)}" + (f"({m.group(2)})" if m.group(2) else "")
    if s.startswith("low_angle"):
        return "low-angle"
    if s.startswith("tilt_"):
        return "general"
    return s


def normalize_labels(labels: Mapping[str, Any]) -> dict[str, Any]:
    """Labels with every :class:`~surrogate.structures.labels.StructureLabels` key, the zone axis as
    its family (``"110"``), the misorientation reduced (:func:`reduce_misorientation`) and boundary
    names in the library's spelling."""
    if "material" not in labels or "family" not in labels:
        raise HeldoutError(f"labels {dict(labels)} lack material or family: give the StructureLabels keys")
    out = {k: labels.get(k) for k in _LABEL_KEYS}
    out["zone_axis"] = _zone_label(labels.get("zone_axis"))
    family = str(labels["family"])
    out["family"] = family
    if family in BOUNDARY_FAMILIES:
        out["tilt_axis"] = _zone_label(labels.get("tilt_axis")) or out["zone_axis"]
        out["misorientation"] = reduce_misorientation(labels.get("misorientation"), out["tilt_axis"])
        out["boundary"] = _boundary_name(labels.get("boundary"), labels.get("sigma"), out["misorientation"])
    else:
        out["tilt_axis"] = None
    out["defect_count"] = int(labels.get("defect_count") or 0)
    return out


def read_heldout(directory: str | Path = "data/heldout", check_files: bool = True) -> list[HeldoutQuery]:
    """Read a held-out set.

    Parameters
    ----------
    directory
        Folder holding ``labels.json``, the TIFFs and the extxyz files.
    check_files
        Also read every image and structure, so that a corrupt file fails here (one line naming it)
        and not in the middle of a benchmark.

    Raises
    ------
    HeldoutError
        Missing folder, missing or corrupt ``labels.json``, a record without its keys, a missing or
        corrupt image or structure file.
    """
    root = Path(directory)
    path = root / "labels.json"
    if not root.is_dir():
        raise HeldoutError(
            f"held-out set {root} not found: make it with python benchmarks/heldout/make_heldout.py --out {root}"
        )
    if not path.is_file():
        raise HeldoutError(
            f"{path} not found: the held-out set is incomplete; rerun benchmarks/heldout/make_heldout.py --out {root}"
        )
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HeldoutError(
            f"{path} is not valid JSON ({exc}): regenerate it with benchmarks/heldout/make_heldout.py"
        ) from None
    images = doc.get("images") if isinstance(doc, Mapping) else None
    if not isinstance(images, list) or not images:
        raise HeldoutError(
            f"{path} lists no images (expected {{'images': [...]}}): regenerate it with benchmarks/heldout/make_heldout.py"
        )
    out = []
    for i, rec in enumerate(images):
        missing = [k for k in _RECORD_KEYS if not isinstance(rec, Mapping) or k not in rec]
        if missing:
            raise HeldoutError(
                f"{path}: record {i} lacks {', '.join(missing)}: regenerate it with benchmarks/heldout/make_heldout.py"
            )
        q = HeldoutQuery(
            name=str(rec["name"]),
            image=root / rec["image"],
            structure=root / rec["structure"],
            labels=normalize_labels(rec["labels"]),
            mode=str(rec.get("mode", "haadf")),
            pixel_size=float(rec["pixel_size"]),
            rotation=float(rec.get("rotation", 0.0)),
            dose=None if rec.get("dose") is None else float(rec["dose"]),
            seed=int(rec.get("seed", 0)),
            record=dict(rec),
        )
        for f in (q.image, q.structure):
            if not f.is_file():
                raise HeldoutError(
                    f"{f} (listed in {path}) not found: rerun benchmarks/heldout/make_heldout.py --out {root}"
                )
        if check_files:
            q.read_image()
            q.atoms()
        out.append(q)
    return out


@lru_cache(maxsize=8)
def _library_labels(db_path: str, mtime: float) -> dict[str, dict[str, Any]]:
    from ase.db import connect

    from surrogate.structures.labels import labels_of

    out = {}
    with connect(db_path) as db:
        for row in db.select(columns=["key_value_pairs", "data"]):
            info = dict((row.data or {}).get("info", {}) or {})
            info.setdefault("family", row.get("family", "file"))
            try:
                out[str(row.config_id)] = normalize_labels(labels_of(info).to_dict())
            except HeldoutError:
                continue
    return out


def library_labels(library_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Class labels of every configuration of a library, by ``config_id``, read from its
    ``structures.db`` (:func:`surrogate.structures.labels.labels_of` on each row's builder info),
    normalised like the truth (:func:`normalize_labels`)."""
    path = Path(library_dir) / "structures.db"
    if not path.is_file():
        raise HeldoutError(f"no structures.db in {library_dir}: not a library; pass --library <a built library>")
    return _library_labels(str(path), path.stat().st_mtime)


def level_class(labels: Mapping[str, Any] | None, level: str) -> str:
    """Class name of ``labels`` at ``level`` (as :func:`surrogate.inference.classes.class_of` names it;
    ``"none"`` for no candidate or no boundary/defect)."""
    if labels is None:
        return "none"
    if level == "material_zone":
        return f"{labels['material']} [{labels['zone_axis']}]" if labels.get("zone_axis") else str(labels["material"])
    if level == "family":
        return str(labels["family"])
    if level == "boundary":
        if labels.get("family") not in BOUNDARY_FAMILIES:
            return "none"
        mis = labels.get("misorientation")
        return f"{labels.get('boundary') or 'boundary'} {mis:.1f}°" if mis is not None else str(labels.get("boundary"))
    if level == "defect_kind":
        return str(labels.get("defect_kind") or "none")
    raise HeldoutError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")


def level_applies(truth: Mapping[str, Any], level: str) -> bool:
    """Whether ``level`` is scored for this truth (boundary: twin and gb images; defect kind: defect images)."""
    if level == "boundary":
        return truth["family"] in BOUNDARY_FAMILIES
    if level == "defect_kind":
        return truth["family"] == "defect"
    if level in LEVELS:
        return True
    raise HeldoutError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")


def level_match(
    truth: Mapping[str, Any], candidate: Mapping[str, Any] | None, level: str, tolerance: float = 2.0
) -> bool:
    """Whether ``candidate``'s labels are right at ``level`` (see the module docstring).

    Parameters
    ----------
    tolerance
        Largest misorientation difference of a matching boundary [deg].
    """
    if candidate is None:
        return False
    if level == "material_zone":
        return truth["material"] == candidate["material"] and truth["zone_axis"] == candidate["zone_axis"]
    if level == "family":
        return truth["family"] == candidate["family"]
    if level == "boundary":
        t_b, c_b = truth["family"] in BOUNDARY_FAMILIES, candidate["family"] in BOUNDARY_FAMILIES
        if not t_b:
            return not c_b
        if not c_b or truth["misorientation"] is None or candidate.get("misorientation") is None:
            return False
        axis_t = truth.get("tilt_axis") or truth["zone_axis"]
        axis_c = candidate.get("tilt_axis") or candidate["zone_axis"]
        if axis_t != axis_c:
            return False
        a = reduce_misorientation(truth["misorientation"], axis_t)
        b = reduce_misorientation(candidate["misorientation"], axis_c)
        return a is not None and b is not None and abs(a - b) <= tolerance + 1e-9
    if level == "defect_kind":
        return (truth.get("defect_kind") or None) == (candidate.get("defect_kind") or None)
    raise HeldoutError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")


def score_labels(
    truths: Sequence[Mapping[str, Any]],
    ranked: Sequence[Sequence[Mapping[str, Any] | None]],
    ks: Sequence[int] = (1, 5),
    tolerance: float = 2.0,
) -> dict[str, Any]:
    """Top-k accuracy per level.

    Parameters
    ----------
    truths
        Normalised truth labels, one per query.
    ranked
        The labels of each query's candidates, best first (``None`` for a candidate whose labels are unknown).
    ks
        The k of the top-k columns.

    Returns
    -------
    dict
        ``{"levels": {level: {"n": queries scored, "top1": fraction, "top5": ...}}, "per_query":
        [{level: rank (1-based) of the first right candidate, or None}]}``; a fraction is None when
        no query is scored at that level.
    """
    if len(truths) != len(ranked):
        raise HeldoutError(f"{len(truths)} truths but {len(ranked)} candidate lists: give one list per query")
    per_query = []
    for t, cands in zip(truths, ranked):
        row = {}
        for level in LEVELS:
            if not level_applies(t, level):
                continue
            row[level] = next((i + 1 for i, c in enumerate(cands) if level_match(t, c, level, tolerance)), None)
        per_query.append(row)
    levels = {}
    for level in LEVELS:
        ranks = [r[level] for r in per_query if level in r]
        entry: dict[str, Any] = {"n": len(ranks)}
        for k in ks:
            entry[f"top{k}"] = (sum(1 for r in ranks if r is not None and r <= k) / len(ranks)) if ranks else None
        levels[level] = entry
    return {"levels": levels, "per_query": per_query}


def confusion_matrix(
    truths: Sequence[Mapping[str, Any]],
    predicted: Sequence[Mapping[str, Any] | None],
    level: str = "family",
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Counts of (true class, top-1 class) at ``level``: ``{"classes": [...], "matrix": [[...]]}``,
    rows the truth, columns the prediction (``"none"``: no candidate)."""
    if len(truths) != len(predicted):
        raise HeldoutError(f"{len(truths)} truths but {len(predicted)} predictions: give one per query")
    pairs = [(level_class(t, level), level_class(p, level)) for t, p in zip(truths, predicted)]
    if classes is None:
        seen: list[str] = []
        for a, b in pairs:
            for c in (a, b):
                if c not in seen:
                    seen.append(c)
        classes = seen
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for a, b in pairs:
        if a in index and b in index:
            matrix[index[a]][index[b]] += 1
    return {"level": level, "classes": classes, "matrix": matrix}


#: The coarser levels a level's class sits under.
_PARENTS = {
    "material_zone": (),
    "family": ("material_zone",),
    "boundary": ("material_zone", "family"),
    "defect_kind": ("material_zone", "family"),
}


def in_library(
    truth: Mapping[str, Any], library: Sequence[Mapping[str, Any]], level: str, tolerance: float = 2.0
) -> bool:
    """Whether some configuration of ``library`` (their labels) matches ``truth`` at ``level`` and at
    every coarser level (see the module docstring)."""
    if level not in _PARENTS:
        raise HeldoutError(f"unknown level {level!r}: choose one of {', '.join(LEVELS)}")
    need = (*_PARENTS[level], level)
    return any(all(level_match(truth, lab, lv, tolerance) for lv in need) for lab in library)


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve of a score that should be higher for ``positive``: the probability
    that a random positive scores above a random negative (ties count half). None if a side is empty."""
    pos = [float(v) for v in positive]
    neg = [float(v) for v in negative]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins) / (len(pos) * len(neg))


def out_of_library_auroc(
    truths: Sequence[Mapping[str, Any]],
    scores: Sequence[float | None],
    library: Sequence[Mapping[str, Any]],
    tolerance: float = 2.0,
) -> dict[str, dict[str, Any]]:
    """Per level, how well ``scores`` (higher = more novel; None = no candidate, left out) tell the
    queries whose class is not in ``library`` from those whose class is.

    Returns
    -------
    dict
        ``{level: {"auroc": float or None, "n_out": int, "n_in": int, "out": [query indices]}}``;
        the AUROC is None where one side is empty (every class of that level in the library, or none).
    """
    if len(truths) != len(scores):
        raise HeldoutError(f"{len(truths)} truths but {len(scores)} scores: give one score per query")
    library = list(library)
    out: dict[str, dict[str, Any]] = {}
    for level in LEVELS:
        pos, neg, idx = [], [], []
        for i, (t, sc) in enumerate(zip(truths, scores)):
            if sc is None or not level_applies(t, level):
                continue
            if in_library(t, library, level, tolerance):
                neg.append(float(sc))
            else:
                pos.append(float(sc))
                idx.append(i)
        out[level] = {"auroc": auroc(pos, neg), "n_out": len(pos), "n_in": len(neg), "out": idx}
    return out
