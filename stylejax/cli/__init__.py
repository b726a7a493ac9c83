"""The ``stylejax`` command: parse, validate, call the library, report.

Each subcommand lives in its own module with a ``register(subparsers)`` function that sets a
``handler(args)``; library errors become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

from stylejax import __version__, runtime
from stylejax.cli import signals
from stylejax.cli.common import Parser, run_guarded

#: Help order of the subcommand modules; every ``stylejax/cli/*_cmd.py`` module is registered.
ORDER = ("transfer_cmd", "video_cmd", "features_cmd", "rf_cmd", "patches_cmd", "visualize_cmd", "atlas_cmd",
         "attribute_cmd", "classify_cmd", "weights_cmd")


def command_modules() -> list[str]:
    """Names of the ``*_cmd`` modules of this package, in help order."""
    found = [m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd")]
    return sorted(found, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))


def build_parser() -> Parser:
    parser = Parser(
        prog="stylejax",
        description="See what a pretrained CNN has learned, and use it for neural style transfer. "
                    "JAX, jit-compiled, on CPU, GPU or TPU.")
    parser.add_argument("--version", action="version", version=f"stylejax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in command_modules():
        importlib.import_module(f"stylejax.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code. Called in-process (tests, notebooks) it changes
    no process-wide setting: those are made by :func:`entry_point` only. For the command's
    duration SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C (main thread only; the
    previous handlers are restored afterwards)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-run the command as a child
    with signals.as_interrupt() as received:  # SIGTERM, SIGHUP stop a command like Ctrl-C
        return run_guarded(args.handler, args, received)


def entry_point() -> None:
    """The ``stylejax`` console script and ``python -m stylejax``: the process-wide settings of
    :mod:`stylejax.runtime` first (before JAX starts), then :func:`main`."""
    runtime.configure()
    sys.exit(main())
