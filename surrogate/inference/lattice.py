"""Lattice-spacing check of a match: the one thing the embedding cannot know.

The embedding is trained to ignore magnification (±20 %), so it matches an Au image to Si, or a
CdTe image with a wrong pixel size to CdTe, as readily as a right one. At inference the pixel size
*is* known, and a crystal's reflections then give absolute spacings. The *lattice signature* of an
image is ``(d1, d2, angle)``: the spacings [Å] of its strongest reflection and of the strongest one
more than 20° away, and the acute angle between them
(:func:`surrogate.augment.orientation.lattice_signature`). Its *mismatch* to a configuration is the
smallest, over that configuration's noise-free library images, of
``max(|ln d1/d1'|, |ln d2/d2'|, ANGLE_WEIGHT * |angle - angle'|)`` (the two reflections may swap
places), a relative spacing error: 0.05 = 5 %. A match whose mismatch exceeds the tolerance (10 %) is
flagged: another material, another zone axis or a wrong pixel size, and the check says which
pixel size would make the nearest library lattice fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surrogate.inference.rank import Candidate
from surrogate.inference.settings import LatticeSettings
from surrogate.io.files import atomic_open
from surrogate.library import Library

__all__ = [
    "ANGLE_WEIGHT",
    "TOLERANCE",
    "signatures",
    "reduce_pair",
    "mismatch",
    "pixel_size_factor",
    "LatticeReference",
    "describe",
    "as_dict",
    "MIN_WINDOW",
    "lattice_check",
    "check_signatures",
    "consistent",
]

#: relative spacing error equivalent to one degree of angle between the two reflections (10° ~ 5 %)
ANGLE_WEIGHT = 0.005
#: version of the signature definition, part of the cache key
SIGNATURE_VERSION = 3
#: smallest window [px] whose power spectrum resolves lattice spacings (a few periods of 2-4 Å at 0.2 Å/px)
MIN_WINDOW = 64
#: default tolerance on the mismatch (relative spacing error; its home is
#: ``LatticeSettings.tolerance``). A library image of the same configuration matches a benchmark
#: query within 1.3 % (median) at 10^3 e/Å², 0.4 % at 10^4; the real CdTe twin (HAADF26.dm3, its
#: own calibration) matches CdTe [110] within 2.7 % and the twin cells within 5.3-5.6 % (scan
#: distortion; boundary images mix two grains' reflections); Si and CdTe differ by 17 %. 10 %
#: leaves room on both sides.
TOLERANCE = LatticeSettings.tolerance


def reduce_pair(d1, d2, angle) -> np.ndarray:
    """Lagrange-reduce the reciprocal-lattice pair ``g1, g2`` (spacings ``d1, d2`` [any unit], angle
    [deg]) to the two shortest reciprocal vectors of the lattice they span: ``(d1 >= d2, angle <= 90)``.
    Any two primitive reflections of one lattice give the same result, so the signature does not
    depend on which of near-equal reflections an image happened to show strongest (fcc [110]:
    111 + 002 and 111 + 1-11 both give 111 + 1-11, 3.74 / 3.74 Å at 70.5° for CdTe)."""
    d1, d2, t = (np.asarray(v, np.float64) for v in (d1, d2, angle))
    u = np.stack([1.0 / d1, np.zeros_like(d1)], -1)
    v = np.stack([np.cos(np.deg2rad(t)) / d2, np.sin(np.deg2rad(t)) / d2], -1)
    for _ in range(16):  # converges in a few steps
        swap = (u**2).sum(-1) > (v**2).sum(-1)
        u, v = np.where(swap[..., None], v, u), np.where(swap[..., None], u, v)
        m = np.round((u * v).sum(-1) / (u**2).sum(-1))
        if not m.any():
            break
        v = v - m[..., None] * u
    nu, nv = np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1)
    cos = np.abs((u * v).sum(-1)) / (nu * nv)
    return np.stack([1.0 / nu, 1.0 / nv, np.rad2deg(np.arccos(np.clip(cos, 0.0, 1.0)))], -1)


def signatures(images: np.ndarray, sampling: float, batch: int = 256) -> np.ndarray:
    """``(N, 3)`` lattice signatures ``(d1 [Å], d2 [Å], angle [deg])`` of ``(N, H, W)`` images
    sampled at ``sampling`` [Å/px]: the two reflections of
    :func:`surrogate.augment.orientation.lattice_signature`, reduced (:func:`reduce_pair`)."""
    import torch

    from surrogate.augment.orientation import lattice_signature

    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        images = images[None]
    out = []
    for i in range(0, len(images), batch):
        d1, d2, angle = lattice_signature(torch.from_numpy(images[i : i + batch])[:, None])
        out.append(reduce_pair(d1.numpy() * sampling, d2.numpy() * sampling, angle.numpy()))
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 3))


def _pairwise(query: np.ndarray, refs: np.ndarray, scale_free: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mismatch (Q, M) of every query signature to every reference, and the log spacing ratio
    ln(d_ref / d_query) of the assignment that achieves it (the implied magnification)."""
    q, r = np.atleast_2d(query)[:, None, :], np.atleast_2d(refs)[None, :, :]
    angle = ANGLE_WEIGHT * np.abs(q[..., 2] - r[..., 2])
    best: np.ndarray | None = None
    ratio: np.ndarray | None = None
    for a, b in ((0, 1), (1, 0)):  # the two reflections may swap places
        l1, l2 = np.log(r[..., a] / q[..., 0]), np.log(r[..., b] / q[..., 1])
        if scale_free:  # only the shape (d1 / d2 and the angle) has to agree
            m, s = np.maximum(np.abs(l1 - l2) / 2, angle), (l1 + l2) / 2
        else:
            m, s = np.maximum.reduce([np.abs(l1), np.abs(l2), angle]), (l1 + l2) / 2
        if best is None:
            best, ratio = m, s
        else:
            ratio = np.asarray(np.where(m < best, s, ratio))
            best = np.minimum(best, m)
    assert best is not None and ratio is not None
    return best, ratio


