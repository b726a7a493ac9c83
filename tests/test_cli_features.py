"""`stylejax features` end to end, and its bad-input behaviour."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax.cli import main
from stylejax.activations import features as extract_features
from stylejax.images import read_image


def test_features_saves_requested_layers(tmp_path, vgg16):
    src = data_path("images", "tubingen.jpg")
    out = tmp_path / "f.npz"
    assert main(["features", str(src), "--layers", "conv1_1,conv4_2", "--size", "64", "-o", str(out)]) == 0
    saved = np.load(out)
    assert sorted(saved.files) == ["conv1_1", "conv4_2"]
    pixels = read_image(src, 64)
    h, w = pixels.shape[:2]
    assert saved["conv1_1"].shape == (1, h, w, 64) and saved["conv4_2"].shape == (1, h // 8, w // 8, 512)
    ref = extract_features(vgg16, pixels[None], ["conv4_2"])["conv4_2"]
    np.testing.assert_allclose(saved["conv4_2"], np.asarray(ref), rtol=1e-6)


def test_features_without_size_uses_own_size(tmp_path):
    img = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (21, 35, 4), dtype=np.uint8), "RGBA").save(img)
    out = tmp_path / "f.npz"
    assert main(["features", str(img), "--layers", "pool1", "-o", str(out)]) == 0
    assert np.load(out)["pool1"].shape == (1, 10, 17, 64)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "stylejax", *args], capture_output=True, text=True, timeout=300)


def _bomb(path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "bomb", "layer", "arch",
                                  "size-negative", "size-text", "output-is-input", "bad-suffix", "weights"])
def test_bad_input_one_line_no_output(tmp_path, case):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(good)
    image, out, extra = good, tmp_path / "out.npz", []
    if case == "missing":
        image = tmp_path / "missing.jpg"
    elif case == "empty":
        image = tmp_path / "empty.jpg"
        image.write_bytes(b"")
    elif case == "text":
        image = tmp_path / "notes.jpg"
        image.write_text("hello")
    elif case == "truncated":
        image = tmp_path / "cut.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
        image.write_bytes(image.read_bytes()[:400])
    elif case == "bomb":
        image = tmp_path / "bomb.png"
        _bomb(image)
    elif case == "layer":
        extra = ["--layers", "conv1_1,fc7"]
    elif case == "arch":
        extra = ["--arch", "vgg11"]
    elif case == "size-negative":
        extra = ["--size", "-4"]
    elif case == "size-text":
        extra = ["--size", "big"]
    elif case == "output-is-input":
        out = tmp_path / "same.npz"
        np.savez(out, a=np.zeros(1))
        image = out
    elif case == "bad-suffix":
        out = tmp_path / "out.txt"
    elif case == "weights":
        extra = ["--weights", "no-such-set"]
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["features", str(image), "-o", str(out)] + (extra if "--layers" in extra else ["--layers", "conv1_1"] + extra)
    r = _run(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
