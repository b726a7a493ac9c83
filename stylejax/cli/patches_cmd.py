"""``stylejax patches``: each unit's top image patches over a folder of images (Zeiler & Fergus)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from stylejax import distributed, models
from stylejax.cli import preflight, supervise
from stylejax.cli.common import (add_scan_args, add_weights_args, fail, load_weights, nonnegative_int, positive_int,
                                 progress_callback, write_json)
from stylejax.errors import StylejaxError
from stylejax.interpret import scan as scan_lib
from stylejax.memory import activation_floats


def register(sub) -> None:
    p = sub.add_parser(
        "patches", help="find the image patches that excite each unit most (top-K scan over a folder)",
        description="Stream every image under DIR (any number, any sub-folders) through the network, "
                    "and keep, for each unit of --layer, the K images where its maximum activation is "
                    "highest (one entry per image). Each image's shorter side is resized to --size and "
                    "the centre --size x --size square is used (an image already that size is used as "
                    "is). Writes OUT/patches.json (per unit, best first: image, activation, position, "
                    "receptive-field box in the scanned image's pixels), OUT/<layer>.png (a block of "
                    "patches per unit) and OUT/index.html. Unreadable files are skipped and listed. "
                    "The scan is checkpointed to OUT/scan_state.npz; after an interruption rerun with "
                    "--resume to continue where it stopped.",
        epilog="example: stylejax patches photos/ --layer conv3_3 --units 0:16 --top 9 -o out/conv3_3")
    p.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--layer", required=True, metavar="LAYER", help="layer to scan, e.g. conv2_2 (see `stylejax rf`)")
    p.add_argument("--units", default=None, metavar="A:B|I,J,..",
                   help="units (channels) to keep: a half-open range A:B like a Python slice, or a "
                        "comma-separated list (default: all units of the layer)")
    p.add_argument("--top", "-k", type=positive_int, default=9, metavar="K",
                   help="images kept per unit (default: 9)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--size", type=positive_int, default=224, metavar="N",
                   help="side of the square each image is resized and centre-cropped to (default: 224)")
    p.add_argument("--batch", type=positive_int, default=16, metavar="B",
                   help="images per compiled step, split over all devices (default: 16)")
    add_weights_args(p)
    add_scan_args(p, "continue the interrupted scan saved in OUT (same settings required)")
    p.add_argument("--tile", type=positive_int, default=64, metavar="PX",
                   help="side of each patch in the pictures (default: 64)")
    p.add_argument("--projection", choices=("none", "deconvnet", "guided"), default="none",
                   help="also show each patch's deconvnet or guided-backprop projection (one backward "
                        "pass per patch; default: none)")
    p.add_argument("--no-pictures", action="store_true", help="write patches.json only")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    g = p.add_argument_group("many processes (hosts)", "run the same command on every host with its own "
                             "--process-id; each scans every N-th file, process 0 merges and writes OUT. "
                             "If a process is lost, the others stop within --heartbeat-timeout seconds "
                             "with one line; each keeps its checkpoint, and rerunning every process with "
                             "--resume finishes the scan")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0 (jax.distributed coordinator)")
    g.add_argument("--num-processes", type=positive_int, default=1, metavar="N", help="processes in the job (default: 1)")
    g.add_argument("--process-id", type=nonnegative_int, default=0, metavar="I", help="this process, 0..N-1 (default: 0)")
    g.add_argument("--join-timeout", type=positive_int, default=distributed.JOIN_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long to wait for every process to join (default: {distributed.JOIN_TIMEOUT_S})")
    g.add_argument("--heartbeat-timeout", type=positive_int, default=distributed.HEARTBEAT_TIMEOUT_S,
                   metavar="SECONDS", help="a process silent this long counts as lost and the job stops "
                                           f"(default: {distributed.HEARTBEAT_TIMEOUT_S})")
    p.set_defaults(handler=run)


def _check_output_folder(out: Path) -> bool:
    """Validate OUT; return True if it must be created."""
    if out.exists():
        if not out.is_dir():
            raise StylejaxError(f"output {out} exists and is not a folder")
        return False
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise StylejaxError(f"output folder {parent} does not exist")
    return True


def _lost_line(args: argparse.Namespace, log: str, sig: int) -> str:
    """The one line a supervised process ends with when JAX's runtime (or a signal) stopped it."""
    reason = distributed.describe_runtime_log(
        log, coordinator=args.coordinator, process_id=args.process_id, num_processes=args.num_processes,
        join_timeout_s=args.join_timeout, heartbeat_timeout_s=args.heartbeat_timeout)
    if reason is None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        reason = f"process {args.process_id} was stopped by {name}"
    state = Path(args.output) / scan_lib.state_file(args.process_id, args.num_processes)
    if "reached the coordinator" in reason:
        return f"{reason}; start every process (process 0 first), or raise --join-timeout"
    kept = f"its share so far is saved in {state}" if state.exists() else "it had not saved a checkpoint yet"
    return f"{reason}; process {args.process_id} stopped, {kept}; rerun every process with --resume to continue"


def _multi_process(args: argparse.Namespace) -> bool:
    if args.num_processes > 1 or args.coordinator is not None or args.process_id:
        if args.coordinator is None:
            raise StylejaxError("--num-processes needs --coordinator HOST:PORT")
        return args.num_processes > 1
    return False


