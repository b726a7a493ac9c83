"""Read any image Pillow reads into RGB uint8, resize it, and write results atomically.

Every failure raises :class:`stylejax.errors.StylejaxError` with a one-line message.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from stylejax.errors import StylejaxError

#: Images claiming more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
#: The formats that hold 16 bits per channel (:func:`write_image16`).
SUFFIXES_16 = (".png", ".tif", ".tiff")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha composited on white, 16-bit scaled, CMYK via ICC."""
    if img.mode == "CMYK" and img.info.get("icc_profile"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to Pillow's plain conversion
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(a / peak * 255.0), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read an image file as u8[H, W, 3] RGB, optionally resized so its longest side is ``size``.

    Handles grayscale, RGBA/LA (on white), palette, 16-bit, CMYK (with its ICC profile) and EXIF
    rotation. Raises StylejaxError for a missing, empty, truncated, non-image or oversized file.
    """
    path = Path(path)
    if not path.exists():
        raise StylejaxError(f"{path}: dangling symbolic link" if path.is_symlink() else f"{path}: no such file")
    if path.is_dir():
        raise StylejaxError(f"{path}: is a directory, not an image")
    try:
        rgb = open_rgb(path)
    except StylejaxError as exc:
        raise StylejaxError(f"{path}: {exc}") from None
    if size is not None:
        rgb = resize_longest(rgb, size)
    return np.asarray(rgb, dtype=np.uint8)


def open_rgb(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Decode one file to an RGB Pillow image (the shared core of every image reader).

    ``min_side``: the caller will shrink the shorter side to this, so a JPEG much larger than
    that is decoded at a reduced DCT scale. Raises StylejaxError, whose one-line message does not
    name the file (callers add it where they need it).
    """
    try:
        st = Path(path).stat()
        kind = file_kind(st.st_mode)
        if kind is not None:
            raise StylejaxError(f"is {kind}, not an image file")
        if st.st_size == 0:
            raise StylejaxError("empty file")
        with warnings.catch_warnings():
            # Pillow warns above its own 89.5 MP guard; MAX_PIXELS, checked below, is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise StylejaxError(f"{width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit "
                                        "(a decompression bomb?); shrink it first")
                if min_side and img.format == "JPEG" and min(width, height) >= 2 * min_side:
                    short = min(width, height)
                    img.draft("RGB", (max(min_side, width * min_side // short),
                                      max(min_side, height * min_side // short)))
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img))
    except StylejaxError:
        raise
    except Image.DecompressionBombError:
        raise StylejaxError(f"claims over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, over the "
                            f"{MAX_PIXELS:,}-pixel limit (a decompression bomb?); shrink it first") from None
    except UnidentifiedImageError:
        raise StylejaxError("not an image Pillow can read") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StylejaxError("symbolic link loop") from None
        raise StylejaxError(f"unreadable image ({_one_line(exc)})") from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise StylejaxError(f"unreadable image ({_one_line(exc)})") from None


def file_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", "a directory", ...); None if regular."""
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return None


def resize_longest(img: Image.Image | np.ndarray, size: int) -> Image.Image:
    """Resize (Lanczos) so the longest side is ``size``; an image already that size is untouched."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, np.uint8))
    check_size(size)
    new = fit_longest(*img.size, size)
    return img if new == img.size else img.resize(new, Image.Resampling.LANCZOS)


def fit_longest(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after :func:`resize_longest` to ``size``, computed without resizing."""
    if max(width, height) == size:
        return width, height
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize u8[H, W, 3] to exactly (height, width) with Lanczos."""
    if img.shape[:2] == (height, width):
        return img
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.LANCZOS))


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise StylejaxError(f"size must be a positive integer, got {size!r}")
    return int(size)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if two paths name the same file (resolving links), whether or not ``a`` exists."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                 suffixes: Iterable[str] | None = None, *, what: str = "output") -> Path:
    """Validate an output path before any work: not a folder, not an input, known suffix,
    and a folder that accepts a file (tried: see :func:`check_writable`)."""
    out = Path(out)
    if out.is_dir():
        example = f"{out / 'out'}{next(iter(suffixes))}" if suffixes else str(out / "out")
        raise StylejaxError(f"{what} {out} is a folder; give a file name, e.g. {example}")
    for inp in inputs:
        if same_file(out, inp):
            raise StylejaxError(f"{what} {out} is also an input; refusing to write over it")
    if suffixes is not None and out.suffix.lower() not in set(suffixes):
        raise StylejaxError(f"{what} {out}: unsupported extension; use one of {', '.join(sorted(set(suffixes)))}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise StylejaxError(f"output folder {parent} does not exist")
    check_writable(parent)
    return out


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create, fill (4 KiB) and remove a temporary file in ``folder``: a read-only mount, a full
    disk or missing permissions fail now, in one line, not after the work."""
    folder = Path(folder) if str(folder) else Path(".")
    if not folder.is_dir():
        raise StylejaxError(f"{what} {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".stylejax-write-test.", dir=folder)
        try:
            left = 4096
            while left:  # a short write means the next one fails: a full disk, a quota, a size limit
                left -= os.write(fd, b"\0" * left)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        reason = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
                  errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}.get(
            exc.errno, exc.strerror or str(exc))
        raise StylejaxError(f"{what} {folder} is not writable ({reason})") from None
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it into place.

    Either the whole new file appears at ``path`` or nothing changes.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # e.g. the disk filled up during the run
            raise StylejaxError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8(pixels) -> np.ndarray:
    """f[..., 3] pixels in [0, 255] -> u8, rounded and clipped."""
    return np.clip(np.rint(np.asarray(pixels, np.float32)), 0, 255).astype(np.uint8)


def to_uint16(pixels) -> np.ndarray:
    """f[..., 3] pixels in [0, 255] -> u16 (0-65535: x 257), rounded and clipped."""
    return np.clip(np.rint(np.asarray(pixels, np.float32) * 257.0), 0, 65535).astype(np.uint16)


def write_image(path: str | os.PathLike, pixels, quality: int = 95) -> Path:
    """Write u8[H, W, 3] (or float pixels in [0, 255]) to PNG or JPEG, atomically."""
    path = Path(path)
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise StylejaxError(f"{path}: unsupported image extension; use .png, .jpg, .jpeg, .tif or .tiff")
    arr = pixels if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 else to_uint8(pixels)
    img = Image.fromarray(arr)
    options = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda f: img.save(f, format=fmt, **options))


def write_image16(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Write u16[H, W, 3] (0-65535) as a 16-bit-per-channel PNG or TIFF, atomically."""
    import cv2

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES_16:
        raise StylejaxError(f"{path}: 16-bit output needs a .png, .tif or .tiff name")
    arr = np.asarray(pixels)
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise StylejaxError(f"16-bit output must be u16[H, W, 3], got {arr.dtype}{list(arr.shape)}")
    ok, data = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(arr[..., ::-1]))
    if not ok:
        raise StylejaxError(f"{path}: could not encode the 16-bit image")
    return atomic_write(path, lambda f: f.write(data.tobytes()))
