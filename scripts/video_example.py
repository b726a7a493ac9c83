#!/usr/bin/env python
"""The README's video example: a synthetic pan and zoom over a shipped photo, styled twice.

The clip is made from ``stylejax/assets/chelsea.jpg`` (a slow zoom in while panning right),
styled with the shipped immunohistochemistry slide, once frame by frame alone (``--no-temporal``)
and once with temporal consistency. Writes ``docs/gallery/video_pan.gif`` (rows: content, alone,
temporal) and ``docs/gallery/video_strip.jpg`` (4 frames of each row) and prints the seconds per
frame and the flicker of both runs.

Usage::

    python scripts/video_example.py                    # 6 frames of 128x96, 30 iterations each
    python scripts/video_example.py --frames 4 --iters 20 --out /tmp/example
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from stylejax import load_weights, temporal, video, video_io
from stylejax.style import config
from stylejax.images import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "stylejax" / "assets"


def pan_zoom(photo: np.ndarray, frames: int, width: int, height: int) -> np.ndarray:
    """u8[T, height, width, 3]: a window over ``photo`` that moves right and zooms in by 1.5 % a frame."""
    h, w = photo.shape[:2]
    out = []
    for t in range(frames):
        zoom = 1.015 ** t
        win_w = 0.6 * w / zoom
        win_h = win_w * height / width
        x0 = 0.15 * w + 3.0 * t * w / width  # about 3 output pixels per frame
        y0 = (h - win_h) / 2
        s = width / win_w
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
        out.append(cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "docs" / "gallery"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = pan_zoom(read_image(ASSETS / "chelsea.jpg"), a.frames, a.width, a.height)
    style = read_image(ASSETS / "immunohistochemistry.jpg", 256)
    w = load_weights("vgg16")
    settings = config.resolve(size=max(a.width, a.height), iters=a.iters)
    rows, stats = [clip], {}
    for name, lam in (("alone", None), ("temporal", video.DEFAULT_TEMPORAL_WEIGHT)):
        frames = []
        for f in video.stylize_clip(w, clip, [style], settings, temporal_weight=lam):
            frames.append(f)
            print(f"  {name} frame {f.index}: {f.seconds:.1f} s, objective {f.loss['objective']:.4g}", flush=True)
        styled = np.stack([f.image for f in frames])
        rows.append(styled)
        flow = [temporal.optical_flow(clip[t + 1], clip[t]) for t in range(a.frames - 1)]
        warped = [np.asarray(temporal.warp(styled[t].astype(np.float32), flow[t])) for t in range(a.frames - 1)]
        masks = [temporal.consistency_mask(flow[t], temporal.optical_flow(clip[t], clip[t + 1]))
                 for t in range(a.frames - 1)]
        error = float(np.mean([np.sum(m[..., None] * np.abs(styled[t + 1] - wp)) / (3 * m.sum())
                               for t, (m, wp) in enumerate(zip(masks, warped))]))
        stats[name] = {"s_per_frame": float(np.median([f.seconds for f in frames[1:]])),
                       "warp_error": error, "objective": [f.loss["objective"] for f in frames]}
        print(name, json.dumps(stats[name]), flush=True)
    grid = np.concatenate(rows, axis=1)  # u8[T, 3 * height, width, 3]
    video_io.write_video(out / "video_pan.gif", grid, 5)
    pick = np.linspace(0, a.frames - 1, 4).round().astype(int)
    write_image(out / "video_strip.jpg", np.concatenate(list(grid[pick]), axis=1))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
