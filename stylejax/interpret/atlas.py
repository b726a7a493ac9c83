"""An atlas of units: one scan over a folder, then a static site with a page per unit.

For every requested unit of every requested layer (OpenAI Microscope's layout, built from the
methods of this package):

* its top-K images from ONE streaming scan over the folder for all layers
  (:func:`stylejax.interpret.scan.scan_layers`), each shown as a window of the scanned image
  around the unit's receptive field with the field's box drawn on it;
* each patch's deconvnet (or guided-backprop) projection (:mod:`.projection`) in the same window;
* a feature visualisation (:mod:`.synthesis`, all units of a layer in one vmapped call);
* the receptive field's size, jump and centre (:mod:`.receptive_field`).

Site layout (every link relative, no server, no external asset)::

    SITE/index.html                 the layers, the settings
    SITE/atlas.json                 everything, for machines (paths relative to SITE)
    SITE/scan.json                  the scan's result (written once, when the scan is done)
    SITE/LAYER/index.html           one cell per unit: its visualisation and best patch
    SITE/LAYER/unit_U.html          one page per unit
    SITE/LAYER/U/patch_R.png        rank R's window with the receptive-field box
    SITE/LAYER/U/projection_R.png   its projection, same window
    SITE/LAYER/U/visualization.png  the feature visualisation
    SITE/LAYER/U/unit.json          the unit's record (its entry in atlas.json)

Resumable: the scan checkpoints to ``SITE/scan_state.npz`` (as ``stylejax patches``); once it is
done its result is ``scan.json``; a unit is finished when its ``unit.json`` and page exist, and
a rerun with ``resume=True`` skips finished units. Every file is written atomically.

Window of a patch: a ``c x c`` square, ``c = min(size, max(24, 2 * rf.size))``, centred on the
unit's receptive-field centre and shifted to lie inside the ``size x size`` scanned image; the
box is the field clipped to the image (:func:`stylejax.interpret.receptive_field.box`).
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw

from stylejax import models
from stylejax.errors import StylejaxError
from stylejax.images import atomic_write, write_image
from stylejax.interpret.receptive_field import RF, for_arch, output_sizes

ATLAS_VERSION = 1
SCAN_FILE = "scan.json"
ATLAS_FILE = "atlas.json"
UNIT_FILE = "unit.json"
#: Smallest window side (pixels of the scanned image) around a receptive field.
MIN_WINDOW = 24
BOX_COLOUR = (255, 214, 0)

#: ``progress(stage, advance, total)``: ``advance`` more of ``total`` items of ``stage`` are done.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Options:
    """What an atlas shows; a resumed atlas must have the same.

    top: patches per unit (K); size: side of the square each image is scanned at (shorter side
    resized, centre crop); visualize_steps / visualize_size / seed: the feature visualisation's
    Adam steps, image side and PRNG seed (:func:`stylejax.interpret.synthesis.visualize`);
    tile: side in pixels of each picture on the pages; projection: ``deconvnet`` or ``guided``.
    """

    top: int = 9
    size: int = 224
    visualize_steps: int = 256
    visualize_size: int = 128
    seed: int = 0
    tile: int = 128
    projection: str = "deconvnet"


# ----------------------------------------------------------------------------- geometry
def window(rf: RF, y: int, x: int, size: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the square window shown around unit ``(y, x)`` in a ``size`` image."""
    side = min(size, max(MIN_WINDOW, 2 * rf.size))
    cy, cx = rf.centre(y, x)
    top = min(max(0, math.floor(cy + 0.5 - side / 2)), size - side)
    left = min(max(0, math.floor(cx + 0.5 - side / 2)), size - side)
    return top, left, side


