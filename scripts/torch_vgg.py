"""A plain PyTorch VGG built from primitives on stylejax's converted weights (the independent reference).

No torchvision: ``conv2d`` + ``relu`` + ``max_pool2d``/``avg_pool2d`` in the layer order of
:func:`stylejax.models.vgg.layer_table`, kernels converted HWIO -> OIHW once. Used by
``scripts/bench.py`` (timing against stylejax) and by any script or test that wants a
second implementation to compare against.

Example::

    import stylejax
    from torch_vgg import TorchVGG
    net = TorchVGG(stylejax.load_weights("vgg16").params, channels_last=True)
    acts = net.features(x_nchw, ("conv1_1", "conv4_2"))   # {name: f32[N, C, h, w]}

:func:`gatys_objective` is the style transfer objective on it, for pixels as the library takes
them (``scripts/bench_cli.py`` and ``scripts/compare_torch_transfer.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylejax.models import vgg
from stylejax.preprocessing import CAFFE_BGR_MEAN


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


def caffe_input(pixels: torch.Tensor) -> torch.Tensor:
    """RGB pixels f32[N, H, W, 3] (0-255) -> Caffe input f32[N, 3, H, W] (BGR minus the mean), an
    NCHW view of an NHWC buffer, i.e. channels_last memory."""
    return (pixels.flip(-1) - torch.from_numpy(CAFFE_BGR_MEAN)).permute(0, 3, 1, 2)


def gatys_objective(net: TorchVGG, content: np.ndarray, style: np.ndarray, content_layers: Sequence[str],
                    style_layers: Sequence[str], *, alpha: float, beta: float, layer_weights: Sequence[float],
                    tv: float = 0.0):
    """``J(x) = alpha sum_c 1/2 ||a_c(x) - a_c(C)||^2 + beta sum_l lambda_l Js[l](x) + tv TV(x)``.

    ``Js[l] = ||G(x)/M - G(S)/M_S||^2 / C^2`` with raw Grams over M = h w positions; ``TV`` is
    ``1/2 sum (dx^2 + dy^2)`` on the pixels. ``content`` u8|f32[H, W, 3] and ``style``
    u8|f32[Hs, Ws, 3] are RGB pixels (Caffe preprocessing inside); the returned function takes
    pixels ``x`` f32[1, H, W, 3] (a torch tensor) and returns J f32[].
    """
    wanted = tuple(dict.fromkeys((*content_layers, *style_layers)))

    def pixels(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img, np.float32).copy())[None]

    with torch.no_grad():
        target_c = net.features(caffe_input(pixels(content)), tuple(content_layers))
        fs = net.features(caffe_input(pixels(style)), tuple(style_layers))
        target_s = {l: gram(a)[0] / (a.shape[2] * a.shape[3]) for l, a in fs.items()}

    def objective(x: torch.Tensor) -> torch.Tensor:
        acts = net.features(caffe_input(x), wanted)
        jc = sum(0.5 * (acts[l] - target_c[l]).square().sum() for l in content_layers)
        js = 0.0
        for l, lam in zip(style_layers, layer_weights):
            a = acts[l]
            g = gram(a)[0] / (a.shape[2] * a.shape[3])
            js = js + lam * (g - target_s[l]).square().sum() / a.shape[1] ** 2
        total = alpha * jc + beta * js
        if tv:
            base = x[:, :-1, :-1]
            total = total + tv * 0.5 * ((base - x[:, :-1, 1:]).square() + (base - x[:, 1:, :-1]).square()).sum()
        return total

    return objective
