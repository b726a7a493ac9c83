"""Pictures of a scan: a lecture-style grid per layer and an ``index.html`` to browse them.

A unit's block shows its top patches (best first, row-major), each the unit's receptive field
cut from the scanned (resized, centre-cropped) image, resized to a common tile. Where the field
runs past the image border the missing part is mid-grey, so the unit's centre stays centred.
With ``projection="deconvnet"|"guided"`` (needs :mod:`stylejax.interpret.projection`) each patch's
pixel-space projection is shown beside it, as in Zeiler & Fergus (2014), Fig. 2.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stylejax.images import atomic_write
from stylejax.interpret import dataset
from stylejax.interpret.receptive_field import RF, box
from stylejax.interpret.scan import ScanResult

GREY = 128
BACKGROUND = (255, 255, 255)


def crop_patch(pixels: np.ndarray, rf: RF, y: int, x: int, fill: int = GREY) -> np.ndarray:
    """The ``rf.size``-square field of unit ``(y, x)`` from ``u8/f32[H, W, C]``, padded with ``fill``."""
    h, w = pixels.shape[:2]
    top, left, bottom, right = box(rf, y, x)
    out = np.full((rf.size, rf.size, pixels.shape[2]), fill, pixels.dtype)
    ct, cl, cb, cr = max(0, top), max(0, left), min(h, bottom), min(w, right)
    if cb > ct and cr > cl:
        out[ct - top:cb - top, cl - left:cr - left] = pixels[ct:cb, cl:cr]
    return out


def to_tile(patch: np.ndarray, tile: int) -> np.ndarray:
    """Resize a u8 patch to ``tile x tile`` (nearest when enlarging a lot, so pixels stay visible)."""
    if patch.shape[0] == tile:
        return patch
    method = Image.Resampling.NEAREST if tile >= 3 * patch.shape[0] else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(patch).resize((tile, tile), method))


def projection_to_u8(proj: np.ndarray) -> np.ndarray:
    """Signed f32[h, w, 3] projection -> u8 with 0 at mid-grey, scaled by its own max |value|."""
    peak = float(np.max(np.abs(proj)))
    if not np.isfinite(peak) or peak <= 1e-12:
        return np.full(proj.shape, 128, np.uint8)
    return np.clip(np.rint(128.0 + 127.0 * proj / peak), 0, 255).astype(np.uint8)


def font(size: int = 11):
    """Pillow's default font at ``size`` px (its bitmap font on Pillow < 10.1), for labels."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def block(tiles: Sequence[np.ndarray], tile: int, cols: int, gap: int = 1) -> np.ndarray:
    """Tiles row-major in ``cols`` columns, ``gap`` px of white between; empty slots white."""
    rows = max(1, math.ceil(len(tiles) / cols))
    out = np.full((rows * tile + (rows - 1) * gap, cols * tile + (cols - 1) * gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (tile + gap):r * (tile + gap) + tile, c * (tile + gap):c * (tile + gap) + tile] = t
    return out


def _labelled(img: np.ndarray, label: str, height: int = 14) -> np.ndarray:
    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + height), BACKGROUND)
    canvas.paste(Image.fromarray(img), (0, height))
    ImageDraw.Draw(canvas).text((1, 1), label, fill=(0, 0, 0), font=font(height - 3))
    return np.asarray(canvas)


def mosaic(blocks: Sequence[np.ndarray], cols: int, gap: int = 6, title: str | None = None) -> Image.Image:
    """Lay equal-size blocks out in ``cols`` columns on white, with an optional title line."""
    bh, bw = blocks[0].shape[:2]
    rows = math.ceil(len(blocks) / cols)
    head = 20 if title else 0
    canvas = Image.new("RGB", (cols * bw + (cols + 1) * gap, head + rows * bh + (rows + 1) * gap), BACKGROUND)
    if title:
        ImageDraw.Draw(canvas).text((gap, 3), title, fill=(0, 0, 0), font=font(14))
    for i, b in enumerate(blocks):
        r, c = divmod(i, cols)
        canvas.paste(Image.fromarray(b), (gap + c * (bw + gap), head + gap + r * (bh + gap)))
    return canvas


