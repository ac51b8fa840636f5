"""The single-image job: read -> preprocess -> match windows -> aggregate -> rank with energies ->
refine the top candidates -> report.

:func:`run_inference` takes plain arguments (so tests and benchmarks call it without Hydra);
``infer.py`` maps the Hydra config onto it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from ase.formula import Formula

from surrogate.errors import ConfigError
from surrogate.inference.preprocess import prepare
from surrogate.inference.rank import Candidate, rank_candidates
from surrogate.inference.retrieve import aggregate, keep_allowed, make_matcher, structure_rows
from surrogate.io.readers import Micrograph, read_image
from surrogate.library import Library

__all__ = ["InferenceResult", "run_inference", "library_energies", "lattice_check"]


@dataclass
class InferenceResult:
    image: np.ndarray                   # resampled, normalised experiment
    micrograph: Micrograph
    windows: list                       # preprocess.Window
    window_best: list[str]              # best configuration per window
    candidates: list[Candidate]
    out_of_library: bool
    threshold: float | None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    lattice: dict[str, Any] = field(default_factory=dict)  # the lattice-spacing check (lattice_check)


def library_energies(library: Library) -> tuple[dict[str, float], str | None]:
    """Energy per atom of every library configuration, and the model that computed them, where the
    library has been annotated (``python -m surrogate.library.energies``)."""
    try:
        from surrogate.library.energies import energy_model, read_energies
    except ImportError:  # pragma: no cover - energies module absent in very old checkouts
        return {}, None
    energies = {k: float(v) for k, v in read_energies(library.root).items() if v is not None and np.isfinite(v)}
    return energies, (energy_model(library.root) if energies else None)


def crop(micrograph: Micrograph, roi) -> Micrograph:
    """The ``[row, col, height, width]`` region of ``micrograph`` (file pixels)."""
    import dataclasses

    try:
        r, c, h, w = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise ConfigError(f"roi={roi!r}: give [row, col, height, width] in pixels of the image") from None
    rows, cols = micrograph.data.shape
    if h <= 0 or w <= 0 or r < 0 or c < 0 or r + h > rows or c + w > cols:
        raise ConfigError(f"roi={[r, c, h, w]} is not inside the {rows}x{cols} image: give [row, col, height, width] "
                          "with row + height <= rows and col + width <= cols")
    meta = dict(micrograph.metadata or {}, roi=[r, c, h, w])
    return dataclasses.replace(micrograph, data=micrograph.data[r:r + h, c:c + w], metadata=meta)


def _allowed_share(rows: dict[str, tuple[str, str, str]], allowed: set[str]) -> float:
    """Fraction of the library's configurations (``retrieve.structure_rows``) made of ``allowed``
    elements only."""
    ok = sum(set(Formula(formula).count()) <= allowed for _, formula, _ in rows.values())
    return ok / max(len(rows), 1)


def _mode_mask(library: Library, mode: str | None) -> np.ndarray | None:
    """Which library images were simulated in ``mode`` (None: no restriction)."""
    if mode is None:
        return None
    from surrogate.simulate.conditions import MODES

    if mode not in MODES:
        raise ConfigError(f"retrieval.mode={mode!r}: choose one of {', '.join(MODES)} (or null for all)")
    codes = library.condition_table()[:, 0].astype(int)
    mask = codes == MODES.index(mode)
    if not mask.any():
        present = sorted({MODES[c] for c in np.unique(codes)})
        raise ConfigError(f"the library holds no {mode} images (it has {', '.join(present)}): "
                          "set retrieval.mode to one of those or null")
    return mask


def _anchor_window(wins, ranked, how) -> int:
    """Window that every refined candidate is fitted on: ``top`` (the top-ranked candidate's),
    ``boundary`` (the window whose quadrants differ most in lattice: across a grain boundary) or a
    window index."""
    from surrogate.inference.preprocess import boundary_score

    if how == "top":
        return ranked[0].window if ranked else 0
    if how == "boundary":
        return int(np.argmax([boundary_score(w.image) for w in wins]))
    try:
        index = int(how)
    except (TypeError, ValueError):
        raise ConfigError(f"refine.window={how!r}: use top, boundary or a window index") from None
    if not 0 <= index < len(wins):
        raise ConfigError(f"refine.window={index} is not a window of this image (0..{len(wins) - 1})")
    return index


def rerank_refined(ranked: list[Candidate], top: int, energy_weight: float, score: str = "fom") -> list[Candidate]:
    """Order the first ``top`` (refined) candidates by ``score + energy_weight * energy_above``
    (``score``: ``fom`` or ``residual``, from each refinement); the rest keep their order after
    them. Ranks are renumbered."""
    def key(c):
        return c.refinement[score] + energy_weight * (c.energy_above or 0.0)

    head = sorted(ranked[:top], key=lambda c: (key(c), c.rank))
    out = head + ranked[top:]
    for i, c in enumerate(out, 1):
        c.rank = i
    return out


def lattice_check(library: Library, windows: np.ndarray, ranked: list[Candidate], mode: str = "rerank",
                  tolerance: float | None = None) -> tuple[list[Candidate], dict[str, Any]]:
    """Compare the windows' lattice spacings (the pixel size is known) with each candidate's
    (:mod:`surrogate.inference.lattice`): every candidate gets its ``lattice_mismatch``; with
    ``mode="rerank"`` the consistent ones (mismatch <= ``tolerance``) move ahead of the others, each
    part in its ranked order. Returns the candidates and the check's record; ``mismatch`` in it is
    true when no candidate is consistent (another material, zone axis or pixel size), and then
    ``pixel_size_factor`` says by how much the pixel size would have to change for the top
    candidate's lattice to fit."""
    from surrogate.inference.lattice import MIN_WINDOW, TOLERANCE, LatticeReference, as_dict, pixel_size_factor, signatures

    if mode not in ("rerank", "flag", "off"):
        raise ConfigError(f"retrieval.lattice_check={mode!r}: use rerank, flag or off")
    tolerance = TOLERANCE if tolerance is None else float(tolerance)
    if not tolerance > 0:
        raise ConfigError(f"retrieval.lattice_tolerance={tolerance} must be > 0 (a relative spacing error, e.g. 0.1)")
    if mode == "off" or not ranked:
        return ranked, {}
    if min(windows.shape[-2:]) < MIN_WINDOW:
        return ranked, {"mode": mode, "tolerance": tolerance, "mismatch": False,
                        "skipped": f"windows of {min(windows.shape[-2:])} px resolve no lattice spacing "
                                   f"(needs >= {MIN_WINDOW} px)"}
    ref = LatticeReference.of(library)
    sig = signatures(windows, library.sampling)
    for c in ranked:
        c.lattice_mismatch = round(ref.check(sig, c.config_id), 4)
    ok = [c for c in ranked if c.lattice_mismatch <= tolerance]
    if mode == "rerank" and ok:
        ranked = ok + [c for c in ranked if c.lattice_mismatch > tolerance]
        for i, c in enumerate(ranked, 1):
            c.rank = i
    median = np.median(sig, axis=0)
    record = {"mode": mode, "tolerance": tolerance, "signature": as_dict(median), "consistent": len(ok),
              "mismatch": not ok}
    if not ok:
        top = ref.of_config(ranked[0].config_id)
        factor, shape = pixel_size_factor(median, top)
        record.update(pixel_size_factor=round(factor, 3), shape_mismatch=round(shape, 4),
                      top_signature=as_dict(np.median(top, axis=0)))
    return ranked, record


def run_inference(
    image: str | Path | Micrograph,
    library_dir: str | Path,
    method: str = "cnn",
    checkpoint: str | Path | None = None,
    index: str | Path | None = None,
    pixel_size: float | None = None,
    channel: str | None = None,
    frame: int | None = None,
    roi: list[int] | tuple[int, ...] | None = None,
    denoise: str = "none",
    stride: int | None = None,
    k: int = 10,
    candidates: int = 10,
    elements: list[str] | None = None,
    mode: str | None = None,
    energy_weight: float = 1.0,
    threshold: float | None = None,
    lattice: str = "rerank",
    lattice_tolerance: float | None = None,
    refine_top: int = 3,
    refine_settings: dict | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> InferenceResult:
    """Find the library configurations that best explain one image.

    Parameters
    ----------
    image
        Path to the micrograph (or a :class:`Micrograph`).
    library_dir
        Library directory (``surrogate-build-library``).
    method
        ``cnn`` (embedding + FAISS), ``sift``, ``hog`` or ``spectrum``.
    checkpoint, index
        Embedding checkpoint; FAISS index (default: cached in ``<library>/index/``).
    roi
        ``[row, col, height, width]`` in the file's pixels: analyse only this region (e.g. around
        a boundary); default the whole image.
    denoise, stride
        Preprocessing: ``none|gaussian|nlmeans``; window stride [px] (default half a window).
    k, candidates
        Distinct configurations matched per window; candidates kept after aggregation.
    elements
        Keep only configurations made of these elements (what the sample is known to contain).
    mode
        Imaging mode of the micrograph (``haadf``, ``abf``, ``bf`` or ``hrtem``): match only library
        images simulated in that mode (the microscopist knows it; a configuration's images under
        other modes look unlike it). Default: all modes.
    energy_weight
        Distance per eV/atom of energy above the lowest candidate of the same kind and elements.
    threshold
        Distance beyond which the image is flagged out-of-library (default: the index calibration).
    lattice, lattice_tolerance
        Lattice-spacing check (:func:`lattice_check`): ``rerank`` (default) puts the candidates whose
        lattice matches the image's within ``lattice_tolerance`` (relative spacing error, default
        0.10) first and flags the image when none does; ``flag`` only flags; ``off``.
    refine_top
        Number of top candidates refined against the image (0 = none). All of them are fitted to
        the same window (``refine_settings["window"]``: ``top``, the top-ranked candidate's, by
        default; ``boundary``, the window that straddles two lattices; or an index), so their
        figures of merit compare; the refined candidates are then ordered by
        ``FOM + energy_weight * energy_above`` (the fit is better evidence than the embedding
        distance), the others follow in their ranked order.
    """
    from tqdm.auto import tqdm

    for name, value, low in (("retrieval.k", k, 1), ("retrieval.candidates", candidates, 1), ("refine.top", refine_top, 0)):
        if int(value) < low:
            raise ConfigError(f"{name}={value} must be >= {low}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    micrograph = image if isinstance(image, Micrograph) else read_image(image, pixel_size, channel, frame)
    if roi is not None:
        micrograph = crop(micrograph, roi)
    library = Library(library_dir)
    shape = tuple(library.manifest["image_shape"])
    timings["read"] = time.perf_counter() - t0

    t = time.perf_counter()
    resampled, wins = prepare(micrograph, library.sampling, shape, stride, denoise)
    timings["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    matcher = make_matcher(method, library, checkpoint, index, device)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    batch = np.stack([w.image for w in wins])
    allowed = None
    if elements:
        allowed = {str(e) for e in elements}
        unknown = allowed - set(chemical_symbols)
        if unknown:
            raise ConfigError(f"retrieval.elements: unknown element(s) {sorted(unknown)}; use symbols like [Cd,Te]")
    # every configuration has images_per_structure entries: search deep enough for k distinct ones
    # (of the allowed elements: the others are dropped after the search)
    rows = structure_rows(library)  # read once: the element filter and the aggregation use it
    share = _allowed_share(rows, allowed) if allowed else 1.0
    if share == 0.0:
        raise ConfigError(f"no library configuration is made of {sorted(allowed)} only: widen retrieval.elements")
    in_mode = _mode_mask(library, mode)
    share *= float(in_mode.mean()) if in_mode is not None else 1.0
    depth = min(len(library), int(np.ceil(int(k) * int(library.manifest.get("images_per_structure", 1)) / share)))
    indices, distances = matcher.search(batch, depth)
    if in_mode is not None:
        indices, distances = keep_allowed(indices, distances, in_mode)
        if (indices[:, 0] < 0).any():
            raise ConfigError("a window matched no library image of the requested mode: raise retrieval.k")
    timings["search"] = time.perf_counter() - t

    cands = aggregate(library, indices, distances, rows)
    if allowed:
        cands = [c for c in cands if set(Formula(c.formula).count()) <= allowed]
        if not cands:
            raise ConfigError(f"no library configuration made of {sorted(allowed)} only was matched: raise retrieval.k")
    energies, model = library_energies(library)
    for c in cands:
        c.energy = energies.get(c.config_id)
    cands = sorted(cands, key=lambda c: c.distance)[:candidates]
    ranked = rank_candidates(cands, energy_weight)
    t = time.perf_counter()
    ranked, lattice_record = lattice_check(library, batch, ranked, lattice, lattice_tolerance)
    timings["lattice"] = time.perf_counter() - t
    cids = library.config_ids()
    from surrogate.library.store import int_to_id

    window_best = [int_to_id(cids[int(i[0])]) for i in indices]
    if threshold is None:
        threshold = getattr(matcher, "threshold", None)
    # the nearest candidate whose lattice fits the image (all of them when none fits or the check is off)
    fits = [c for c in ranked if c.lattice_mismatch is not None and c.lattice_mismatch <= lattice_record["tolerance"]] \
        if lattice_record else []
    best = min((c.distance for c in (fits or ranked)), default=np.inf)
    ool = bool(threshold is not None and best > threshold)

    t = time.perf_counter()
    if refine_top > 0:
        from surrogate.inference.refine import refine
        from surrogate.simulate.images import SimulationSettings

        rs = dict(refine_settings or {})
        settings = SimulationSettings(potential_sampling=float(rs.pop("potential_sampling", 0.08)))
        steps = tuple(rs.pop("defocus_steps", (-30.0, 30.0)))
        max_evals = int(rs.pop("max_evals", 300))
        final_method = rs.pop("final_method", None)
        window = rs.pop("window", "top")
        relax = bool(rs.pop("relax", False))
        potential = rs.pop("potential", None)
        score = rs.pop("score", "fom")
        shared_pose = bool(rs.pop("shared_pose", False))
        if rs:
            raise ConfigError(
                f"unknown refine setting(s) {sorted(rs)}: use potential_sampling, defocus_steps, max_evals, "
                "final_method, relax, potential, window, score, shared_pose"
            )
        if score not in ("fom", "residual"):
            raise ConfigError(f"refine.score={score!r}: use fom or residual")
        calculator = None
        if relax:
            if not potential:
                raise ConfigError("refine.relax=true needs a potential checkpoint: refine.potential=<file>")
            from surrogate.potential.calculator import load_calculator

            calculator = load_calculator(potential)
        from surrogate.embedding.datamodule import configuration_groups
        from surrogate.inference.refine import residual, score_at_pose

        # siblings of one slab (same material and zone axis) share their geometry: with shared_pose the
        # first of each group is fitted and the others are scored at its pose (not with relax or
        # final_method, which change the structure or the simulation per candidate)
        share = shared_pose and not relax and not final_method
        group_of = configuration_groups(library) if share else {}
        fitted: dict[str, tuple] = {}
        anchor = _anchor_window(wins, ranked, window)  # one window for all: comparable figures of merit
        win = wins[anchor].image
        for c in tqdm(ranked[:refine_top], desc="refine", disable=not progress):
            atoms = library.atoms(c.config_id)
            conditions = library.conditions(c.entry)
            group = group_of.get(int(c.config_id, 16), c.config_id)
            if share and group in fitted:
                fit0, conditions, first = fitted[group]
                f, shift, ssim, image = score_at_pose(win, atoms, conditions, fit0, settings)
                c.refinement = dict(fit0.summary(), fom=round(f, 4), ssim=round(ssim, 4), residual_shift_px=round(shift, 3),
                                    fom_before=round(f, 4), ssim_before=round(ssim, 4), simulations=1, evaluations=0,
                                    shared_pose_of=first)
                conditions = conditions.replace(defocus=fit0.defocus)
            else:
                fit = refine(win, atoms, conditions, settings, steps, max_evals,
                             calculator=calculator, final_method=final_method)
                if share:
                    fitted.setdefault(group, (fit, conditions, c.config_id))
                image = fit.image
                c.refinement = fit.summary()
                conditions = conditions.replace(defocus=fit.defocus)
            c.window = anchor
            c.refinement["residual"] = round(residual(win, image), 5)
            c.refinement["image"] = image
            c.refinement["conditions"] = conditions.to_dict()
            c.refinement["retrieval_rank"] = c.rank
        ranked = rerank_refined(ranked, refine_top, energy_weight, score)
    timings["refine"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    info = {
        "library": str(library.root), "library_hash": library.hash, "method": matcher.name,
        "checkpoint": str(checkpoint) if method == "cnn" else None, "energy_model": model,
        "sampling": library.sampling, "image_shape": list(shape), "n_windows": len(wins),
        "energies": "potential" if energies else "none (run python -m surrogate.library.energies)",
        "elements": sorted(elements) if elements else None, "mode": mode,
    }
    return InferenceResult(resampled, micrograph, wins, window_best, ranked, ool, threshold, timings, info, lattice_record)
