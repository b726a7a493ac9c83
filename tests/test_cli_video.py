"""``stylejax video`` on a real photo panned 4 px per frame: temporal consistency removes flicker
without a worse objective, Ctrl-C + --resume gives the same frames, and every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stylejax import temporal, video_io
from stylejax.style import loop
from stylejax.cli import main, video_cmd
from stylejax.images import read_image
from tests.conftest import data_path
from tests.test_cli_transfer import _run

SHIFT = 4
#: Small, quick runs: 4 frames of 64x48, 20 L-BFGS iterations each, a shallow network.
RUN = ["--size", "64", "--iters", "20", "--content-layer", "conv2_2", "--style-layers", "conv1_1,conv2_1", "--quiet"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A folder of 4 frames: crops of a real photo, each 4 px further right (content moves left)."""
    d = tmp_path_factory.mktemp("video")
    photo = read_image(data_path("images", "tubingen.jpg"), 120)  # u8[90, 120, 3]
    frames = d / "frames"
    frames.mkdir()
    for t in range(4):
        Image.fromarray(photo[30:78, SHIFT * t:SHIFT * t + 64]).save(frames / f"pan{t}.png")
    style = d / "style.png"
    Image.fromarray(read_image(data_path("images", "starry_night.jpg"), 64)).save(style)
    return frames, style


def _frames(folder):
    return np.stack([read_image(video_io.frame_path(folder, t)) for t in range(4)])


@pytest.fixture(scope="module")
def runs(clip, tmp_path_factory, vgg16):
    """The clip styled with temporal consistency and without (each frame alone)."""
    frames, style = clip
    d = tmp_path_factory.mktemp("runs")
    out, compiled = {}, [loop.steps._cache_size()]
    for name, extra in (("temporal", []), ("alone", ["--no-temporal"])):
        code = main(["video", str(frames), str(style), "-o", str(d / name), *RUN, *extra])
        assert code == 0
        out[name] = (_frames(d / name), json.loads((d / f"{name}.json").read_text()))
        compiled.append(loop.steps._cache_size())
    out["compiled"] = np.diff(compiled).tolist()
    return out


def test_temporal_consistency_cuts_flicker_and_keeps_the_objective(runs):
    (with_t, report_t), (alone, report_a) = runs["temporal"], runs["alone"]
    assert with_t.shape == alone.shape == (4, 48, 64, 3)
    flicker_t, flicker_a = temporal.flicker(with_t, (SHIFT, 0)), temporal.flicker(alone, (SHIFT, 0))
    assert flicker_t <= 0.6 * flicker_a, (flicker_t, flicker_a)
    for et, ea in zip(report_t["per_frame"], report_a["per_frame"]):
        assert et["loss"]["objective"] <= 1.5 * ea["loss"]["total"], (et, ea)
    assert report_t["temporal"]["weight"] > 0 and report_a["temporal"] is None
    frames_t = report_t["per_frame"]
    assert [e["frame"] for e in frames_t] == [0, 1, 2, 3] and all(e["seconds"] > 0 for e in frames_t)
    assert frames_t[0]["consistent"] is None and all(0.8 < e["consistent"] < 1 for e in frames_t[1:])
    assert report_t["status"] == "done" and report_t["fps"] == 25 and report_t["s_per_frame"] > 0


def test_one_compiled_step_serves_every_frame_with_or_without_the_term(runs):
    assert runs["compiled"][0] <= 1 and runs["compiled"][1] == 0


def test_ctrl_c_then_resume_finishes_the_same_frames_into_a_video(clip, runs, tmp_path, capsys, monkeypatch):
    frames, style = clip
    out = tmp_path / "styled.mp4"
    argv = ["video", str(frames), str(style), "-o", str(out), *RUN, "--fps", "8", "--keep-frames"]

    class InterruptingBar:  # Ctrl-C arrives during frame 2
        def update(self, n=1):
            pass

        def set_postfix(self, frame=0, **_):
            if frame == 2:
                raise KeyboardInterrupt

        def close(self):
            pass

    with monkeypatch.context() as m:
        m.setattr(video_cmd, "progress_bar", lambda *a, **k: InterruptingBar())
        code, _, err = _run(argv, capsys)
    assert code == 130 and "interrupted after 2 of 4 frames" in err and "--resume" in err
    folder = tmp_path / "styled.mp4.frames"
    assert sorted(p.name for p in folder.iterdir()) == ["frame_0000.png", "frame_0001.png"]
    assert not out.exists() and json.loads(out.with_suffix(".json").read_text())["status"] == "interrupted"
    code, _, err = _run(argv, capsys)  # without --resume: refused, nothing touched
    assert code == 1 and "--resume" in err
    code, stdout, _ = _run([*argv, "--resume"], capsys)
    assert code == 0 and str(out) in stdout
    np.testing.assert_array_equal(_frames(folder), runs["temporal"][0])
    clip_out = video_io.read_clip(out)
    assert clip_out.frames.shape == (4, 48, 64, 3) and clip_out.fps == 8
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["resumed_at"] == 2 and [e["frame"] for e in report["per_frame"]] == [0, 1, 2, 3]


def test_bad_input_gets_one_line_and_no_output(clip, tmp_path, capsys):
    frames, style = clip
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(mixed / "b.png")
    out = tmp_path / "out"
    cases = [
        ([str(tmp_path / "text.mp4"), str(style), "-o", str(out)], "not a video"),
        ([str(tmp_path / "empty"), str(style), "-o", str(out)], "no frames"),
        ([str(mixed), str(style), "-o", str(out)], "same size"),
        ([str(frames), str(style), "-o", str(frames)], "also an input"),
        ([str(frames), str(style), "-o", str(tmp_path / "out.png")], "not an image"),
        ([str(frames), str(style), "-o", str(out), "--init", str(style)], "content or random"),
        ([str(frames), str(style), "-o", str(out), "--temporal-weight", "-1"], "number >= 0"),
        ([str(frames), str(tmp_path / "missing.jpg"), "-o", str(out)], "no such file"),
    ]
    for argv, message in cases:
        code, _, err = _run(["video", *argv, "--quiet"], capsys)
        assert code != 0 and message in err, (argv, err)
        assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.json").exists() and not (tmp_path / "out.png").exists()
    done = tmp_path / "done"
    video_io.write_frames(done, np.zeros((1, 30, 40, 3), np.uint8))
    code, _, err = _run(["video", str(frames), str(style), "-o", str(done), "--resume", *RUN], capsys)
    assert code == 1 and "40x30" in err and "64x48" in err
