"""SIFT, HOG and power-spectrum retrievers over a gallery of library images.

All take float images at the library's canonical sampling and return gallery indices sorted by
increasing distance.

- :class:`PowerSpectrumRetriever`: log power spectrum (Hann window) in polar coordinates over
  [0, 180) degrees; a rotation of the image is a circular shift along the angle axis, so the
  distance is 1 - the best normalised correlation over all shifts (computed for the whole gallery
  with one FFT along the angle). Identifies the lattice and its projection, blind to point defects.
- :class:`HOGRetriever`: images are rotated so that their strongest lattice reflection lies along
  x (orientation normalisation), then compared by scikit-image HOG descriptors (L2).
- :class:`SIFTRetriever`: OpenCV SIFT keypoints, Lowe ratio test, RANSAC similarity transform;
  the distance is minus the inlier count. One matching per gallery image (slow by design).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from surrogate.errors import ConfigError

__all__ = ["Retriever", "PowerSpectrumRetriever", "HOGRetriever", "SIFTRetriever", "make_retriever", "polar_spectrum"]


class Retriever(Protocol):
    name: str

    def fit(self, images: np.ndarray) -> "Retriever": ...

    def query(self, image: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]: ...

    def state(self) -> dict[str, np.ndarray]: ...

    def load_state(self, state) -> "Retriever": ...


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or min(images.shape[1:]) < 8:
        raise ConfigError(f"expected images of shape (N, H, W) with H, W >= 8, got {images.shape}")
    if not np.isfinite(images).all():
        raise ConfigError("images contain NaN or inf: clean the input before retrieval")
    return images


def _standardise(image: np.ndarray) -> np.ndarray:
    std = image.std()
    return (image - image.mean()) / (std if std > 0 else 1.0)


def _topk(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(distances, kind="stable")[:k]
    return order, distances[order]


def polar_spectrum(image: np.ndarray, n_r: int = 24, n_theta: int = 90, r_min: float = 0.04) -> np.ndarray:
    """Log power spectrum sampled on a polar grid (radius from ``r_min`` to Nyquist, angle 0-180°).

    Returns ``(n_r, n_theta)``, standardised.
    """
    from scipy.ndimage import map_coordinates

    from surrogate.augment.spectra import windowed_spectrum

    image = _standardise(image)
    h, w = image.shape
    power = np.log1p(windowed_spectrum(image, subtract_mean=False))  # standardised: mean already 0
    n = min(h, w)
    radii = np.linspace(r_min, 0.5, n_r) * n
    theta = np.linspace(0, np.pi, n_theta, endpoint=False)
    rr, tt = np.meshgrid(radii, theta, indexing="ij")
    rows = h / 2 + rr * np.sin(tt) * (h / n)
    cols = w / 2 + rr * np.cos(tt) * (w / n)
    polar = map_coordinates(power, [rows, cols], order=1, mode="nearest")
    polar -= polar.mean(axis=1, keepdims=True)  # remove the radial profile's offset per ring
    return polar / (np.linalg.norm(polar) or 1.0)


class PowerSpectrumRetriever:
    """Rotation-searched polar power spectrum matcher."""

    name = "spectrum"

    def __init__(self, n_r: int = 24, n_theta: int = 90):
        self.n_r, self.n_theta = n_r, n_theta
        self._gallery_f: np.ndarray | None = None

    def _descriptor(self, image):
        return polar_spectrum(image, self.n_r, self.n_theta)

    def fit(self, images: np.ndarray) -> "PowerSpectrumRetriever":
        images = _check_images(images)
        desc = np.stack([self._descriptor(im) for im in images])
        self._gallery_f = np.fft.rfft(desc, axis=2)
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted gallery as arrays (:meth:`load_state` restores it without refitting)."""
        return {"gallery_f": np.asarray(self._gallery_f)}

    def load_state(self, state) -> "PowerSpectrumRetriever":
        self._gallery_f = np.asarray(state["gallery_f"])
        return self

    def distances(self, image: np.ndarray) -> np.ndarray:
        if self._gallery_f is None:
            raise ConfigError("retriever has no gallery: call fit(images) first")
        q = np.fft.rfft(self._descriptor(_check_images(image)[0]), axis=1)
        corr = np.fft.irfft((self._gallery_f * np.conj(q)[None]).sum(axis=1), n=self.n_theta, axis=1)
        return 1.0 - corr.max(axis=1)

    def query(self, image: np.ndarray, k: int = 5):
        return _topk(self.distances(image), k)


