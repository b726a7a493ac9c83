"""Float64 PyTorch forwards written from primitives (conv2d, relu, max_pool2d, linear), for references.

Independent of stylejax's models: the layer lists, preprocessing constants and the torchvision
head layout are written out here again.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# (name, kind, kernel, stride, padding): VGG16 configuration "D" and torchvision AlexNet.
VGG16 = [("conv1_1", "c", 3, 1, 1), ("conv1_2", "c", 3, 1, 1), ("pool1", "p", 2, 2, 0),
         ("conv2_1", "c", 3, 1, 1), ("conv2_2", "c", 3, 1, 1), ("pool2", "p", 2, 2, 0),
         ("conv3_1", "c", 3, 1, 1), ("conv3_2", "c", 3, 1, 1), ("conv3_3", "c", 3, 1, 1), ("pool3", "p", 2, 2, 0),
         ("conv4_1", "c", 3, 1, 1), ("conv4_2", "c", 3, 1, 1), ("conv4_3", "c", 3, 1, 1), ("pool4", "p", 2, 2, 0),
         ("conv5_1", "c", 3, 1, 1), ("conv5_2", "c", 3, 1, 1), ("conv5_3", "c", 3, 1, 1), ("pool5", "p", 2, 2, 0)]
ALEXNET = [("conv1", "c", 11, 4, 2), ("pool1", "p", 3, 2, 0), ("conv2", "c", 5, 1, 2), ("pool2", "p", 3, 2, 0),
           ("conv3", "c", 3, 1, 1), ("conv4", "c", 3, 1, 1), ("conv5", "c", 3, 1, 1), ("pool5", "p", 3, 2, 0)]


class GuidedReLU(torch.autograd.Function):
    """ReLU whose backward keeps g where both the input and g are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


def caffe_input(pixels: torch.Tensor) -> torch.Tensor:
    """f64[N, H, W, 3] RGB 0-255 -> f64[N, 3, H, W] BGR minus mean."""
    bgr = pixels.flip(-1) - torch.tensor(CAFFE_BGR_MEAN, dtype=torch.float64)
    return bgr.permute(0, 3, 1, 2)


def torchvision_input(pixels: torch.Tensor) -> torch.Tensor:
    x = (pixels / 255.0 - torch.tensor(TV_MEAN, dtype=torch.float64)) / torch.tensor(TV_STD, dtype=torch.float64)
    return x.permute(0, 3, 1, 2)


def oihw(params: dict) -> dict:
    """stylejax HWIO params -> {name: (f64 OIHW weight, f64 bias)}."""
    return {name: (torch.tensor(np.asarray(p["kernel"], np.float64)).permute(3, 2, 0, 1),
                   torch.tensor(np.asarray(p["bias"], np.float64))) for name, p in params.items()}


def _pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2/2 max pool (odd edges dropped) whose gradient splits exact ties evenly (``amax``).

    Exact ties are common in flat regions of 8-bit images; max_pool2d sends their gradient to one
    element, JAX's max (and ``amax``) shares it. Both are subgradients; the references use the
    shared one so they test the definitions, not a tie-breaking convention. (A guided/deconvnet
    pass routes through one switch, as stylejax does then, so it uses max_pool2d.)
    """
    n, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


def run(layers, weights: dict, x: torch.Tensor, start: str | None = None, stop: str | None = None,
        guided: bool = False) -> dict:
    """Apply ``layers`` after ``start`` (exclusive) through ``stop`` to NCHW ``x``; {name: NCHW out}."""
    relu = GuidedReLU.apply if guided else F.relu
    out, active = {}, start is None
    for name, kind, k, s, p in layers:
        if not active:
            active = name == start
            continue
        if kind == "c":
            w, b = weights[name]
            x = relu(F.conv2d(x, w, b, stride=s, padding=p))
        elif k == s == 2 and not guided:
            x = _pool2(x)
        else:
            x = F.max_pool2d(x, k, s)
        out[name] = x
        if name == stop:
            break
    return out


def target(act: torch.Tensor, unit: int) -> torch.Tensor:
    """Max over positions of channel ``unit``: NCHW -> [N] (or [N, F] -> [N]); ties share the gradient."""
    a = act[:, unit]
    return a.reshape(a.shape[0], -1).amax(dim=1)


def torchvision_head(sd: dict, arch: str, pooled: torch.Tensor, guided: bool = False) -> dict:
    """fc6/fc7/fc8 of a torchvision state dict (torch tensors) on the pooled NCHW map."""
    relu = GuidedReLU.apply if guided else F.relu
    side, idx = (6, (1, 4, 6)) if arch == "alexnet" else (7, (0, 3, 6))
    x = torch.flatten(F.adaptive_avg_pool2d(pooled, side), 1)
    out = {}
    for name, i in zip(("fc6", "fc7", "fc8"), idx):
        x = F.linear(x, sd[f"classifier.{i}.weight"].double(), sd[f"classifier.{i}.bias"].double())
        if name != "fc8":
            x = relu(x)
        out[name] = x
    return out
