"""``stylejax atlas``: a browsable static site with a page per unit (patches, projections, visualisation)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stylejax import models, weights
from stylejax.cli import preflight
from stylejax.cli.common import (
    add_scan_args,
    add_weights_args,
    name_list,
    nonnegative_int,
    positive_int,
    progress_bar,
    progress_callback,
)
from stylejax.errors import StylejaxError
from stylejax.memory import activation_floats

EPILOG = """\
examples:
  stylejax atlas photos/ --layers conv2_2,conv4_1 --units 0:6 -o atlas/
  stylejax atlas photos/ --layers conv3_3 --units 5,17,40 --top 16 --visualize-steps 512 -o atlas/
  stylejax atlas photos/ --layers conv2_2,conv4_1 --units 0:6 -o atlas/ --resume   # after a stop

Open SITE/index.html in a browser (no server needed). SITE/atlas.json lists every unit's
patches, projections and visualisation (paths relative to SITE), activations, positions,
receptive-field boxes and sizes.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "atlas", help="build a static site with a page per unit: top patches, projections, visualisation",
        description="Scan every image under DIR once for all --layers (as `stylejax patches`), then write\n"
                    "a static site into SITE: an index per layer and a page per unit with its top-K\n"
                    "patches (the receptive field boxed on the scanned image), their deconvnet\n"
                    "projections, a feature visualisation (as `stylejax visualize`) and the receptive\n"
                    "field's size, linked to the neighbouring units and the other layers. Everything is\n"
                    "relative, so the site opens from disk. The scan is checkpointed and finished unit\n"
                    "pages are kept: after an interruption rerun with --resume.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--layers", required=True, type=name_list, metavar="L1,L2,..",
                   help="layers to include, e.g. conv2_2,conv4_1 (see `stylejax rf`)")
    p.add_argument("--units", default="0:8", metavar="A:B|I,J,..",
                   help="units of every layer: a half-open range A:B or a comma-separated list (default: 0:8)")
    p.add_argument("--top", "-k", type=positive_int, default=9, metavar="K", help="patches per unit (default: 9)")
    p.add_argument("--visualize-steps", type=positive_int, default=256, metavar="N",
                   help="Adam steps of each unit's feature visualisation (default: 256)")
    p.add_argument("--visualize-size", type=positive_int, default=128, metavar="PX",
                   help="side of the feature visualisation (default: 128; at least 16)")
    p.add_argument("-o", "--output", required=True, metavar="SITE", help="site folder (new or empty; created)")
    p.add_argument("--size", type=positive_int, default=224, metavar="N",
                   help="side of the square each image is resized and centre-cropped to (default: 224)")
    p.add_argument("--batch", type=positive_int, default=16, metavar="B", help="images per scan step (default: 16)")
    p.add_argument("--tile", type=positive_int, default=128, metavar="PX",
                   help="side of each picture on the pages (default: 128)")
    p.add_argument("--projection", choices=("deconvnet", "guided"), default="deconvnet",
                   help="how patches are projected to pixels (default: deconvnet, Zeiler & Fergus)")
    p.add_argument("--seed", type=nonnegative_int, default=0, metavar="S", help="visualisation seed (default: 0)")
    add_weights_args(p)
    add_scan_args(p, "continue the unfinished atlas in SITE (same settings required)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int | None:
    from stylejax.interpret import atlas
    from stylejax.interpret.scan import parse_units

    folder, out = Path(args.folder), Path(args.output)
    if not folder.is_dir():
        raise StylejaxError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    preflight.not_inside(out, folder)
    if out.exists() and not out.is_dir():
        raise StylejaxError(f"output {out} exists and is not a folder")
    preflight.writable_folder(out if out.is_dir() else (out.parent if str(out.parent) else Path(".")))
    backbone = models.get(args.arch)
    args.layers = backbone.canonical(args.layers)
    for name in args.layers:
        need = preflight.min_side(args.arch, [name])
        if args.size < need:
            raise StylejaxError(f"--size {args.size} is too small for {name}; use at least {need}")
    # the scan's batch (u8 image, f32 copy, forward activations) and the visualisation's units
    preflight.check_pixels(args.size ** 2, args.batch * (3 + 8 * activation_floats(args.arch, args.layers)),
                           option="--size", size=args.size)
    if len(set(args.layers)) != len(args.layers):
        raise StylejaxError(f"--layers {','.join(args.layers)}: repeated layer")
    channels = {layer.name: layer.channels for layer in backbone.layers}
    layers = {name: parse_units(args.units, channels[name], name) for name in args.layers}
    options = atlas.Options(top=args.top, size=args.size, visualize_steps=args.visualize_steps,
                            visualize_size=args.visualize_size, seed=args.seed, tile=args.tile,
                            projection=args.projection)
    w = weights.load(args.weights, args.arch)
    bars: dict = {}

    def progress(stage: str, advance: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = progress_bar(total, stage, unit="unit" if stage == "pages" else "step",
                                       quiet=args.quiet)
        bars[stage].update(advance)

    try:
        with progress_callback(f"scan {','.join(args.layers)}", args.quiet) as scan_progress:
            doc = atlas.build(folder, w, layers, out, options=options, resume=args.resume, batch=args.batch,
                              checkpoint_seconds=args.checkpoint_every, workers=args.workers,
                              scan_progress=scan_progress, progress=progress)
    except KeyboardInterrupt:
        print(f"stylejax: error: interrupted; finished parts are kept in {out}, rerun with --resume to continue",
              file=sys.stderr, flush=True)
        return 130
    finally:
        for bar in bars.values():
            bar.close()
    run_ = doc["run"]
    units = sum(len(u) for u in doc["layers"].values())
    print(f"wrote {out / 'index.html'} and {out / atlas.ATLAS_FILE}: {units} units of {len(doc['layers'])} "
          f"layers over {doc['images']} images ({len(doc['skipped'])} skipped); {run_['units_built']} pages built, "
          f"{run_['units_reused']} kept; scan {run_['scan_seconds']:.1f} s, visualisation "
          f"{run_['visualization_seconds']:.1f} s, pages {run_['pages_seconds']:.1f} s, total {run_['seconds']:.1f} s",
          file=sys.stderr)
    return None