class HOGRetriever:
    """HOG descriptors after rotating each image to its dominant lattice orientation."""

    name = "hog"

    def __init__(self, pixels_per_cell: int = 16, cells_per_block: int = 2, orientations: int = 9):
        self.kw = dict(
            pixels_per_cell=(pixels_per_cell, pixels_per_cell),
            cells_per_block=(cells_per_block, cells_per_block),
            orientations=orientations,
            feature_vector=True,
        )
        self._gallery: np.ndarray | None = None

    def _descriptor(self, image):
        import torch
        from skimage.feature import hog

        from surrogate.augment.orientation import canonicalise

        image = torch.from_numpy(_standardise(image).astype(np.float32))[None, None]
        aligned = canonicalise(image)[0, 0].numpy()  # strongest reflection along +x, as the CNN's canonical frame
        d = hog(aligned, **self.kw)
        return d / (np.linalg.norm(d) or 1.0)

    def fit(self, images: np.ndarray) -> "HOGRetriever":
        self._gallery = np.stack([self._descriptor(im) for im in _check_images(images)])
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted gallery as arrays (:meth:`load_state` restores it without refitting)."""
        return {"gallery": np.asarray(self._gallery)}

    def load_state(self, state) -> "HOGRetriever":
        self._gallery = np.asarray(state["gallery"])
        return self

    def distances(self, image: np.ndarray) -> np.ndarray:
        if self._gallery is None:
            raise ConfigError("retriever has no gallery: call fit(images) first")
        q = self._descriptor(_check_images(image)[0])
        return np.linalg.norm(self._gallery - q[None], axis=1)

    def query(self, image: np.ndarray, k: int = 5):
        return _topk(self.distances(image), k)


class SIFTRetriever:
    """SIFT keypoints + Lowe ratio test + RANSAC inliers (OpenCV)."""

    name = "sift"

    def __init__(self, ratio: float = 0.75, upscale: int = 2, ransac_threshold: float = 3.0):
        self.ratio, self.upscale, self.ransac_threshold = ratio, upscale, ransac_threshold
        self._gallery: list | None = None

    def _features(self, image):
        import cv2

        im = _standardise(image)
        im = np.clip((im - im.min()) / (np.ptp(im) or 1.0) * 255, 0, 255).astype(np.uint8)
        if self.upscale > 1:  # SIFT needs features larger than a few pixels; library images are small
            im = cv2.resize(im, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_CUBIC)
        kp, desc = cv2.SIFT_create().detectAndCompute(im, None)
        pts = np.array([k.pt for k in kp], np.float32).reshape(-1, 2)
        return pts, desc

    def fit(self, images: np.ndarray) -> "SIFTRetriever":
        self._gallery = [self._features(im) for im in _check_images(images)]
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted gallery's keypoints and descriptors, concatenated, with each image's offset."""
        assert self._gallery is not None
        n = [len(p) if d is not None else 0 for p, d in self._gallery]
        return {
            "offsets": np.concatenate([[0], np.cumsum(n)]).astype(np.int64),
            "points": np.concatenate([p[:k] for (p, _), k in zip(self._gallery, n)] + [np.zeros((0, 2), np.float32)]),
            # OpenCV's SIFT descriptors are whole numbers 0-255 stored as float32: uint8 keeps them exactly
            "descriptors": np.concatenate(
                [d for _, d in self._gallery if d is not None] + [np.zeros((0, 128), np.float32)]
            ).astype(np.uint8),
        }

    def load_state(self, state) -> "SIFTRetriever":
        off, pts = np.asarray(state["offsets"]), np.asarray(state["points"])
        desc = np.asarray(state["descriptors"], dtype=np.float32)
        self._gallery = [(pts[a:b], desc[a:b] if b > a else None) for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
        return self

    def _inliers(self, q, g) -> int:
        import cv2

        (qp, qd), (gp, gd) = q, g
        if qd is None or gd is None or len(qd) < 2 or len(gd) < 2:
            return 0
        matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(qd, gd, k=2)
        good = [m for m, n in (pair for pair in matches if len(pair) == 2) if m.distance < self.ratio * n.distance]
        if len(good) < 3:
            return len(good) // 2
        src = qp[[m.queryIdx for m in good]]
        dst = gp[[m.trainIdx for m in good]]
        _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_threshold)
        return int(mask.sum()) if mask is not None else 0

    def distances(self, image: np.ndarray) -> np.ndarray:
        if self._gallery is None:
            raise ConfigError("retriever has no gallery: call fit(images) first")
        q = self._features(_check_images(image)[0])
        return -np.array([self._inliers(q, g) for g in self._gallery], dtype=np.float64)

    def query(self, image: np.ndarray, k: int = 5):
        return _topk(self.distances(image), k)


def make_retriever(method: str, **kwargs) -> Retriever:
    """``sift``, ``hog`` or ``spectrum``."""
    table = {"sift": SIFTRetriever, "hog": HOGRetriever, "spectrum": PowerSpectrumRetriever}
    if method not in table:
        raise ConfigError(f"unknown retrieval method {method!r}: choose one of {', '.join(table)}")
    return table[method](**kwargs)
