"""Micrograph readers: calibrated formats give the pixel size, every bad input one clear error."""

import numpy as np
import pytest
from conftest import SHARED

from surrogate.errors import ImageError
from surrogate.io.readers import read_image

REAL = SHARED / "data" / "real" / "cdte_110_twin" / "HAADF26.dm3"


def _signal(data, scale_nm=0.02):
    axes = [
        {"name": n, "size": s, "scale": scale_nm, "units": "nm", "navigate": False, "offset": 0.0}
        for n, s in zip("yx", data.shape)
    ]
    return {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": "test"}, "Signal": {}},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {},
    }


@pytest.mark.skipif(not REAL.is_file(), reason="shared real data absent")
def test_dm3_calibration_is_read_from_the_file():
    m = read_image(REAL)
    assert m.data.shape == (512, 512) and m.data.dtype == np.float32
    assert m.sampling == pytest.approx(0.20217, abs=1e-4)
    assert read_image(REAL, pixel_size=0.3).sampling == 0.3  # an explicit pixel size wins


@pytest.mark.parametrize("suffix,writer", [(".tif", "tiff"), (".emd", "emd")])
def test_calibrated_formats_round_trip(tmp_path, suffix, writer):
    import importlib

    data = np.random.default_rng(0).random((64, 80)).astype(np.float32)
    path = tmp_path / f"img{suffix}"
    importlib.import_module(f"rsciio.{writer}").file_writer(str(path), _signal(data, 0.025))
    m = read_image(path)
    assert m.sampling == pytest.approx(0.25, rel=1e-3)
    np.testing.assert_allclose(m.data, data, rtol=1e-6)


def test_uncalibrated_formats_need_a_pixel_size(tmp_path):
    import imageio.v3 as iio

    data = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    np.save(tmp_path / "a.npy", data)
    iio.imwrite(tmp_path / "a.png", data)
    for name in ("a.npy", "a.png"):
        with pytest.raises(ImageError, match="no pixel-size calibration: pass pixel_size="):
            read_image(tmp_path / name)
        assert read_image(tmp_path / name, pixel_size=0.2).sampling == 0.2


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: np.full((64, 64), 3.0), "constant"),
        (lambda: np.where(np.eye(64) > 0, np.nan, 1.0) + np.arange(64), "NaN/inf"),
        (lambda: np.zeros((0, 64)), "empty"),
        (lambda: np.random.rand(8, 8), "too small"),
        (lambda: np.random.rand(4, 64, 64) > 2, None),  # bool stack -> summed, then constant
    ],
)
def test_bad_arrays_give_one_line_errors(tmp_path, make, message):
    np.save(tmp_path / "bad.npy", make())
    with pytest.raises(ImageError) as err:
        read_image(tmp_path / "bad.npy", pixel_size=0.2)
    assert "\n" not in str(err.value)
    if message:
        assert message in str(err.value)


def test_rgb_needs_a_channel(tmp_path):
    import imageio.v3 as iio

    rgb = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    with pytest.raises(ImageError, match="channel=gray"):
        read_image(tmp_path / "c.png", pixel_size=0.2)
    g = read_image(tmp_path / "c.png", pixel_size=0.2, channel="g")
    np.testing.assert_array_equal(g.data, rgb[..., 1].astype(np.float32))


def test_missing_truncated_unknown_and_implausible(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "none.dm3")
    (tmp_path / "x.dm4").write_bytes(b"\x00\x00\x00\x04garbage" * 10)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        read_image(tmp_path / "x.dm4")
    (tmp_path / "x.docx").write_bytes(b"abc")
    with pytest.raises(ImageError, match="unknown image format"):
        read_image(tmp_path / "x.docx")
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "e.tif")
    np.save(tmp_path / "ok.npy", np.random.rand(64, 64))
    with pytest.raises(ImageError, match="outside"):
        read_image(tmp_path / "ok.npy", pixel_size=20.0)
    if REAL.is_file():
        (tmp_path / "cut.dm3").write_bytes(REAL.read_bytes()[:5000])
        with pytest.raises(ImageError, match="truncated or corrupt"):
            read_image(tmp_path / "cut.dm3")