def _load_images(root: Path, names: Sequence[str], size: int) -> dict[str, np.ndarray]:
    images = {}
    for name in names:
        try:
            images[name] = dataset.load_square(root / name, size)
        except Exception:  # noqa: BLE001 - a file gone since the scan: its tiles are grey
            images[name] = np.full((size, size, 3), GREY, np.uint8)
    return images


def _typed(result: ScanResult | Mapping) -> ScanResult:
    """A :class:`ScanResult`; a ``patches.json`` document (read back from disk) is converted."""
    return result if isinstance(result, ScanResult) else ScanResult.from_report(result)


def unit_tiles(result: ScanResult | Mapping, root: str | os.PathLike | None = None, tile: int = 64, *,
               weights=None, projection: str | None = None, images: dict[str, np.ndarray] | None = None,
               ) -> dict[int, tuple[list[np.ndarray], list[np.ndarray]]]:
    """``{unit: (patch tiles, projection tiles)}`` for every unit of a scan.

    ``root`` is the scanned folder (default: the one recorded in the result).
    """
    result = _typed(result)
    rf, size, k = result.rf, result.settings.size, result.settings.top
    patches = result.patches()
    names = sorted({p.image for entries in patches.values() for p in entries})
    images = images if images is not None else _load_images(Path(root or result.settings.root), names, size)
    project_batch = None
    if projection and weights is not None:
        try:
            from stylejax.interpret.projection import project_batch
        except ImportError:
            project_batch = None
    out = {}
    for unit, entries in patches.items():
        tiles = [to_tile(crop_patch(images[e.image], rf, e.y, e.x), tile) for e in entries]
        projs = []
        if project_batch is not None and entries:
            padded = entries + [entries[0]] * (k - len(entries))  # a fixed batch shape: one compile
            signed = np.asarray(project_batch(
                weights, np.stack([images[e.image] for e in padded]), result.layer,
                [int(unit)] * k, [e.y for e in padded], [e.x for e in padded], method=projection))
            projs = [to_tile(projection_to_u8(crop_patch(signed[i], rf, e.y, e.x, fill=0)), tile)
                     for i, e in enumerate(entries)]
        out[unit] = (tiles, projs)
    return out


def layer_grid(result: ScanResult | Mapping, tiles: Mapping[int, tuple[list, list]], tile: int, *,
               units_per_row: int | None = None) -> Image.Image:
    """The lecture figure for one layer: a labelled block per unit (projections left of patches)."""
    result = _typed(result)
    k = result.settings.top
    cols = math.ceil(math.sqrt(k))
    blocks = []
    for unit, (patches, projs) in tiles.items():
        parts = [block(projs, tile, cols)] if projs else []
        parts.append(block(patches, tile, cols))
        h = max(p.shape[0] for p in parts)
        parts = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in parts]
        sep = np.full((h, 3, 3), 255, np.uint8)
        body = np.concatenate([x for p in parts for x in (p, sep)][:-1], axis=1)
        blocks.append(_labelled(body, f"unit {unit}"))
    shape = (max(b.shape[0] for b in blocks), max(b.shape[1] for b in blocks))
    blocks = [np.pad(b, ((0, shape[0] - b.shape[0]), (0, shape[1] - b.shape[1]), (0, 0)), constant_values=255)
              for b in blocks]
    per_row = units_per_row or math.ceil(math.sqrt(len(blocks)))
    title = (f"{result.layer}: top {k} of {result.images} images per unit "
             f"(receptive field {result.rf.size} px)")
    return mosaic(blocks, per_row, title=title)


