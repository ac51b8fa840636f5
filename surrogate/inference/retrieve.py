"""Match image windows against a library: the CNN embedding + FAISS index, or a classical matcher
(SIFT, HOG, power spectrum) behind the same interface, and aggregate windows into candidates."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from surrogate.errors import ConfigError, LibraryError
from surrogate.inference.rank import Candidate
from surrogate.inference.settings import PreprocessSettings, RetrievalSettings
from surrogate.library import Library
from surrogate.library.store import int_to_id

log = logging.getLogger(__name__)

__all__ = [
    "Matcher",
    "CNNMatcher",
    "ClassicMatcher",
    "make_matcher",
    "keep_allowed",
    "aggregate",
    "Retrieval",
    "retrieve",
]


class Matcher(Protocol):
    name: str

    def search(self, windows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances), each (n_windows, k): library image indices, smaller = closer."""
        ...


class CNNMatcher:
    """Embed windows with a trained checkpoint and search the library's FAISS index.

    The index is built on first use (every library image embedded once) and cached next to the
    library as ``index/<checkpoint hash>.faiss``; a checkpoint trained on another library is refused.
    """

    name = "cnn"

    def __init__(
        self,
        library: Library,
        checkpoint: str | Path,
        index_path: str | Path | None = None,
        device: str = "cpu",
        preprocess: PreprocessSettings | None = None,
    ):
        from surrogate.embedding.embed import build_index, load_embedder
        from surrogate.index import EmbeddingIndex

        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise ConfigError(
                f"embedding checkpoint not found: {checkpoint}; train one (python train.py experiment=embedding_demo) "
                "or pass checkpoint=<file.ckpt>, or use method=sift|hog"
            )
        self.embedder = load_embedder(checkpoint, device=device)
        if self.embedder.library_hash != library.hash:
            raise LibraryError(
                f"checkpoint {checkpoint.name} was trained on library {self.embedder.library_hash}, not "
                f"{library.hash} ({library.root}): pass the library it was trained on, or train on this one"
            )
        self.checkpoint_hash = self.embedder.checkpoint_hash
        path = Path(index_path) if index_path else library.root / "index" / f"{self.checkpoint_hash}.faiss"
        expect = {"library_hash": library.hash}
        if path.is_file() and path.with_name(path.name + ".json").is_file():  # no sidecar: a killed save, rebuild
            self.index = EmbeddingIndex.load(path, expect=expect)
        else:
            self.index = build_index(library.root, checkpoint, path)
        self.index_path = path
        self.threshold = self.calibrate(library, preprocess=preprocess)

    def calibrate(
        self,
        library: Library,
        n: int = 128,
        dose: tuple[float, float] = (1e3, 1e5),
        quantile: float = 0.99,
        preprocess: PreprocessSettings | None = None,
    ) -> float:
        """Out-of-library threshold: the ``quantile`` of the distances from library images of
        *held-out imaging conditions* (the library's condition test split), under the training
        corruptions (any rotation, ±20 % scale, drift, blur, background, Poisson dose in ``dose``
        e/Å²), to their nearest entry of the other conditions. That is what an in-library
        configuration imaged under new conditions looks like; a leave-one-out threshold (nearest
        other entry, same conditions allowed) flagged such images as out of library. The corrupted
        images then go through the query's own preprocessing (``preprocess``: normalisation and
        its denoising), as every window of a micrograph does: the threshold describes the distances
        inference actually sees. Libraries without held-out conditions fall back to leave-one-out.
        Cached beside the index, per denoising method."""
        import torch

        from surrogate.augment import Corrupt
        from surrogate.inference.preprocess import denoise, normalise
        from surrogate.io.files import atomic_write_text
        from surrogate.library.dataset import split_indices

        method = preprocess.denoise if preprocess is not None else "none"
        path = Path(
            str(self.index_path) + (f".calibration-{method}.json" if preprocess is not None else ".calibration.json")
        )
        if path.is_file():
            rec = json.loads(path.read_text())
            if rec.get("method") == "heldout-conditions":
                return float(rec["threshold"])
        held = split_indices(library, "test", "condition")
        use_held = 0 < len(held) < len(library)
        pool = held if use_held else np.arange(len(library))
        rng = np.random.default_rng(0)
        picks = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
        images = np.stack([library.image(int(i)) for i in picks]).astype(np.float32)
        corrupt = Corrupt(sampling=library.sampling, dose=dose)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            noisy = corrupt(torch.from_numpy(images)[:, None], generator=g)[:, 0].numpy()
        if preprocess is not None:  # as inference prepares every window (preprocess.prepare)
            noisy = np.stack([normalise(denoise(x, method, library.sampling)) for x in noisy])
        allowed = np.ones(len(library), bool)
        allowed[held if use_held else picks] = False  # held-out conditions, else the query itself
        depth = min(len(library), int((~allowed).sum()) + 1)  # enough to reach one allowed entry
        idx, d = self.index.search(self.embedder.embed(noisy.astype(np.float32)), depth)
        nearest = keep_allowed(np.asarray(idx), np.asarray(d), allowed)[1][:, 0]
        threshold = float(np.quantile(nearest, quantile))
        atomic_write_text(
            path,
            json.dumps(
                {
                    "threshold": threshold,
                    "quantile": quantile,
                    "dose": list(dose),
                    "n": len(picks),
                    "method": "heldout-conditions",
                    "denoise": method,
                    "held_out_images": int(len(held)),
                },
                indent=1,
            ),
        )
        return threshold

    def search(self, windows: np.ndarray, k: int):
        indices, distances = self.index.search(self.embedder.embed(windows), k)
        return np.asarray(indices), np.asarray(distances)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        return self.embedder.embed(windows)


