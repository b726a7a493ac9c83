#!/usr/bin/env python
"""Flicker with and without temporal consistency on a synthetic pan of a real photo.

The clip: ``--frames`` crops of ``--width`` x ``--height`` from a photo, each ``--shift`` px
further right, so frame t+1 shows at x what frame t showed at x + shift. Both runs style it
with the same transfer settings; the figures:

* flicker ``mean |O_{t+1}(x) - O_t(x + shift)|`` over frames and the overlap (0 = stable);
* each frame's transfer objective ``alpha Jc + beta Js + gamma Jtv`` (temporal term left out)
  with temporal consistency over that of the frame styled alone;
* seconds per frame (median, compile excluded: the first frame of each run is left out).

Usage::

    python scripts/video_flicker.py --json /tmp/flicker.json                # the 8 x 160x120 pan
    python scripts/video_flicker.py --frames 4 --width 64 --height 48 --iters 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stylejax import load_weights, temporal, video
from stylejax.style import config
from stylejax.images import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


def pan(photo: np.ndarray, frames: int, width: int, height: int, shift: int) -> np.ndarray:
    """u8[T, height, width, 3]: crops moving right by ``shift`` px per frame."""
    y0 = (photo.shape[0] - height) // 2
    return np.stack([photo[y0:y0 + height, shift * t:shift * t + width] for t in range(frames)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content", default=str(DATA / "tubingen.jpg"))
    p.add_argument("--style", default=str(DATA / "starry_night.jpg"))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--shift", type=int, default=4)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--style-weight", type=float, default=10.0)
    p.add_argument("--temporal-weight", type=float, default=video.DEFAULT_TEMPORAL_WEIGHT)
    p.add_argument("--json", default=None)
    a = p.parse_args()

    full = read_image(a.content)  # scaled so that the whole pan fits: width + shift * frames, height
    factor = max((a.width + a.shift * a.frames) / full.shape[1], a.height / full.shape[0])
    photo = read_image(a.content, int(np.ceil(max(full.shape[:2]) * factor)) + 1)
    clip = pan(photo, a.frames, a.width, a.height, a.shift)
    style = read_image(a.style, 2 * max(a.width, a.height))
    w = load_weights("vgg16")
    settings = config.resolve(size=max(a.width, a.height), iters=a.iters, style_weight=a.style_weight)
    runs = {}
    for name, lam in (("temporal", a.temporal_weight), ("alone", None)):
        t0 = time.perf_counter()
        frames = []
        for f in video.stylize_clip(w, clip, [style], settings, temporal_weight=lam):
            frames.append(f)
            print(f"  {name} frame {f.index}: {f.seconds:.1f} s, objective {f.loss['objective']:.4g}", flush=True)
        out = np.stack([f.image for f in frames])
        runs[name] = {"flicker": temporal.flicker(out, (a.shift, 0)),
                      "objective": [f.loss["objective"] for f in frames],
                      "s_per_frame": float(np.median([f.seconds for f in frames[1:]] or [frames[0].seconds])),
                      "seconds": time.perf_counter() - t0,
                      "consistent": [f.consistent for f in frames]}
        print(name, json.dumps({k: v for k, v in runs[name].items()}), flush=True)
    ratios = [t / s for t, s in zip(runs["temporal"]["objective"], runs["alone"]["objective"])]
    summary = {"clip": [a.frames, a.height, a.width], "shift": a.shift, "iters": a.iters,
               "temporal_weight": a.temporal_weight, "content_flicker": temporal.flicker(clip, (a.shift, 0)),
               "flicker_ratio": runs["temporal"]["flicker"] / runs["alone"]["flicker"],
               "objective_ratio_max": max(ratios), "objective_ratios": ratios, "runs": runs}
    print(json.dumps({k: summary[k] for k in ("flicker_ratio", "objective_ratio_max", "content_flicker")}))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
