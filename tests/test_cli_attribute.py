"""``stylejax attribute``: outputs, the JSON report, and one-line errors with no partial output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax.cli import main


def _cli(argv) -> int:
    try:
        return main(["attribute", *argv])
    except SystemExit as exc:  # argparse usage errors
        return exc.code


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A real photo saved at 40 x 30 px, so the run uses it at its own size."""
    path = tmp_path_factory.mktemp("attr") / "tub.png"
    Image.open(data_path("images", "tubingen.jpg")).convert("RGB").resize((40, 30)).save(path)
    return path


def test_outputs_and_report(image, tmp_path, capsys, vgg16):
    out = tmp_path / "occ.npz"
    argv = [str(image), "--layer", "conv1_2", "--unit", "5", "--method", "occlusion", "--window", "10",
            "--stride", "5", "--chunk", "8", "-o", str(out), "-q"]
    assert _cli(argv) == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert set(z.files) == {"map", "heat", "target", "baseline"}
        assert z["map"].shape == ((30 - 10) // 5 + 1, (40 - 10) // 5 + 1) and z["heat"].shape == (30, 40)
        target = float(z["target"])
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["command"] == "attribute" and doc["size"] == [30, 40] and doc["method"] == "occlusion"
    assert doc["layer"] == "conv1_2" and doc["unit"] == 5 and np.isclose(doc["target"], target)
    assert doc["settings"] == {"window": 10, "stride": 5} and doc["outputs"]["picture"].endswith("occ.png")
    with Image.open(out.with_suffix(".png")) as picture:
        assert picture.size == (40, 30) and picture.mode == "RGB"


@pytest.mark.parametrize("extra,needle,code", [
    (["--layer", "conv1_2", "--unit", "64"], "unit 64 is outside conv1_2", 1),
    (["--layer", "conv1_2", "--unit", "0", "--method", "occlusion", "--window", "31"], "larger than the 30x40 image", 1),
    (["--layer", "conv1_2", "--unit", "0", "--stride", "0"], "expected a positive integer", 2),
    (["--layer", "conv1_2", "--unit", "0", "--steps", "-2"], "expected a positive integer", 2),
    (["--layer", "conv1_2", "--unit", "0", "--method", "lime"], "invalid choice", 2),
    (["--layer", "conv0", "--unit", "0"], "unknown layer 'conv0'", 1),
    (["--unit", "0"], "--layer L --unit K", 1),
    (["--class", "tabby", "--layer", "conv1_2"], "not both", 1),
    (["--class", "tabby"], "tumour classifier", 1),
    (["--layer", "fc7", "--unit", "3"], "tumour classifier", 1),
])
def test_bad_input_is_one_line_and_writes_nothing(image, tmp_path, capsys, extra, needle, code):
    out = tmp_path / "x.npz"
    assert _cli([str(image), *extra, "-o", str(out), "-q"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_bad_files(image, tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases = [([str(empty)], "empty file"), ([str(tmp_path / "missing.jpg")], "no such file"),
             ([str(image), "-o", str(image.with_suffix(".npz")) + ".txt"], "unsupported extension")]
    for argv, needle in cases:
        if "-o" not in argv:
            argv = [*argv, "-o", str(tmp_path / "y.npz")]
        assert _cli([*argv, "--layer", "conv1_1", "--unit", "0"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jpg"]
