"""Tests for glandseg_core.imaging.io: every bad input gives an ImageError that names the problem."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from glandseg_core.imaging import io as gio
from glandseg_core.imaging.io import (
    MAX_PIXELS,
    ImageError,
    label_png_bytes,
    png_bytes,
    read_image,
    read_label_map,
    write_label_png,
    write_png,
)
from tests.helpers import real_glas

GLAS = real_glas()


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise_rgb(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width×height, with an empty (invalid) image stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def error_of(fn: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The message of the ImageError that fn raises (exactly that type, on one line)."""
    with pytest.raises(ImageError) as info:
        fn(*args, **kwargs)
    assert type(info.value) is ImageError
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------- good images


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_roundtrip_exactly(fmt: str) -> None:
    rgb = noise_rgb()
    out = read_image(encode(Image.fromarray(rgb), fmt))
    assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_is_read_as_rgb() -> None:
    rgb = np.full((32, 40, 3), (200, 100, 50), np.uint8)
    out = read_image(encode(Image.fromarray(rgb), "JPEG", quality=95))
    assert out.shape == (32, 40, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= 4


def test_path_and_file_object_sources(tmp_path: Path) -> None:
    rgb = noise_rgb()
    path = tmp_path / "scan.png"
    path.write_bytes(encode(Image.fromarray(rgb), "PNG"))
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(str(path)), rgb)
    with open(path, "rb") as fh:
        fh.read(10)  # a half-read upload is read again from its start
        np.testing.assert_array_equal(read_image(fh), rgb)
    np.testing.assert_array_equal(read_image(bytearray(path.read_bytes())), rgb)


def test_grayscale_8bit_becomes_three_equal_channels() -> None:
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    out = read_image(encode(Image.fromarray(gray), "PNG"))
    assert out.shape == (64, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(65535, 255), (4095, 255), (2048, 128), (255, 255), (100, 100), (0, 0)],
)
def test_grayscale_16bit_is_scaled_by_its_bit_depth(value: int, expected: int) -> None:
    arr = np.zeros((16, 16), np.uint16)
    arr[:8] = value
    im = Image.fromarray(arr)
    assert im.mode == "I;16"
    out = read_image(encode(im, "PNG"))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert out[0, 0, 0] == expected and out[-1, -1, 0] == 0


