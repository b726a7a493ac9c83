"""Make the README gallery from the images shipped in stylejax/assets (public domain / CC0).

    python scripts/gallery.py [--size 160] [--iters 150] [--out docs/gallery]

Writes one PNG per (content, style, option) and ``gallery.png``, a montage
(rows: content | style | result), plus ``gallery.json`` with each run's loss and timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import stylejax
from stylejax.images import read_image, resize_longest, write_image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "stylejax" / "assets"
RUNS = [
    ("chelsea", "immunohistochemistry", {}),
    ("chelsea", "hubble_deep_field", {"original_colors": True}),
    ("astronaut", "immunohistochemistry", {"luminance_only": True}),
    ("astronaut", "hubble_deep_field", {"match_histogram": True}),
]


def small_png(path: Path) -> None:
    """Re-save a PNG with an adaptive 256-colour palette (about 3x smaller), world-readable."""
    img = Image.open(path).convert("RGB")
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    path.chmod(0o644)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--style-weight", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery")
    args = p.parse_args(argv)
    os.environ.setdefault("STYLEJAX_CACHE", "/tmp/sjcache")
    args.out.mkdir(parents=True, exist_ok=True)
    w = stylejax.load_weights("vgg16")
    rows, log = [], []
    for content_name, style_name, options in RUNS:
        content = read_image(ASSETS / f"{content_name}.jpg")
        style = read_image(ASSETS / f"{style_name}.jpg")
        r = stylejax.transfer(content, style, weights=w, size=args.size, iters=args.iters,
                              style_weight=args.style_weight, **options)
        tag = "_".join([content_name, style_name.split("_")[0]] + [k for k in options])
        write_image(args.out / f"{tag}.png", r.image)
        small_png(args.out / f"{tag}.png")
        log.append({"image": f"{tag}.png", "options": options, "loss": r.loss, "seconds": r.seconds,
                    "s_per_iter": r.s_per_iter, "iterations": r.iterations})
        print(json.dumps(log[-1]), flush=True)
        h = r.image.shape[0]
        row = [np.asarray(resize_longest(content, args.size)), np.asarray(resize_longest(style, args.size)),
               r.image]
        row = [np.asarray(Image.fromarray(im).resize((round(im.shape[1] * h / im.shape[0]), h))) for im in row]
        rows.append(np.concatenate(row, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    write_image(args.out / "gallery.png", np.concatenate(rows, axis=0))
    small_png(args.out / "gallery.png")
    (args.out / "gallery.json").write_text(json.dumps(log, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
