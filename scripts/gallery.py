"""Make the README gallery from the images shipped in stylejax/assets (public domain / CC0).

    python scripts/gallery.py [--size 384] [--iters 80] [--modern-iters 40] [--modern-iters-first 80]
                              [--out docs/gallery] [--montage-only]

For each (content, painting) pair in ``ROWS`` it runs three style losses at the same output size:

* ``gram``: the Gram loss (``style_loss="gram"``, the default), L-BFGS from the content;
* ``w2``: the Wasserstein-2 loss (``style_loss="w2"``), the same optimiser and iterations;
* ``modern``: ``preset="modern"`` (W2, Adam, iterate averaging, sqrt(2) scales from 128 px) with
  its iterations capped (``iters_first`` at the first scale, ``iters`` at each later one).

Then one region-mask example: one content, two paintings, complementary left/right masks
(``style_masks=``), the W2 loss. Writes one PNG per run, ``gallery.png`` (rows: content | style |
gram | w2 | modern), ``gallery_masks.png`` (content | masks | the two styles | result) and
``gallery.json`` with each run's options, loss, seconds and s/iter. ``--montage-only`` rebuilds
the two montages (rows ``--montage-height`` px high) from the PNGs already written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import stylejax
from stylejax.images import read_image, write_image
from stylejax.interpret.grids import font

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "stylejax" / "assets"
#: (content, painting, beta of the gram column, beta of the w2 column). How far a beta moves the
#: image depends on the painting and the photo, so each row may have its own; at these (the same
#: for every row) the astronaut rows' gram and w2 results stay close to the photo.
ROWS = [
    ("chelsea", "starry_night", 10.0, 1e6),
    ("chelsea", "the_scream", 10.0, 1e6),
    ("astronaut", "shipwreck", 10.0, 1e6),
    ("astronaut", "woman-with-hat-matisse", 10.0, 1e6),
]
#: The masks example: content, (left style, right style).
MASKS = ("chelsea", ("starry_night", "the_scream"))
MASKS_BETAS = (10.0, 1e6)
METHODS = ("gram", "w2", "modern")
SHORT = {"starry_night": "starry", "the_scream": "scream", "shipwreck": "shipwreck",
         "woman-with-hat-matisse": "matisse"}
LABEL_HEIGHT = 18


def small_png(path: Path, colors: int = 256) -> None:
    """Re-save a PNG with an adaptive palette of ``colors`` (about 3x smaller), world-readable."""
    img = Image.open(path).convert("RGB")
    img.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    path.chmod(0o644)


def method_options(method: str, args: argparse.Namespace, betas: tuple[float, float]) -> dict:
    """The keyword arguments of ``stylejax.transfer`` for one column of the gallery; ``betas``:
    the row's (gram, w2) style weights, unless ``--gram-weight`` / ``--w2-weight`` are given."""
    if method == "gram":
        weight = args.gram_weight if args.gram_weight is not None else betas[0]
        return dict(size=args.size, iters=args.iters, style_loss="gram", style_weight=weight)
    if method == "w2":
        weight = args.w2_weight if args.w2_weight is not None else betas[1]
        return dict(size=args.size, iters=args.iters, style_loss="w2", style_weight=weight)
    return dict(preset="modern", size=args.size, iters=args.modern_iters, iters_first=args.modern_iters_first)


def left_right_masks(height: int, width: int, blend: float = 0.1) -> list[np.ndarray]:
    """Two complementary masks u8[height, width]: white on the left / right half, a linear ramp
    over ``blend`` of the width in the middle."""
    x = (np.arange(width) + 0.5) / width
    left = np.clip((0.5 - x) / blend + 0.5, 0.0, 1.0)
    left = np.rint(255 * np.broadcast_to(left, (height, width))).astype(np.uint8)
    return [left, 255 - left]


def run(content, styles, w, tag: str, out: Path, log: list, style_masks=None, **options) -> np.ndarray:
    """One ``stylejax.transfer``; writes ``tag.png`` and appends its record to ``log``."""
    t0 = time.perf_counter()
    r = stylejax.transfer(content, styles, weights=w, style_masks=style_masks, **options)
    wall = time.perf_counter() - t0
    write_image(out / f"{tag}.png", r.image)
    small_png(out / f"{tag}.png")
    record = {"image": f"{tag}.png", "call": {k: v for k, v in options.items()},
              "options": r.options.to_dict() if r.options is not None else None,
              "shape": list(r.image.shape[:2]), "loss": r.loss, "iterations": r.iterations,
              "seconds": r.seconds, "wall_seconds": wall, "s_per_iter": r.s_per_iter,
              "per_scale": r.per_scale}
    log.append(record)
    print(json.dumps({k: record[k] for k in ("image", "iterations", "wall_seconds", "s_per_iter")}), flush=True)
    return r.image


def at_height(image: np.ndarray, height: int) -> np.ndarray:
    """u8[h, w, 3] resized to ``height`` rows, aspect kept."""
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * height / h)), height), Image.LANCZOS))


def labelled(image: np.ndarray, label: str) -> np.ndarray:
    """``image`` with a white strip above it holding ``label``."""
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((3, 2), label, fill=(0, 0, 0), font=font(LABEL_HEIGHT - 4))
    return np.asarray(canvas)


