"""``stylejax transfer --style-loss w2 --style-masks``: a real run and every refusal (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stylejax.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("masks")
    r = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:40]
    content = np.stack([xx * 6, yy * 8, 128 + 60 * np.sin(xx / 3.0)], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(content).save(d / "content.png")
    Image.fromarray(r.integers(0, 256, (24, 24, 3)).astype(np.uint8)).save(d / "a.png")
    Image.fromarray(r.integers(0, 128, (20, 28, 3)).astype(np.uint8)).save(d / "b.png")
    left = np.zeros((60, 80), np.uint8)  # twice the content's size: resized to it
    left[:, :40] = 255
    Image.fromarray(left, "L").save(d / "left.png")
    Image.fromarray(255 - left, "L").save(d / "right.png")
    Image.fromarray(np.full((30, 30), 255, np.uint8), "L").save(d / "square.png")
    Image.fromarray(np.zeros((30, 40), np.uint8), "L").save(d / "black.png")
    (d / "broken.png").write_bytes(b"not an image at all")
    return d


def test_w2_with_masks_writes_image_and_report(files, tmp_path, vgg16, capsys):
    out = tmp_path / "out.png"
    argv = ["transfer", str(files / "content.png"), str(files / "a.png"), str(files / "b.png"), "-o", str(out),
            "--size", "32", "--iters", "2", "--optimizer", "adam", "--style-loss", "w2",
            "--style-masks", f"{files / 'left.png'},{files / 'right.png'}", "--style-layers", "conv1_1,conv2_1",
            "--quiet"]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (32, 24)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["settings"]["style_loss"] == "w2" and report["objective"]["style_loss"] == "w2"
    assert report["style_masks"] == [str(files / "left.png"), str(files / "right.png")]
    assert [m["coverage"] for m in report["objective"]["style_masks"]] == [0.5, 0.5]
    assert all(np.isfinite(v) for v in report["loss"].values()), report["loss"]


@pytest.mark.parametrize("styles, masks, message", [
    (["a.png", "b.png"], ["left.png"], "1 masks for 2 style images"),
    (["a.png"], ["square.png"], "aspect"),
    (["a.png"], ["black.png"], "empty"),
    (["a.png"], ["broken.png"], "broken.png: not an image"),
    (["a.png", "b.png"], ["left.png", "missing.png"], "no such file"),
])
def test_bad_masks_are_refused_in_one_line(files, tmp_path, styles, masks, message):
    out = tmp_path / "never.png"
    env = dict(os.environ, STYLEJAX_CACHE=os.environ.get("STYLEJAX_CACHE", "/tmp/sjcache"))
    proc = subprocess.run([sys.executable, "-m", "stylejax", "transfer", str(files / "content.png"),
                           *[str(files / s) for s in styles], "-o", str(out), "--size", "32", "--iters", "1",
                           "--style-loss", "w2", "--style-masks", ",".join(str(files / m) for m in masks)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("stylejax: error: ") and message in proc.stderr, proc.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()