def mismatch(query: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Mismatch of each query signature ``(Q, 3)`` (or one ``(3,)``) to the closest of ``refs``
    ``(M, 3)``: a relative spacing error (module docstring); ``inf`` without references."""
    query = np.atleast_2d(query)
    if len(refs) == 0:
        return np.full(len(query), np.inf)
    return _pairwise(query, refs, scale_free=False)[0].min(axis=1)


def pixel_size_factor(query: np.ndarray, refs: np.ndarray) -> tuple[float, float]:
    """``(factor, shape_mismatch)``: the factor by which the image's pixel size would have to be
    multiplied for its lattice to match the closest reference in shape (ratio of the two spacings
    and their angle), and how well that shape matches (same units as :func:`mismatch`)."""
    if len(refs) == 0:
        return float("nan"), float("inf")
    m, ratio = _pairwise(np.atleast_2d(query)[:1], refs, scale_free=True)
    j = int(np.argmin(m[0]))
    return float(np.exp(ratio[0, j])), float(m[0, j])


@dataclass
class LatticeReference:
    """Lattice signatures of a library's noise-free images and of their quadrants, per configuration
    (all of a configuration's images where it has no noise-free one); cached next to the library as
    ``index/lattice_signatures.npz``, keyed by the library hash and the signature version."""

    config_ids: np.ndarray  # (N,) uint64 configuration of each reference image
    signatures: np.ndarray  # (N, 3)

    @classmethod
    def of(cls, library: Library) -> "LatticeReference":
        path = library.root / "index" / "lattice_signatures.npz"
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            if str(z["library_hash"]) == library.hash and int(z.get("version", 0)) == SIGNATURE_VERSION:
                return cls(z["config_ids"], z["signatures"])
        clean = library.noise_free()
        cids = library.config_ids().astype(np.uint64)
        # each configuration's noise-free images (all of its images where it has none)
        keep = clean | ~np.isin(cids, np.unique(cids[clean]))
        rows = np.flatnonzero(keep)
        images = np.stack([library.image(int(i)) for i in rows])
        sig, ids = [signatures(images, library.sampling)], [cids[rows]]
        h, w = images.shape[-2:]
        if min(h, w) // 2 >= MIN_WINDOW:
            # and each quadrant's: a boundary image superposes two grains' reflections, so its
            # whole-image signature may pair one reflection of each; a quadrant mostly sees one grain,
            # as a window of a micrograph away from the boundary does
            for r0, c0 in ((0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2)):
                sig.append(signatures(images[:, r0 : r0 + h // 2, c0 : c0 + w // 2], library.sampling))
                ids.append(cids[rows])
        ref = cls(np.concatenate(ids), np.concatenate(sig))
        with atomic_open(path, "wb") as f:
            np.savez(
                f,
                config_ids=ref.config_ids,
                signatures=ref.signatures,
                library_hash=np.array(library.hash),
                version=np.array(SIGNATURE_VERSION),
            )
        return ref

    def of_config(self, config_id: str | int) -> np.ndarray:
        cid = np.uint64(int(config_id, 16) if isinstance(config_id, str) else int(config_id))
        return self.signatures[self.config_ids == cid]

    def check(self, windows: np.ndarray, config_id: str | int) -> float:
        """Lower quartile over the window signatures ``(W, 3)`` of their mismatch to ``config_id``:
        a lattice that fits a quarter of the windows fits (windows across a boundary, on vacuum or
        on contamination give no clean signature); a wrong one fits none."""
        return float(np.quantile(mismatch(windows, self.of_config(config_id)), 0.25))


def describe(sig: dict) -> str:
    """``d1 / d2 Å at angle°`` of one signature in its :func:`as_dict` form, for reports."""
    return f"{sig['d1']:.2f} / {sig['d2']:.2f} Å at {sig['angle']:.0f}°"


def as_dict(sig: np.ndarray) -> dict:
    """One signature as JSON-ready ``{"d1": Å, "d2": Å, "angle": deg}``."""
    return {"d1": round(float(sig[0]), 3), "d2": round(float(sig[1]), 3), "angle": round(float(sig[2]), 1)}


def lattice_check(
    library: Library, windows: np.ndarray, ranked: list[Candidate], settings: LatticeSettings = LatticeSettings()
) -> tuple[list[Candidate], dict]:
    """Compare the windows' lattice spacings (the pixel size is known) with each candidate's: every
    candidate gets its ``lattice_mismatch``; with ``mode="rerank"`` the consistent ones (mismatch <=
    ``tolerance``) move ahead of the others, each part in its ranked order. Returns the candidates
    and the check's record; ``mismatch`` in it is true when no candidate is consistent (another
    material, zone axis or pixel size), and then ``pixel_size_factor`` says by how much the pixel
    size would have to change for the top candidate's lattice to fit."""
    mode, tolerance = settings.mode, float(settings.tolerance)
    if mode == "off" or not ranked:
        return ranked, {}
    if min(windows.shape[-2:]) < MIN_WINDOW:
        return ranked, {
            "mode": mode,
            "tolerance": tolerance,
            "mismatch": False,
            "skipped": f"windows of {min(windows.shape[-2:])} px resolve no lattice spacing (needs >= {MIN_WINDOW} px)",
        }
    return check_signatures(LatticeReference.of(library), signatures(windows, library.sampling), ranked, settings)


def check_signatures(
    ref: LatticeReference, sig: np.ndarray, ranked: list[Candidate], settings: LatticeSettings = LatticeSettings()
) -> tuple[list[Candidate], dict]:
    """:func:`lattice_check` on window signatures ``sig`` (W, 3) already measured (the benchmarks
    measure them with the pixel size they know)."""
    mode, tolerance = settings.mode, float(settings.tolerance)
    mis = {c.config_id: round(ref.check(sig, c.config_id), 4) for c in ranked}
    for c in ranked:
        c.lattice_mismatch = mis[c.config_id]
    ok = [c for c in ranked if mis[c.config_id] <= tolerance]
    if mode == "rerank" and ok:
        ranked = ok + [c for c in ranked if mis[c.config_id] > tolerance]
        for i, c in enumerate(ranked, 1):
            c.rank = i
    median = np.median(sig, axis=0)
    record = {
        "mode": mode,
        "tolerance": tolerance,
        "signature": as_dict(median),
        "consistent": len(ok),
        "mismatch": not ok,
    }
    if not ok:
        top = ref.of_config(ranked[0].config_id)
        factor, shape = pixel_size_factor(median, top)
        record.update(
            pixel_size_factor=round(factor, 3),
            shape_mismatch=round(shape, 4),
            top_signature=as_dict(np.median(top, axis=0)),
        )
    return ranked, record


def consistent(ranked: list[Candidate], record: dict) -> list[Candidate]:
    """The candidates whose lattice fits the image (all of them when none fits or the check is off)."""
    fits = (
        [c for c in ranked if c.lattice_mismatch is not None and c.lattice_mismatch <= record["tolerance"]]
        if record
        else []
    )
    return fits or ranked
