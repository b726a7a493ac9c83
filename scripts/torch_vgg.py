"""A plain PyTorch VGG built from primitives on stylejax's converted weights (the independent reference).

No torchvision: ``conv2d`` + ``relu`` + ``max_pool2d``/``avg_pool2d`` in the layer order of
:func:`stylejax.models.vgg.layer_table`, kernels converted HWIO -> OIHW once. Used by
``scripts/bench.py`` (timing against stylejax) and by any script or test that wants a
second implementation to compare against.

Example::

    from stylejax import weights
    from torch_vgg import TorchVGG
    net = TorchVGG(weights.load("vgg16").params, channels_last=True)
    acts = net.features(x_nchw, ("conv1_1", "conv4_2"))   # {name: f32[N, C, h, w]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylejax.models import vgg


def convert_params(params: Mapping[str, Mapping[str, object]], *, channels_last: bool = False,
                   dtype: torch.dtype = torch.float32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (weight f32[Cout, Cin, 3, 3] OIHW, bias f32[Cout])}`` from a stylejax params pytree."""
    out = {}
    for name, p in params.items():
        kernel = np.asarray(p["kernel"], np.float32).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        weight = torch.from_numpy(np.ascontiguousarray(kernel)).to(dtype)
        if channels_last:
            weight = weight.contiguous(memory_format=torch.channels_last)
        out[name] = (weight, torch.from_numpy(np.asarray(p["bias"], np.float32).copy()).to(dtype))
    return out


class TorchVGG:
    """VGG16/19 as a pure function of NCHW tensors (no nn.Module state besides the weights).

    Args:
      params: stylejax VGG params pytree (``{"conv1_1": {"kernel": HWIO, "bias": ...}, ...}``).
      channels_last: store weights (and expect activations) in NHWC memory format, the layout
        oneDNN is fastest with on CPU; tensors keep their logical NCHW shape either way.
    """

    def __init__(self, params: Mapping[str, Mapping[str, object]], *, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32):
        self.arch = vgg.arch_of(params)
        self.table = vgg.layer_table(self.arch)
        self.channels_last = channels_last
        self.params = convert_params(params, channels_last=channels_last, dtype=dtype)

    def prepare(self, x_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
        """NHWC array -> NCHW tensor in this network's memory format."""
        x = torch.as_tensor(np.asarray(x_nhwc, np.float32)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def features(self, x: torch.Tensor, layers: Sequence[str], *, pooling: str = "max") -> dict[str, torch.Tensor]:
        """Activations ``{name: f32[N, C, h, w]}`` (post-ReLU for convs); stops at the deepest layer."""
        wanted = vgg.check_layers(self.table, layers)
        deepest = max(i for i, layer in enumerate(self.table) if layer.name in wanted)
        out = {}
        for layer in self.table[: deepest + 1]:
            if layer.kind == "conv":
                weight, bias = self.params[layer.name]
                x = F.relu(F.conv2d(x, weight, bias, padding=1))
            elif pooling == "max":
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.avg_pool2d(x, 2, 2)
            if layer.name in wanted:
                out[layer.name] = x
        return out


def gram(a: torch.Tensor) -> torch.Tensor:
    """Raw Gram ``sum_ij a_kij a_lij``: f32[N, C, h, w] -> f32[N, C, C]."""
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    return flat @ flat.transpose(1, 2)
