"""Checks every command runs before any work: what a run needs must be there before it starts.

* :func:`readable` -- an input is a readable regular file (a FIFO, a device or a folder is said
  by name, not "empty file").
* :func:`writable_folder` -- the output folder accepts a file: one is created and removed there
  (a read-only mount, a full disk or missing permissions fail now, not after the optimisation).
* :func:`check_cache` -- the weight cache folder is usable; when it is not, the CLI converts in
  memory and says so in one line.
* :func:`check_pixels` -- the work fits a pixel budget derived from the memory this process can
  still get (``MemAvailable``, the cgroup limit, ``RLIMIT_AS``); the error gives the largest
  size that fits.
* :func:`min_side` / :func:`check_side` -- every requested layer has a non-empty map.
* :func:`not_inside` -- an output folder is not inside a scanned input folder.
* :func:`folder_lock` -- one run at a time writes into an output folder.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from stylejax.errors import StylejaxError
from stylejax.images import check_writable, file_kind
from stylejax.memory import BUDGET_SHARE, MEMORY_ENV, available_memory, gib as _gib


def readable(path: str | os.PathLike, what: str = "a file") -> Path:
    """``path`` is an existing, readable regular file (links followed); else one-line error."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise StylejaxError(f"{path}: dangling symbolic link") from None
        raise StylejaxError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StylejaxError(f"{path}: symbolic link loop") from None
        raise StylejaxError(f"{path}: cannot read ({exc.strerror or exc})") from None
    kind = file_kind(st.st_mode)
    if kind is not None:
        raise StylejaxError(f"{path}: is {kind}, not {what}")
    if not os.access(path, os.R_OK):
        raise StylejaxError(f"{path}: permission denied (not readable)")
    return path


def writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create and remove a temporary file in ``folder``; a one-line error when that fails."""
    return check_writable(folder, what)


def check_cache() -> str | None:
    """None if the weight cache folder can be created and written, else why not (one line)."""
    from stylejax import weights

    folder = weights.cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable_folder(folder, "weight cache")
    except (OSError, StylejaxError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"weight cache {folder} is not usable ({reason})"
    return None


# ----------------------------------------------------------------------------- memory

def check_pixels(pixels: float, bytes_per_pixel: float, *, option: str, size: int,
                 side_of=None) -> None:
    """Refuse work of ``pixels`` x ``bytes_per_pixel`` bytes over the memory budget.

    ``side_of(budget_pixels)`` -> the largest ``option`` value that fits (default: the side of a
    square of that many pixels).
    """
    budget = available_memory() * BUDGET_SHARE
    need = pixels * bytes_per_pixel
    if need <= budget:
        return
    fit = budget / bytes_per_pixel
    largest = int(side_of(fit) if side_of is not None else math.isqrt(int(fit)))
    raise StylejaxError(
        f"{option} {size} needs about {_gib(need)} of memory and about {_gib(budget)} is available; "
        + (f"the largest {option} that fits is {largest}" if largest >= 1 else "nothing fits")
        + f" (set {MEMORY_ENV} to override the estimate)")


# ----------------------------------------------------------------------------- geometry

def min_side(arch: str, layers: Sequence[str], limit: int = 1 << 16) -> int:
    """The smallest input side at which every layer of ``layers`` has a map of at least 1 x 1."""
    from stylejax.interpret.receptive_field import output_sizes
    from stylejax import models

    table = models.get(arch).layers
    lo, hi = 1, limit
    while lo < hi:  # output sizes grow monotonically with the input side
        mid = (lo + hi) // 2
        sides = output_sizes(table, mid)
        if all(sides.get(name, 1) >= 1 for name in layers):
            hi = mid
        else:
            lo = mid + 1
    return lo


def check_side(arch: str, layers: Sequence[str], height: int, width: int, *, what: str, advice: str) -> None:
    """Refuse an input of ``height x width`` on which some layer of ``layers`` would be empty."""
    from stylejax.interpret.receptive_field import output_sizes
    from stylejax import models

    table = models.get(arch).layers
    short = min(height, width)
    sides = output_sizes(table, short)
    empty = [name for name in layers if sides.get(name, 1) < 1]
    if empty:
        need = min_side(arch, layers)
        raise StylejaxError(f"{what} is {width}x{height}; {empty[0]} needs at least {need} px on the "
                            f"shorter side ({advice})")


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from an image's header without decoding it; None when unknown."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation swaps the sides
                width, height = height, width
            return width, height
    except Exception:  # noqa: BLE001 - the reader gives the real error later
        return None


# ----------------------------------------------------------------------------- folders

def not_inside(out: str | os.PathLike, folder: str | os.PathLike, what: str = "scanned folder") -> None:
    """Refuse an output folder inside (or equal to) an input folder."""
    out_r, folder_r = Path(os.path.realpath(out)), Path(os.path.realpath(folder))
    if out_r == folder_r or folder_r in out_r.parents:
        raise StylejaxError(f"output {out} is inside the {what} {folder}; later scans would read "
                            "its pictures as images: choose a folder outside it")


LOCK_NAME = ".stylejax.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``FOLDER/.stylejax.lock`` for the run; refuse if held.

    The kernel drops the lock when the process ends, however it ends, so a crash never leaves a
    stale lock. The (hidden, empty) lock file stays: removing it would let a second run lock a
    new file while a third still holds the old one.
    """
    import fcntl

    path = Path(folder) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StylejaxError(f"another stylejax run is writing to {folder}; wait for it or choose "
                                "another output folder") from None
        yield path
    finally:
        os.close(fd)
