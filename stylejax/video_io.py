"""Read a clip (a video file or a folder of frames) and write one, through PyAV (FFmpeg).

A clip is u8[T, H, W, 3] RGB frames and a frame rate. Video files are decoded with PyAV, whose
wheels ship FFmpeg's libraries; a folder holds one image per frame (``.png``/``.jpg``, taken in
natural name order: ``f2`` before ``f10``). GIFs are written with Pillow (an adaptive palette
per frame; delays in whole 1/100 s). Outputs are written atomically: a video file is
encoded into a temporary file beside it and renamed into place; a folder gets
``frame_0000.png``, ``frame_0001.png``, ... each written atomically.

Every failure raises :class:`stylejax.errors.StylejaxError` with a one-line message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stylejax.errors import StylejaxError
from stylejax.images import IMAGE_SUFFIXES, atomic_write, read_image, same_file, write_image

#: Video file suffix -> (container format, video codec, pixel format) used to write it.
VIDEO_SUFFIXES = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".mov": ("mov", "libx264", "yuv420p"),
    ".mkv": ("matroska", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".avi": ("avi", "mpeg4", "yuv420p"),
    ".gif": ("gif", "pillow", "P"),  # Pillow's adaptive palette per frame beats FFmpeg's fixed rgb8
}
#: Frame rate given to a folder of frames when none is asked for.
DEFAULT_FPS = Fraction(25)
#: Frames of an output folder are named ``FRAME_NAME.format(index)``.
FRAME_NAME = "frame_{:04d}.png"
#: Frames refused beyond this (about 2 minutes at 25 fps; the whole clip is held in memory).
MAX_FRAMES = 3000


@dataclass(frozen=True)
class Clip:
    """Decoded frames ``u8[T, H, W, 3]`` with their rate (frames per second) and origin."""

    frames: np.ndarray
    fps: Fraction
    source: Path
    has_audio: bool = False  # the source file holds an audio stream

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of every frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def is_video_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names a video file by its suffix (one of :data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def frame_path(folder: str | os.PathLike, index: int) -> Path:
    """Where frame ``index`` (from 0) of an output folder lives."""
    return Path(folder) / FRAME_NAME.format(index)


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder of frames in natural name order (hidden files skipped)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def read_clip(path: str | os.PathLike, fps: float | Fraction | None = None,
              max_frames: int = MAX_FRAMES) -> Clip:
    """Read a video file or a folder of frames as a :class:`Clip`.

    ``fps`` overrides the rate (a folder has :data:`DEFAULT_FPS` otherwise). Raises StylejaxError
    for a missing path, a file that is not a video, a clip with no frames or more than
    ``max_frames``, or a folder whose frames differ in size.
    """
    path = Path(path)
    if not path.exists():
        raise StylejaxError(f"{path}: no such file or folder")
    rate = None if fps is None else _check_fps(fps)
    if path.is_dir():
        return _read_folder(path, rate or DEFAULT_FPS, max_frames)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise StylejaxError(f"{path}: a single image, not a video; give a video file or a folder of frames")
    return _read_video(path, rate, max_frames)


def _check_fps(fps) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        raise StylejaxError(f"frame rate must be a number > 0, got {fps!r}") from None
    if rate <= 0:
        raise StylejaxError(f"frame rate must be a number > 0, got {fps!r}")
    return rate


def _read_folder(folder: Path, fps: Fraction, max_frames: int) -> Clip:
    files = frame_files(folder)
    if not files:
        raise StylejaxError(f"{folder}: no frames (.png or .jpg files) in this folder")
    if len(files) > max_frames:
        raise StylejaxError(f"{folder}: {len(files)} frames is over the limit of {max_frames}")
    frames = []
    for f in files:
        frame = read_image(f)
        if frames and frame.shape != frames[0].shape:
            h, w = frames[0].shape[:2]
            raise StylejaxError(f"{f}: frame is {frame.shape[1]}x{frame.shape[0]}, but {files[0].name} is {w}x{h}; "
                                "every frame of a folder must have the same size")
        frames.append(frame)
    return Clip(np.stack(frames), fps, folder)


def _read_video(path: Path, fps: Fraction | None, max_frames: int) -> Clip:
    import av

    if path.stat().st_size == 0:
        raise StylejaxError(f"{path}: empty file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise StylejaxError(f"{path}: no video stream in this file")
            stream = container.streams.video[0]
            has_audio = bool(container.streams.audio)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = []
            for frame in container.decode(stream):
                if len(frames) == max_frames:
                    raise StylejaxError(f"{path}: more than {max_frames} frames; cut the clip first")
                frames.append(frame.to_ndarray(format="rgb24"))
    except StylejaxError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise StylejaxError(f"{path}: not a video FFmpeg can read ({_one_line(exc)})") from None
    if not frames:
        raise StylejaxError(f"{path}: the video has no frames")
    if any(f.shape != frames[0].shape for f in frames):
        raise StylejaxError(f"{path}: the frame size changes within the video")
    if fps is None:
        fps = Fraction(rate) if rate else DEFAULT_FPS
    return Clip(np.stack(frames), fps, path, has_audio)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_clip_output(out: str | os.PathLike, inputs=()) -> Path:
    """Validate an output before any work: a video file by suffix, or else a folder of frames.

    Refuses an output that is (or, for a folder, holds) an input, an image suffix, and a missing
    parent folder. Returns the path.
    """
    out = Path(out)
    for inp in inputs:
        if same_file(out, inp) or (not is_video_file(out) and Path(inp).parent.resolve() == out.resolve()):
            raise StylejaxError(f"output {out} is also an input; refusing to write over it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise StylejaxError(f"output folder {parent} does not exist")
    if is_video_file(out):
        if out.is_dir():
            raise StylejaxError(f"output {out} is a folder; a video file was expected from its suffix")
    elif out.suffix.lower() in IMAGE_SUFFIXES:
        raise StylejaxError(f"output {out}: give a folder or a video file "
                            f"({', '.join(sorted(VIDEO_SUFFIXES))}), not an image")
    elif out.exists() and not out.is_dir():
        raise StylejaxError(f"output {out} is a file but has no video suffix "
                            f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return out


def write_frames(folder: str | os.PathLike, frames, start: int = 0) -> list[Path]:
    """Write u8[T, H, W, 3] as ``folder/frame_{start + t:04d}.png`` (each atomically)."""
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    return [write_image(frame_path(folder, start + t), frame) for t, frame in enumerate(frames)]


def write_video(path: str | os.PathLike, frames, fps: float | Fraction, audio_from: str | os.PathLike | None = None,
                ) -> list[str]:
    """Encode u8[T, H, W, 3] at ``fps`` into ``path`` (format from its suffix), atomically.

    ``audio_from``: a video file whose audio stream is copied (not re-encoded) into the output,
    cut to the video's length; where the container cannot hold that audio codec (or is a GIF) the
    audio is dropped. Codecs with 4:2:0 chroma need even sizes: an odd last row or column is
    repeated. Returns notes on what was done to the audio and the size, for the user.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise StylejaxError(f"frames must be u8[T, H, W, 3] with T >= 1, got {frames.dtype}{list(frames.shape)}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise StylejaxError(f"{path}: unsupported video suffix; use one of {', '.join(sorted(VIDEO_SUFFIXES))}")
    rate = _check_fps(fps)
    fmt, codec, pix_fmt = VIDEO_SUFFIXES[path.suffix.lower()]
    notes: list[str] = []
    if pix_fmt == "yuv420p" and codec != "libvpx-vp9" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        notes.append(f"{codec} needs even sizes: {w}x{h} frames padded to {frames.shape[2]}x{frames.shape[1]}")
    audio = _audio_stream(audio_from) if audio_from is not None else None
    if audio is not None and fmt == "gif":
        notes.append("audio dropped: a GIF holds no audio")
        audio = None
    if fmt == "gif":
        atomic_write(path, lambda f: _write_gif(f, frames, rate))
        return notes
    if audio is not None:
        try:
            atomic_write(path, lambda f: _encode(f, frames, rate, fmt, codec, pix_fmt, audio_from))
            notes.append(f"audio copied from {audio_from}")
            return notes
        except _AudioRefused as exc:
            notes.append(f"audio dropped: {exc}")
    atomic_write(path, lambda f: _encode(f, frames, rate, fmt, codec, pix_fmt, None))
    return notes


class _AudioRefused(Exception):
    pass


def _audio_stream(path) -> str | None:
    """The codec name of ``path``'s first audio stream, or None (also for unreadable files)."""
    import av

    try:
        with av.open(str(path)) as c:
            return c.streams.audio[0].codec_context.name if c.streams.audio else None
    except (av.FFmpegError, OSError):
        return None


def _write_gif(f, frames: np.ndarray, rate: Fraction) -> None:
    """An animated GIF that loops, each frame with its own 256-colour palette (Pillow)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    delay_ms = 10 * max(2, round(100 / float(rate)))  # GIF delays are whole 1/100 s, browsers floor at 2
    images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=delay_ms, loop=0,
                   optimize=False)


def _encode(f, frames: np.ndarray, rate: Fraction, fmt: str, codec: str, pix_fmt: str, audio_from) -> None:
    import av

    duration = len(frames) / rate  # seconds
    try:
        out = av.open(f, "w", format=fmt)
    except av.FFmpegError as exc:
        raise StylejaxError(f"cannot write {fmt} ({_one_line(exc)})") from None
    src = None
    try:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "30", "b": "0"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "3"}
        a_out = a_in = None
        if audio_from is not None:
            src = av.open(str(audio_from))
            a_in = src.streams.audio[0]
            try:
                a_out = out.add_stream_from_template(a_in)
            except (av.FFmpegError, ValueError) as exc:
                raise _AudioRefused(f"{fmt} cannot hold {a_in.codec_context.name} audio ({_one_line(exc)})") from None
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            try:
                out.mux(stream.encode(vf))
            except av.FFmpegError as exc:
                if a_out is not None and i == 0:  # the header is written with the first packet
                    raise _AudioRefused(f"{fmt} cannot hold {a_in.codec_context.name} audio "
                                        f"({_one_line(exc)})") from None
                raise
        out.mux(stream.encode())
        if a_out is not None:
            for packet in src.demux(a_in):
                if packet.dts is None or packet.pts is None:
                    continue
                if packet.time_base is not None and packet.pts * packet.time_base >= duration:
                    break
                packet.stream = a_out
                out.mux(packet)
        out.close()
    except av.FFmpegError as exc:
        raise StylejaxError(f"encoding {fmt} with {codec} failed ({_one_line(exc)})") from None
    finally:
        if src is not None:
            src.close()
