"""A network's layer table: the static description shared by forward passes and receptive fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LayerKind = Literal["conv", "pool", "relu"]


@dataclass(frozen=True)
class Layer:
    """One spatial layer of a network, in forward order.

    Attributes:
      name: the user-facing name (``conv1_1``, ``pool1``, ``layer3.2`` ...).
      kind: ``conv`` (conv + ReLU, output is post-ReLU), ``pool`` or ``relu``.
      kernel: spatial kernel size in input pixels of this layer.
      stride: spatial stride.
      padding: symmetric zero padding on each side.
      channels: number of output channels.
    """

    name: str
    kind: LayerKind
    kernel: int
    stride: int
    padding: int
    channels: int
