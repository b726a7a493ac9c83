"""Streaming image input for scans over folders of any size.

* :func:`walk_files` yields the files of a tree lazily, in a deterministic order (names sorted
  within each folder, depth first, hidden entries skipped), so a scan's position is one integer
  and a scan walks the tree once, as it goes.
* :func:`load_square` decodes one file to ``u8[size, size, 3]``: shorter side resized to ``size``
  (Lanczos), then the centre ``size x size`` crop; an image already ``size x size`` is used as is.
  JPEGs are decoded at a reduced scale (libjpeg DCT scaling) when they are much larger than needed.
* :func:`batches` decodes in a thread pool (Pillow releases the GIL while decoding and resizing)
  with a bounded read-ahead, and yields fixed-shape batches with a validity mask.

Why not ``grain``: its savable iterator state works over a random-access source, i.e. the full
list of files, which must be walked and held before the first batch; our state is a single
integer (files consumed from the deterministic walk), the pipeline is ~100 lines with no extra
dependency, and the decoder threads overlap the jitted network step just as well.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from stylejax.errors import StylejaxError
from stylejax.images import file_kind, open_rgb


def walk_files(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Files under ``root``, depth first, sorted by name; hidden names and ``exclude`` skipped.

    Symlinked folders are not followed (no cycles); symlinked files are. Entries that are not
    regular files (FIFOs, sockets, devices, dangling links, link loops, symlinked folders) are
    yielded too, so the decoder lists them as skipped with the reason instead of dropping them.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if os.path.realpath(entry.path) not in excluded:
                        subfolders.append(Path(entry.path))
                else:
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subfolders))


def square_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (Lanczos), then the centre ``size x size`` crop."""
    width, height = img.size
    if (width, height) == (size, size):
        return img
    if min(width, height) != size:
        scale = size / min(width, height)
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        img = img.resize(new, Image.Resampling.LANCZOS)
        width, height = img.size
    left, top = (width - size) // 2, (height - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_square(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode ``path`` to ``u8[size, size, 3]`` RGB under the scan's resize policy.

    Raises StylejaxError (one line) for anything Pillow cannot read.
    """
    return np.asarray(square_crop(open_rgb(path, min_side=size), size), np.uint8)


@dataclass
class Batch:
    """A fixed-shape batch of decoded images.

    Attributes:
      pixels: u8[B, size, size, 3]; rows past ``count`` are zeros.
      index: i32[B] ordinal of each image's file in the walk (-1 for padding).
      valid: bool[B] which rows are real images.
      paths: the files of the valid rows.
      skipped: ``(path, reason)`` for unreadable files met while filling this batch.
      position: files consumed from the walk once this batch is done (images + skipped).
    """

    pixels: np.ndarray
    index: np.ndarray
    valid: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    position: int = 0

    @property
    def count(self) -> int:
        return len(self.paths)


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is no image file to open (without opening it: a FIFO would block), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "dangling symbolic link" if path.is_symlink() else "no such file"
    except OSError as exc:
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "symlinked folder (not followed)"
    kind = file_kind(mode)
    return None if kind is None else f"{kind}, not an image file"


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    reason = not_a_file(path)
    if reason is not None:
        return None, reason
    try:
        return load_square(path, size), None
    except StylejaxError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any decoder failure skips the file, never the scan
        return None, f"unreadable image ({type(exc).__name__})"


def batches(paths: Iterable[Path], size: int, batch: int, *, start: int = 0, workers: int | None = None,
            read_ahead: int = 2, share: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
    """Decode ``paths`` in parallel and yield :class:`Batch` es of exactly ``batch`` rows.

    ``start`` is the walk ordinal of the first path (for resumed scans). ``share=(i, n)`` keeps
    only the files whose ordinal is ``i`` modulo ``n`` (process ``i`` of ``n``). At most
    ``read_ahead * batch`` decodes are in flight, so memory stays bounded for any number of files.
    """
    mine, count = share
    workers = workers or min(8, os.cpu_count() or 1)
    ahead = max(1, read_ahead) * batch
    it = iter(paths)
    ordinal = start
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stylejax-decode") as pool:
        def fill() -> None:
            nonlocal ordinal
            while len(pending) < ahead:
                try:
                    path = next(it)
                except StopIteration:
                    return
                if ordinal % count == mine:
                    pending.append((ordinal, path, pool.submit(_decode, path, size)))
                ordinal += 1

        fill()
        while pending:
            pixels = np.zeros((batch, size, size, 3), np.uint8)
            index = np.full((batch,), -1, np.int32)
            valid = np.zeros((batch,), bool)
            got: list[Path] = []
            skipped: list[tuple[Path, str]] = []
            position = start
            while pending and len(got) < batch:
                n, path, future = pending.popleft()
                fill()
                image, reason = future.result()
                position = n + 1
                if image is None:
                    skipped.append((path, reason))
                    continue
                row = len(got)
                pixels[row], index[row], valid[row] = image, n, True
                got.append(path)
            start = position
            yield Batch(pixels, index, valid, got, skipped, position)
