"""The single-image job as a sequence of stages, data flowing one way:

read (:mod:`surrogate.io.readers`) -> preprocess (:mod:`.preprocess`) -> retrieve (:mod:`.retrieve`)
-> rank with energies (:mod:`.rank`) -> lattice check (:mod:`.lattice`) -> grain / misorientation
check (:mod:`.misorientation`) -> refine (:mod:`.refine`).

Each stage takes its typed settings (:mod:`surrogate.inference.settings`, the only home of the
defaults); :func:`run_inference` is what ``infer.py``, the benchmarks and the tests call.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from surrogate.inference.classes import class_votes
from surrogate.inference.defects import defect_check
from surrogate.inference.lattice import consistent, lattice_check
from surrogate.inference.misorientation import boundary_check, boundary_window
from surrogate.inference.preprocess import Window, crop, prepare
from surrogate.inference.propose import WithBuilt, build_candidates
from surrogate.inference.rank import Candidate, attach_energies, rank_candidates, rerank_refined
from surrogate.inference.refine import refine_candidates, relax_refined
from surrogate.inference.retrieve import make_matcher, retrieve
from surrogate.inference.settings import InferenceSettings
from surrogate.io.readers import Micrograph, read_image
from surrogate.library import Library

__all__ = ["InferenceResult", "run_inference", "read_micrograph"]


@dataclass
class InferenceResult:
    image: np.ndarray  # resampled, normalised experiment
    micrograph: Micrograph
    windows: list[Window]
    window_best: list[str]  # best configuration per window
    candidates: list[Candidate]
    out_of_library: bool
    threshold: float | None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    lattice: dict[str, Any] = field(default_factory=dict)  # the lattice-spacing check's record
    classes: dict[str, Any] = field(default_factory=dict)  # class votes per level (inference.classes)
    boundary: dict[str, Any] = field(default_factory=dict)  # the grain / misorientation check's record
    built: dict[str, Any] = field(
        default_factory=dict
    )  # config_id -> Atoms of the candidates built (inference.propose)


class _Timer(dict):
    """Seconds per stage: ``with timer("search"): ...``."""

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self[stage] = self.get(stage, 0.0) + time.perf_counter() - t


def read_micrograph(image: str | Path | Micrograph, settings: InferenceSettings) -> Micrograph:
    """The micrograph (read with the settings' pixel size, channel and frame), cropped to ``roi``."""
    micrograph = (
        image
        if isinstance(image, Micrograph)
        else read_image(image, settings.pixel_size, settings.channel, settings.frame)
    )
    return crop(micrograph, settings.roi) if settings.roi is not None else micrograph


def run_inference(
    image: str | Path | Micrograph,
    library_dir: str | Path,
    settings: InferenceSettings | None = None,
    progress: bool = True,
    **overrides: Any,
) -> InferenceResult:
    """Find the library configurations that best explain one image.

    Parameters
    ----------
    image
        Path to the micrograph (dm3/dm4/emd/ser/mrc/tif/hspy/png/jpg/npy) or a :class:`Micrograph`.
    library_dir
        Library directory (``surrogate-build-library``).
    settings
        :class:`~surrogate.inference.settings.InferenceSettings` (default: its defaults).
    progress
        Progress bar over the refined candidates.
    overrides
        Changes to ``settings``, as :meth:`InferenceSettings.replace` takes them
        (``checkpoint="emb.pt", refine={"top": 0}``).
    """
    s = settings or InferenceSettings()
    if overrides:
        s = s.replace(**overrides)
    timer = _Timer()
    t0 = time.perf_counter()
    with timer("read"):
        micrograph = read_micrograph(image, s)
        library = Library(library_dir)
        shape = tuple(library.manifest["image_shape"])
    with timer("preprocess"):
        resampled, wins = prepare(micrograph, library.sampling, shape, s.preprocess)
        batch = np.stack([w.image for w in wins])
    with timer("load"):
        matcher = make_matcher(s.method, library, s.checkpoint, s.index, s.device, s.preprocess)
    with timer("search"):
        found = retrieve(library, matcher, batch, s.retrieval)
    model = attach_energies(found.candidates, library)
    ranked = rank_candidates(found.candidates, s.rank.energy_weight, s.rank.boundary_weight)
    with timer("lattice"):
        ranked, lattice = lattice_check(library, batch, ranked, s.lattice_check)
    with timer("grains"):
        ranked, boundary, grains = boundary_check(
            library, resampled, ranked, s.boundary_check, s.retrieval.mode, found.pool, lattice.get("tolerance")
        )
        if boundary.get("added_from_pool"):
            attach_energies([c for c in ranked if c.config_id in boundary["added_from_pool"]], library)
    if grains is not None and grains.n_grains == 1:  # one crystal: bulk, or point defects the columns show
        with timer("defects"):
            ranked, defects = defect_check(
                resampled,
                library.sampling,
                grains,
                s.retrieval.mode,
                ranked,
                rerank=s.boundary_check.mode == "rerank",
                lattice_tolerance=lattice.get("tolerance"),
                native=(micrograph.data, float(micrograph.sampling)),
            )
        if defects:
            boundary["defects"] = defects
    built: dict[str, Any] = {}
    # built candidates are ranked first, so only where the check may re-rank (flag only flags)
    if (
        grains is not None
        and not boundary["in_library"]
        and s.boundary_check.build > 0
        and s.boundary_check.mode == "rerank"
    ):
        with timer("build"):
            made = build_candidates(library, grains, ranked[0], s.boundary_check.build, mode=s.retrieval.mode)
            shown = boundary_window(grains, wins, library.sampling)
        if made:
            for c, _ in made:
                c.window = shown if shown is not None else c.window
            built = {c.config_id: atoms for c, atoms in made}
            ranked = [c for c, _ in made] + ranked
            for i, c in enumerate(ranked, 1):
                c.rank = i
            boundary["built"] = [
                {"config_id": c.config_id, "name": str((a.info.get("params") or {}).get("name", c.kind))}
                for c, a in made
            ]
            boundary["agreeing"] = list(built) + list(boundary.get("agreeing") or [])
            library = WithBuilt(library, built)  # type: ignore[assignment]
    # out of library: even the nearest candidate whose lattice fits is beyond the calibrated distance
    fitting = consistent(ranked, lattice)
    best = min((c.distance for c in fitting), default=np.inf)
    # class votes: the candidates that agree with the measured grains (else those of the measured family)
    agree_ids = set(boundary.get("agreeing") or boundary.get("same_family") or [])
    agreeing = [c for c in ranked if c.config_id in agree_ids]
    voters = [c for c in agreeing if c in fitting] or agreeing or fitting
    classes = class_votes(library, voters, s.retrieval.vote_temperature)
    if boundary.get("measured"):
        classes["measured"] = boundary["measured"]
        classes["in_library"] = {"boundary": boundary["in_library"]}
    out_of_library = bool(found.threshold is not None and best > found.threshold)
    with timer("refine"):
        refine_candidates(library, wins, ranked, s.refine, progress)
        if s.refine.top > 0:
            ranked = rerank_refined(ranked, s.refine.top, s.rank.energy_weight, s.refine.score, s.rank.boundary_weight)
    with timer("relax"):
        relax_refined(library, wins, ranked, s.refine, progress)
    timer["total"] = time.perf_counter() - t0
    info = {
        "library": str(library.root),
        "library_hash": library.hash,
        "method": matcher.name,
        "checkpoint": str(s.checkpoint) if s.method == "cnn" else None,
        "energy_model": model,
        "sampling": library.sampling,
        "image_shape": list(shape),
        "n_windows": len(wins),
        "energies": "potential" if model else "none (run surrogate-annotate-energies)",
        "elements": sorted(s.retrieval.elements) if s.retrieval.elements else None,
        "mode": s.retrieval.mode,
    }
    return InferenceResult(
        resampled,
        micrograph,
        wins,
        found.window_best,
        ranked,
        out_of_library,
        found.threshold,
        dict(timer),
        info,
        lattice,
        classes,
        boundary,
        built,
    )
