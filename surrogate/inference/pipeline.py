"""The single-image job as a sequence of stages, data flowing one way:

read (:mod:`surrogate.io.readers`) -> preprocess (:mod:`.preprocess`) -> retrieve (:mod:`.retrieve`)
-> rank with energies (:mod:`.rank`) -> lattice check (:mod:`.lattice`) -> refine (:mod:`.refine`).

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
from surrogate.inference.lattice import consistent, lattice_check
from surrogate.inference.preprocess import Window, crop, prepare
from surrogate.inference.rank import Candidate, attach_energies, rank_candidates, rerank_refined
from surrogate.inference.refine import refine_candidates
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
    # out of library: even the nearest candidate whose lattice fits is beyond the calibrated distance
    fitting = consistent(ranked, lattice)
    best = min((c.distance for c in fitting), default=np.inf)
    classes = class_votes(library, fitting, s.retrieval.vote_temperature)
    out_of_library = bool(found.threshold is not None and best > found.threshold)
    with timer("refine"):
        refine_candidates(library, wins, ranked, s.refine, progress)
        if s.refine.top > 0:
            ranked = rerank_refined(ranked, s.refine.top, s.rank.energy_weight, s.refine.score, s.rank.boundary_weight)
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
    )
