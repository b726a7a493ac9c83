"""Clips in and out through PyAV: round trips per container, folders, audio, and every refusal."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from stylejax import video_io
from stylejax.errors import StylejaxError
from stylejax.images import read_image
from tests.conftest import data_path


@pytest.fixture(scope="module")
def pan():
    """A real photo panned 4 px per frame: u8[6, 48, 64, 3]."""
    photo = read_image(data_path("images", "tubingen.jpg"), 200)
    return np.stack([photo[40:88, 4 * t:4 * t + 64] for t in range(6)])


def _with_audio(path, frames, fps=10, sample_rate=16000):
    """An H.264 + AAC file written with PyAV itself (a sine tone as long as the video)."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        a = c.add_stream("aac", rate=sample_rate)
        a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            c.mux(v.encode(vf))
        c.mux(v.encode())
        t = np.arange(sample_rate * len(frames) // fps) / sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            af = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="flt", layout="mono")
            af.sample_rate, af.pts = sample_rate, k
            c.mux(a.encode(af))
        c.mux(a.encode())


@pytest.mark.parametrize("suffix, tol", [(".mp4", 5), (".webm", 5), (".mkv", 5), (".gif", 3), (".avi", 6)])
def test_round_trip_keeps_count_size_rate_and_pixels(pan, tmp_path, suffix, tol):
    path = tmp_path / f"clip{suffix}"
    assert video_io.write_video(path, pan, Fraction(10)) == []  # GIF delays are in 1/100 s
    clip = video_io.read_clip(path)
    assert clip.frames.shape == pan.shape and clip.frames.dtype == np.uint8
    assert clip.fps == 10 and clip.source == path and not clip.has_audio
    assert np.abs(clip.frames.astype(float) - pan).mean() < tol
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_odd_sizes_are_padded_for_420_codecs_with_a_note(pan, tmp_path):
    notes = video_io.write_video(tmp_path / "odd.mp4", pan[:, :47, :63], 10)
    assert notes and "padded to 64x48" in notes[0]
    assert video_io.read_clip(tmp_path / "odd.mp4").shape == (48, 64)
    assert video_io.write_video(tmp_path / "odd.webm", pan[:, :47, :63], 10) == []
    assert video_io.read_clip(tmp_path / "odd.webm").shape == (47, 63)


def test_audio_is_copied_where_the_container_takes_it_and_dropped_with_a_note(pan, tmp_path):
    src = tmp_path / "talk.mp4"
    _with_audio(src, pan)
    clip = video_io.read_clip(src)
    assert clip.has_audio and clip.fps == 10 and len(clip.frames) == 6
    notes = video_io.write_video(tmp_path / "out.mp4", clip.frames[:4], clip.fps, audio_from=src)
    assert notes == [f"audio copied from {src}"]
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        packets = [p for p in c.demux(c.streams.audio[0]) if p.pts is not None]
        starts = [float(p.pts * p.time_base) for p in packets]
        assert 0.3 < starts[-1] < 0.4  # cut to the 4 frames' 0.4 s (of 0.6 s of sound)
    assert video_io.write_video(tmp_path / "out.mkv", clip.frames, clip.fps, audio_from=src) == [
        f"audio copied from {src}"]
    webm = video_io.write_video(tmp_path / "out.webm", clip.frames, clip.fps, audio_from=src)
    assert len(webm) == 1 and webm[0].startswith("audio dropped: webm cannot hold aac")
    assert not video_io.read_clip(tmp_path / "out.webm").has_audio
    assert video_io.write_video(tmp_path / "out.gif", clip.frames, clip.fps, audio_from=src) == [
        "audio dropped: a GIF holds no audio"]


def test_folder_of_frames_in_natural_order(pan, tmp_path):
    for i, frame in enumerate(pan):
        Image.fromarray(frame).save(tmp_path / f"f{i * 5}.png")  # f0, f5, f10, ...: natural, not lexical
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = video_io.read_clip(tmp_path)
    np.testing.assert_array_equal(clip.frames, pan)
    assert clip.fps == video_io.DEFAULT_FPS
    assert video_io.read_clip(tmp_path, fps=29.97).fps == Fraction(2997, 100)
    out = tmp_path / "out"
    paths = video_io.write_frames(out, pan[:2], start=3)
    assert [p.name for p in paths] == ["frame_0003.png", "frame_0004.png"]
    np.testing.assert_array_equal(read_image(paths[1]), pan[1])


def test_bad_inputs_get_one_clear_error(pan, tmp_path):
    cases = {}
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    cases["text.mp4"] = "not a video FFmpeg can read"
    (tmp_path / "empty.webm").write_bytes(b"")
    cases["empty.webm"] = "empty file"
    Image.fromarray(pan[0]).save(tmp_path / "still.png")
    cases["still.png"] = "a single image, not a video"
    (tmp_path / "none").mkdir()
    cases["none"] = "no frames"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(pan[0]).save(mixed / "a1.png")
    Image.fromarray(pan[1, :40]).save(mixed / "a2.png")
    cases["mixed"] = "every frame of a folder must have the same size"
    with av.open(str(tmp_path / "sound.m4a"), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        c.mux(a.encode(af))
        c.mux(a.encode())
    cases["sound.m4a"] = "no video stream"
    cases["missing.mp4"] = "no such file"
    for name, message in cases.items():
        with pytest.raises(StylejaxError, match=message) as info:
            video_io.read_clip(tmp_path / name)
        assert "\n" not in str(info.value)
    video_io.write_video(tmp_path / "long.gif", pan, 10)
    with pytest.raises(StylejaxError, match="more than 4 frames"):
        video_io.read_clip(tmp_path / "long.gif", max_frames=4)
    with pytest.raises(StylejaxError, match="frame rate"):
        video_io.read_clip(tmp_path / "long.gif", fps=0)


def test_outputs_are_checked_before_any_work(pan, tmp_path):
    src = tmp_path / "in.mp4"
    video_io.write_video(src, pan, 10)
    with pytest.raises(StylejaxError, match="also an input"):
        video_io.check_clip_output(src, [src])
    frames = tmp_path / "frames"
    video_io.write_frames(frames, pan[:2])
    with pytest.raises(StylejaxError, match="also an input"):
        video_io.check_clip_output(frames, [frames / "frame_0000.png"])
    with pytest.raises(StylejaxError, match="not an image"):
        video_io.check_clip_output(tmp_path / "out.png", [src])
    with pytest.raises(StylejaxError, match="does not exist"):
        video_io.check_clip_output(tmp_path / "nowhere" / "out.mp4", [src])
    with pytest.raises(StylejaxError, match="unsupported video suffix"):
        video_io.write_video(tmp_path / "out.flv", pan, 10)
    with pytest.raises(StylejaxError, match="u8"):
        video_io.write_video(tmp_path / "out.mp4", pan.astype(np.float32), 10)
    assert video_io.check_clip_output(tmp_path / "out.mp4", [src]) == tmp_path / "out.mp4"
    assert video_io.check_clip_output(tmp_path / "styled", [src]) == tmp_path / "styled"
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "styled").exists()
