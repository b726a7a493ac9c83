"""``stylejax transfer`` / ``stylejax demo``: real runs at tiny sizes and every refusal."""

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
    d = tmp_path_factory.mktemp("transfer")
    r = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:40]
    content = np.stack([xx * 6, yy * 8, 128 + 60 * np.sin(xx / 3.0)], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(content).save(d / "content.png")
    Image.fromarray(r.integers(0, 256, (24, 24, 3)).astype(np.uint8)).save(d / "style.png")
    Image.fromarray(r.integers(0, 256, (20, 28)).astype(np.uint8), "L").save(d / "gray.png")
    rgba = np.concatenate([content, np.full((30, 40, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    (d / "broken.jpg").write_bytes(b"not an image at all")
    return d


def _run(argv, capsys):
    """main() in-process: (exit code, stdout, stderr); argparse refusals exit via SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_transfer_writes_image_report_and_snapshots(files, tmp_path, vgg16, capsys):
    out = tmp_path / "out.png"
    code, stdout, _ = _run([
        "transfer", str(files / "content.png"), str(files / "style.png"), str(files / "gray.png"),
        "-o", str(out), "--size", "32", "--iters", "4", "--style-blend", "2,1", "--save-every", "2",
        "--style-layers", "conv1_1,conv2_1", "--style-layer-weights", "1,0.5", "--tv-weight", "1e-3",
        "--quiet"], capsys)
    assert code == 0, stdout
    assert str(out) in stdout
    assert Image.open(out).size == (32, 24)
    assert (tmp_path / "out_2.png").is_file() and not (tmp_path / "out_4.png").exists()
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["iterations"] == 4 and report["seconds"] > 0 and report["s_per_iter"] > 0
    assert set(report["loss"]) >= {"total", "content", "style", "tv"}
    assert report["settings"]["style_blend"] == [2.0, 1.0]
    assert report["settings"]["style_layers"] == ["conv1_1", "conv2_1"]
    assert report["weights"]["arch"] == "vgg16"
    # main(argv) in-process sets no flags: the report states the ones in force
    assert report["xla_flags"] == os.environ.get("XLA_FLAGS", "") and report["jax"]
    assert report["objective"]["style_layer_weights"] == {"conv1_1": 1.0, "conv2_1": 0.5}


def test_odd_but_valid_images(files, tmp_path, vgg16, capsys):
    out = tmp_path / "tiny.jpg"
    code, stdout, err = _run([
        "transfer", str(files / "rgba.png"), str(files / "gray.png"), "-o", str(out), "--size", "8",
        "--iters", "2", "--original-colors", "--init", "random", "--optimizer", "adam",
        "--content-layer", "conv2_2", "--style-layers", "conv1_1,conv3_1",
        "--report", str(tmp_path / "r.json"), "--quiet"], capsys)
    assert code == 0, err
    assert max(Image.open(out).size) == 8
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["init"] == "random"
    assert all(np.isfinite(v) for v in report["loss"].values()), report["loss"]
    # at 8 px the default conv4_2 / conv5_1 would have no positions: refused, not a constant term
    code, _, err = _run(["transfer", str(files / "rgba.png"), str(files / "gray.png"), "-o", str(out),
                         "--size", "8", "--quiet"], capsys)
    assert code == 1 and "conv4_2 needs at least 16 px" in err


def test_classic_preset_maps_weights(files, tmp_path, vgg16, capsys):
    out = tmp_path / "classic.png"
    code, _, err = _run(["transfer", str(files / "content.png"), str(files / "style.png"), "-o", str(out),
                         "--preset", "classic", "--size", "32", "--iters", "2", "--quiet"], capsys)
    assert code == 0, err
    report = json.loads(out.with_suffix(".json").read_text())
    # 32 px wide content (24 x 32) -> conv4_2 is 3 x 4 x 512
    assert report["objective"]["alpha"] == pytest.approx(2 * 5 / (3 * 4 * 512))
    assert report["objective"]["beta"] == 100.0
    assert report["objective"]["style_layer_weights"]["conv1_1"] == pytest.approx(1 / 64**2)
    assert report["objective"]["gamma"] == pytest.approx(1e-3)
    assert report["settings"]["weight_units"] == "neural-style"
    assert report["settings"]["optimizer"] == "lbfgs" and report["settings"]["init"] == "random"


@pytest.mark.parametrize("extra, inputs, message", [
    ([], ["content.png", "broken.jpg"], "not an image"),
    ([], ["content.png", "missing.png"], "no such file"),
    (["--iters", "0"], ["content.png", "style.png"], "positive integer"),
    (["--iters", "-3"], ["content.png", "style.png"], "positive integer"),
    (["--content-layer", "conv9_1"], ["content.png", "style.png"], "unknown layer"),
    (["--style-layers", "conv1_1,fc7"], ["content.png", "style.png"], "unknown layer"),
    (["--style-blend", "1,2,3"], ["content.png", "style.png"], "blend weights"),
    (["--style-weight", "nan"], ["content.png", "style.png"], "finite"),
    (["--content-weight", "inf"], ["content.png", "style.png"], "finite"),
    (["--tv-weight", "-1"], ["content.png", "style.png"], ">= 0"),
    (["--style-layer-weights", "1,2"], ["content.png", "style.png"], "style layer weights"),
    (["--init", "nothere.png"], ["content.png", "style.png"], "no such file"),
])
def test_bad_input_is_refused_without_output(files, tmp_path, extra, inputs, message, capsys):
    out = tmp_path / "never.png"
    base = ["--size", "16", "--quiet"] + ([] if "--iters" in extra else ["--iters", "1"])
    argv = ["transfer", *[str(files / name) for name in inputs], "-o", str(out), *base, *extra]
    code, _, err = _run(argv, capsys)
    assert code not in (0, None)
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_output_equal_to_input_is_refused(files, capsys):
    before = (files / "style.png").read_bytes()
    code, _, err = _run(["transfer", str(files / "content.png"), str(files / "style.png"),
                         "-o", str(files / "style.png"), "--quiet"], capsys)
    assert code == 1 and "also an input" in err
    assert (files / "style.png").read_bytes() == before


def test_snapshot_that_would_overwrite_an_input_is_refused(files, tmp_path, capsys):
    snapshot_named_input = tmp_path / "out_2.png"
    snapshot_named_input.write_bytes((files / "content.png").read_bytes())
    before = snapshot_named_input.read_bytes()
    code, _, err = _run(["transfer", str(snapshot_named_input), str(files / "style.png"), "-o", str(tmp_path / "out.png"),
                         "--save-every", "2", "--iters", "4", "--size", "16", "--quiet"], capsys)
    assert code == 1 and "also an input" in err
    assert snapshot_named_input.read_bytes() == before and not (tmp_path / "out.png").exists()


def test_subprocess_error_is_one_line(files, tmp_path):
    env = dict(os.environ, STYLEJAX_CACHE=os.environ.get("STYLEJAX_CACHE", "/tmp/sjcache"))
    proc = subprocess.run([sys.executable, "-m", "stylejax", "transfer", str(files / "content.png"),
                           str(files / "broken.jpg"), "-o", str(tmp_path / "x.png")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("stylejax: error: ") and "broken.jpg" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_demo_runs_on_shipped_images(tmp_path, vgg16, capsys):
    out = tmp_path / "demo.png"
    code, stdout, err = _run(["demo", "-o", str(out), "--size", "40", "--iters", "2", "--quiet"], capsys)
    assert code == 0, err
    assert str(out) in stdout and max(Image.open(out).size) == 40
    assert json.loads(out.with_suffix(".json").read_text())["content"].endswith("chelsea.jpg")


def test_ctrl_c_saves_best_image_and_report(files, tmp_path, vgg16, capsys, monkeypatch):
    from stylejax.cli import transfer_cmd

    class InterruptingBar:  # Ctrl-C arrives while the bar shows the 2nd iteration
        n = 0

        def update(self, k):
            self.n += k
            if self.n >= 2:
                raise KeyboardInterrupt

        def set_postfix(self, **kw):
            pass

        def close(self):
            pass

    monkeypatch.setattr(transfer_cmd, "progress_bar", lambda *a, **k: InterruptingBar())
    out = tmp_path / "stopped.png"
    code, _, err = _run(["transfer", str(files / "content.png"), str(files / "style.png"), "-o", str(out),
                         "--size", "32", "--iters", "50"], capsys)
    assert code == 130 and "interrupted after 2 iterations" in err
    assert Image.open(out).size == (32, 24)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["interrupted"] is True and report["iterations"] == 2
