"""Read experimental micrographs: dm3/dm4, emd (Velox and Berkeley), ser, mrc, tif, hspy through
rosettasciio, png/jpg through imageio, npy through numpy.

Every reader returns a :class:`Micrograph` (2-D float32 data, pixel size in Å) or raises
:class:`~surrogate.errors.ImageError` with one line naming the problem and the fix. The pixel size
comes from the file's calibration unless ``pixel_size`` is given, which then wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.errors import ImageError

__all__ = ["Micrograph", "read_image", "check_image", "FORMATS", "MIN_SIZE", "MAX_PIXELS"]

# suffix -> rosettasciio plugin ("image" = imageio, "npy" = numpy)
FORMATS = {
    ".dm3": "digitalmicrograph",
    ".dm4": "digitalmicrograph",
    ".emd": "emd",
    ".ser": "tia",
    ".mrc": "mrc",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".hspy": "hspy",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".bmp": "image",
    ".npy": "npy",
}
MIN_SIZE = 32  # px: smaller images hold too few columns to match
MAX_PIXELS = 64 * 2**20  # 64 Mpx: beyond this, crop or bin first
_UNITS_TO_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4, "μm": 1e4, "m": 1e10}
PIXEL_SIZE_RANGE = (0.005, 5.0)  # Å/px that can resolve atomic columns at all


@dataclass
class Micrograph:
    """A 2-D image with its pixel size.

    Attributes
    ----------
    data
        (rows, cols) float32, rows top to bottom as displayed.
    sampling
        Pixel size [Å/px] (square pixels).
    path
        File it was read from.
    metadata
        What the file said that a report should show (signal type, voltage, calibration source).
    """

    data: np.ndarray
    sampling: float
    path: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _pixel_size_from_axes(axes: list[dict], name: str) -> float | None:
    """Pixel size [Å] from rosettasciio signal axes (the last two are the image axes)."""
    image_axes = [a for a in axes if not a.get("navigate", False)][-2:]
    if len(image_axes) < 2:
        return None
    sizes = []
    for a in image_axes:
        units = str(a.get("units") or "").strip().lower().replace("ångström", "a")
        scale = float(a.get("scale", 1.0))
        if units in ("", "<undefined>", "px", "pixel", "pixels") or units not in _UNITS_TO_A:
            return None
        sizes.append(scale * _UNITS_TO_A[units])
    if not np.isclose(sizes[0], sizes[1], rtol=0.02):
        raise ImageError(
            f"{name}: non-square pixels ({sizes[0]:.4f} x {sizes[1]:.4f} Å): resample to square pixels first"
        )
    return float(np.mean(sizes))


def _pick_signal(signals: list[dict], name: str, frame: int | None) -> dict:
    """The image signal among what a file holds (EMD files can hold spectra and several images)."""
    images = [s for s in signals if np.asarray(s["data"]).ndim >= 2]
    if not images:
        raise ImageError(f"{name}: no 2-D image in this file (it holds {len(signals)} non-image signal(s))")
    # prefer a plain 2-D image; else the first stack
    for s in images:
        if np.asarray(s["data"]).ndim == 2 or (
            np.asarray(s["data"]).ndim == 3 and np.asarray(s["data"]).shape[-1] in (3, 4)
        ):
            return s
    return images[0]


def _rgb_to_gray(data: np.ndarray, name: str, channel: str | int | None) -> np.ndarray:
    """(H, W, 3|4) or structured RGB -> one channel, chosen explicitly."""
    if data.dtype.names:  # rosettasciio's structured rgb(a) dtype
        data = np.stack([data[n] for n in data.dtype.names[:3]], axis=-1)
    if channel is None:
        raise ImageError(
            f"{name}: colour (RGB) image: choose a channel with channel=gray|r|g|b (a micrograph is one channel)"
        )
    rgb = data[..., :3].astype(np.float64)
    if channel == "gray":
        return rgb @ np.array([0.299, 0.587, 0.114])
    index = {"r": 0, "g": 1, "b": 2}.get(str(channel), channel)
    if index not in (0, 1, 2):
        raise ImageError(f"{name}: unknown channel {channel!r}; use channel=gray|r|g|b")
    return rgb[..., int(index)]


def check_image(data: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``data`` as 2-D float32 or raise :class:`ImageError` (empty, NaN/inf, constant, tiny, huge)."""
    data = np.asarray(data)
    if data.size == 0:
        raise ImageError(f"{name}: the image is empty (0 pixels): check the file or the crop")
    if data.dtype.kind == "b":
        raise ImageError(f"{name}: boolean pixels (a mask, not a micrograph): give the recorded intensities")
    if data.dtype.kind not in "iuf":
        raise ImageError(f"{name}: unsupported pixel type {data.dtype}: save it as integer or float intensities")
    if data.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D image, got shape {data.shape}: pick one frame or sum the stack")
    if min(data.shape) < MIN_SIZE:
        raise ImageError(
            f"{name}: image of {data.shape[0]}x{data.shape[1]} px is too small (min {MIN_SIZE} px a side): use a larger field"
        )
    if data.size > MAX_PIXELS:
        raise ImageError(
            f"{name}: image of {data.shape[0]}x{data.shape[1]} px is too large ({data.size / 2**20:.0f} Mpx > "
            f"{MAX_PIXELS // 2**20} Mpx): crop or bin it first"
        )
    data = data.astype(np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        raise ImageError(f"{name}: {int(bad.sum())} NaN/inf pixels: crop them away or fill them before inference")
    if float(data.max() - data.min()) <= 1e-12 * max(1.0, float(np.abs(data).max())):
        raise ImageError(f"{name}: the image is constant ({float(data.flat[0]):g} everywhere): it holds no contrast")
    return data


def _read_rsciio(path: Path, plugin: str) -> list[dict]:
    import importlib
    import logging

    reader = importlib.import_module(f"rsciio.{plugin}").file_reader
    kwargs = {"lazy": False}
    quiet = [logging.getLogger(n) for n in ("tifffile", "rsciio")]  # a damaged file is reported once, by us
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR + 1)
    try:
        return reader(str(path), **kwargs)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def read_image(
    path: str | os.PathLike,
    pixel_size: float | None = None,
    channel: str | int | None = None,
    frame: int | None = None,
) -> Micrograph:
    """Read a micrograph and its pixel size.

    Parameters
    ----------
    path
        dm3, dm4, emd, ser, mrc, tif, hspy, png, jpg or npy file.
    pixel_size
        Pixel size [Å/px]; overrides the file's calibration, required where the file has none.
    channel
        For colour images: ``gray``, ``r``, ``g`` or ``b``.
    frame
        For image stacks: the frame to use (default: the sum of all frames).

    Raises
    ------
    ImageError
        Missing or unreadable file, unknown format, no pixel size, RGB without a channel, NaN/inf,
        empty, constant, tiny or huge images.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ImageError(f"image file not found: {path}; pass image=<path to a dm3/dm4/emd/ser/mrc/tif/png/npy file>")
    suffix = path.suffix.lower()
    plugin = FORMATS.get(suffix)
    if plugin is None:
        raise ImageError(f"{name}: unknown image format {suffix!r}; supported: {', '.join(sorted(FORMATS))}")
    if path.stat().st_size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes): copy it again from the microscope PC")
    calibrated = None
    metadata: dict[str, Any] = {"format": plugin}
    try:
        if plugin == "npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)  # shape checks before reading the pixels
        elif plugin == "image":
            import imageio.v3 as iio

            data = iio.imread(path)
        else:
            signal = _pick_signal(_read_rsciio(path, plugin), name, frame)
            data = signal["data"]
            calibrated = _pixel_size_from_axes(signal.get("axes", []), name)
            md = signal.get("metadata", {}) or {}
            metadata["signal_type"] = md.get("Signal", {}).get("signal_type", "")
            beam = md.get("Acquisition_instrument", {}).get("TEM", {}).get("beam_energy")
            if beam:
                metadata["beam_energy_kV"] = float(beam)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to read this file: crop or bin it first") from None
    except Exception as exc:  # corrupt or truncated files surface as many exception types
        raise ImageError(
            f"{name}: cannot read this {suffix} file ({type(exc).__name__}: {str(exc)[:80]}); is it truncated or corrupt?"
        ) from None
    data = np.asarray(data)
    if data.dtype.names or (data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4):
        data = _rgb_to_gray(data, name, channel)
    if data.ndim == 3:  # a stack of frames
        if frame is not None:
            if not 0 <= frame < data.shape[0]:
                raise ImageError(f"{name}: frame={frame} out of range: the stack has {data.shape[0]} frames")
            data = data[frame]
        else:
            metadata["frames_summed"] = int(data.shape[0])
            data = data.astype(np.float64).sum(0)
    data = check_image(data, name)
    if pixel_size is not None:
        sampling = float(pixel_size)
        metadata["pixel_size_source"] = "given"
    elif calibrated is not None:
        sampling = calibrated
        metadata["pixel_size_source"] = "file calibration"
    else:
        raise ImageError(
            f"{name}: the file has no pixel-size calibration: pass pixel_size=<Å per pixel> (e.g. pixel_size=0.2)"
        )
    lo, hi = PIXEL_SIZE_RANGE
    if not np.isfinite(sampling) or not lo <= sampling <= hi:
        raise ImageError(
            f"{name}: pixel size {sampling:g} Å/px is outside {lo}-{hi} Å/px, where atomic columns can be resolved: "
            "check the calibration or pass pixel_size=<Å per pixel>"
        )
    return Micrograph(data=data, sampling=sampling, path=str(path), metadata=metadata)