def run(args: argparse.Namespace) -> int | None:
    folder, out = Path(args.folder), Path(args.output)
    if not folder.exists():
        raise StylejaxError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise StylejaxError(f"{folder}: not a folder")
    create = _check_output_folder(out)
    preflight.not_inside(out, folder)
    preflight.writable_folder(out if not create else (out.parent if str(out.parent) else Path(".")))
    backbone = models.get(args.arch)
    args.layer = backbone.canonical([args.layer])[0]
    need = preflight.min_side(args.arch, [args.layer])
    if args.size < need:
        raise StylejaxError(f"--size {args.size} is too small for {args.layer}; use at least {need}")
    # per pixel of a batch: the u8 image, its f32 copy and the forward activations (f32)
    per_pixel = args.batch * (3 + 4 * 2 * activation_floats(args.arch, [args.layer]))
    preflight.check_pixels(args.size ** 2, per_pixel, option="--size", size=args.size)
    channels = {layer.name: layer.channels for layer in backbone.layers}[args.layer]
    try:
        units = scan_lib.parse_units(args.units, channels, args.layer)
    except StylejaxError as exc:
        raise StylejaxError(f"--units: {exc}") from None
    projection = None if args.projection == "none" else args.projection
    if projection is not None:
        try:
            import stylejax.interpret.projection  # noqa: F401
        except ImportError:
            raise StylejaxError("--projection needs stylejax.interpret.projection, which is not installed") from None
    multi = _multi_process(args)
    state = out / scan_lib.state_file(args.process_id, max(1, args.num_processes))
    if state.exists() and not args.resume:
        raise StylejaxError(f"{state} holds an unfinished scan; pass --resume to continue it, "
                            "or delete it to start over")
    if multi:
        if not supervise.in_child():
            return supervise.supervised(args.argv, lambda log, sig: _lost_line(args, log, sig))
        supervise.redirect_runtime_log()
        if not args.quiet:
            print(f"stylejax: process {args.process_id} of {args.num_processes} joining the job at "
                  f"{args.coordinator} (waiting up to {args.join_timeout} s for every process)",
                  file=sys.stderr, flush=True)
        distributed.initialize(args.coordinator, args.num_processes, args.process_id, args.join_timeout,
                               heartbeat_timeout_s=args.heartbeat_timeout)
    elif args.coordinator is not None:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    w = load_weights(args)
    if create:
        out.mkdir(exist_ok=True)
    if multi or args.coordinator is not None:  # the job's processes share OUT, each its own state
        return _scan_and_write(args, folder, out, create, w, units, projection, multi, state)
    with preflight.folder_lock(out):  # one run at a time writes into OUT
        return _scan_and_write(args, folder, out, create, w, units, projection, multi, state)


def _scan_and_write(args, folder: Path, out: Path, create: bool, w, units, projection, multi: bool,
                    state: Path) -> int | None:
    had_state = state.exists()
    try:
        with progress_callback(f"scan {args.layer}", args.quiet) as progress:
            result = scan_lib.scan(folder, w, args.layer, units, top=args.top, size=args.size, batch=args.batch,
                                   state_dir=out, resume=args.resume, checkpoint_seconds=args.checkpoint_every,
                                   workers=args.workers, progress=progress)
    except StylejaxError:
        if not had_state:  # a failed fresh scan (e.g. nothing readable) must not block the next run
            scan_lib.clear_state(out)
        if create and not [p for p in out.iterdir() if p.name != preflight.LOCK_NAME]:
            _remove_folder(out)
        raise
    except Exception as exc:
        if not (multi and type(exc).__name__ == "JaxRuntimeError"):
            raise
        # A collective with a lost peer fails here first; JAX's runtime then ends this process
        # (the supervisor reports why). Give it that time, so the line names the cause.
        time.sleep(args.heartbeat_timeout + 5)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StylejaxError(f"the job's runtime failed: {first}; rerun every process with --resume") from None
    except KeyboardInterrupt:
        if state.exists():
            return fail(f"interrupted; the scan so far is saved in {state}; rerun with --resume to continue", 130)
        raise
    if args.process_id != 0:
        scan_lib.clear_state(out)
        print(f"process {args.process_id}: scanned its share; process 0 writes {out / 'patches.json'}")
        return None
    report = result.report()
    write_json(out / "patches.json", report)  # the scan's result is safe before any picture is drawn
    scan_lib.clear_state(out)
    if not args.no_pictures:
        from stylejax.interpret import grids

        grids.write_pictures(result, folder, out, tile=args.tile, weights=w, projection=projection)
    print(f"scanned {result.images} images ({len(result.skipped)} skipped) in {result.seconds:.1f} s "
          f"({result.images / max(result.seconds, 1e-9):.1f} images/s); wrote {out / 'patches.json'}"
          + ("" if args.no_pictures else f", {out / (args.layer + '.png')}, {out / 'index.html'}"))
    return None


def _remove_folder(out: Path) -> None:
    """Remove an output folder this run created and left empty (but for its lock file)."""
    try:
        (out / preflight.LOCK_NAME).unlink(missing_ok=True)
        out.rmdir()
    except OSError:
        pass