def montage(rows: list[list[tuple[np.ndarray, str]]], height: int, gap: int = 4) -> np.ndarray:
    """Rows of labelled images, every image resized to ``height`` rows, gaps white."""
    out = []
    for row in rows:
        h = height
        cells = [labelled(at_height(im, h), label) for im, label in row]
        cells = [np.pad(c, ((0, 0), (0, gap), (0, 0)), constant_values=255) for c in cells]
        out.append(np.concatenate(cells, axis=1))
    width = max(r.shape[1] for r in out)
    out = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in out]
    return np.concatenate(out, axis=0)


def tag_of(content_name: str, style_name: str, method: str) -> str:
    """A run's file stem, e.g. ``chelsea_starry_w2``."""
    return f"{content_name}_{SHORT[style_name]}_{method}"


def make_montages(args: argparse.Namespace) -> None:
    """``gallery.png`` and ``gallery_masks.png`` from the result PNGs in ``args.out``, every row
    ``args.montage_height`` px high."""
    h = args.montage_height
    rows = []
    for content_name, style_name, *_ in ROWS[:args.rows]:
        results = [read_image(args.out / f"{tag_of(content_name, style_name, m)}.png") for m in METHODS]
        rows.append([(read_image(ASSETS / f"{content_name}.jpg"), content_name),
                     (read_image(ASSETS / f"{style_name}.jpg"), style_name.replace("_", " ").replace("-", " ")),
                     *[(im, m if m != "modern" else "modern (capped)") for im, m in zip(results, METHODS)]])
    if rows:
        write_image(args.out / "gallery.png", montage(rows, h))
        small_png(args.out / "gallery.png", args.montage_colors)
    if not args.no_masks:
        content_name, style_names = MASKS
        content = read_image(ASSETS / f"{content_name}.jpg")
        mask = np.stack([left_right_masks(*content.shape[:2])[0]] * 3, axis=-1)
        mask[[0, -1], :], mask[:, [0, -1]] = 128, 128  # a grey frame: the white half shows on white
        write_image(args.out / "gallery_masks.png", montage([[
            (content, content_name), (mask, "mask 1 (left)"),
            *[(read_image(ASSETS / f"{s}.jpg"), f"style {i + 1}: {s.replace('_', ' ').replace('-', ' ')}")
              for i, s in enumerate(style_names)],
            (read_image(args.out / f"{content_name}_masks_w2.png"), "w2, style 1 left, style 2 right")]], h))
        small_png(args.out / "gallery_masks.png", args.montage_colors)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=384, help="longest side of every result")
    p.add_argument("--iters", type=int, default=80, help="L-BFGS iterations of the gram and w2 columns")
    p.add_argument("--gram-weight", type=float, default=None,
                   help="style weight (beta) of every gram picture (default: per row, ROWS)")
    p.add_argument("--w2-weight", type=float, default=None,
                   help="style weight (beta) of every w2 picture (default: per row, ROWS)")
    p.add_argument("--modern-iters", type=int, default=40, help="modern preset: iterations per later scale")
    p.add_argument("--modern-iters-first", type=int, default=80, help="modern preset: first-scale iterations")
    p.add_argument("--rows", type=int, default=len(ROWS), help="render only the first N rows")
    p.add_argument("--no-masks", action="store_true", help="skip the region-mask example")
    p.add_argument("--montage-height", type=int, default=256, help="row height of the montages")
    p.add_argument("--montage-colors", type=int, default=256, help="palette size of the montages")
    p.add_argument("--montage-only", action="store_true", help="only rebuild the montages from the PNGs in --out")
    p.add_argument("--redo", default=None, metavar="TAG,...",
                   help="re-render only these pictures (e.g. chelsea_scream_gram) and update their records")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.montage_only:
        make_montages(args)
        return 0
    jobs = []  # (tag, content name, style names, masks, transfer options)
    for content_name, style_name, *betas in ROWS[:args.rows]:
        jobs += [(tag_of(content_name, style_name, m), content_name, [style_name], None,
                  method_options(m, args, betas)) for m in METHODS]
    if not args.no_masks:
        content_name, style_names = MASKS
        hw = read_image(ASSETS / f"{content_name}.jpg").shape[:2]
        jobs.append((f"{content_name}_masks_w2", content_name, list(style_names), left_right_masks(*hw),
                     method_options("w2", args, MASKS_BETAS)))
    redo = set(args.redo.split(",")) if args.redo else None
    if redo is not None and not redo <= {job[0] for job in jobs}:
        p.error(f"--redo: unknown pictures {sorted(redo - {job[0] for job in jobs})}")
    w = stylejax.load_weights("vgg16")
    log = []
    for tag, content_name, style_names, masks, options in jobs:
        if redo is None or tag in redo:
            styles = [read_image(ASSETS / f"{s}.jpg") for s in style_names]
            run(read_image(ASSETS / f"{content_name}.jpg"), styles if masks is not None else styles[0], w, tag,
                args.out, log, style_masks=masks, **options)
            log[-1].update(content=content_name, styles=style_names)
    if redo is not None:  # keep the other pictures' records
        new = {r["image"]: r for r in log}
        log = [new.get(r["image"], r) for r in json.loads((args.out / "gallery.json").read_text())["runs"]]
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "montage_only", "redo")}
    (args.out / "gallery.json").write_text(json.dumps(
        {"settings": settings, "rows": [list(r) for r in ROWS[:args.rows]],
         "masks": None if args.no_masks else {"content": MASKS[0], "styles": list(MASKS[1]),
                                              "masks": "left / right halves, linear ramp over 10 % of the width"},
         "total_wall_seconds": sum(r["wall_seconds"] for r in log), "runs": log}, indent=2) + "\n")
    make_montages(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
