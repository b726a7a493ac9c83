"""Every setting of a style transfer run, its default, the presets and their validation.

:class:`Options` is the one source of defaults: the Python API (:func:`stylejax.transfer`), the
``stylejax transfer`` and ``stylejax demo`` commands and the presets all read it, so they cannot
disagree. A preset is a set of overrides (:data:`PRESETS`); options given explicitly override
the preset (:func:`resolve`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import optax

from stylejax import models
from stylejax.activations import PRECISIONS
from stylejax.errors import StylejaxError
from stylejax.iterates import sqrt2_scales

OPTIMIZERS = ("lbfgs", "adam", "gd")
#: Step size per optimiser in pixel units (0-255) when ``lr`` is not given. Plain gradient
#: descent has no scale of its own: at the defaults (256 px, beta 10) the mean |dJ/dx| at the
#: content is about 1e4 per pixel value, so 1e-4 moves a pixel by about 1 per step; smaller
#: images have larger gradients (4e5 at 64 px) and need a smaller lr.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0, "gd": 1e-4}
POOLINGS = ("max", "avg")
#: Per-layer style distances: Gram matrices (Gatys et al.) or Wasserstein-2 between Gaussians.
STYLE_LOSSES = ("gram", "w2")
WEIGHT_UNITS = ("gatys", "neural-style")
INITS = ("content", "random")
#: Default (content layers, style layers) of the VGG family.
VGG_LAYERS = (("conv4_2",), ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"))
#: ``weight_units="crowsonkb"``: crowsonkb/style-transfer-pytorch's weights, mapped onto ``J`` at the
#: output size (``--preset modern``; :func:`stylejax.style.transfer.loss_weights`).
WEIGHT_UNITS = (*WEIGHT_UNITS, "crowsonkb")


@dataclass(frozen=True, kw_only=True)
class Options:
    """A style transfer run's settings (``stylejax transfer --help`` explains each).

    Sizes are in pixels (longest side); weights are those of
    ``J = alpha Jc + beta sum_l lambda_l Js[l] + gamma Jtv`` (``content_weight``,
    ``style_weight``, ``style_layer_weights``, ``tv_weight``) in the units of
    ``weight_units``: ``"gatys"`` (the lecture's objective as written) or ``"neural-style"``
    (jcjohnson/neural-style's ``-content_weight``/``-style_weight``, mapped onto it exactly at
    the output size; see :func:`stylejax.style.objective.neural_style_weights`).
    """

    size: int = 256
    iters: int = 300
    optimizer: str | optax.GradientTransformation = "lbfgs"
    lr: float | None = None
    lbfgs_memory: int = 100
    init: str = "content"  # "content", "random", or an image path (read by the caller)
    init_noise: float = 0.001
    seed: int = 0
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.0
    weight_units: str = "gatys"
    content_layers: tuple[str, ...] | None = None
    style_layers: tuple[str, ...] | None = None
    style_layer_weights: tuple[float, ...] | None = None
    style_loss: str = "gram"
    style_blend: tuple[float, ...] | None = None
    style_scale: float = 1.0
    original_colors: bool = False
    luminance_only: bool = False
    match_histogram: bool = False
    normalize_gradients: bool = False
    swag: float | None = None
    precision: str = "float32"
    scales: tuple[int, ...] | None = None
    pooling: str = "max"
    steps_per_call: int = 1
    # Iterate averaging and crowsonkb's multi-scale (stylejax.iterates): ``ema`` the decay of a
    # bias-corrected average of the iterates, which is each scale's result and the next one's
    # start (None: the best evaluated iterate); ``min_scale``: sizes growing by sqrt(2) from it up
    # to ``size`` (unless ``scales`` is given); ``iters_first``: iterations at the first scale
    # (None: ``iters``). Adam's moments are carried from scale to scale.
    ema: float | None = None
    min_scale: int | None = None
    iters_first: int | None = None
    # Print size (stylejax.style.tiling): ``tile`` the core side in pixels of an exact tiled
    # objective (None: tile only when the untiled step would not fit ``max_memory``);
    # ``max_memory`` the memory budget in GiB (None: a safe share of what is available).
    tile: int | None = None
    max_memory: float | None = None

    @property
    def learning_rate(self) -> float | None:
        """The step size: ``lr``, or the named optimiser's default (None for an optax object)."""
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_LR.get(self.optimizer) if isinstance(self.optimizer, str) else None

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes optimised at, coarse to fine; the last is the output's longest side."""
        if self.scales:
            return tuple(self.scales)
        return sqrt2_scales(self.min_scale, self.size) if self.min_scale else (self.size,)

    def iters_at(self, index: int) -> int:
        """Iterations at scale ``index`` (0: the first): ``iters_first`` there, else ``iters``."""
        return self.iters_first if index == 0 and self.iters_first is not None else self.iters

    @property
    def total_iters(self) -> int:
        """Iterations over every scale."""
        return sum(self.iters_at(i) for i in range(len(self.sizes)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (an optax optimiser is named by its type)."""
        d = asdict(replace(self, optimizer="optax" if not isinstance(self.optimizer, str) else self.optimizer))
        d["lr"] = self.learning_rate
        return d


DEFAULTS = Options()
#: Presets: overrides of :class:`Options`.
PRESETS: dict[str, dict[str, Any]] = {
    # jcjohnson/neural-style's defaults: 512 px, 1000 L-BFGS iterations from noise,
    # -content_weight 5 -style_weight 100 -tv_weight 1e-3 in its own units.
    "classic": dict(size=512, iters=1000, optimizer="lbfgs", lr=1.0, init="random", content_weight=5.0,
                    style_weight=100.0, tv_weight=1e-3, weight_units="neural-style"),
    # crowsonkb/style-transfer-pytorch's stylize() defaults: W2 style loss, layer weights
    # 256:64:16:4:1 (normalised), Adam with step 0.02 on [0, 1] images (= 5.1 on 0-255 pixels),
    # the iterates averaged with decay 0.99, sqrt(2) scales from 128 px to the output size, 1000
    # iterations at the first scale and 500 after, content 0.015 / TV 2 in its units: mapped onto
    # J at the output size by weight_units="crowsonkb" (stylejax.style.crowsonkb: alpha =
    # 2 w_c / (C h w k^2), beta = 1 / k^2, gamma = 2 w_tv / (3 H W 255^2), k = 255 mean(std) = 57.6
    # for Caffe-convention weights; docs/transfer.md, "The modern preset").
    "modern": dict(size=512, min_scale=128, iters=500, iters_first=1000, optimizer="adam", lr=0.02 * 255,
                   init="content", ema=0.99, style_loss="w2", weight_units="crowsonkb", content_weight=0.015,
                   style_weight=1.0, tv_weight=2.0, style_layer_weights=(256.0, 64.0, 16.0, 4.0, 1.0)),
}
#: ``stylejax demo``: a shipped photo and style, quick on a CPU.
DEMO: dict[str, Any] = dict(size=384, iters=120, style_weight=10.0)


def option_names() -> tuple[str, ...]:
    """Names of every :class:`Options` field, in declaration order."""
    return tuple(f.name for f in fields(Options))


def resolve(preset: str | None = None, **given: Any) -> Options:
    """Options from a preset's overrides and the explicitly ``given`` values (None = not given)."""
    if preset is not None and preset not in PRESETS:
        raise StylejaxError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    return override(Options(**PRESETS[preset]) if preset else DEFAULTS, **given)


def override(options: Options, **given: Any) -> Options:
    """``options`` with the ``given`` fields replaced (None = not given; lists become tuples).

    Unknown names raise StylejaxError listing the valid ones.
    """
    unknown = sorted(set(given) - set(option_names()))
    if unknown:
        raise StylejaxError(f"unknown option {unknown[0]!r}; options: {', '.join(option_names())}")
    changes = {k: v for k, v in given.items() if v is not None}
    for name in ("content_layers", "style_layers", "style_layer_weights", "style_blend", "scales"):
        if isinstance(changes.get(name), list):
            changes[name] = tuple(changes[name])
        elif isinstance(changes.get(name), str):
            changes[name] = (changes[name],)
    return replace(options, **changes)


def default_layers(arch: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(content layers, style layers) for ``arch``: the VGG ones, or spread over its convs."""
    if arch.startswith("vgg"):
        return VGG_LAYERS
    convs = [layer.name for layer in models.get(arch).layers if layer.kind == "conv"]
    if len(convs) < 5:
        raise StylejaxError(f"no default style-transfer layers for {arch}; give content_layers and style_layers")
    return (convs[len(convs) * 2 // 3],), tuple(convs[i * (len(convs) - 1) // 4] for i in range(5))


def validate(options: Options, arch: str, n_styles: int) -> Options:
    """Check every setting before any work and fill in the default layers; raises StylejaxError."""
    if not isinstance(options, Options):
        raise StylejaxError(f"expected stylejax Options, got {type(options).__name__}")
    content_default, style_default = default_layers(arch) if (
        options.content_layers is None or options.style_layers is None) else (None, None)
    s = replace(options, content_layers=tuple(options.content_layers or content_default),
                style_layers=tuple(options.style_layers or style_default))
    backbone = models.get(arch)
    backbone.check_layers(s.content_layers)
    backbone.check_layers(s.style_layers)
    for name in ("content_layers", "style_layers"):
        layers = getattr(s, name)
        if len(set(layers)) != len(layers):
            raise StylejaxError(f"{name.replace('_', ' ')} repeat a layer: {','.join(layers)}")
    _check_choice("optimizer", s.optimizer, OPTIMIZERS, allow=optax.GradientTransformation)
    _check_choice("pooling", s.pooling, POOLINGS)
    _check_choice("precision", s.precision, PRECISIONS)
    _check_choice("style_loss", s.style_loss, STYLE_LOSSES)
    _check_choice("weight_units", s.weight_units, WEIGHT_UNITS)
    for name in ("iters", "size", "steps_per_call", "lbfgs_memory"):
        _check_int(name, getattr(s, name), low=1)
    _check_int("seed", s.seed, low=0)
    _check_averaging_and_scales(s)
    for name in ("content_weight", "style_weight", "tv_weight", "init_noise"):
        _check_number(name, getattr(s, name))
    _check_number("style_scale", s.style_scale, positive=True)
    if s.swag is not None:
        _check_number("swag", s.swag, positive=True)
    if s.lr is not None:
        _check_number("lr", s.lr, positive=True)
    if not isinstance(s.init, str) or not s.init:
        raise StylejaxError(f"init must be 'content', 'random' or an image path, got {s.init!r}")
    if s.style_layer_weights is not None:
        if len(s.style_layer_weights) != len(s.style_layers):
            raise StylejaxError(f"{len(s.style_layer_weights)} style layer weights for "
                                f"{len(s.style_layers)} style layers ({','.join(s.style_layers)})")
        for w in s.style_layer_weights:
            _check_number("style layer weight", w)
    if n_styles < 1:
        raise StylejaxError("no style image given")
    if s.style_blend is not None:
        if len(s.style_blend) != n_styles:
            raise StylejaxError(f"{len(s.style_blend)} blend weights for {n_styles} style images")
        for w in s.style_blend:
            _check_number("style blend weight", w)
        if sum(s.style_blend) <= 0:
            raise StylejaxError("style blend weights sum to 0")
    if s.scales is not None:
        if not s.scales:
            raise StylejaxError("scales must list at least one size")
        for v in s.scales:
            _check_int("scale", v, low=1)
    if s.original_colors and s.luminance_only:
        raise StylejaxError("use either original_colors or luminance_only, not both")
    if s.tile is not None:
        _check_int("tile", s.tile, low=1)
    if s.max_memory is not None:
        _check_number("max_memory (GiB)", s.max_memory, positive=True)
    return s


def _check_choice(name: str, value, choices: tuple[str, ...], allow: type | None = None) -> None:
    if allow is not None and isinstance(value, allow):
        return
    if value not in choices:
        raise StylejaxError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise StylejaxError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_number(name: str, value, positive: bool = False) -> None:
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value)) and (
            float(value) > 0 if positive else float(value) >= 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise StylejaxError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


def _check_averaging_and_scales(s: Options) -> None:
    """``ema`` a decay in (0, 1); ``min_scale`` and ``iters_first`` integers >= 1."""
    if s.ema is not None:
        try:
            ok = not isinstance(s.ema, bool) and 0.0 < float(s.ema) < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise StylejaxError(f"ema must be a decay between 0 and 1 (exclusive), e.g. 0.99; got {s.ema!r}")
    if s.min_scale is not None:
        _check_int("min_scale", s.min_scale, low=1)
    if s.iters_first is not None:
        _check_int("iters_first", s.iters_first, low=1)
