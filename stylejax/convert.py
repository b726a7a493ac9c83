"""Layout conversion: a read weight file (torchvision, Keras, ONNX) -> a backbone's params.

Converters are registered per (family, format); a family is an arch name without its depth
(``vgg16`` -> ``vgg``). :func:`check_params` compares every name and shape with the backbone's
``param_shapes`` and says exactly what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from stylejax import models, weightfiles
from stylejax.errors import StylejaxError

Params = dict
Converter = Callable[[object, str], Params]

_CONVERTERS: dict[tuple[str, str], Converter] = {}


def converter(family: str, fmt: str) -> Callable[[Converter], Converter]:
    """Register ``fn(data, arch) -> params`` for files of ``fmt`` holding a ``family`` network."""
    def wrap(fn: Converter) -> Converter:
        _CONVERTERS[(family, fmt)] = fn
        return fn
    return wrap


def family_of(arch: str) -> str:
    return re.sub(r"\d+$", "", arch)


def hwio(w: np.ndarray) -> np.ndarray:
    """OIHW (PyTorch, ONNX) -> HWIO (JAX), float32, contiguous."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), dtype=np.float32)


def take(data: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """``data[key]`` as float32, or a one-line error naming the missing key."""
    try:
        return np.asarray(data[key], np.float32)
    except KeyError:
        raise StylejaxError(f"weight file has no {key!r}: not the expected layout") from None


def flatten(tree: Mapping, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """Nested dicts -> ("a.b.c", leaf) pairs."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def unflatten(flat: Mapping[str, np.ndarray]) -> Params:
    """Inverse of :func:`flatten`."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def check_params(params: Params, arch: str, origin: str) -> Params:
    """Check every name, shape and value against ``arch``; the error says what is wrong."""
    expected = dict(flatten(models.get(arch).param_shapes()))
    flat = dict(flatten(params))
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    if missing or extra:
        raise StylejaxError(f"{origin}: not {arch} weights (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, shape in expected.items():
        if tuple(np.shape(flat[key])) != tuple(shape):
            raise StylejaxError(f"{origin}: {key} has shape {tuple(np.shape(flat[key]))}, {arch} needs {tuple(shape)}")
        if not np.all(np.isfinite(flat[key])):
            raise StylejaxError(f"{origin}: {key} holds NaN or infinite values")
    return params


def convert_file(path: str | os.PathLike, arch: str) -> Params:
    """Read a ``.pth``, ``.h5`` or ``.onnx`` file and convert it to checked ``arch`` params."""
    models.get(arch)
    fmt, data = weightfiles.read_any(path)
    return convert_data(data, fmt, arch, str(path))


def convert_data(data: object, fmt: str, arch: str, origin: str) -> Params:
    """Convert what ``weightfiles.read_any`` returned for a ``fmt`` file to checked ``arch`` params."""
    fn = _CONVERTERS.get((family_of(arch), fmt))
    if fn is None:
        raise StylejaxError(f"{origin}: cannot convert a {fmt} file to {arch}")
    return check_params(fn(data, arch), arch, origin)


# ----------------------------------------------------------------------------- VGG

def _vgg_convs(arch: str) -> list[str]:
    return [layer.name for layer in models.get(arch).layers if layer.kind == "conv"]


@converter("vgg", "pth")
def _vgg_from_pth(sd: Mapping[str, np.ndarray], arch: str) -> Params:
    """torchvision ``features.{i}.weight|bias`` (OIHW) -> VGG params."""
    index, params = 0, {}
    for layer in models.get(arch).layers:
        if layer.kind == "conv":
            params[layer.name] = {"kernel": hwio(take(sd, f"features.{index}.weight")),
                                  "bias": take(sd, f"features.{index}.bias")}
            index += 2  # conv, relu
        else:
            index += 1
    return params


@converter("vgg", "h5")
def _vgg_from_h5(data: Mapping[str, np.ndarray], arch: str) -> Params:
    """Keras ``blockB_convC`` layers (kernel HWIO, bias) -> VGG params."""
    params = {}
    for name in _vgg_convs(arch):
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        params[name] = {"kernel": take(data, f"{key}/0"), "bias": take(data, f"{key}/1")}
    return params


@converter("vgg", "onnx")
def _vgg_from_onnx(convs: list, arch: str) -> Params:
    """The first conv nodes of an ONNX graph, in order (OIHW) -> VGG params."""
    names = _vgg_convs(arch)
    if len(convs) < len(names):
        raise StylejaxError(f"ONNX file has {len(convs)} conv layers; {arch} needs {len(names)}")
    params = {}
    for name, (w, b) in zip(names, convs):
        params[name] = {"kernel": hwio(w), "bias": np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32)}
    return params


# ----------------------------------------------------------------------------- AlexNet

@converter("alexnet", "pth")
def _alexnet_from_pth(sd: Mapping[str, np.ndarray], arch: str) -> Params:
    """torchvision ``features.{0,3,6,8,10}.weight|bias`` (OIHW) -> AlexNet params."""
    from stylejax.models import alexnet

    if "features.0.weight" not in sd or "features.10.weight" not in sd:
        raise StylejaxError(f"not a torchvision alexnet state dict (no 'features.0.weight' and 'features.10.weight'; "
                            f"it has {_first_keys(sd)})")
    return {name: {"kernel": hwio(take(sd, f"features.{i}.weight")), "bias": take(sd, f"features.{i}.bias")}
            for name, i in alexnet.TORCHVISION_INDEX.items()}


@converter("alexnet", "onnx")
def _alexnet_from_onnx(convs: list, arch: str) -> Params:
    """The five Conv nodes of an AlexNet graph, in order (OIHW) -> conv1 ... conv5."""
    from stylejax.models import alexnet

    names = list(alexnet.TORCHVISION_INDEX)
    if len(convs) != len(names):
        raise StylejaxError(f"ONNX file has {len(convs)} conv layers; alexnet has {len(names)}")
    return {name: {"kernel": hwio(w), "bias": np.zeros(w.shape[0], np.float32) if b is None
                   else np.asarray(b, np.float32)} for name, (w, b) in zip(names, convs)}


# ----------------------------------------------------------------------------- ResNet

#: BatchNorm epsilon of torchvision's ResNets (and of stylejax's).
_BN_EPS = 1e-5


@converter("resnet", "onnx")
def _resnet_from_onnx(convs: list, arch: str) -> Params:
    """A ResNet exported in eval mode (BatchNorm folded into each Conv) -> Flax variables.

    The Conv nodes come in torchvision's forward order: ``conv1``, then per block ``conv1..3``
    and the ``downsample`` conv. A folded conv ``(W', b')`` becomes the conv ``W'`` followed by
    an identity BatchNorm: mean 0, var 1, scale sqrt(1 + eps), bias b'.
    """
    from stylejax.models import resnet

    if "BatchNormalization" in getattr(convs, "op_types", ()):
        raise StylejaxError("ONNX file keeps BatchNormalization nodes; export the model in eval mode "
                            "(model.eval(); torch.onnx.export folds BatchNorm into the convs), "
                            "or import the .pth state dict")
    mapping = resnet.torchvision_map(arch)
    conv_keys = [key for key, path in mapping.items() if path[-1] == "kernel"]
    if len(convs) != len(conv_keys):
        raise StylejaxError(f"ONNX file has {len(convs)} conv layers; {arch} has {len(conv_keys)} "
                            "(another ResNet depth?)")
    sd: dict[str, np.ndarray] = {}
    for key, (w, b) in zip(conv_keys, convs):
        conv = key.removesuffix(".weight")
        bn = conv[: -len("conv1")] + "bn" + conv[-1] if conv.split(".")[-1].startswith("conv") else (
            conv[:-1] + "1" if conv.endswith("downsample.0") else None)
        if bn is None:
            raise StylejaxError(f"cannot place {conv}")  # pragma: no cover - the map names only these
        channels = w.shape[0]
        sd[key] = w
        sd[f"{bn}.weight"] = np.full(channels, np.sqrt(1 + _BN_EPS), np.float32)
        sd[f"{bn}.bias"] = np.zeros(channels, np.float32) if b is None else np.asarray(b, np.float32)
        sd[f"{bn}.running_mean"] = np.zeros(channels, np.float32)
        sd[f"{bn}.running_var"] = np.ones(channels, np.float32)
    return _resnet_from_pth(sd, arch)


def _first_keys(sd: Mapping[str, np.ndarray], n: int = 3) -> str:
    keys = list(sd)
    return ", ".join(repr(k) for k in keys[:n]) + (", ..." if len(keys) > n else "") if keys else "no tensors"


@converter("resnet", "pth")
def _resnet_from_pth(sd: Mapping[str, np.ndarray], arch: str) -> Params:
    """torchvision ``conv1``/``bn1``/``layer{s}.{b}.conv{j}|bn{j}|downsample`` -> Flax variables.

    Conv weights OIHW -> HWIO; BatchNorm weight/bias -> params scale/bias, running mean/var ->
    batch_stats mean/var. ``fc.*`` and ``num_batches_tracked`` are ignored. Keys of another
    depth (e.g. ``layer1.0.conv3`` given as resnet18, ``layer3.6`` as resnet50) are refused.
    """
    from stylejax.models import resnet

    mapping = resnet.torchvision_map(arch)
    if "conv1.weight" not in sd or "layer1.0.conv1.weight" not in sd:
        raise StylejaxError(f"not a torchvision ResNet state dict (no 'conv1.weight', 'layer1.0.conv1.weight'; "
                            f"it has {_first_keys(sd)})")
    missing = [k for k in mapping if k not in sd]
    known = set(mapping) | {"fc.weight", "fc.bias"}
    extra = [k for k in sd if k not in known and not k.endswith("num_batches_tracked")]
    if missing or extra:
        detail = f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}"
        raise StylejaxError(f"not a torchvision {arch} state dict ({detail}; another ResNet depth?)")
    params: dict = {}
    for key, path in mapping.items():
        value = take(sd, key)
        if path[-1] == "kernel":
            if value.ndim != 4:
                raise StylejaxError(f"{key} has shape {value.shape}; a conv weight needs 4 dimensions")
            value = hwio(value)
        elif path[-1] == "var" and np.any(value < 0):
            raise StylejaxError(f"{key} holds negative variances: not BatchNorm running statistics")
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return params
