"""``stylejax atlas``: the site in a real headless browser, atlas.json, resuming, one-line errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from browser import check_site, find_chromium, screenshot
from conftest import data_path
from stylejax.cli import main
from stylejax.interpret import dataset

LAYERS = ("conv1_2", "conv2_1")
ARGV = ["--layers", ",".join(LAYERS), "--units", "3:5", "--top", "4", "--size", "64",
        "--visualize-steps", "3", "--visualize-size", "32", "--tile", "48", "-q"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """20 real ImageNet images and an empty .jpg (skipped)."""
    src = data_path("imagenet-sample")
    root = tmp_path_factory.mktemp("atlas") / "photos"
    root.mkdir()
    for name in sorted(p.name for p in src.glob("*.jpg"))[3::45][:20]:
        (root / name).symlink_to(src / name)
    (root / "empty.jpg").write_bytes(b"")
    return root


def _atlas(argv) -> int:
    try:
        return main(["atlas", *argv])
    except SystemExit as exc:  # argparse usage errors
        return exc.code


def _fails(capsys, argv, *needles, code=1):
    assert _atlas(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _check_patch(site, folder, record, rank: int) -> None:
    """The patch picture is the scanned image's window around the field, with the box drawn."""
    y, x = record["positions"][rank]
    assert record["receptive_field"] == {"size": 5, "jump": 1, "start": 0.0}  # conv1_2: two 3x3 convs
    assert record["boxes"][rank] == [max(0, y - 2), max(0, x - 2), min(64, y + 3), min(64, x + 3)]
    top, left = (min(max(0, math.floor(c + 0.5 - 12)), 64 - 24) for c in (y, x))  # 24 px window
    assert record["windows"][rank] == [top, left, top + 24, left + 24]
    pixels = dataset.load_square(folder / record["images"][rank], 64)[top:top + 24, left:left + 24]
    want = np.asarray(Image.fromarray(pixels).resize((48, 48), Image.Resampling.LANCZOS)).astype(int)
    got = np.asarray(Image.open(site / record["patches"][rank]).convert("RGB")).astype(int)
    b_top, b_left, b_bottom, b_right = (2 * (v - o) for v, o in zip(record["boxes"][rank], (top, left, top, left)))
    rows, cols = np.mgrid[:48, :48]
    on_box = (((np.abs(rows - b_top) <= 1) | (np.abs(rows - (b_bottom - 1)) <= 1)) & (cols >= b_left - 1)
              & (cols <= b_right)) | (((np.abs(cols - b_left) <= 1) | (np.abs(cols - (b_right - 1)) <= 1))
                                      & (rows >= b_top - 1) & (rows <= b_bottom))
    np.testing.assert_array_equal(got[~on_box], want[~on_box])
    assert (got[on_box] == (255, 214, 0)).all(axis=-1).sum() >= 2 * (b_right - b_left)


def test_site_renders_in_chromium_and_resumes(folder, tmp_path, capsys, vgg16):
    chromium = find_chromium()
    site = tmp_path / "site"
    assert _atlas([str(folder), *ARGV, "-o", str(site)]) == 0
    err = capsys.readouterr().err
    assert "4 units of 2 layers over 20 images (1 skipped); 4 pages built" in err, err
    doc = json.loads((site / "atlas.json").read_text())
    assert list(doc["layers"]) == list(LAYERS) and doc["images"] == 20
    assert [s["file"] for s in doc["skipped"]] == ["empty.jpg"]
    for layer in LAYERS:
        assert list(doc["layers"][layer]) == ["3", "4"]
        for unit, record in doc["layers"][layer].items():
            assert len(record["patches"]) == len(record["projections"]) == 4
            for rel in [*record["patches"], *record["projections"], record["visualization"], record["page"]]:
                assert not rel.startswith("/") and (site / rel).is_file(), rel
            acts = record["activations"]
            assert acts == sorted(acts, reverse=True) and len(set(record["images"])) == 4
            assert record["visualization_objective"]["final"] > record["visualization_objective"]["initial"]
            assert Image.open(site / record["visualization"]).size == (32, 32)
    assert doc["receptive_fields"]["conv2_1"] == {"size": 10, "jump": 2, "start": 0.5}
    for rank in range(4):
        _check_patch(site, folder, doc["layers"]["conv1_2"]["3"], rank)

    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); browser checks skipped")
    report = check_site(site, chromium=chromium)
    assert report["problems"] == [], report["problems"]
    assert report["pages"] == 1 + 2 * (1 + 2)  # site index, per layer an index and 2 unit pages
    assert report["images"] == 2 * 2 * (1 + 2 * 4) + 2 * 2 * 2  # unit pages + the layer indexes' cells
    shot = screenshot(site / "conv2_1" / "unit_4.html", tmp_path / "page.png", 900, 700, chromium=chromium)
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape == (700, 900, 3) and picture.std() > 20  # drawn, not a blank page

    # Resume: finished pages are kept; lost ones are rebuilt identically; settings must match.
    page = site / "conv1_2" / "unit_4.html"
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*.png")}
    saved = {u: (site / "conv1_2" / u / "unit.json").read_text() for u in ("3", "4")}
    assert _atlas([str(folder), *ARGV, "-o", str(site), "--resume"]) == 0
    assert "0 pages built, 4 kept" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    for unit in ("3", "4"):
        (site / "conv1_2" / f"unit_{unit}.html").unlink()
    shutil.copy(site / "conv1_2" / "3" / "visualization.png", tmp_path / "vis.png")
    assert _atlas([str(folder), *ARGV, "-o", str(site), "--resume"]) == 0
    assert "2 pages built, 2 kept" in capsys.readouterr().err
    assert page.exists()
    assert {u: (site / "conv1_2" / u / "unit.json").read_text() for u in ("3", "4")} == saved
    assert (site / "conv1_2" / "3" / "visualization.png").read_bytes() == (tmp_path / "vis.png").read_bytes()
    assert check_site(site, chromium=chromium)["problems"] == []
    _fails(capsys, [str(folder), *ARGV, "-o", str(site)], "not empty", "--resume")
    _fails(capsys, [str(folder), *ARGV, "--top", "3", "-o", str(site), "--resume"], "other settings", "top")


def test_bad_input_is_one_line(folder, tmp_path, capsys):
    site = tmp_path / "site"
    _fails(capsys, [str(tmp_path / "nope"), *ARGV, "-o", str(site)], "no such folder")
    _fails(capsys, [str(folder), *ARGV, "--layers", "conv1_2,conv9_9", "-o", str(site)], "conv9_9")
    _fails(capsys, [str(folder), *ARGV, "--units", "60:70", "-o", str(site)], "unit 64 is outside conv1_2")
    _fails(capsys, [str(folder), *ARGV, "--layers", "conv1_2,conv1_2", "-o", str(site)], "repeated layer")
    _fails(capsys, [str(folder), *ARGV, "--top", "0", "-o", str(site)], "--top", code=2)
    _fails(capsys, [str(folder), *ARGV, "--visualize-size", "8", "-o", str(site)], "too small")
    _fails(capsys, [str(folder), *ARGV, "-o", str(tmp_path / "missing" / "site")], "does not exist")
    _fails(capsys, [str(folder), *ARGV, "-o", str(folder), "--resume"], "inside the scanned folder")
    (tmp_path / "file").write_text("x")
    _fails(capsys, [str(folder), *ARGV, "-o", str(tmp_path / "file")], "not a folder")
    assert not site.exists()
