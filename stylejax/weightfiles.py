"""Read user-supplied weight files into plain numpy arrays, without torch or TensorFlow.

Every reader raises :class:`~stylejax.errors.StylejaxError` with a one-line message that
names the file for anything wrong with it; no other exception type escapes for bad files.

* :func:`read_pth` -- a PyTorch state dict saved by ``torch.save`` (zip format), unpickled
  by a restricted unpickler that only rebuilds tensors and ordered dicts.
* :func:`read_h5` -- Keras HDF5 weights (Keras 2 ``save_weights``/full model, Keras 3
  ``.weights.h5``), keyed ``"<layer>/<index>"``.
* :func:`read_onnx` -- ``(weight, bias)`` of every ``Conv`` node of an ONNX model.
* :func:`read_safetensors` -- a ``.safetensors`` file.
* :func:`read_any` -- dispatch on the file suffix.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np

from stylejax.errors import StylejaxError

__all__ = ["read_any", "read_h5", "read_onnx", "read_pth", "read_safetensors"]

PathLike = str | os.PathLike[str]


def _fail(path: PathLike, message: str, exc: BaseException | None = None) -> NoReturn:
    """Raise a one-line StylejaxError about ``path``, chained to ``exc``."""
    if exc is not None:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if len(detail) > 200:
            detail = detail[:197] + "..."
        message = f"{message} ({detail})"
    raise StylejaxError(f"{path}: {' '.join(message.split())}") from exc


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32; exact, since bf16 is the top half of f32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# --------------------------------------------------------------------------- PyTorch

# torch storage class name -> numpy dtype of its raw elements (byte order set by the archive)
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # converted to float32 after the tensor is rebuilt
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}
_TORCH_DTYPES = frozenset(
    "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool complex64 complex128"
    " double float half long int short".split()
)


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside the pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """The flat data of one ``archive/data/<key>`` entry."""

    def __init__(self, data: np.ndarray, bfloat16: bool) -> None:
        self.data = data
        self.bfloat16 = bfloat16


class _TorchDtype(str):
    """Stands in for ``torch.float32`` & co. if a checkpoint pickles a dtype."""


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` for numpy: a contiguous copy of the view."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    shape, steps = tuple(size), tuple(stride)
    if not (
        isinstance(offset, int)
        and len(shape) == len(steps)
        and all(isinstance(v, int) and v >= 0 for v in (offset, *shape, *steps))
    ):
        raise pickle.UnpicklingError(f"bad tensor layout {offset}, {shape}, {steps}")
    flat = storage.data
    if 0 in shape:
        out = np.zeros(shape, flat.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(shape, steps))
        if last >= flat.size:
            raise pickle.UnpicklingError("tensor view runs past the end of its storage")
        strides = tuple(s * flat.itemsize for s in steps)
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape, strides, writeable=False)
        out = np.array(view, order="C")
    return _bf16_to_f32(out) if storage.bfloat16 else out


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """``torch._utils._rebuild_parameter``: a Parameter is just its data here."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    **{("torch", name): _TorchDtype(name) for name in _TORCH_DTYPES},
}


