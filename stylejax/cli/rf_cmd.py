"""``stylejax rf``: the receptive field of every layer, from the network's layer table."""

from __future__ import annotations

import argparse
import json

from stylejax import models
from stylejax.cli.common import positive_int
from stylejax.interpret.receptive_field import table_rows


def register(sub) -> None:
    p = sub.add_parser(
        "rf", help="print the receptive field of every layer",
        description="Print each layer's receptive field computed from the network's own layer table: "
                    "size (the side of the square of input pixels one unit sees), jump (input pixels "
                    "between adjacent units) and start (input coordinate of the centre of unit 0). "
                    "Unit (y, x) of a layer is centred on input pixel (start + y*jump, start + x*jump).")
    p.add_argument("--arch", default="vgg16", metavar="ARCH", help="network architecture (default: vgg16)")
    p.add_argument("--size", type=positive_int, default=None, metavar="N",
                   help="also print each layer's feature-map side for an N x N input")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    models.get(args.arch)
    rows = table_rows(args.arch, args.size)
    if args.json:
        print(json.dumps({"arch": args.arch, "input": args.size, "layers": rows}, indent=2))
        return
    head = f"{'layer':<10} {'kind':<5} {'k/s/p':<7} {'chan':>5} {'rf size':>7} {'jump':>5} {'start':>6}"
    if args.size:
        head += f" {'output':>7}"
    lines = [head]
    for r in rows:
        line = (f"{r['layer']:<10} {r['kind']:<5} {r['kernel']}/{r['stride']}/{r['padding']:<3} "
                f"{r['channels']:>5} {r['size']:>7} {r['jump']:>5} {r['start']:>6g}")
        if args.size:
            line += f" {r['output']:>7}"
        lines.append(line)
    print("\n".join(lines))
