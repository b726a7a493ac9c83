"""ResNet-18/34/50/101/152 (torchvision layout, v1.5) on jax-resnet's Flax modules, inference mode.

The network is ``jax_resnet.ResNet{depth}``'s ``Sequential`` without its head: ``layers_0`` the
stem (conv 7x7/2 + BN + ReLU), ``layers_1`` the 3x3/2 max pool, then one module per residual
block (``layers_2`` ...). Every sub-module is applied on its own with frozen batch statistics
(``apply`` with nothing mutable, so BatchNorm uses the running mean/var; eps 1e-5 as torchvision).

Layer names follow torchvision: ``relu`` (stem output), ``maxpool``, block outputs
``layer{stage}.{block}`` (e.g. ``layer3.2``) and stage outputs ``layer1`` ... ``layer4`` (the
stage's last block). All are post-ReLU.

``params`` is the Flax variables dict ``{"params": {"layers_0": ..., "layers_2": ...},
"batch_stats": {...}}`` with jax-resnet's own module names (no dots), so it also works with
``jax_resnet`` directly. Inputs are NHWC, preprocessed with the torchvision convention.

Receptive fields: each block appears in :func:`layer_table` as one layer equal to its main
path composed (basic: 3x3/s then 3x3 -> kernel 3+2s, stride s, padding 1+s; bottleneck:
1x1, 3x3/s, 1x1 -> kernel 3, stride s, padding 1). The skip path (identity or 1x1/s) reads
a window contained in the main path's, so this is the block's exact receptive field; the
stage aliases ``layer1`` ... ``layer4`` are identity entries (kernel 1, stride 1, kind ``relu``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from stylejax.errors import StylejaxError
from stylejax.models.layers import Layer
from stylejax.models.vgg import Pooling, check_layers

DEPTHS: tuple[int, ...] = (18, 34, 50, 101, 152)
ARCHS: tuple[str, ...] = tuple(f"resnet{d}" for d in DEPTHS)
_WIDTHS = (64, 128, 256, 512)
Relu = Callable[[jax.Array], jax.Array]
#: Residual blocks per stage (as ``jax_resnet.resnet.STAGE_SIZES`` and torchvision).
STAGE_SIZES: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                                           101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def depth_of(arch: str) -> int:
    """18 for ``resnet18`` ...; StylejaxError for anything else."""
    if arch not in ARCHS:
        raise StylejaxError(f"unknown ResNet arch {arch!r}; known: {', '.join(ARCHS)}")
    return int(arch[len("resnet"):])


def is_bottleneck(arch: str) -> bool:
    return depth_of(arch) >= 50


@functools.lru_cache(maxsize=64)
def _modules(arch: str, relu: Relu = jax.nn.relu) -> tuple:
    """jax-resnet's layers without the head: (stem, max pool, block, block, ...), built as
    ``jax_resnet.ResNet{depth}`` builds them but with ``relu`` as every rectifier.

    Imported here, not at module load: ``jax_resnet`` imports torch when it is installed (~2 s).
    """
    from functools import partial

    import flax.linen as nn
    from jax_resnet import resnet as jr
    from jax_resnet.common import ConvBlock

    conv_block = partial(ConvBlock, conv_cls=nn.Conv, norm_cls=partial(nn.BatchNorm, momentum=0.9),
                         activation=relu)
    block_cls = jr.ResNetBottleneckBlock if is_bottleneck(arch) else jr.ResNetBlock
    layers: list = [jr.ResNetStem(conv_block_cls=conv_block),
                    partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))]
    for _, stage, stride in blocks(arch):
        layers.append(block_cls(n_hidden=_WIDTHS[stage - 1], strides=(stride, stride),
                                conv_block_cls=conv_block, activation=relu))
    return tuple(layers)


def blocks(arch: str) -> list[tuple[str, int, int]]:
    """``(torchvision name, stage 1..4, stride)`` of every residual block, in order."""
    out = []
    for stage, n in enumerate(STAGE_SIZES[depth_of(arch)], 1):
        for b in range(n):
            out.append((f"layer{stage}.{b}", stage, 2 if stage > 1 and b == 0 else 1))
    return out


@functools.lru_cache(maxsize=None)
def _steps(arch: str) -> tuple[tuple[Layer, int | None], ...]:
    """Layer table entries paired with the index of the jax-resnet module computing them
    (None: an alias of the previous output)."""
    expansion = 4 if is_bottleneck(arch) else 1
    steps: list[tuple[Layer, int | None]] = [
        (Layer("relu", "conv", 7, 2, 3, 64), 0),
        (Layer("maxpool", "pool", 3, 2, 1, 64), 1),
    ]
    index = 2
    named = blocks(arch)
    for k, (name, stage, stride) in enumerate(named):
        channels = _WIDTHS[stage - 1] * expansion
        if is_bottleneck(arch):
            kernel, padding = 3, 1
        else:
            kernel, padding = 3 + 2 * stride, 1 + stride
        steps.append((Layer(name, "conv", kernel, stride, padding, channels), index))
        index += 1
        if k + 1 == len(named) or named[k + 1][1] != stage:
            steps.append((Layer(f"layer{stage}", "relu", 1, 1, 0, channels), None))
    return tuple(steps)


def layer_table(arch: str) -> tuple[Layer, ...]:
    """The layer table of a ResNet (see the module docstring for the receptive-field form)."""
    return tuple(layer for layer, _ in _steps(arch))


@functools.lru_cache(maxsize=None)
def _shapes(arch: str) -> dict:
    from jax_resnet.common import Sequential

    model = Sequential(_modules(arch))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), _plain(variables))


def _plain(tree):
    return {k: _plain(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def param_shapes(arch: str) -> dict:
    """Nested dict of shapes of the variables ``{"params": ..., "batch_stats": ...}``."""
    return _plain(_shapes(arch))


def _avg_pool(x: jax.Array) -> jax.Array:
    """3x3/2 average pool, padding 1, averaging over the in-image pixels only."""
    window, strides, pad = (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    count = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None], 0.0,
                                  jax.lax.add, window, strides, pad)
    return total / count


def features(arch: str, params: Mapping, x: jax.Array, layers: Sequence[str], *,
             pooling: Pooling = "max", relu: Relu = jax.nn.relu) -> dict[str, jax.Array]:
    """Activations of a ResNet at the named layers (bind ``arch`` with functools.partial).

    Args:
      arch: ``resnet18`` ... ``resnet152``.
      params: Flax variables ``{"params": ..., "batch_stats": ...}`` (see :func:`param_shapes`).
      x: f32[N, H, W, 3] preprocessed images (torchvision convention), any H, W >= 32.
      layers: names such as ``("relu", "layer1", "layer3.2")``; static under jit.
      pooling: ``"max"`` (as trained) or ``"avg"``: the stem's 3x3/2 max pool becomes an average
        pool (padding excluded), for synthesis.
      relu: the rectifier used everywhere (stem, inside blocks, after each residual sum), e.g. a
        deconvnet/guided-backprop ReLU with a custom VJP; must be hashable (a module-level function).

    Returns:
      ``{name: f32[N, h, w, C]}``, all post-ReLU; 224 input gives relu 112, maxpool/layer1 56,
      layer2 28, layer3 14, layer4 7. Computation stops after the deepest requested layer.
    """
    if pooling not in ("max", "avg"):
        raise StylejaxError(f"unknown pooling {pooling!r}; use 'max' or 'avg'")
    steps = _steps(arch)
    wanted = check_layers([layer for layer, _ in steps], layers)
    deepest = max(i for i, (layer, _) in enumerate(steps) if layer.name in wanted)
    modules = _modules(arch, relu)
    out: dict[str, jax.Array] = {}
    for layer, index in steps[: deepest + 1]:
        if index == 1:
            x = modules[1](x) if pooling == "max" else _avg_pool(x)
        elif index is not None:
            key = f"layers_{index}"
            x = modules[index].apply(
                {"params": params["params"][key], "batch_stats": params["batch_stats"][key]}, x)
        if layer.name in wanted:
            out[layer.name] = x
    return out


# ----------------------------------------------------------------------------- torchvision keys

def torchvision_map(arch: str) -> dict[str, tuple[str, ...]]:
    """torchvision state-dict key -> Flax variables path, for every tensor the features use.

    Conv weights (OIHW) go to ``.../Conv_0/kernel`` (HWIO); BatchNorm ``weight``, ``bias``,
    ``running_mean``, ``running_var`` to ``params/.../scale``, ``params/.../bias``,
    ``batch_stats/.../mean``, ``batch_stats/.../var``. ``fc.*`` and ``num_batches_tracked``
    are not used.
    """
    mapping: dict[str, tuple[str, ...]] = {}

    def conv_bn(conv: str, bn: str, path: tuple[str, ...]) -> None:
        mapping[f"{conv}.weight"] = ("params", *path, "Conv_0", "kernel")
        mapping[f"{bn}.weight"] = ("params", *path, "BatchNorm_0", "scale")
        mapping[f"{bn}.bias"] = ("params", *path, "BatchNorm_0", "bias")
        mapping[f"{bn}.running_mean"] = ("batch_stats", *path, "BatchNorm_0", "mean")
        mapping[f"{bn}.running_var"] = ("batch_stats", *path, "BatchNorm_0", "var")

    conv_bn("conv1", "bn1", ("layers_0", "ConvBlock_0"))
    convs = 3 if is_bottleneck(arch) else 2
    for index, (name, stage, stride) in enumerate(blocks(arch), 2):
        layer = f"layers_{index}"
        for j in range(convs):
            conv_bn(f"{name}.conv{j + 1}", f"{name}.bn{j + 1}", (layer, f"ConvBlock_{j}"))
        if (stage > 1 and stride == 2) or (stage == 1 and name == "layer1.0" and is_bottleneck(arch)):
            conv_bn(f"{name}.downsample.0", f"{name}.downsample.1",
                    (layer, "ResNetSkipConnection_0", "ConvBlock_0"))
    return mapping


__all__ = ["ARCHS", "DEPTHS", "blocks", "depth_of", "features", "layer_table", "param_shapes",
           "torchvision_map"]