class ClassicMatcher:
    """SIFT, HOG or power-spectrum matching of windows against every library image."""

    def __init__(self, library: Library, method: str):
        from surrogate.baseline import make_retriever

        self.name = method
        self.retriever = make_retriever(method)
        # the fitted gallery is cached beside the library (SIFT: 66 s to fit 2,048 images on 2 cores),
        # keyed by the library and the retriever's parameters (another descriptor never reads it)
        params = json.dumps({k: v for k, v in vars(self.retriever).items() if not k.startswith("_")}, sort_keys=True)
        key = hashlib.sha256(params.encode()).hexdigest()[:8]
        self.cache = library.root / "index" / f"{method}-{library.hash[:16]}-{len(library)}-{key}.npz"
        if not self._load():
            self.retriever.fit(np.asarray(library.group["images"][:], dtype=np.float32))
            self._save()

    def _load(self) -> bool:
        if not self.cache.is_file():
            return False
        try:
            with np.load(self.cache) as state:
                self.retriever.load_state(state)
            return True
        except (OSError, ValueError, KeyError):  # a damaged cache is rebuilt, never trusted
            log.warning("gallery cache %s unreadable: refitting %s", self.cache, self.name)
            return False

    def _save(self) -> None:
        from surrogate.io.files import atomic_open

        state: dict[str, Any] = self.retriever.state()
        try:
            with atomic_open(self.cache, "wb") as f:
                np.savez(f, **state)
        except OSError as e:  # a read-only library: fit every time
            log.info("gallery cache not written (%s)", e)

    def search(self, windows: np.ndarray, k: int):
        idx, dist = [], []
        for w in windows:
            i, d = self.retriever.query(w, k)
            idx.append(i)
            dist.append(d)
        return np.asarray(idx), np.asarray(dist, dtype=np.float64)


