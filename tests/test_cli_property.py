"""Random option combinations and file kinds thrown at every command (hypothesis).

The property: ``stylejax.cli.main`` either exits 0 with a valid output, or exits non-zero with
exactly one line on stderr and no output at all; it never raises (no traceback). Sizes are tiny
and the network is a small random AlexNet set where a run can succeed, so this stays fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stylejax import models, weights  # noqa: E402
from stylejax.cli import main  # noqa: E402
from stylejax.convert import flatten, unflatten  # noqa: E402

# valid choices are repeated so that about half the examples reach a real (tiny) run
KINDS = ("missing", "empty", "truncated", "text", "fifo", "directory", "dot", "odd", "gray16", "rgba",
         "good", "good", "good", "good")
SIZES = ("1", "7", "100000", "0", "-3", "x", "nan", "48", "48", "64", "64")
LAYERS = ("conv1", "conv2", "conv5", "pool5", "conv9_9", "", "relu1_1", "conv2", "conv1,conv2")
PROPERTY = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """Input files of every kind and a cache holding a small random AlexNet set ``alex``."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("STYLEJAX_CACHE", str(cache))
    rng = np.random.default_rng(0)
    params = unflatten({k: rng.normal(0, 0.02, s).astype(np.float32)
                        for k, s in flatten(models.get("alexnet").param_shapes())})
    weights.save_set(cache / "weights" / "alex.safetensors", params, arch="alexnet",
                     preprocessing="torchvision", source="test")
    d = tmp_path / "in"
    d.mkdir()
    good = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(good).save(d / "good.png")
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.png").write_bytes((d / "good.png").read_bytes()[:90])
    (d / "text.png").write_text("hello, not an image\n")
    os.mkfifo(d / "fifo.png")
    (d / "directory.png").mkdir()
    Image.new("RGB", (1, 1), (3, 4, 5)).save(d / "dot.png")
    Image.fromarray(good[:3, :37]).save(d / "odd.png")
    Image.fromarray(rng.integers(0, 65535, (30, 20), dtype=np.uint16)).save(d / "gray16.png")
    Image.fromarray(np.concatenate([good, good[..., :1]], -1), "RGBA").save(d / "rgba.png")
    folder = tmp_path / "scan"
    folder.mkdir()
    for name in ("good", "odd", "text", "rgba"):
        src = d / f"{name}.png"
        (folder / src.name).write_bytes(src.read_bytes())
    return {"in": d, "scan": folder, "root": tmp_path}


def _file(world, kind: str) -> str:
    return str(world["in"] / f"{kind}.png")


def _check(world, argv: list[str], outputs: list[Path], valid, capsys) -> None:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refusals: one usage-error line, exit 2
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, (argv, err)
    if rc == 0:
        valid()
    else:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "error" in lines[0], (argv, err)
        left = [p for p in outputs if p.exists() and (not p.is_dir() or any(p.iterdir()))]
        assert not left, (argv, left, err)


def _fresh(world) -> Path:
    return Path(tempfile.mkdtemp(dir=world["root"]))


@PROPERTY
@given(content=st.sampled_from(KINDS), style=st.sampled_from(KINDS), size=st.sampled_from(SIZES),
       extra=st.lists(st.sampled_from([["--init", "random"], ["--optimizer", "adam"], ["--original-colors"],
                                        ["--luminance-only"], ["--style-weight", "1e40"], ["--lr", "-1"],
                                        ["--scales", "24,33"], ["--style-scale", "0.1"], ["--save-every", "1"],
                                        ["--content-layer", "conv3"], ["--style-layers", "conv1,conv9_9"],
                                        ["--lbfgs-memory", "3"], ["--print-every", "1"]]), max_size=3))
@example(content="rgba", style="gray16", size="48",
         extra=[["--lbfgs-memory", "3"], ["--print-every", "1"], ["--original-colors"]])
def test_transfer_property(world, capsys, content, style, size, extra):
    out = _fresh(world) / "o.png"
    argv = ["transfer", _file(world, content), _file(world, style), "--weights", "alex", "--iters", "1",
            "--size", size, "--quiet", "-o", str(out), *[a for e in extra for a in e]]

    def valid():
        assert Image.open(out).size[0] >= 1 and out.with_suffix(".json").is_file()

    _check(world, argv, [out, out.with_suffix(".json")], valid, capsys)


@PROPERTY
@given(kind=st.sampled_from(KINDS), size=st.sampled_from(SIZES + ("none",)), layers=st.sampled_from(LAYERS),
       weights_name=st.sampled_from(["alex", "none", "missing.pth"]))
@example(kind="rgba", size="64", layers="conv1,conv5", weights_name="alex")
@example(kind="odd", size="none", layers="conv1", weights_name="alex")
def test_features_property(world, capsys, kind, size, layers, weights_name):
    out = _fresh(world) / "f.npz"
    argv = ["features", _file(world, kind), "--layers", layers, "-o", str(out),
            *(["--size", size] if size != "none" else []),
            *(["--weights", weights_name] if weights_name != "none" else ["--weights", "alex"])]

    def valid():
        data = np.load(out)
        assert data.files and all(data[k].size > 0 for k in data.files)

    _check(world, argv, [out], valid, capsys)


@PROPERTY
@given(where=st.sampled_from(["scan", "missing", "file", "fifo"]), size=st.sampled_from(SIZES),
       layer=st.sampled_from(LAYERS), units=st.sampled_from(["0:2", "5", "x", "9999", "2:1", "0:2", "1"]),
       top=st.sampled_from(["1", "3", "0", "2"]), inside=st.sampled_from([False, False, True]))
@example(where="scan", size="64", layer="conv2", units="0:2", top="2", inside=False)
def test_patches_property(world, capsys, where, size, layer, units, top, inside):
    folder = {"scan": str(world["scan"]), "missing": str(world["root"] / "nope"),
              "file": _file(world, "good"), "fifo": _file(world, "fifo")}[where]
    out = (world["scan"] / "out") if inside else _fresh(world) / "scan_out"
    argv = ["patches", folder, "--layer", layer, "--units", units, "--top", top, "--size", size,
            "--weights", "alex", "--batch", "2", "--quiet", "--no-pictures", "-o", str(out)]

    def valid():
        assert (out / "patches.json").is_file() and not (out / "scan_state.npz").exists()

    _check(world, argv, [out], valid, capsys)


@PROPERTY
@given(layer=st.sampled_from(LAYERS), units=st.sampled_from(["0", "0:2", "x", "999", "1"]),
       size=st.sampled_from(SIZES), objective=st.sampled_from(["channel", "diversity", "neuron", "channel"]),
       output=st.sampled_from(["o.png", "o.txt", "dir", "same", "o.png", "o.png"]))
@example(layer="conv2", units="1", size="32", objective="channel", output="o.png")
def test_visualize_property(world, capsys, layer, units, size, objective, output):
    folder = _fresh(world)
    out = folder if output == "dir" else folder / output
    report = ["--report", str(out)] if output == "same" else []
    if output == "same":
        out = folder / "o.png"
        report = ["--report", str(out)]
    argv = ["visualize", "--layer", layer, "--units", units, "--size", size, "--objective", objective,
            "--steps", "1", "--weights", "alex", "--quiet", "-o", str(out), *report]

    def valid():
        assert Image.open(out).size[0] >= 1

    _check(world, argv, [folder / "o.png", folder / "o.txt", folder / "o.json"], valid, capsys)
