"""Backbones behind one interface: a layer table and a pure ``features`` function.

``get(arch)`` returns a :class:`Backbone`; every backbone's ``features`` has the signature
``features(params, x, layers, *, pooling="max", relu=jax.nn.relu, conv="direct")
-> {name: f32[N, h, w, C]}`` on preprocessed NHWC input.

``conv`` chooses how 3x3 convolutions run: ``"direct"`` (XLA's convolution; every JAX
transformation, forward mode and explicit sharding included), ``"winograd"`` (VGG only:
:mod:`stylejax.models.winograd`, reverse mode only) or ``"auto"`` (Winograd on CPU for the VGG
layers where it measured faster, direct elsewhere and for the other families).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import jax

from stylejax.errors import StylejaxError
from stylejax.models import alexnet, resnet, vgg
from stylejax.models.layers import Layer

CONVS = ("direct", "winograd", "auto")


@dataclass(frozen=True)
class Backbone:
    """A network family member: its name, layer table, forward function and parameter shapes.

    ``param_shapes()`` returns the nested dict of shapes a params pytree must have.
    """

    arch: str
    layers: tuple[Layer, ...]
    forward: Callable[..., dict]
    param_shapes: Callable[[], dict]
    has_winograd: bool = False

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def aliases(self) -> dict[str, str]:
        """Other names of layers: jcjohnson/neural-style's ``reluB_C`` for the post-ReLU ``convB_C``."""
        return {"relu" + layer.name[4:]: layer.name for layer in self.layers
                if layer.kind == "conv" and re.fullmatch(r"conv\d+_\d+", layer.name)}

    def canonical(self, layers: Sequence[str] | str) -> list[str]:
        """Names with aliases (``relu4_2``) replaced by the table's names (``conv4_2``), validated."""
        if isinstance(layers, str):
            layers = (layers,)
        names = [self.aliases.get(name, name) for name in layers]
        self.check_layers(names)
        return names

    def check_layers(self, layers: Sequence[str] | str) -> tuple[str, ...]:
        """Validate names (a single name is a one-layer tuple); raises StylejaxError listing the valid ones."""
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        vgg.check_layers(self.layers, layers)
        return layers

    def features(self, params, x: jax.Array, layers: Sequence[str], *, pooling: str = "max",
                 relu: Callable[[jax.Array], jax.Array] = jax.nn.relu, conv: str = "direct") -> dict:
        """``{name: f32[N, h, w, C]}`` at ``layers`` for preprocessed ``x`` f32[N, H, W, 3]."""
        if conv not in CONVS:
            raise StylejaxError(f"unknown conv {conv!r}; use one of {', '.join(CONVS)}")
        layers = self.check_layers(layers)
        if self.has_winograd:
            return self.forward(params, x, layers, pooling=pooling, relu=relu, conv=conv)
        if conv == "winograd":
            raise StylejaxError(f"conv='winograd' is for the VGG family, not {self.arch}")
        return self.forward(params, x, layers, pooling=pooling, relu=relu)


_BACKBONES: dict[str, Backbone] = {
    arch: Backbone(arch, vgg.layer_table(arch), vgg.features, partial(vgg.param_shapes, arch), has_winograd=True)
    for arch in vgg.LAYERS
}
_BACKBONES["alexnet"] = Backbone("alexnet", alexnet.layer_table(), alexnet.features, alexnet.param_shapes)
_BACKBONES.update({
    arch: Backbone(arch, resnet.layer_table(arch), partial(resnet.features, arch), partial(resnet.param_shapes, arch))
    for arch in resnet.ARCHS
})


def archs() -> list[str]:
    """Names of all known architectures."""
    return list(_BACKBONES)


def get(arch: str) -> Backbone:
    """The backbone called ``arch``; raises StylejaxError listing the known ones."""
    try:
        return _BACKBONES[arch]
    except KeyError:
        raise StylejaxError(f"unknown arch {arch!r}; known: {', '.join(_BACKBONES)}") from None


__all__ = ["CONVS", "Backbone", "Layer", "archs", "get"]