def _save_png(img: Image.Image, path: Path) -> None:
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def write_pictures(result: ScanResult | Mapping, root: str | os.PathLike | None, out: str | os.PathLike, *,
                   tile: int = 64, weights=None, projection: str | None = None,
                   tiles: Mapping[int, tuple[list, list]] | None = None) -> list[Path]:
    """Write ``OUT/<layer>.png``, ``OUT/units/<layer>/<unit>.png`` and ``OUT/index.html``; return the paths.

    ``result`` is the scan's :class:`ScanResult` (a ``patches.json`` document is converted);
    ``root`` the scanned folder (None: the one recorded in the result). ``tiles`` (from
    :func:`unit_tiles`) skips recomputing the patches and projections.
    Unit strips in ``OUT/units/<layer>/`` that this result does not hold (an earlier run's) are removed.
    """
    result = _typed(result)
    out = Path(out)
    layer = result.layer
    if tiles is None:
        tiles = unit_tiles(result, root, tile, weights=weights, projection=projection)
    written = [out / f"{layer}.png"]
    _save_png(layer_grid(result, tiles, tile), written[0])
    unit_dir = out / "units" / layer
    unit_dir.mkdir(parents=True, exist_ok=True)
    big = max(tile, 96)
    for unit, (patches, projs) in tiles.items():
        rows = [block([to_tile(p, big) for p in patches], big, max(1, len(patches)), gap=2)] if patches else []
        if projs:
            rows.append(block([to_tile(p, big) for p in projs], big, len(projs), gap=2))
        if not rows:
            continue
        strip = np.concatenate([x for r in rows for x in (r, np.full((4, r.shape[1], 3), 255, np.uint8))][:-1])
        path = unit_dir / f"{unit}.png"
        _save_png(Image.fromarray(strip), path)
        written.append(path)
    for stale in unit_dir.glob("*.png"):  # strips of units an earlier run into OUT kept
        if stale not in written:
            stale.unlink(missing_ok=True)
    index = out / "index.html"
    text = index_html(result, has_projection=any(p for _, p in tiles.values()), projection=projection)
    atomic_write(index, lambda f: f.write(text.encode()))
    written.append(index)
    return written


def index_html(result: ScanResult | Mapping, *, has_projection: bool = False, projection: str | None = None) -> str:
    """A self-contained page: settings, the layer grid, then each unit's patches and table."""
    result = _typed(result)
    e = html.escape
    s, layer, rf = result.settings, result.layer, result.rf
    rate = round(result.images / result.seconds, 2) if result.seconds > 0 else None
    lines = [
        "<!doctype html>", "<meta charset='utf-8'>", f"<title>stylejax patches: {e(layer)}</title>",
        "<style>body{font:14px sans-serif;margin:1em 2em}img{image-rendering:pixelated;max-width:100%}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:1px 6px;border-bottom:1px solid #ddd}"
        "section{margin:1.5em 0}</style>",
        f"<h1>{e(layer)}: top {s.top} images per unit</h1>",
        f"<p>{result.images} images scanned under <code>{e(s.root)}</code> with "
        f"{e(s.arch)} ({e(s.weights)}) at {s.size}x{s.size} "
        f"(shorter side resized, centre crop); receptive field {rf.size} px, jump {rf.jump} px; "
        f"{len(result.skipped)} files skipped; {round(result.seconds, 3)} s ({rate} images/s).</p>",
    ]
    if has_projection:
        lines.append(f"<p>Left of each block: the {e(str(projection))} projection of the unit's activation "
                     "into pixel space; right: the image patch.</p>")
    lines.append(f"<p><a href='{e(layer)}.png'><img src='{e(layer)}.png' alt='{e(layer)} grid'></a></p>")
    for unit, entries in result.patches().items():
        lines.append(f"<section id='u{unit}'><h3>unit {unit}</h3>")
        lines.append(f"<img src='units/{e(layer)}/{unit}.png' alt='unit {unit}'>")
        lines.append("<table><tr><th>#</th><th>image</th><th>activation</th><th>y, x</th>"
                     "<th>box (top, left, bottom, right)</th></tr>")
        for rank, p in enumerate(entries, 1):
            lines.append(f"<tr><td>{rank}</td><td>{e(p.image)}</td><td>{p.activation:.4g}</td>"
                         f"<td>{p.y}, {p.x}</td><td>{', '.join(map(str, p.box))}</td></tr>")
        lines.append("</table></section>")
    if result.skipped:
        shown = result.skipped[:1000]
        lines.append(f"<h2>Skipped files ({len(result.skipped)})</h2><ul>")
        lines += [f"<li>{e(x['file'])}: {e(x['reason'])}</li>" for x in shown]
        if len(result.skipped) > len(shown):
            lines.append(f"<li>... and {len(result.skipped) - len(shown)} more (see patches.json)</li>")
        lines.append("</ul>")
    return "\n".join(lines) + "\n"