def keep_allowed(indices: np.ndarray, distances: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search results without the library images ``allowed`` marks False, each row keeping its
    order (the end padded with index -1 and distance inf)."""
    ok = (indices >= 0) & allowed[np.clip(indices, 0, None)]
    order = np.argsort(~ok, axis=1, kind="stable")
    idx = np.where(np.take_along_axis(ok, order, 1), np.take_along_axis(indices, order, 1), -1)
    return idx, np.where(idx >= 0, np.take_along_axis(distances, order, 1), np.inf)


def make_matcher(
    method: str,
    library: Library,
    checkpoint: str | Path | None = None,
    index_path: str | Path | None = None,
    device: str = "cpu",
    preprocess: PreprocessSettings | None = None,
) -> Matcher:
    """The matcher of ``method``; the CNN's out-of-library threshold is calibrated through
    ``preprocess`` (the query's preprocessing), when given."""
    if method == "cnn":
        if checkpoint is None:
            raise ConfigError(
                "method=cnn needs an embedding checkpoint: pass checkpoint=<file.pt>, or use method=sift|hog|spectrum"
            )
        return CNNMatcher(library, checkpoint, index_path, device, preprocess)
    if method in ("sift", "hog", "spectrum"):
        return ClassicMatcher(library, method)
    raise ConfigError(f"unknown method {method!r}; use method=cnn|sift|hog|spectrum")


def aggregate(library: Library, indices: np.ndarray, distances: np.ndarray) -> list[Candidate]:
    """Per-window matches -> one candidate per configuration, at its best window.

    ``votes`` counts the windows whose best match is that configuration (where in the image it is).
    """
    cids = library.config_ids()
    best: dict[str, Candidate] = {}
    for w in range(indices.shape[0]):
        for j, (i, d) in enumerate(zip(indices[w], distances[w])):
            if i < 0:
                continue
            cid = int_to_id(cids[int(i)])
            c = best.get(cid)
            if c is None or d < c.distance:
                votes = c.votes if c else 0
                best[cid] = c = Candidate(config_id=cid, distance=float(d), window=w, entry=int(i), votes=votes)
            if j == 0:
                c.votes += 1
    records = library.structures()
    for c in best.values():
        r = records.get(c.config_id)
        if r is not None:
            c.family, c.formula, c.kind = r.family, r.formula, r.kind
    return list(best.values())


@dataclass
class Retrieval:
    """What the window matching found: candidates (nearest first, at most ``settings.candidates``),
    the best configuration of every window, and the matcher's out-of-library threshold."""

    candidates: list[Candidate]
    window_best: list[str]
    threshold: float | None
    pool: list[Candidate] = field(default_factory=list)  # every configuration matched, nearest first


def _allowed_share(library: Library, allowed: set[str]) -> float:
    """Fraction of the library's configurations made of ``allowed`` elements only."""
    from ase.formula import Formula

    records = library.structures().values()
    ok = sum(set(Formula(r.formula).count()) <= allowed for r in records)
    return ok / max(len(records), 1)


def _mode_mask(library: Library, mode: str | None) -> np.ndarray | None:
    """Which library images were simulated in ``mode`` (None: no restriction)."""
    if mode is None:
        return None
    from surrogate.simulate.conditions import MODES

    codes = library.condition_column("mode").astype(int)
    mask = codes == MODES.index(mode)
    if not mask.any():
        present = sorted({MODES[c] for c in np.unique(codes)})
        raise ConfigError(
            f"the library holds no {mode} images (it has {', '.join(present)}): "
            "set retrieval.mode to one of those or null"
        )
    return mask


def retrieve(library: Library, matcher: Matcher, windows: np.ndarray, settings: RetrievalSettings) -> Retrieval:
    """Match every window (``(W, H, W)`` at the library's sampling) and aggregate the matches into
    one candidate per configuration, restricted to the allowed elements and imaging mode."""
    from ase.formula import Formula

    allowed = settings.allowed
    share = _allowed_share(library, allowed) if allowed else 1.0
    if share == 0.0:
        raise ConfigError(f"no library configuration is made of {sorted(allowed or ())} only: widen retrieval.elements")
    in_mode = _mode_mask(library, settings.mode)
    share *= float(in_mode.mean()) if in_mode is not None else 1.0
    # every configuration has images_per_structure entries: search deep enough for k distinct ones
    # (of the allowed elements and mode: the others are dropped after the search)
    per = int(library.manifest.get("images_per_structure", 1))
    depth = min(len(library), int(np.ceil(settings.k * per / share)))
    indices, distances = matcher.search(windows, depth)
    if in_mode is not None:
        indices, distances = keep_allowed(indices, distances, in_mode)
        if (indices[:, 0] < 0).any():
            raise ConfigError("a window matched no library image of the requested mode: raise retrieval.k")
    cands = aggregate(library, indices, distances)
    if allowed:
        cands = [c for c in cands if set(Formula(c.formula).count()) <= allowed]
        if not cands:
            raise ConfigError(f"no library configuration made of {sorted(allowed)} only was matched: raise retrieval.k")
    pool = sorted(cands, key=lambda c: c.distance)
    cids = library.config_ids()
    window_best = [int_to_id(cids[int(i[0])]) for i in indices]
    threshold = settings.threshold if settings.threshold is not None else getattr(matcher, "threshold", None)
    return Retrieval(pool[: settings.candidates], window_best, threshold, pool[settings.candidates :])
