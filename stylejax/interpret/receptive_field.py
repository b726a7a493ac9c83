"""Receptive fields from a network's own layer table: size, jump and start of every layer.

For a chain of layers (kernel ``k``, stride ``s``, symmetric padding ``p``) the recurrences of
Araujo et al., *Computing Receptive Fields of Convolutional Neural Networks* (Distill 2019) are

    size_out  = size_in + (k - 1) * jump_in
    jump_out  = jump_in * s
    start_out = start_in + ((k - 1) / 2 - p) * jump_in

starting from the input pixels (size 1, jump 1, start 0). Coordinates are input pixel indices
(pixel centres at 0, 1, 2 ...): unit ``(y, x)`` of a layer is centred on input pixel
``(start + y * jump, start + x * jump)`` and sees the ``size x size`` square around it.

For a residual block (ResNet) the field is the largest over its paths, i.e. the chain through
the convolutions, which is what the backbones' layer tables describe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stylejax.errors import StylejaxError
from stylejax.models.layers import Layer


@dataclass(frozen=True)
class RF:
    """The receptive field of one layer's units, in input pixels.

    Attributes:
      name: layer name.
      size: side of the square of input pixels a unit sees (ignoring image borders).
      jump: distance in input pixels between adjacent units (the product of strides).
      start: input coordinate of the centre of unit 0 (may be fractional, e.g. 0.5 after a 2x2 pool).
    """

    name: str
    size: int
    jump: int
    start: float

    def centre(self, y: int, x: int) -> tuple[float, float]:
        """Input-pixel centre of unit ``(y, x)``."""
        return self.start + y * self.jump, self.start + x * self.jump


def chain(layers: Iterable[Layer]) -> dict[str, RF]:
    """Receptive fields of a chain of layers, in forward order: ``{name: RF}``."""
    size, jump, start = 1, 1, 0.0
    out: dict[str, RF] = {}
    for layer in layers:
        if layer.kernel < 1 or layer.stride < 1 or layer.padding < 0:
            raise StylejaxError(f"layer {layer.name}: bad kernel/stride/padding "
                                f"{layer.kernel}/{layer.stride}/{layer.padding}")
        start = start + ((layer.kernel - 1) / 2 - layer.padding) * jump
        size = size + (layer.kernel - 1) * jump
        jump = jump * layer.stride
        out[layer.name] = RF(layer.name, size, jump, start)
    return out


def for_arch(arch: str) -> dict[str, RF]:
    """Receptive fields of every layer of ``arch``, from its layer table."""
    from stylejax import models

    return chain(models.get(arch).layers)


def of_layer(arch: str, layer: str) -> RF:
    """The receptive field of one layer; unknown names raise StylejaxError listing the valid ones."""
    from stylejax import models

    models.get(arch).check_layers([layer])
    return for_arch(arch)[layer]


def output_sizes(layers: Iterable[Layer], size: int) -> dict[str, int]:
    """Spatial side of each layer's output for a ``size x size`` input (floor, as VALID pools do)."""
    out: dict[str, int] = {}
    for layer in layers:
        size = (size + 2 * layer.padding - layer.kernel) // layer.stride + 1
        out[layer.name] = size
    return out


def box(rf: RF, y: int, x: int, height: int | None = None, width: int | None = None,
        ) -> tuple[int, int, int, int]:
    """Input-pixel box ``(top, left, bottom, right)`` (half-open) seen by unit ``(y, x)``.

    Clipped to a ``height x width`` image when those are given; unclipped boxes may start below 0.
    Exact at input sizes where no layer floors away border pixels (VGG at multiples of 32);
    otherwise the bottom/right edge may include a few pixels the unit never reads.
    """
    half = (rf.size - 1) / 2
    cy, cx = rf.centre(y, x)
    top, left = math.floor(cy - half + 0.5), math.floor(cx - half + 0.5)
    bottom, right = top + rf.size, left + rf.size
    if height is not None:
        top, bottom = max(0, top), min(height, bottom)
    if width is not None:
        left, right = max(0, left), min(width, right)
    return top, left, bottom, right


def table_rows(arch: str, size: int | None = None) -> list[dict]:
    """One dict per layer: name, kind, kernel, stride, padding, channels, rf size/jump/start (+ output side)."""
    from stylejax import models

    backbone = models.get(arch)
    rfs = for_arch(arch)
    sides: Mapping[str, int] = output_sizes(backbone.layers, size) if size else {}
    rows = []
    for layer in backbone.layers:
        rf = rfs[layer.name]
        row = {"layer": layer.name, "kind": layer.kind, "kernel": layer.kernel, "stride": layer.stride,
               "padding": layer.padding, "channels": layer.channels,
               "size": rf.size, "jump": rf.jump, "start": rf.start}
        if size:
            row["output"] = sides[layer.name]
        rows.append(row)
    return rows
