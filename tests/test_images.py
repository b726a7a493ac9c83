"""Reading odd and bad images, resizing, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from conftest import data_path
from stylejax.errors import StylejaxError
from stylejax.images import check_output, read_image, resize_longest, write_image


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "I", "F", "1", "RGB"])
def test_modes_become_rgb_uint8(tmp_path, mode):
    base = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 13, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.arange(9 * 13).reshape(9, 13) * 500).astype(np.uint16))
    elif mode == "I":
        img = Image.fromarray((np.arange(9 * 13).reshape(9, 13) * 100).astype(np.int32))
    elif mode == "F":
        img = Image.fromarray(np.linspace(0, 1, 9 * 13).reshape(9, 13).astype(np.float32))
    else:
        img = base.convert(mode)
    suffix = ".tiff" if mode in ("CMYK", "I", "F", "LA") else ".png"
    path = tmp_path / f"x{suffix}"
    img.save(path)
    arr = read_image(path)
    assert arr.dtype == np.uint8 and arr.shape == (9, 13, 3)


def test_sixteen_bit_scales_to_full_range(tmp_path):
    img = Image.fromarray(np.array([[0, 65535]], np.uint16))
    img.save(tmp_path / "a.png")
    arr = read_image(tmp_path / "a.png")
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[0, 1].tolist() == [255, 255, 255]


def test_rgba_composites_on_white(tmp_path):
    Image.new("RGBA", (2, 2), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert read_image(tmp_path / "t.png")[0, 0].tolist() == [255, 255, 255]


def test_real_grayscale_imagenet_image():
    import glob

    path = data_path("imagenet-sample")
    gray = [p for p in sorted(glob.glob(str(path / "*.jpg")))[:400] if Image.open(p).mode == "L"]
    assert gray, "the shared sample has grayscale images"
    arr = read_image(gray[0])
    assert arr.shape[2] == 3 and np.array_equal(arr[..., 0], arr[..., 1])


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "dir", "bomb"])
def test_bad_files_raise_one_line(tmp_path, case):
    path = tmp_path / "bad.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not an image\n")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "dir":
        path.mkdir()
    elif case == "bomb":
        path = tmp_path / "bomb.png"
        _write_png_header(path, 200_000, 200_000)
    with pytest.raises(StylejaxError) as info:
        read_image(path)
    assert "\n" not in str(info.value) and str(path.name) in str(info.value)


def _write_png_header(path, width, height):
    """A tiny PNG whose header claims width x height pixels."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_never_crash(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "x.jpg"
    path.write_bytes(blob)
    try:
        arr = read_image(path)
    except StylejaxError as exc:
        assert "\n" not in str(exc)
    else:
        assert arr.dtype == np.uint8 and arr.ndim == 3


def test_resize_longest():
    img = np.zeros((100, 50, 3), np.uint8)
    assert resize_longest(img, 40).size == (20, 40)
    same = Image.fromarray(img)
    assert resize_longest(same, 100) is same


def test_write_is_atomic_and_refuses_inputs(tmp_path):
    src = tmp_path / "in.png"
    write_image(src, np.full((4, 4, 3), 7, np.uint8))
    assert read_image(src)[0, 0].tolist() == [7, 7, 7]
    with pytest.raises(StylejaxError, match="also an input"):
        check_output(tmp_path / "." / "in.png", [src])
    with pytest.raises(StylejaxError, match="extension"):
        write_image(tmp_path / "out.gif", np.zeros((2, 2, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_failed_write_leaves_nothing(tmp_path):
    from stylejax.images import atomic_write

    def half_then_fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "o.png", half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    import os

    path = write_image(tmp_path / "p.png", np.zeros((2, 2, 3), np.uint8))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