class _Refused(Exception):
    """A global outside the state-dict allowlist."""


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` data.pkl, refusing every global a state dict doesn't need."""

    def __init__(self, data: bytes, load_storage: Callable[[str, _StorageType, int], _Storage]):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"unsupported storage {pid!r:.80}")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type, numel)
        return self._storages[key]


def read_pth(path: PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (``torch.save`` zip format) as ``{name: array}``.

    Nothing but tensors, parameters and (ordered) dicts is unpickled. A checkpoint that
    wraps the state dict under ``"state_dict"`` or ``"model"`` is unwrapped; non-tensor
    entries are dropped; bfloat16 becomes float32.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        _fail(path, "cannot read the file", exc)
    if head != b"PK\x03\x04":
        if head[:1] == b"\x80":
            _fail(path, "is a legacy (non-zip) PyTorch pickle, which stylejax does not unpickle (a pickle"
                  " can run code); get the weights as .safetensors or a zip-format .pth, or convert it with"
                  " torch >= 1.13's tensor-only loader: torch.save(torch.load(old, weights_only=True), new)")
        _fail(path, "is not a PyTorch checkpoint (expected the zip format written by torch.save)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pickles) != 1:
                _fail(path, "is a zip file but not a PyTorch checkpoint (no <archive>/data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            order = "<"
            if f"{prefix}byteorder" in names:
                order = ">" if archive.read(f"{prefix}byteorder").strip() == b"big" else "<"

            def load_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
                raw = archive.read(f"{prefix}data/{key}")
                dtype = storage_type.dtype.newbyteorder(order)
                if numel < 0 or len(raw) < numel * dtype.itemsize:
                    raise pickle.UnpicklingError(f"storage {key} is shorter than {numel} elements")
                data = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
                return _Storage(data, storage_type.name == "BFloat16Storage")

            obj = _StateDictUnpickler(archive.read(pickles[0]), load_storage).load()
    except _Refused as exc:
        _fail(path, f"is not a plain state dict: refuses to unpickle {exc}")
    except StylejaxError:
        raise
    except Exception as exc:  # zipfile, pickle, KeyError, ... -- all mean a broken file
        _fail(path, "is not a readable PyTorch state dict", exc)

    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        _fail(path, f"holds a {type(obj).__name__}, not a state dict")
    weights = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not weights:
        _fail(path, "holds no tensors")
    return weights


# --------------------------------------------------------------------------- Keras HDF5


def _decode(value: Any) -> list[str]:
    """An HDF5 string-list attribute (bytes or str, array or scalar) as a list of str."""
    items = np.atleast_1d(np.asarray(value, dtype=object)).tolist()
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in items]


def _read_keras2(group: Any) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for layer in _decode(group.attrs["layer_names"]):
        layer_group = group[layer]
        for i, weight in enumerate(_decode(layer_group.attrs.get("weight_names", []))):
            out[f"{layer}/{i}"] = np.asarray(layer_group[weight][()])
    return out


def _read_keras3(group: Any) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}

    def visit(name: str, node: Any) -> None:
        parts = name.split("/")
        if isinstance(node, h5py.Dataset) and len(parts) >= 2 and parts[-2] == "vars":
            out["/".join(parts[:-2] + parts[-1:])] = np.asarray(node[()])

    group.visititems(visit)
    return out


def read_h5(path: PathLike) -> dict[str, np.ndarray]:
    """Read Keras HDF5 weights as ``{"<layer>/<index>": array}``.

    Index order is the layer's ``weight_names`` order (kernel then bias for a conv).
    Handles Keras 2 ``save_weights`` files, full-model files (``model_weights`` group) and
    Keras 3 ``.weights.h5`` files (``layers/<name>/vars/<i>`` -> ``"<name>/<i>"``).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:
                weights = _read_keras2(f)
            elif "model_weights" in f and "layer_names" in f["model_weights"].attrs:
                weights = _read_keras2(f["model_weights"])
            elif isinstance(f.get("layers"), h5py.Group):
                weights = _read_keras3(f["layers"])
            else:
                _fail(path, "is an HDF5 file without Keras weights (no layer_names attribute)")
    except StylejaxError:
        raise
    except Exception as exc:  # OSError for non-HDF5 files, KeyError for dangling names, ...
        _fail(path, "is not a readable Keras HDF5 weight file", exc)
    if not weights:
        _fail(path, "holds no weights")
    return weights


# --------------------------------------------------------------------------- ONNX


class OnnxConvs(list):
    """``(weight, bias)`` pairs of an ONNX graph's Conv nodes; ``op_types``: every op in the graph."""

    op_types: set[str] = set()


def read_onnx(path: PathLike) -> OnnxConvs:
    """``(weight, bias)`` of every ``Conv`` node in graph order; weight OIHW as stored.

    ``.op_types`` of the result names every op of the graph (a converter can refuse a layout
    it cannot map, e.g. BatchNormalization left unfused).

    Weights may be initializers, ``Constant`` node outputs, or ``Identity`` of either.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(os.fspath(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        _fail(path, "is not a valid ONNX model", exc)
    graph = model.graph
    if model.ir_version <= 0 or not graph.node:
        _fail(path, "is not a valid ONNX model (no graph)")

    try:
        constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        aliases: dict[str, str] = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        constants[node.output[0]] = numpy_helper.to_array(attr.t)
                    elif attr.name in ("value_float", "value_int"):
                        constants[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(attr))
                    elif attr.name in ("value_floats", "value_ints"):
                        constants[node.output[0]] = np.asarray(list(onnx.helper.get_attribute_value(attr)))
            elif node.op_type == "Identity" and node.input and node.output:
                aliases[node.output[0]] = node.input[0]
    except Exception as exc:
        _fail(path, "has a malformed constant tensor", exc)

    def resolve(name: str, conv: str) -> np.ndarray:
        seen = set()
        while name not in constants and name in aliases and name not in seen:
            seen.add(name)
            name = aliases[name]
        if name not in constants:
            _fail(path, f"Conv node {conv!r} takes {name!r}, which is not a constant tensor")
        return np.array(constants[name])  # a writable copy, never a view of the protobuf

    convs = OnnxConvs()
    convs.op_types = {node.op_type for node in graph.node}
    for index, node in enumerate(graph.node):
        if node.op_type != "Conv":
            continue
        label = node.name or f"#{index}"
        if len(node.input) < 2 or not node.input[1]:
            _fail(path, f"Conv node {label!r} has no weight input")
        weight = resolve(node.input[1], label)
        bias = resolve(node.input[2], label) if len(node.input) > 2 and node.input[2] else None
        convs.append((weight, bias))
    return convs


# --------------------------------------------------------------------------- safetensors

def read_safetensors(path: PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file as ``{name: array}`` with the safetensors library (through
    its JAX reader, so bfloat16 works; it becomes float32)."""
    try:
        from safetensors.flax import load_file

        tensors = load_file(str(path))
        return {name: np.asarray(t.astype("float32") if t.dtype.name == "bfloat16" else t)
                for name, t in tensors.items()}
    except Exception as exc:
        _fail(path, "is not a readable safetensors file", exc)


# --------------------------------------------------------------------------- dispatch

_FORMATS: dict[str, tuple[str, Callable[[PathLike], object]]] = {
    ".pth": ("pth", read_pth),
    ".pt": ("pth", read_pth),
    ".bin": ("pth", read_pth),
    ".h5": ("h5", read_h5),
    ".hdf5": ("h5", read_h5),
    ".onnx": ("onnx", read_onnx),
    ".safetensors": ("safetensors", read_safetensors),
}


def read_any(path: PathLike) -> tuple[str, object]:
    """Read a weight file by its suffix; returns ``(format, data)``.

    ``format`` is ``"pth"``, ``"h5"``, ``"onnx"`` or ``"safetensors"``; ``data`` is what
    the matching ``read_*`` function returns.
    """
    file = Path(path)
    if not file.exists():
        _fail(path, "no such file")
    if file.is_dir():
        _fail(path, "is a directory, not a weight file")
    suffix = file.suffix.lower()
    if suffix not in _FORMATS:
        known = ", ".join(_FORMATS)
        _fail(path, f"unknown weight file type {suffix or '(no suffix)'}; expected one of {known}")
    try:
        empty = file.stat().st_size == 0
    except OSError as exc:
        _fail(path, "cannot read the file", exc)
    if empty:
        _fail(path, "is empty")
    fmt, reader = _FORMATS[suffix]
    return fmt, reader(path)


def format_of(path: PathLike) -> str:
    """The format name ``read_any`` would use for ``path`` (by suffix); raises for unknown ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        _fail(path, f"unknown weight file type {suffix or '(no suffix)'}; expected one of {', '.join(_FORMATS)}")
    return _FORMATS[suffix][0]


#: Suffixes of weight files ``read_any`` understands.
SUFFIXES = tuple(_FORMATS)
