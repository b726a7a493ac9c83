"""Backbones behind one interface: a layer table and a pure ``features`` function.

``get(arch)`` returns a :class:`Backbone`; every backbone's ``features`` has the signature
``features(params, x, layers, *, pooling="max") -> {name: f32[N, h, w, C]}`` on NHWC input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from stylejax.errors import StylejaxError
from stylejax.models import alexnet, resnet, vgg
from stylejax.models.layers import Layer


@dataclass(frozen=True)
class Backbone:
    """A network family member: its name, layer table, forward function and parameter shapes.

    ``param_shapes()`` returns the nested dict of shapes a params pytree must have.
    ``fast_features`` computes the same activations by the fastest path measured for
    reverse-mode loops and scans (transfer, patches); it may not support forward-mode autodiff.
    """

    arch: str
    layers: tuple[Layer, ...]
    features: Callable[..., dict]
    param_shapes: Callable[[], dict]
    fast_features: Callable[..., dict] | None = None

    def __post_init__(self):
        if self.fast_features is None:
            object.__setattr__(self, "fast_features", self.features)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def aliases(self) -> dict[str, str]:
        """Other names of layers: jcjohnson/neural-style's ``reluB_C`` for the post-ReLU ``convB_C``."""
        return {"relu" + layer.name[4:]: layer.name for layer in self.layers
                if layer.kind == "conv" and re.fullmatch(r"conv\d+_\d+", layer.name)}

    def canonical(self, layers: Sequence[str]) -> list[str]:
        """Names with aliases (``relu4_2``) replaced by the table's names (``conv4_2``), validated."""
        if isinstance(layers, str):
            layers = (layers,)
        names = [self.aliases.get(name, name) for name in layers]
        self.check_layers(names)
        return names

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        """Validate names; raises StylejaxError listing the valid ones."""
        vgg.check_layers(self.layers, layers)
        return list(layers)


_BACKBONES: dict[str, Backbone] = {
    arch: Backbone(arch, vgg.layer_table(arch), vgg.features, partial(vgg.param_shapes, arch),
                   partial(vgg.features, conv="auto"))
    for arch in vgg.LAYERS
}
_BACKBONES["alexnet"] = Backbone("alexnet", alexnet.layer_table(), alexnet.features, alexnet.param_shapes)
_BACKBONES.update({
    arch: Backbone(arch, resnet.layer_table(arch), partial(resnet.features, arch), partial(resnet.param_shapes, arch))
    for arch in resnet.ARCHS
})


def register(backbone: Backbone) -> None:
    """Add a backbone (used by the modules that define AlexNet and ResNets)."""
    _BACKBONES[backbone.arch] = backbone


def archs() -> list[str]:
    """Names of all known architectures."""
    return list(_BACKBONES)


def get(arch: str) -> Backbone:
    """The backbone called ``arch``; raises StylejaxError listing the known ones."""
    try:
        return _BACKBONES[arch]
    except KeyError:
        raise StylejaxError(f"unknown arch {arch!r}; known: {', '.join(_BACKBONES)}") from None


__all__ = ["Backbone", "Layer", "archs", "get", "register"]
