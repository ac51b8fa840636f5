"""Bring an experimental micrograph to the library's canonical form: resampled to its pixel size,
intensity-normalised, optionally denoised, and cut into model-sized windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surrogate.augment.spectra import windowed_spectrum
from surrogate.errors import ImageError
from surrogate.inference.settings import PreprocessSettings
from surrogate.io.readers import Micrograph

__all__ = [
    "Window",
    "resample",
    "normalise",
    "denoise",
    "windows",
    "estimate_rotation",
    "boundary_score",
    "crop",
    "prepare",
]


@dataclass
class Window:
    """One model-sized crop of the resampled image: ``image`` and its top-left corner [px]."""

    image: np.ndarray
    row: int
    col: int


def resample(image: np.ndarray, sampling: float, target: float) -> np.ndarray:
    """Resample ``image`` from ``sampling`` to ``target`` Å/px (anti-aliased when shrinking)."""
    from skimage.transform import rescale

    factor = sampling / target
    if abs(factor - 1.0) < 1e-3:
        return image.astype(np.float32)
    return rescale(image.astype(np.float64), factor, order=3, anti_aliasing=factor < 1, mode="reflect").astype(
        np.float32
    )


def normalise(image: np.ndarray, clip_sigma: float = 8.0) -> np.ndarray:
    """Zero mean, unit standard deviation, after clipping outliers (hot/dead pixels) beyond
    ``clip_sigma`` robust standard deviations (1.4826 x median absolute deviation) of the median."""
    x = image.astype(np.float64)
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    if mad > 0:
        x = np.clip(x, med - clip_sigma * mad, med + clip_sigma * mad)
    sd = x.std()
    if sd <= 0:
        raise ImageError("the image has no contrast after clipping outliers: check the file")
    return ((x - x.mean()) / sd).astype(np.float32)


def denoise(image: np.ndarray, method: str = "none", sampling: float = 0.2, sigma: float = 0.3) -> np.ndarray:
    """``none``, ``gaussian`` (sigma in Å) or ``nlmeans`` (scikit-image non-local means)."""
    if method in (None, "none"):
        return image
    if method == "gaussian":
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(image, sigma / sampling).astype(np.float32)
    if method == "nlmeans":
        from skimage.restoration import denoise_nl_means, estimate_sigma

        s = float(estimate_sigma(image))
        return denoise_nl_means(image, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True).astype(
            np.float32
        )
    raise ImageError(f"unknown denoise method {method!r}; use denoise=none|gaussian|nlmeans")


def windows(image: np.ndarray, shape: tuple[int, int], stride: int | None = None) -> list[Window]:
    """Model-sized windows covering ``image`` on a regular grid (the last row/column flush with the edge).

    An image smaller than ``shape`` is an error: the model needs its whole field of view.
    """
    h, w = shape
    if image.shape[0] < h or image.shape[1] < w:
        raise ImageError(
            f"resampled image {image.shape[0]}x{image.shape[1]} px is smaller than the model's field "
            f"{h}x{w} px: use a larger field of view (or a library with a smaller image shape)"
        )
    stride = int(stride or max(1, h // 2))

    def starts(n, k):
        s = list(range(0, n - k + 1, stride))
        if s[-1] != n - k:
            s.append(n - k)
        return s

    return [
        Window(image[r : r + h, c : c + w], r, c) for r in starts(image.shape[0], h) for c in starts(image.shape[1], w)
    ]


def _log_polar_spectrum(image: np.ndarray, radius: int) -> np.ndarray:
    from skimage.transform import warp_polar

    f = windowed_spectrum(image, power=False, subtract_mean=False, periodic=True)
    f[f.shape[0] // 2, f.shape[1] // 2] = 0
    # the zero frequency of an fftshifted even-sized spectrum sits at n // 2, not at the centre pixel
    centre = (f.shape[0] // 2, f.shape[1] // 2)
    return warp_polar(np.log1p(f), center=centre, radius=radius, output_shape=(720, radius), scaling="log")


def estimate_rotation(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Rotation [deg, counter-clockwise] and scale that map ``reference`` onto ``image``.

    Log-polar phase correlation of the two power spectra (Reddy & Chatterji 1996): translation
    drops out of the spectrum, rotation and scale become shifts. Spectra are centrosymmetric, so
    the angle is known modulo 180 degrees.
    """
    from skimage.registration import phase_cross_correlation

    n = min(min(image.shape), min(reference.shape))
    a = image[:n, :n]
    b = reference[:n, :n]
    radius = n // 2
    pa, pb = _log_polar_spectrum(a, radius), _log_polar_spectrum(b, radius)
    # only the mid frequencies (lattice reflections) carry the orientation
    lo, hi = radius // 16, radius // 2
    shift, _, _ = phase_cross_correlation(pa[:, lo:hi], pb[:, lo:hi], upsample_factor=10, normalization=None)
    angle = float(shift[0]) * 360.0 / pa.shape[0]
    klog = radius / np.log(radius)
    scale = float(np.exp(-shift[1] / klog))
    angle = (angle + 90.0) % 180.0 - 90.0
    return angle, scale


def _spectrum(image: np.ndarray) -> np.ndarray:
    """Unit-norm, zero-mean log power spectrum (Hann window, DC removed)."""
    p = windowed_spectrum(image)
    c = np.array(p.shape) // 2
    p[c[0] - 2 : c[0] + 3, c[1] - 2 : c[1] + 3] = 0.0
    p = np.log1p(p)
    p = (p - p.mean()).ravel()
    return p / (np.linalg.norm(p) or 1.0)


def boundary_score(image: np.ndarray) -> float:
    """How much the lattice differs between the window's quadrants: 1 - the lowest correlation of
    their power spectra. A window in one grain scores low (every quadrant shows the same lattice);
    one across a grain boundary scores high (two orientations)."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    spectra = [_spectrum(q) for q in (image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:])]
    return float(1.0 - min(spectra[i] @ spectra[j] for i in range(4) for j in range(i + 1, 4)))


def crop(micrograph: Micrograph, roi) -> Micrograph:
    """The ``[row, col, height, width]`` region of ``micrograph`` (file pixels)."""
    import dataclasses

    from surrogate.errors import ConfigError

    try:
        r, c, h, w = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise ConfigError(f"roi={roi!r}: give [row, col, height, width] in pixels of the image") from None
    rows, cols = micrograph.data.shape
    if h <= 0 or w <= 0 or r < 0 or c < 0 or r + h > rows or c + w > cols:
        raise ConfigError(
            f"roi={[r, c, h, w]} is not inside the {rows}x{cols} image: give [row, col, height, width] "
            "with row + height <= rows and col + width <= cols"
        )
    meta = dict(micrograph.metadata or {}, roi=[r, c, h, w])
    return dataclasses.replace(micrograph, data=micrograph.data[r : r + h, c : c + w], metadata=meta)


def prepare(
    micrograph: Micrograph, sampling: float, shape: tuple[int, int], settings: PreprocessSettings = PreprocessSettings()
) -> tuple[np.ndarray, list[Window]]:
    """Resample to ``sampling``, normalise, denoise (``settings.denoise``), and cut into windows of
    ``shape`` every ``settings.stride`` pixels."""
    image = resample(micrograph.data, micrograph.sampling, sampling)
    image = normalise(denoise(image, settings.denoise, sampling))
    return image, windows(image, shape, settings.stride)
