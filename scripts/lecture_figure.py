"""Reproduce the lecture's "what do the layers encode" figure (Zeiler & Fergus 2014, Fig. 2).

One streaming pass over a folder of images (default: the 900-image ImageNet sample) scans three
VGG16 layers at once (layer 1, 2, 3 of the lecture = conv1_2, conv2_2, conv3_3 by default), keeps
every unit's top 9 images, then draws 9 units per layer, each as a 3x3 block of its top patches
(cut at the receptive field), with the deconvnet projections beside them.

    python scripts/lecture_figure.py -o /tmp/lecture            # ~10 min on 2 CPU cores

Writes OUT/lecture.png (all layers), OUT/<layer>/{patches.json,<layer>.png,index.html,units/}
and OUT/timing.json. Units are chosen deterministically: 9 evenly spaced among the live units
(those whose best activation is > 0), unless --units gives them as layer:u,u,...;layer:...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from stylejax import weights
from stylejax.errors import StylejaxError
from stylejax.cli.common import write_json
from stylejax.interpret import grids
from stylejax.interpret.scan import scan_layers

DEFAULT_LAYERS = {"vgg16": "conv1_2,conv2_2,conv3_3", "vgg19": "conv1_2,conv2_2,conv3_4",
                  "alexnet": "conv1,conv2,conv3"}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def pick_units(report: dict, n: int) -> list[str]:
    """``n`` evenly spaced units among those whose best activation is > 0."""
    live = [u for u, entries in report["units"].items() if entries and entries[0]["activation"] > 0]
    if len(live) <= n:
        return live
    return [live[round(i * (len(live) - 1) / (n - 1))] for i in range(n)]


def parse_unit_spec(text: str | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in (text or "").split(";"):
        if part.strip():
            layer, units = part.split(":")
            out[layer.strip()] = [u.strip() for u in units.split(",")]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder of images (default: imagenet-sample)")
    p.add_argument("-o", "--output", required=True, help="output folder (outside the repository)")
    p.add_argument("--arch", default="vgg16", help="vgg16 (built-in weights), vgg19, alexnet, resnet50, ...")
    p.add_argument("--layers", default=None,
                   help="layers to draw (default: vgg conv1_2,conv2_2,conv3_3; alexnet conv1,conv2,conv3)")
    p.add_argument("--units", default=None, help="layer:u,u,...;layer:u,... (default: 9 live units, spread)")
    p.add_argument("--n-units", type=int, default=9)
    p.add_argument("--top", type=int, default=9)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tile", type=int, default=40)
    p.add_argument("--projection", choices=("none", "deconvnet", "guided"), default="deconvnet")
    p.add_argument("--weights", default=None, help="weight set name or file (default: the built-in vgg16)")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    default_layers = DEFAULT_LAYERS.get(args.arch, DEFAULT_LAYERS["vgg16"])
    layers = [name.strip() for name in (args.layers or default_layers).split(",")]
    chosen = parse_unit_spec(args.units)
    try:
        w = weights.load(args.weights, args.arch)
    except StylejaxError as exc:
        print(f"lecture_figure: error: {exc}", file=sys.stderr)
        return 1

    from stylejax.cli.common import progress_callback

    with progress_callback(f"scan {','.join(layers)}") as progress:
        results = scan_layers(args.data, w, {name: None for name in layers}, top=args.top, size=args.size,
                              batch=args.batch, state_dir=out, resume=True, progress=progress)
    any_result = next(iter(results.values()))
    timing = {"images": any_result.images, "skipped": len(any_result.skipped),
              "scan_seconds": round(any_result.seconds, 2), "compile_seconds": round(any_result.compile_seconds, 2),
              "images_per_second": round(any_result.images / any_result.seconds, 2),
              "layers": layers, "size": args.size, "batch": args.batch, "devices": any_result.devices}
    print(f"scanned {timing['images']} images through {', '.join(layers)} in {timing['scan_seconds']} s "
          f"({timing['images_per_second']} images/s, compile {timing['compile_seconds']} s)", file=sys.stderr)

    panels = []
    t0 = time.perf_counter()
    for index, name in enumerate(layers, 1):
        report = results[name].report()
        units = chosen.get(name) or pick_units(report, args.n_units)
        layer_dir = out / name
        layer_dir.mkdir(exist_ok=True)
        write_json(layer_dir / "patches.json", report)  # all units
        shown = results[name].select([int(u) for u in units])  # the typed result, these units only
        projection = None if args.projection == "none" else args.projection
        tiles = grids.unit_tiles(shown, args.data, args.tile, weights=w, projection=projection)
        grids.write_pictures(shown, args.data, layer_dir, tile=args.tile, projection=projection, tiles=tiles)
        panel = grids.layer_grid(shown, tiles, args.tile, units_per_row=3)
        panels.append((f"Layer {index} ({name}), units {', '.join(units)}", panel))
        print(f"{name}: units {', '.join(units)}", file=sys.stderr)
    timing["picture_seconds"] = round(time.perf_counter() - t0, 2)

    width = sum(p.width for _, p in panels) + 20 * (len(panels) + 1)
    height = max(p.height for _, p in panels) + 30
    figure = Image.new("RGB", (width, height), (255, 255, 255))
    draw, x = ImageDraw.Draw(figure), 20
    for label, panel in panels:
        draw.text((x, 8), label, fill=(0, 0, 0), font=grids.font(14))
        figure.paste(panel, (x, 30))
        x += panel.width + 20
    figure.save(out / "lecture.png")
    write_json(out / "timing.json", timing)
    (out / "scan_state.npz").unlink(missing_ok=True)
    print(json.dumps(timing), file=sys.stderr)
    print(out / "lecture.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