def boxed_tile(pixels: np.ndarray, win: tuple[int, int, int], box: Sequence[int], tile: int) -> np.ndarray:
    """u8[tile, tile, 3]: ``pixels`` u8[H, W, 3] cut to ``win``, scaled to ``tile``, ``box`` outlined.

    ``box`` is ``(top, left, bottom, right)`` (half-open) in ``pixels``' coordinates.
    """
    from stylejax.interpret.grids import to_tile

    top, left, side = win
    img = Image.fromarray(to_tile(np.ascontiguousarray(pixels[top:top + side, left:left + side]), tile))
    scale = tile / side
    b_top, b_left, b_bottom, b_right = box
    rect = [(b_left - left) * scale, (b_top - top) * scale,
            (b_right - left) * scale - 1, (b_bottom - top) * scale - 1]
    rect = [min(max(0.0, v), tile - 1.0) for v in rect]
    ImageDraw.Draw(img).rectangle(rect, outline=BOX_COLOUR, width=max(1, tile // 64))
    return np.asarray(img)


# ----------------------------------------------------------------------------- paths
def unit_dir(layer: str, unit: int) -> str:
    return f"{layer}/{unit}"


def unit_page(layer: str, unit: int) -> str:
    return f"{layer}/unit_{unit}.html"


def _url(path: str) -> str:
    """A relative path as an escaped attribute value."""
    return html.escape(quote(path))


def _rel(target: str, page: str) -> str:
    """``target`` (relative to SITE) as seen from ``page`` (relative to SITE)."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


# ----------------------------------------------------------------------------- checks
def _check_site(out: Path, resume: bool) -> bool:
    """Validate SITE; True if it must be created."""
    if out.exists():
        if not out.is_dir():
            raise StylejaxError(f"output {out} exists and is not a folder")
        if not resume and any(out.iterdir()):
            raise StylejaxError(f"output folder {out} is not empty; resume the atlas in it "
                                "(resume=True; --resume on the command line) or choose a new folder")
        return False
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise StylejaxError(f"output folder {parent} does not exist")
    return True


def check_request(weights, layers: Mapping[str, Sequence[int]], options: Options) -> dict[str, RF]:
    """Validate layers, units and options before any work; returns each layer's receptive field."""
    from stylejax.interpret import synthesis
    from stylejax.interpret.projection import check_method

    if not layers:
        raise StylejaxError("no layer requested")
    backbone = models.get(weights.arch)
    backbone.check_layers(list(layers))
    channels = {lay.name: lay.channels for lay in backbone.layers}
    for name in ("top", "size", "visualize_steps", "visualize_size", "tile"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise StylejaxError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if options.tile < 16:
        raise StylejaxError(f"tile must be at least 16 px, got {options.tile}")
    if options.projection not in ("deconvnet", "guided"):
        check_method(options.projection)
        raise StylejaxError(f"projection {options.projection!r}: use deconvnet or guided")
    sides = output_sizes(backbone.layers, options.size)
    for name, units in layers.items():
        if not units:
            raise StylejaxError(f"no units selected for {name}")
        bad = [u for u in units if not 0 <= int(u) < channels[name]]
        if bad:
            raise StylejaxError(f"unit {bad[0]} is outside {name}, which has units 0..{channels[name] - 1}")
        if len(set(units)) != len(units):
            raise StylejaxError(f"repeated unit in {name}")
        if sides[name] < 1:
            raise StylejaxError(f"size {options.size} is too small for {name}; its feature map would be empty")
        synthesis.check_settings(weights, synthesis.Settings(layer=name, steps=options.visualize_steps,
                                                             size=options.visualize_size), [int(u) for u in units])
    rfs = for_arch(weights.arch)
    return {name: rfs[name] for name in layers}


def _settings(root: Path, weights, layers: Mapping[str, Sequence[int]], options: Options) -> dict:
    return {"version": ATLAS_VERSION, "folder": str(root.resolve()), "arch": weights.arch,
            "weights": weights.name, "preprocessing": weights.preprocessing,
            "layers": {name: [int(u) for u in units] for name, units in layers.items()}, **asdict(options)}


def _write_json(path: Path, doc) -> None:
    text = json.dumps(doc, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StylejaxError(f"{path}: unreadable ({type(exc).__name__}); delete it to redo that part") from None


# ----------------------------------------------------------------------------- the scan
def _scan(root: Path, weights, layers: Mapping[str, Sequence[int]], options: Options, out: Path,
          settings: dict, *, resume: bool, batch: int, checkpoint_seconds: float, workers: int | None,
          scan_progress: bool) -> tuple[dict, float]:
    """The scan's result ``{"settings", "images", "skipped", "seconds", "layers": {L: report}}``.

    Reuses ``SITE/scan.json`` when resuming; returns it and the seconds this call spent scanning.
    """
    from stylejax.interpret import scan as scan_lib

    path = out / SCAN_FILE
    if path.exists():
        doc = _read_json(path)
        if doc.get("settings") != json.loads(json.dumps(settings)):
            saved = doc.get("settings") or {}
            diff = [k for k, v in settings.items() if saved.get(k) != v]
            raise StylejaxError(f"{out} holds an atlas with other settings ({', '.join(diff) or 'version'}); "
                                "use the same settings or another output folder")
        return doc, 0.0
    t0 = time.perf_counter()
    results = scan_lib.scan_layers(root, weights, {name: list(units) for name, units in layers.items()},
                                   top=options.top, size=options.size, batch=batch, state_dir=out, resume=resume,
                                   checkpoint_seconds=checkpoint_seconds, workers=workers, progress=scan_progress,
                                   exclude=[out])
    seconds = time.perf_counter() - t0
    first = next(iter(results.values()))
    doc = {"settings": settings, "images": first.images, "skipped": first.skipped,
           "seconds": round(first.seconds, 3), "compile_seconds": round(first.compile_seconds, 3),
           "layers": {name: result.report() for name, result in results.items()}}
    _write_json(path, doc)  # the scan is safe before its checkpoint goes
    scan_lib.clear_state(out)
    return doc, seconds


# ----------------------------------------------------------------------------- one unit
def _unit_done(out: Path, layer: str, unit: int) -> bool:
    record = out / unit_dir(layer, unit) / UNIT_FILE
    if not (record.exists() and (out / unit_page(layer, unit)).exists()):
        return False
    try:
        doc = json.loads(record.read_text())
        files = [*doc["patches"], *doc["projections"], doc["visualization"], doc["page"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((out / f).is_file() for f in files)


def _load_images(root: Path, names: Sequence[str], size: int) -> dict[str, np.ndarray]:
    from stylejax.interpret import dataset

    images = {}
    for name in names:
        try:
            images[name] = dataset.load_square(root / name, size)
        except StylejaxError as exc:
            raise StylejaxError(f"{root / name}: {exc} (the folder changed since the scan; "
                                "start the atlas over in a new folder)") from None
    return images


def _build_unit(out: Path, weights, report: Mapping, unit: int, rf: RF, images: Mapping[str, np.ndarray],
                picture: np.ndarray, objective: tuple[float, float], options: Options) -> dict:
    """Write one unit's pictures, record and page; return the record."""
    from stylejax.interpret.grids import projection_to_u8
    from stylejax.interpret.projection import project_batch

    layer, size, k = report["layer"], options.size, options.top
    entries = report["units"][str(unit)]
    folder = unit_dir(layer, unit)
    (out / folder).mkdir(parents=True, exist_ok=True)
    signed = np.zeros((0, size, size, 3), np.float32)
    if entries:
        padded = entries + [entries[0]] * (k - len(entries))  # one batch shape per layer: one compile
        signed = np.asarray(project_batch(weights, np.stack([images[e["image"]] for e in padded]), layer,
                                          [unit] * k, [e["y"] for e in padded], [e["x"] for e in padded],
                                          method=options.projection))
    patches, projections, windows = [], [], []
    for rank, entry in enumerate(entries):
        win = window(rf, entry["y"], entry["x"], size)
        top, left, side = win
        shown = projection_to_u8(signed[rank, top:top + side, left:left + side])
        full = np.zeros((size, size, 3), np.uint8)
        full[top:top + side, left:left + side] = shown
        for name, pixels, into in (("patch", images[entry["image"]], patches),
                                   ("projection", full, projections)):
            rel = f"{folder}/{name}_{rank}.png"
            write_image(out / rel, boxed_tile(pixels, win, entry["box"], options.tile))
            into.append(rel)
        windows.append([top, left, top + side, left + side])
    vis = f"{folder}/visualization.png"
    write_image(out / vis, picture)
    record = {
        "layer": layer, "unit": unit, "page": unit_page(layer, unit), "patches": patches,
        "projections": projections, "visualization": vis,
        "images": [e["image"] for e in entries], "activations": [e["activation"] for e in entries],
        "positions": [[e["y"], e["x"]] for e in entries], "boxes": [e["box"] for e in entries],
        "windows": windows,
        "receptive_field": {"size": rf.size, "jump": rf.jump, "start": rf.start},
        "visualization_objective": {"initial": objective[0], "final": objective[1]},
    }
    _write_json(out / folder / UNIT_FILE, record)
    return record


# ----------------------------------------------------------------------------- html
STYLE = ("body{font:14px/1.45 sans-serif;margin:1em 2em;color:#222;max-width:80em}"
         "nav{margin:0 0 1em;padding:.4em 0;border-bottom:1px solid #ddd}nav a{margin-right:.7em}"
         "h1{font-size:1.5em;margin:.3em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}"
         ".grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;font-size:12px}"
         "figcaption{overflow-wrap:anywhere}"
         "figure img{display:block}.pair{display:flex;gap:2px}img{image-rendering:pixelated}"
         "a img{border:1px solid #ccc}table{border-collapse:collapse}"
         "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}code{font-size:12px}")


def _page(title: str, page: str, nav: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def _link(target: str, page: str, text: str) -> str:
    return f"<a href=\"{_url(_rel(target, page))}\">{html.escape(text)}</a>"


def _img(target: str, page: str, alt: str, side: int) -> str:
    return (f"<img src=\"{_url(_rel(target, page))}\" width=\"{side}\" height=\"{side}\" "
            f"alt=\"{html.escape(alt)}\">")


def _layer_nav(page: str, layers: Sequence[str], current: str | None) -> str:
    parts = [_link("index.html", page, "atlas"), "layers:"]
    for name in layers:
        parts.append(f"<b>{html.escape(name)}</b>" if name == current
                     else _link(f"{name}/index.html", page, name))
    return " ".join(parts)


def unit_html(record: Mapping, settings: Mapping, scan: Mapping) -> str:
    """The page of one unit: links to its neighbours and layers, visualisation, patches, field."""
    e = html.escape
    layer, unit, page = record["layer"], record["unit"], record["page"]
    layers = list(settings["layers"])
    units = settings["layers"][layer]
    i = units.index(unit)
    nav = [_layer_nav(page, layers, layer), "|", _link(f"{layer}/index.html", page, f"all units of {layer}")]
    if i > 0:
        nav.append(_link(unit_page(layer, units[i - 1]), page, f"\u2190 unit {units[i - 1]}"))
    if i + 1 < len(units):
        nav.append(_link(unit_page(layer, units[i + 1]), page, f"unit {units[i + 1]} \u2192"))
    others = [name for name in layers if name != layer and unit in settings["layers"][name]]
    if others:
        nav.append(f"| unit {unit} in " + " ".join(_link(unit_page(name, unit), page, name) for name in others))
    rf, tile = record["receptive_field"], settings["tile"]
    obj = record["visualization_objective"]
    body = [
        f"<h1>{e(layer)} \u00b7 unit {unit}</h1>",
        f"<p>Receptive field: <b>{rf['size']} \u00d7 {rf['size']} px</b> of the {settings['size']} \u00d7 "
        f"{settings['size']} px input (jump {rf['jump']} px between neighbouring positions, first centre at "
        f"{rf['start']:g} px). {e(settings['arch'])} ({e(str(settings['weights']))}); top "
        f"{len(record['patches'])} of {scan['images']} images.</p>",
        "<h2>Feature visualisation</h2>",
        f"<figure>{_img(record['visualization'], page, f'{layer} unit {unit} feature visualisation', tile)}"
        f"<figcaption>{settings['visualize_steps']} Adam steps on a {settings['visualize_size']} px image; "
        f"channel mean {obj['initial']:.3g} \u2192 {obj['final']:.3g}</figcaption></figure>",
        f"<h2>Top {len(record['patches'])} images</h2>",
        f"<p>Each pair: the scanned image around the unit's strongest position with its receptive field "
        f"boxed, and the {e(settings['projection'])} projection of that activation in the same window.</p>",
        "<div class=\"grid\">",
    ]
    for rank, (patch, proj) in enumerate(zip(record["patches"], record["projections"])):
        y, x = record["positions"][rank]
        body.append(
            f"<figure id=\"r{rank}\" style=\"max-width:{2 * tile + 2}px\"><div class=\"pair\">{_img(patch, page, f'patch {rank + 1}', tile)}"
            f"{_img(proj, page, f'projection {rank + 1}', tile)}</div>"
            f"<figcaption>#{rank + 1} \u00b7 {record['activations'][rank]:.4g} at ({y}, {x})<br>"
            f"<code>{e(record['images'][rank])}</code></figcaption></figure>")
    body.append("</div>")
    if not record["patches"]:
        body.append("<p>No image reached this unit.</p>")
    return _page(f"{layer} unit {unit} \u00b7 stylejax atlas", page, " ".join(nav), "\n".join(body))


def layer_html(layer: str, records: Mapping[int, Mapping], settings: Mapping, rf: RF) -> str:
    """A layer's index: a cell per unit (visualisation + best patch) linking to its page."""
    page = f"{layer}/index.html"
    half = max(16, settings["tile"] // 2)
    body = [f"<h1>{html.escape(layer)}</h1>",
            f"<p>{len(records)} units; receptive field {rf.size} \u00d7 {rf.size} px (jump {rf.jump} px). "
            "Each cell: the feature visualisation and the best patch.</p>", "<div class=\"grid\">"]
    for unit, record in records.items():
        best = (_img(record["patches"][0], page, f"unit {unit} best patch", half) if record["patches"] else "")
        act = f" \u00b7 {record['activations'][0]:.3g}" if record["activations"] else ""
        body.append(f"<figure style=\"max-width:{2 * half + 2}px\"><a href=\"{_url(_rel(record['page'], page))}\"><div class=\"pair\">"
                    f"{_img(record['visualization'], page, f'unit {unit} visualisation', half)}{best}</div></a>"
                    f"<figcaption>{_link(record['page'], page, f'unit {unit}')}{act}</figcaption></figure>")
    body.append("</div>")
    return _page(f"{layer} \u00b7 stylejax atlas", page, _layer_nav(page, list(settings["layers"]), layer),
                 "\n".join(body))


def index_html(settings: Mapping, scan: Mapping, rfs: Mapping[str, RF]) -> str:
    """The site's front page: the layers and the settings."""
    e = html.escape
    page = "index.html"
    rows = "".join(
        f"<tr><td>{_link(f'{name}/index.html', page, name)}</td><td>{len(units)}</td>"
        f"<td>{rfs[name].size} px</td><td>{rfs[name].jump} px</td></tr>"
        for name, units in settings["layers"].items())
    body = (f"<h1>Atlas of {e(settings['arch'])} units</h1>\n"
            f"<p>Top {settings['top']} of {scan['images']} images per unit from <code>{e(settings['folder'])}</code> "
            f"({len(scan['skipped'])} files skipped), scanned at {settings['size']} \u00d7 {settings['size']} px "
            f"(shorter side resized, centre crop) with the {e(str(settings['weights']))} weights; "
            f"{e(settings['projection'])} projections; feature visualisations of {settings['visualize_steps']} "
            f"steps (seed {settings['seed']}).</p>\n"
            f"<table><tr><th>layer</th><th>units</th><th>receptive field</th><th>jump</th></tr>{rows}</table>\n"
            f"<p>Machine-readable: {_link(ATLAS_FILE, page, ATLAS_FILE)}.</p>")
    return _page(f"stylejax atlas: {settings['arch']}", page, _layer_nav(page, list(settings["layers"]), None), body)


# ----------------------------------------------------------------------------- the whole atlas
def build(root: str | os.PathLike, weights, layers: Mapping[str, Sequence[int]], out: str | os.PathLike, *,
          options: Options = Options(), resume: bool = False, batch: int = 16, checkpoint_seconds: float = 60.0,
          workers: int | None = None, scan_progress: bool = False, progress: Progress | None = None) -> dict:
    """Scan ``root`` once for all ``layers``, then write the site into ``out``; return atlas.json.

    Args:
      root: folder tree of images (streamed; unreadable files skipped and listed).
      weights: a :class:`stylejax.weights.Weights`.
      layers: ``{layer: unit indices}`` (same order on the pages).
      out: the site folder: new, empty, or (``resume=True``) an unfinished atlas of the same settings.
      options: :class:`Options`. batch, checkpoint_seconds, workers: the scan's (do not change results).
      scan_progress: show the scan's own progress bar. progress: see :data:`Progress`
        (stages ``visualize LAYER`` in steps, ``pages`` in units).
    Returns:
      The ``atlas.json`` document: ``{"layers": {LAYER: {UNIT: record}}, ...}`` with paths
      relative to ``out``; ``run`` holds this call's timings.
    Raises:
      StylejaxError for bad input (nothing is written before the checks pass).
    """
    from stylejax.interpret import synthesis

    t_start = time.perf_counter()
    root, out = Path(root), Path(out)
    if not root.exists():
        raise StylejaxError(f"{root}: no such folder")
    if not root.is_dir():
        raise StylejaxError(f"{root}: not a folder")
    if out.resolve() == root.resolve():
        raise StylejaxError(f"output {out} is the image folder; choose another folder for the site")
    layers = {name: [int(u) for u in units] for name, units in layers.items()}
    rfs = check_request(weights, layers, options)
    create = _check_site(out, resume)
    settings = _settings(root, weights, layers, options)
    if create:
        out.mkdir()
    try:
        scan, scan_seconds = _scan(root, weights, layers, options, out, settings, resume=resume, batch=batch,
                                   checkpoint_seconds=checkpoint_seconds, workers=workers,
                                   scan_progress=scan_progress)
    except BaseException:
        if create and not any(out.iterdir()):
            out.rmdir()
        raise
    total_units = sum(len(units) for units in layers.values())
    todo = {name: [u for u in units if not _unit_done(out, name, u)] for name, units in layers.items()}
    built = sum(len(units) for units in todo.values())
    if progress is not None and total_units > built:
        progress("pages", total_units - built, total_units)
    vis_seconds = pages_seconds = 0.0
    for name, units in todo.items():
        if not units:
            continue
        report = scan["layers"][name]
        t0 = time.perf_counter()
        s = synthesis.Settings(layer=name, steps=options.visualize_steps, size=options.visualize_size)
        step_hook = (None if progress is None else
                     (lambda n, name=name: progress(f"visualize {name}", n, options.visualize_steps)))
        vis = synthesis.visualize(weights, units, s, seed=options.seed, progress=step_hook)
        vis_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        needed = sorted({e["image"] for u in units for e in report["units"][str(u)]})
        images = _load_images(root, needed, options.size)
        for i, unit in enumerate(units):
            record = _build_unit(out, weights, report, unit, rfs[name], images, vis.images[i, 0],
                                 (float(vis.objective_initial[i]), float(vis.objective_final[i])), options)
            _write_text(out / record["page"], unit_html(record, settings, scan))  # the page marks it done
            if progress is not None:
                progress("pages", 1, total_units)
        pages_seconds += time.perf_counter() - t0

    records = {name: {u: _read_json(out / unit_dir(name, u) / UNIT_FILE) for u in units}
               for name, units in layers.items()}
    for name in layers:
        (out / name).mkdir(exist_ok=True)
        _write_text(out / name / "index.html", layer_html(name, records[name], settings, rfs[name]))
    _write_text(out / "index.html", index_html(settings, scan, rfs))
    doc = {
        "version": ATLAS_VERSION, "index": "index.html", "settings": settings,
        "images": scan["images"], "skipped": scan["skipped"],
        "receptive_fields": {name: {"size": rfs[name].size, "jump": rfs[name].jump, "start": rfs[name].start}
                             for name in layers},
        "layers": {name: {str(u): record for u, record in recs.items()} for name, recs in records.items()},
        "run": {"units_built": built, "units_reused": total_units - built,
                "scan_seconds": round(scan_seconds, 3), "visualization_seconds": round(vis_seconds, 3),
                "pages_seconds": round(pages_seconds, 3),
                "seconds": round(time.perf_counter() - t_start, 3)},
    }
    _write_json(out / ATLAS_FILE, doc)
    return doc


__all__ = ["ATLAS_FILE", "Options", "Progress", "boxed_tile", "build", "check_request", "index_html",
           "layer_html", "unit_html", "window"]