def test_float_and_int32_tiff_grayscale() -> None:
    ramp = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    out = read_image(encode(Image.fromarray(ramp), "TIFF"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    signed = np.linspace(-1000, 1000, 256).astype(np.int32).reshape(16, 16)
    out = read_image(encode(Image.fromarray(signed), "TIFF"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_rgba_and_la_are_composited_on_white() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:8, :, 3] = 255  # opaque red on top, fully transparent below
    out = read_image(encode(Image.fromarray(rgba), "PNG"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[-1, -1]) == (255, 255, 255)
    la = Image.new("LA", (16, 16), (0, 0))
    assert tuple(read_image(encode(la, "PNG"))[0, 0]) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted(fmt: str) -> None:
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = read_image(encode(im, fmt))
    assert out.shape == (16, 16, 3)
    r, g, b = (int(v) for v in out[8, 8])
    assert r > 230 and g < 30 and b < 30


def test_palette_and_1bit_images() -> None:
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert tuple(read_image(encode(pal, "PNG"))[0, 0]) == (10, 200, 30)
    assert tuple(read_image(encode(pal, "PNG", transparency=1))[0, 0]) == (255, 255, 255)
    one = Image.new("1", (16, 16), 1)
    assert tuple(read_image(encode(one, "PNG"))[0, 0]) == (255, 255, 255)
    assert tuple(read_image(encode(one, "BMP"))[0, 0]) == (255, 255, 255)


def test_multiframe_tiff_uses_first_frame() -> None:
    first = Image.new("RGB", (16, 16), (10, 20, 30))
    second = Image.new("RGB", (16, 16), (200, 200, 200))
    data = encode(first, "TIFF", save_all=True, append_images=[second])
    assert tuple(read_image(data)[0, 0]) == (10, 20, 30)


def test_large_image_over_4000_pixels_is_accepted() -> None:
    data = encode(Image.new("RGB", (4100, 4100), (1, 2, 3)), "PNG", compress_level=1)
    out = read_image(data)
    assert out.shape == (4100, 4100, 3) and tuple(out[-1, -1]) == (1, 2, 3)


def test_smallest_accepted_size_is_8x8() -> None:
    assert read_image(encode(Image.new("RGB", (8, 8)), "PNG")).shape == (8, 8, 3)


# ------------------------------------------------------------------------------------------ bad images


def test_non_image_bytes() -> None:
    message = error_of(read_image, b"this is a CSV, not a picture\n1,2,3\n", name="scan.png")
    assert message.startswith("scan.png: ")
    assert "not an image" in message


def test_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    assert "empty" in error_of(read_image, b"")
    path = tmp_path / "blank.png"
    path.write_bytes(b"")
    message = error_of(read_image, path)
    assert message.startswith("blank.png: ") and "empty" in message


def test_missing_file_and_folder(tmp_path: Path) -> None:
    message = error_of(read_image, tmp_path / "nope.tif")
    assert message.startswith("nope.tif: ") and "not found" in message
    assert "folder" in error_of(read_image, tmp_path)


def _refused_at_once(read: Callable[..., object], path: Path) -> str:
    """The ImageError message of ``read(path)``, failing (not hanging) if it takes more than 5 s."""
    result: list[str] = []

    def run() -> None:
        try:
            read(path)
            result.append("no error")
        except ImageError as exc:
            result.append(str(exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():  # release a reader stuck in open() on the FIFO, so the test run can go on
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail(f"reading {path.name} blocked for 5 s")
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("read", [read_image, read_label_map])
def test_fifo_is_refused_at_once(tmp_path: Path, read: Callable[..., object]) -> None:
    fifo = tmp_path / "y.png"
    os.mkfifo(fifo)
    assert _refused_at_once(read, fifo) == "y.png: is a named pipe (FIFO), not an image file"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_device_is_refused_at_once(tmp_path: Path) -> None:
    link = tmp_path / "zeros.png"
    link.symlink_to("/dev/zero")
    assert _refused_at_once(read_image, link) == "zeros.png: is a device, not an image file"
    assert (
        _refused_at_once(read_label_map, tmp_path) == f"{tmp_path.name}: is a folder, not an image file"
    )


def test_uint32_label_map_is_not_read_as_negative(tmp_path: Path) -> None:
    labels = np.zeros((16, 16), np.uint32)
    labels[2:6, 2:6], labels[9:12, 9:12] = 70_000, 2_000_000_000
    tifffile.imwrite(tmp_path / "ok.tif", labels)
    np.testing.assert_array_equal(read_label_map(tmp_path / "ok.tif"), labels.astype(np.int32))
    labels[9:12, 9:12] = (
        4_000_000_000  # above int32: refused with the true reason, not "negative values"
    )
    tifffile.imwrite(tmp_path / "big.tif", labels)
    message = error_of(read_label_map, tmp_path / "big.tif")
    assert message.startswith("big.tif: annotation has ids up to 4000000000, above the int32 limit")
    assert "negative" not in message
    gray = read_image(tmp_path / "big.tif")  # as an image: scaled over the 32-bit range, not stretched
    assert gray[10, 10, 0] == round(4e9 * 255 / (2**32 - 1)) and gray[0, 0, 0] == 0
    signed = np.zeros((16, 16), np.int32)
    signed[1, 1] = -5
    tifffile.imwrite(tmp_path / "neg.tif", signed)
    assert "negative values (min -5)" in error_of(read_label_map, tmp_path / "neg.tif")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_truncated_file(fmt: str, tmp_path: Path) -> None:
    data = encode(Image.fromarray(noise_rgb(128, 128)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    message = error_of(read_image, path)
    assert message.startswith(f"cut.{fmt.lower()}: ")
    assert "truncated" in message or "corrupt" in message


def test_decompression_bomb_header_is_refused_without_decoding() -> None:
    before = Image.MAX_IMAGE_PIXELS
    message = error_of(read_image, png_header_only(12_000, 12_000), name="huge.png")
    assert message == "huge.png: the image is 12000×12000 pixels, above the 100-megapixel limit"
    # beyond Pillow's hard limit (2 × MAX_IMAGE_PIXELS) its DecompressionBombError becomes an ImageError
    assert "too large" in error_of(read_image, png_header_only(40_000, 40_000))
    assert before == Image.MAX_IMAGE_PIXELS


def test_max_pixels_argument() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    message = error_of(read_image, data, max_pixels=5_000)
    assert "100×100 pixels" in message and "5,000-pixel limit" in message
    assert read_image(data, max_pixels=10_000).shape == (100, 100, 3)
    assert MAX_PIXELS == 100_000_000


@pytest.mark.parametrize("size", [(1, 1), (7, 100), (100, 7)])
def test_too_small(size: tuple[int, int]) -> None:
    message = error_of(read_image, encode(Image.new("RGB", size), "PNG"), name="dot.png")
    assert message == f"dot.png: the image is {size[0]}×{size[1]} pixels; glandseg needs at least 8×8"


# ------------------------------------------------------------------------------------------ label maps


@pytest.mark.skipif(not (GLAS / "train_1_anno.bmp").exists(), reason="GlaS data not available")
def test_real_glas_pair() -> None:
    image = read_image(GLAS / "train_1.bmp")
    labels = read_label_map(GLAS / "train_1_anno.bmp", shape=image.shape[:2])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
    assert labels.min() == 0 and labels.max() >= 1
    assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))


def test_label_map_modes() -> None:
    lab = np.zeros((20, 30), np.int32)
    lab[2:8, 3:9] = 1
    lab[10:18, 12:25] = 7
    for im, fmt in [
        (Image.fromarray(lab.astype(np.uint8)), "PNG"),
        (Image.fromarray(lab.astype(np.uint8)), "BMP"),
        (Image.fromarray(lab.astype(np.uint16)), "PNG"),
        (Image.fromarray(lab.astype(np.uint16)), "TIFF"),
        (Image.fromarray(lab), "TIFF"),
        (Image.fromarray(lab.astype(np.float32)), "TIFF"),
        (Image.fromarray(np.repeat(lab.astype(np.uint8)[..., None], 3, axis=2)), "PNG"),
    ]:
        out = read_label_map(encode(im, fmt))
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, lab, err_msg=f"{im.mode} {fmt}")
    pal = Image.fromarray(lab.astype(np.uint8)).convert("P")
    pal.putpalette(
        [v for i in range(256) for v in (i * 7 % 256, 0, 255 - i)]
    )  # colours, but indices count
    np.testing.assert_array_equal(read_label_map(encode(pal, "PNG")), lab)
    big = lab * 10_000  # ids above 65535 in a 32-bit TIFF
    np.testing.assert_array_equal(read_label_map(encode(Image.fromarray(big), "TIFF")), big)
    one = Image.fromarray(lab > 0)
    np.testing.assert_array_equal(read_label_map(encode(one, "PNG")), (lab > 0).astype(np.int32))


def test_label_map_of_another_size() -> None:
    data = encode(Image.new("L", (640, 480)), "PNG")
    message = error_of(read_label_map, data, name="anno.png", shape=(522, 775))
    assert message == "anno.png: annotation is 640×480 but the image is 775×522"


def test_label_map_refuses_colour_fractions_and_negatives() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:8, 4:8] = (255, 0, 0)
    assert "channels differ" in error_of(read_label_map, encode(Image.fromarray(rgb), "PNG"))
    frac = np.zeros((16, 16), np.float32)
    frac[3, 3] = 1.5
    assert "non-integer" in error_of(read_label_map, encode(Image.fromarray(frac), "TIFF"))
    frac[3, 3] = np.nan
    assert "NaN" in error_of(read_label_map, encode(Image.fromarray(frac), "TIFF"))
    neg = np.zeros((16, 16), np.int32)
    neg[0, 0] = -3
    assert "negative" in error_of(read_label_map, encode(Image.fromarray(neg), "TIFF"))
    assert "not an image" in error_of(read_label_map, b"GIF89a-not-really")
    assert "empty" in error_of(read_label_map, b"")


def test_label_png_roundtrip_with_ids_above_255(tmp_path: Path) -> None:
    lab = np.zeros((40, 50), np.int32)
    lab[1:10, 1:10] = 300
    lab[20:30, 5:45] = 65535
    lab[32:39, 2:4] = 1
    path = tmp_path / "pred.png"
    write_label_png(path, lab)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    np.testing.assert_array_equal(read_label_map(path), lab)
    np.testing.assert_array_equal(read_label_map(label_png_bytes(lab)), lab)


def test_label_png_refuses_ids_above_65535(tmp_path: Path) -> None:
    lab = np.zeros((10, 10), np.int64)
    lab[0, 0] = 70_000
    path = tmp_path / "pred.png"
    message = error_of(write_label_png, path, lab)
    assert message.startswith("pred.png: ") and "65535" in message
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        label_png_bytes(np.zeros((2, 3, 4), np.int32))


# --------------------------------------------------------------------------------------------- writing


def test_write_png_roundtrip(tmp_path: Path) -> None:
    rgb = noise_rgb()
    write_png(tmp_path / "ov.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "ov.png"), rgb)
    np.testing.assert_array_equal(read_image(png_bytes(rgb)), rgb)
    with pytest.raises(ValueError):
        png_bytes(rgb.astype(np.float32))


# --------------------------------------------------------------------------------------------- fuzzing


def _seed_files() -> list[bytes]:
    rgb = noise_rgb(12, 10, seed=3)
    lab = (rgb[..., 0] // 64).astype(np.uint8)
    return [
        encode(Image.fromarray(rgb), "PNG"),
        encode(Image.fromarray(rgb), "JPEG"),
        encode(Image.fromarray(rgb), "BMP"),
        encode(Image.fromarray(rgb), "TIFF"),
        encode(Image.fromarray(lab), "PNG"),
        encode(Image.fromarray(lab.astype(np.uint16) * 300), "PNG"),
        encode(Image.fromarray(lab.astype(np.float32)), "TIFF"),
    ]


_SEEDS = _seed_files()


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A valid small image file with a few bytes changed, cut short or extended."""
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt EXIF in mutated TIFFs
@given(data=st.one_of(st.binary(max_size=256), mutated_files()))
def test_read_image_returns_rgb_or_raises_image_error(data: bytes) -> None:
    try:
        out = read_image(data, max_pixels=1_000_000)
    except ImageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("upload: ")
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= 8 and out.shape[1] >= 8


@_FUZZ
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt EXIF in mutated TIFFs
@given(data=st.one_of(st.binary(max_size=256), mutated_files()))
def test_read_label_map_returns_labels_or_raises_image_error(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gio, "MAX_PIXELS", 1_000_000)  # mutated headers must not claim huge allocations
        try:
            out = read_label_map(data)
        except ImageError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("upload: ")
            return
    assert out.dtype == np.int32 and out.ndim == 2 and out.min() >= 0
