"""What every subcommand shares: argument types, one-line errors, JSON reports, progress bars."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from stylejax.errors import StylejaxError
from stylejax.images import atomic_write
from stylejax.progress import Callback, Progress


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single line on stderr (exit 2)."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def name_list(text: str) -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"] (spaces ignored, empties refused)."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def float_list(text: str) -> list[float]:
    """``0.5,0.5`` -> [0.5, 0.5]; each must be finite and >= 0."""
    try:
        return [nonnegative_float(item) for item in name_list(text)]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers >= 0, got {text!r}") from None


def write_json(path: str | Path, data) -> Path:
    """Write a JSON report atomically."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"
    return atomic_write(Path(path), lambda f: f.write(text.encode()))


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def progress_bar(total: int, desc: str, unit: str = "it", quiet: bool = False):
    """A tqdm bar on stderr (disabled when quiet or not needed)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, leave=False)


@contextmanager
def progress_callback(desc: str, quiet: bool = False) -> Iterator[Callback]:
    """A :data:`stylejax.progress.Callback` drawn as a :func:`progress_bar` labelled ``desc``
    (made on the first record, from its ``unit`` and ``total``; a None total shows a count and a
    rate)."""
    bar = None

    def update(p: Progress) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            bar = progress_bar(p.total, desc, unit=p.unit)
        if p.total != bar.total:
            bar.total = p.total
        bar.update(p.done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def fail(message: str, code: int = 1) -> int:
    """Print one error line on stderr and return the exit code."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"stylejax: error: {first}", file=sys.stderr, flush=True)
    return code


def run_guarded(handler, args: argparse.Namespace, received=None) -> int:
    """Run a subcommand: StylejaxError -> one line and exit 1, Ctrl-C -> exit 130.

    ``received`` (:class:`stylejax.cli.signals.Received`): SIGTERM/SIGHUP raised the interrupt;
    the exit code is then 128 + its number (143, 129) instead of 130.
    """
    def interrupted_code(code: int) -> int:
        return received.exit_code if code == 130 and received is not None and received.signum else code

    try:
        resolve_arch(args)
        result = handler(args)
        return interrupted_code(0 if result is None else int(result))
    except StylejaxError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        name = received.name if received is not None and received.signum else None
        return interrupted_code(fail(f"interrupted by {name}" if name else "interrupted", 130))
    except BrokenPipeError:  # e.g. `stylejax weights list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        return fail("out of memory; try a smaller --size or --batch")
    except OSError as exc:
        return _os_error(exc)
    except Exception as exc:  # XLA's allocator failing where the memory estimate was too low
        if type(exc).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(exc):
            return fail("out of memory on the device; try a smaller --size or --batch")
        raise


def _os_error(exc: OSError) -> int:
    """What the pre-flight could not foresee (a disk filling during the run): one line."""
    where = f"{exc.filename}: " if exc.filename else ""
    return fail(f"{where}{exc.strerror or exc}")


def resolve_arch(args: argparse.Namespace) -> None:
    """``--arch`` left out: the arch the ``--weights`` set records, else vgg16."""
    if "arch" in vars(args) and args.arch is None:
        from stylejax import weights

        args.arch = weights.recorded_arch(getattr(args, "weights", None)) or "vgg16"


def add_weights_args(p: argparse.ArgumentParser, default_arch: str = "vgg16") -> None:
    """--arch and --weights, shared by every command that runs a network.

    ``--arch`` defaults to None, resolved by :func:`resolve_arch` before the handler runs.
    """
    p.add_argument("--arch", default=None, metavar="ARCH",
                   help=f"network architecture: vgg16, vgg19, ... (default: the arch the --weights set "
                        f"records, else {default_arch})")
    p.add_argument("--weights", default=None, metavar="NAME|FILE",
                   help="weight set name (see `stylejax weights list`) or a .pth/.h5/.onnx/.safetensors "
                        "file (default: the built-in ImageNet weights of --arch)")


def add_scan_args(p: argparse.ArgumentParser, resume_help: str) -> None:
    """``--resume`` (help: ``resume_help``), ``--checkpoint-every`` and ``--workers`` of the scanning commands."""
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--checkpoint-every", type=positive_float, default=60.0, metavar="SECONDS",
                   help="save the scan state this often (default: 60)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="image decoding threads (default: min(8, CPU count))")


def note(message: str) -> None:
    """A one-line note on stderr (e.g. a one-time weight conversion)."""
    print(f"stylejax: {message}", file=sys.stderr, flush=True)


def load_weights(args: argparse.Namespace):
    """The weight set named by ``--weights`` / ``--arch``, with conversion notes on stderr."""
    from stylejax import weights

    return weights.load(args.weights, args.arch, progress=note)


def split_commas(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(name_list(value))
    return out
