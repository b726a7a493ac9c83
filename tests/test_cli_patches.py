"""``stylejax patches``: the report, the pictures, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax.cli import main
from stylejax.interpret import dataset
from stylejax.interpret.scan import STATE_FILE


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """8 real images, a grayscale PNG of exactly 48x48, a text file and an empty .jpg."""
    src = data_path("imagenet-sample")
    root = tmp_path_factory.mktemp("cli") / "photos"
    (root / "sub").mkdir(parents=True)
    for name in sorted(p.name for p in src.glob("*.jpg"))[5::110][:8]:
        (root / name).symlink_to(src / name)
    gray = (np.add.outer(np.arange(48), np.arange(48)) * 2).astype(np.uint8)
    Image.fromarray(gray, "L").save(root / "sub" / "gray.png")
    (root / "sub" / "readme.txt").write_text("hello\n")
    (root / "sub" / "empty.jpg").write_bytes(b"")
    return root


def _patches(argv) -> int:
    try:
        return main(["patches", *argv])
    except SystemExit as exc:  # argparse usage errors
        return exc.code


def _fails(capsys, argv, *needles, code=1):
    assert _patches(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_report_pictures_and_html(folder, tmp_path, capsys, vgg16):
    out = tmp_path / "out"
    argv = [str(folder), "--layer", "conv1_2", "--units", "3,7,12", "--top", "4", "--size", "48",
            "--batch", "4", "--tile", "24", "-o", str(out), "-q"]
    assert _patches(argv) == 0
    report = json.loads((out / "patches.json").read_text())
    assert report["layer"] == "conv1_2" and report["images"] == 9 and report["top"] == 4
    assert report["arch"] == "vgg16" and report["weights"] == "vgg16" and report["size"] == 48
    assert sorted(s["file"] for s in report["skipped"]) == ["sub/empty.jpg", "sub/readme.txt"]
    assert all(s["reason"] for s in report["skipped"]) and report["seconds"] > 0
    assert list(report["units"]) == ["3", "7", "12"]
    for entries in report["units"].values():
        assert len(entries) == 4 and len({e["image"] for e in entries}) == 4
        acts = [e["activation"] for e in entries]
        assert acts == sorted(acts, reverse=True)
        for e in entries:
            top, left, bottom, right = e["box"]
            assert (top, left) == (max(0, e["y"] - 2), max(0, e["x"] - 2))  # conv1_2: 5x5 field
            assert (bottom, right) == (min(48, e["y"] + 3), min(48, e["x"] + 3))
    grid = np.asarray(Image.open(out / "conv1_2.png").convert("RGB"))
    best = report["units"]["3"][0]  # the first tile of the first block: title 20 px, gap 6, label 14
    pixels = np.full((48 + 4, 48 + 4, 3), 128, np.uint8)
    pixels[2:50, 2:50] = dataset.load_square(folder / best["image"], 48)
    field = pixels[best["y"]:best["y"] + 5, best["x"]:best["x"] + 5]  # 5x5 around (y, x), grey outside
    tile = np.asarray(Image.fromarray(field).resize((24, 24), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(grid[40:64, 6:30], tile)
    html = (out / "index.html").read_text()
    assert "conv1_2.png" in html and "units/conv1_2/12.png" in html and "sub/readme.txt" in html
    assert all((out / "units" / "conv1_2" / f"{u}.png").exists() for u in (3, 7, 12))
    assert not (out / STATE_FILE).exists()
    # A rerun into the same folder replaces the results (no unfinished scan is left there); without
    # -q the library's progress records are drawn as a bar counting files (tqdm redraws at most
    # every 0.1 s, so the last count drawn varies).
    capsys.readouterr()
    assert _patches([a for a in argv if a != "-q"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "scan conv1_2: 0file [" in err and "file/s]" in err, err
    assert "scanned 9 images" in captured.out, captured.out  # the summary on stdout, like every command


def test_bad_input_one_line(folder, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["--layer", "conv1_1", "-o", str(out), "-q"]
    _fails(capsys, [str(tmp_path / "missing"), *base], "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, [str(empty), *base], "no files")
    _fails(capsys, [str(folder / "sub" / "readme.txt"), *base], "not a folder")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("not a jpeg")
    _fails(capsys, [str(junk), *base], "no readable images")
    err = _fails(capsys, [str(folder), "--layer", "conv9_9", "-o", str(out)], "unknown layer 'conv9_9'")
    assert "conv1_1" in err and "pool5" in err
    _fails(capsys, [str(folder), "--layer", "conv1_1", "--units", "60:70", "-o", str(out)],
           "unit 64 is outside conv1_1", "0..63")
    _fails(capsys, [str(folder), "--layer", "conv1_1", "--units", "x", "-o", str(out)], "--units")
    _fails(capsys, [str(folder), "--layer", "conv1_1", "--top", "0", "-o", str(out)], "--top", code=2)
    _fails(capsys, [str(folder), "--layer", "conv1_1", "--size", "-3", "-o", str(out)], "--size", code=2)
    _fails(capsys, [str(folder), "--layer", "pool5", "--size", "16", "-o", str(out)], "too small")
    _fails(capsys, [str(folder), *base[:2], "-o", str(tmp_path / "no" / "such")], "does not exist")
    _fails(capsys, [str(folder), *base[:2], "-o", str(folder / "sub" / "readme.txt")], "not a folder")
    assert not out.exists()  # nothing was written by any failed run


def test_unfinished_scan_needs_resume(folder, tmp_path, capsys, vgg16):
    out = tmp_path / "o"
    out.mkdir()
    (out / STATE_FILE).write_bytes(b"junk")
    argv = [str(folder), "--layer", "conv1_1", "--units", "0:2", "--size", "32", "-o", str(out), "-q"]
    _fails(capsys, argv, "--resume")
    _fails(capsys, [*argv, "--resume"], "unreadable scan state")
    assert not (out / "patches.json").exists()
