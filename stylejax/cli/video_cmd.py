"""``stylejax video``: style transfer frame by frame, temporally consistent, resumable."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from stylejax import temporal, video, video_io
from stylejax.cli import preflight
from stylejax.cli.common import add_weights_args, load_weights, nonnegative_float, positive_float, progress_bar, write_json
from stylejax.cli.transfer_cmd import add_transfer_options, environment, options_of
from stylejax.errors import StylejaxError
from stylejax.images import check_output, fit_longest, read_image, write_image
from stylejax.memory import activation_floats
from stylejax.style import config


def register(sub) -> None:
    p = sub.add_parser(
        "video", help="style a video or a folder of frames, temporally consistent (Ruder et al.)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Paint every frame of INPUT (a video file: mp4, mov, mkv, webm, avi, gif, ...; or a\n"
                    "folder of .png/.jpg frames) in the style of STYLE, one `stylejax transfer` run per\n"
                    "frame; every transfer option applies to each frame.\n\n"
                    "Temporal consistency (Ruder, Dosovitskiy & Brox 2016; on unless --no-temporal):\n"
                    "frame t starts from the previous output warped along the optical flow (OpenCV DIS)\n"
                    "between the content frames, and its objective gains\n"
                    "  lambda_t Jt,  Jt = sum c (G_t - warp(G_{t-1}))^2   (over pixels 0-255 and channels)\n"
                    "with c = 0 where the forward-backward flow check fails (disocclusions) or on motion\n"
                    "boundaries. This removes the flicker of frames styled alone.\n\n"
                    "OUTPUT is a video file chosen by its suffix (frame rate kept; audio copied where the\n"
                    "container holds it) or a folder of frame_0000.png, ...; finished frames are kept,\n"
                    "so after Ctrl-C, --resume continues from the first missing frame.",
        epilog="examples:\n"
               "  stylejax video clip.mp4 starry_night.jpg -o styled.mp4\n"
               "  stylejax video frames/ starry_night.jpg -o styled/ --size 384 --iters 200\n"
               "  stylejax video clip.mp4 starry_night.jpg -o styled.gif --resume\n"
               "  stylejax video clip.mp4 starry_night.jpg -o flicker.mp4 --no-temporal")
    p.add_argument("input", metavar="INPUT", help="video file or folder of frames")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); several are blended")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="video file (.mp4 .mov .mkv .webm .avi .gif) or folder of frames")
    p.add_argument("--preset", choices=tuple(config.PRESETS), default=None,
                   help="classic: jcjohnson/neural-style's defaults per frame (see stylejax transfer --help)")
    add_transfer_options(p)
    add_weights_args(p)
    t = p.add_argument_group("temporal consistency")
    t.add_argument("--no-temporal", action="store_true",
                   help="style each frame alone (no flow, no warped start, no temporal term)")
    t.add_argument("--temporal-weight", type=nonnegative_float, default=video.DEFAULT_TEMPORAL_WEIGHT,
                   metavar="L", help=f"lambda_t, the temporal term's weight (default {video.DEFAULT_TEMPORAL_WEIGHT:g})")
    t.add_argument("--flow", choices=temporal.FLOW_METHODS, default="dis",
                   help="optical flow: dis (OpenCV DIS, default) or farneback")
    o = p.add_argument_group("input and output")
    o.add_argument("--fps", type=positive_float, default=None, metavar="F",
                   help=f"frame rate of the output (default: the input's; a folder has {video_io.DEFAULT_FPS})")
    o.add_argument("--resume", action="store_true",
                   help="keep the frames already finished in OUTPUT and continue from the first missing one")
    o.add_argument("--keep-frames", action="store_true",
                   help="for a video OUTPUT, keep the folder of stylised frames (OUTPUT.frames) after encoding")
    o.add_argument("--report", metavar="FILE.json", help="JSON report (default: OUTPUT with .json suffix)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def frames_folder(out: Path) -> Path:
    """Where the stylised frames go: OUTPUT itself, or OUTPUT.frames beside a video file."""
    return out.with_name(out.name + ".frames") if video_io.is_video_file(out) else out


def _finished(folder: Path) -> int:
    """How many frames ``frame_0000.png, frame_0001.png, ...`` exist without a gap."""
    n = 0
    while video_io.frame_path(folder, n).is_file():
        n += 1
    return n


def check_geometry(settings: config.Options, arch: str, clip: video_io.Clip, styles, flow: str | None) -> None:
    """Before any work, as ``stylejax transfer`` does for one image: every layer non-empty on a
    frame at each size and on the style images, the frames at the final size large enough for
    the optical flow ``flow`` (None: no flow), and one frame's run within the memory budget."""
    height, width = clip.shape
    layers = [*settings.content_layers, *settings.style_layers]
    need = preflight.min_side(arch, layers)
    for size in settings.sizes:
        w, h = fit_longest(width, height, size)
        what = f"a frame at --size {size} ({width}x{height} input)"
        flow_need = temporal.MIN_FLOW_SIDE[flow] if flow and size == settings.sizes[-1] else 1
        if min(w, h) < flow_need and flow_need > need:
            raise StylejaxError(f"{what} is {w}x{h}; the {flow} optical flow needs at least {flow_need} px on "
                                "the shorter side (use a larger --size, or --no-temporal)")
        preflight.check_side(arch, layers, h, w, what=what, advice="use a larger --size")
    side = max(1, int(-(-settings.sizes[-1] * settings.style_scale // 1)))
    for style in styles:
        head = preflight.image_size(style)
        if head is not None:
            w, h = fit_longest(*head, side)
            preflight.check_side(arch, settings.style_layers, h, w, what=f"style {style} at {side} px",
                                 advice="use a larger --style-scale or --size")
    size = max(settings.sizes)
    w, h = fit_longest(width, height, size)
    ratio = min(w, h) / max(w, h)
    floats = activation_floats(arch, layers)
    # one frame's transfer, as `stylejax transfer` estimates it (activations, gradients and conv
    # temporaries, the L-BFGS history, image buffers, the style images' forward pass, f32), the
    # temporal term's target, mask and two flows (f32), and every content frame at the size (u8)
    per_pixel = (4 * (4 * floats + 3 * (2 * settings.lbfgs_memory + 8)) + 4 * floats * settings.style_scale ** 2 / ratio
                 + 4 * 8 + 3 * len(clip.frames))
    preflight.check_pixels(w * h, per_pixel, option="--size", size=size, side_of=lambda px: (px / ratio) ** 0.5)


def run(args: argparse.Namespace) -> int:
    # ---- validate everything before any work
    source = Path(args.input)
    inputs = [source, *map(Path, args.styles)]
    out = video_io.check_clip_output(args.output, inputs)
    folder = frames_folder(out)
    if folder != out:
        video_io.check_clip_output(folder, inputs)
    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    check_output(report_path, inputs + [out], suffixes=[".json"])
    settings = options_of(args, args.preset)
    if settings.init not in ("content", "random"):
        raise StylejaxError("--init for a video is content or random; later frames start from the previous output")
    settings = config.validate(settings, args.arch, len(args.styles))
    done = _finished(folder) if folder.is_dir() else 0
    if done and not args.resume:
        raise StylejaxError(f"{folder} already holds {done} stylised frames; pass --resume to continue, "
                            "or choose another output")
    clip = video_io.read_clip(source, fps=args.fps)
    check_geometry(settings, args.arch, clip, args.styles,
                   flow=None if args.no_temporal or len(clip.frames) < 2 else args.flow)
    styles = [read_image(path) for path in args.styles]
    shape = video.content_frames(clip.frames[:1], settings.sizes[-1]).shape[1:3]
    if done > len(clip.frames):
        raise StylejaxError(f"{folder} holds {done} frames but {source} has only {len(clip.frames)}")
    previous = None
    if done:
        previous = read_image(video_io.frame_path(folder, done - 1))
        if previous.shape[:2] != shape:
            raise StylejaxError(f"{folder}: finished frames are {previous.shape[1]}x{previous.shape[0]}, this run "
                                f"makes {shape[1]}x{shape[0]}; use the same --size or another output")
    w = load_weights(args)
    lam = None if args.no_temporal else args.temporal_weight
    entries = _earlier_entries(report_path, done) if done else []
    report = {
        "command": "video", "input": str(source), "styles": [str(p) for p in args.styles], "output": str(out),
        "frames_folder": str(folder), "frames": len(clip.frames), "fps": float(clip.fps),
        "shape": list(shape), "settings": settings.to_dict(), "preset": args.preset,
        "temporal": None if lam is None else {"weight": lam, "flow": args.flow, "loss": "sum c (G - warp(G_prev))^2"},
        "resumed_at": done or None, "weights": w.report(), **environment(), "per_frame": entries,
    }
    bar = progress_bar(len(clip.frames), "video", unit="frame", quiet=args.quiet)
    bar.update(done)

    def callback(frame, it, total, loss):
        bar.set_postfix(frame=frame, it=f"{it}/{total}", loss=f"{loss:.4g}", refresh=True)

    t_start = time.perf_counter()
    interrupted = False
    try:
        for r in video.stylize_clip(w, clip.frames, styles, settings, temporal_weight=lam, flow_method=args.flow,
                                    start=done, previous=previous, callback=callback):
            folder.mkdir(exist_ok=True)
            write_image(video_io.frame_path(folder, r.index), r.image)
            entries.append({"frame": r.index, "seconds": r.seconds, "flow_seconds": r.flow_seconds,
                            "iterations": r.iterations, "consistent": r.consistent, "loss": r.loss})
            write_json(report_path, {**report, "seconds": time.perf_counter() - t_start, "status": "running"})
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    report.update(seconds=time.perf_counter() - t_start, status="interrupted" if interrupted else "done",
                  s_per_frame=float(np.median([e["seconds"] for e in entries])) if entries else None)
    if interrupted:
        write_json(report_path, report)
        finished = _finished(folder) if folder.is_dir() else 0
        print(f"stylejax: interrupted after {finished} of {len(clip.frames)} frames; they are in {folder}; "
              f"run the same command with --resume to continue (report {report_path})", file=sys.stderr)
        return 130
    notes = []
    if folder != out:
        frames = video_io.read_clip(folder).frames
        notes = video_io.write_video(out, frames, clip.fps, audio_from=source if clip.has_audio else None)
        if not args.keep_frames:
            shutil.rmtree(folder)
    elif clip.has_audio:
        notes = ["audio dropped: a folder of frames holds no audio"]
    report["notes"] = notes
    write_json(report_path, report)
    for note in notes:
        print(f"stylejax: note: {note}", file=sys.stderr)
    per_frame = f"{report['s_per_frame']:.1f} s per frame" if entries else "no frame left to style"
    print(f"wrote {out} ({len(clip.frames)} frames, {shape[1]}x{shape[0]}, {float(clip.fps):g} fps, "
          f"{per_frame}); report {report_path}")
    return 0


def _earlier_entries(report_path: Path, done: int) -> list[dict]:
    """Per-frame entries of the frames finished before a resume (from the earlier report)."""
    try:
        earlier = json.loads(report_path.read_text())
        return [e for e in earlier.get("per_frame", []) if e.get("frame", done) < done]
    except (OSError, ValueError, AttributeError):
        return []
