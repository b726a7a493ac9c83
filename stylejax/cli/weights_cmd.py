"""``stylejax weights list|import|verify``."""

from __future__ import annotations

import argparse

from stylejax import models, weights
from stylejax.cli import preflight
from stylejax.cli.common import note
from stylejax.errors import StylejaxError
from stylejax.preprocessing import CONVENTIONS


def register(sub) -> None:
    p = sub.add_parser("weights", help="list, import and verify weight sets",
                       description="Manage weight sets: the built-in ImageNet VGG16 and files you import.")
    wsub = p.add_subparsers(dest="weights_command", metavar="{list,import,verify}", required=True)

    lp = wsub.add_parser("list", help="list built-in and imported weight sets")
    lp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lp.set_defaults(handler=run_list)

    ip = wsub.add_parser("import", help="convert a .pth/.h5/.onnx file once into a named set",
                         description="Convert a torchvision .pth state dict, a Keras .h5 weight file or an "
                                     "ONNX model into a named weight set in the cache.")
    ip.add_argument("file", metavar="FILE")
    ip.add_argument("--arch", required=True, metavar="ARCH", help=f"one of: {', '.join(models.archs())}")
    ip.add_argument("--name", default=None, help="name of the set (default: the file's stem)")
    ip.add_argument("--preprocess", choices=CONVENTIONS, default=None,
                    help="input convention the weights were trained with (default: torchvision for "
                         ".pth, caffe for .h5; required for .onnx)")
    ip.add_argument("--force", action="store_true", help="replace an existing set of that name")
    ip.set_defaults(handler=run_import)

    vp = wsub.add_parser("verify", help="check sets: shapes, finite values, content hash, fingerprints")
    vp.add_argument("names", nargs="*", metavar="NAME", help="sets to check (default: all cached + vgg16)")
    vp.set_defaults(handler=run_verify)


def run_list(args: argparse.Namespace) -> None:
    rows = weights.list_sets()
    print(weights.to_json(rows) if args.json else weights.describe(rows))


def run_import(args: argparse.Namespace) -> None:
    models.get(args.arch)
    preflight.readable(args.file, "a weight file")
    problem = preflight.check_cache()
    if problem:
        raise StylejaxError(f"{problem}; set STYLEJAX_CACHE to a writable folder")
    path = weights.import_file(args.file, args.arch, args.name, args.preprocess, overwrite=args.force)
    print(f"imported {args.file} as {path.stem!r} ({args.arch}) -> {path}")


def run_verify(args: argparse.Namespace) -> None:
    names = args.names or [row["name"] for row in weights.list_sets()]
    for name in names:
        result = weights.verify(name, progress=note)
        extra = ", fingerprints ok" if result["fingerprints"] else ""
        print(f"{name}: ok ({result['arch']}, sha256 {result['sha256'][:16]}{extra})")
