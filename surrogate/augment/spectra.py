"""Windowed Fourier spectra of lattice images: the one home of the Hann-windowed FFT that the
lattice-frame finder (:mod:`surrogate.augment.orientation`, torch, batched), the rotation estimate
and boundary score of inference (:mod:`surrogate.inference.preprocess`) and the power-spectrum
baseline (:mod:`surrogate.baseline.retrievers`) build on.

A crystal's reflections are the peaks of these spectra; translation drops out of them, rotation
turns them, magnification scales their radius. The lattice signature of an image (its two
strongest reflections as absolute spacings) is :func:`surrogate.augment.orientation.lattice_signature`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hann", "windowed_spectrum"]


def hann(shape: tuple[int, int], periodic: bool = False) -> np.ndarray:
    """2-D Hann window: symmetric (``numpy.hanning``) or periodic (scikit-image's / SciPy's ``hann``)."""
    if periodic:
        from skimage.filters import window

        return window("hann", shape)
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def windowed_spectrum(
    image: np.ndarray, power: bool = True, subtract_mean: bool = True, periodic: bool = False
) -> np.ndarray:
    """Centred (fftshifted) spectrum of ``image`` times a Hann window: ``|F|**2`` (``power``) or
    ``|F|``; the image's mean is removed first unless ``subtract_mean=False``. The zero frequency
    sits at ``(H // 2, W // 2)``."""
    x = np.asarray(image, dtype=np.float64)
    if subtract_mean:
        x = x - x.mean()
    f = np.abs(np.fft.fftshift(np.fft.fft2(x * hann(x.shape, periodic))))
    return f**2 if power else f
