"""crowsonkb/style-transfer-pytorch's loss weights mapped onto ``J`` (``weight_units="crowsonkb"``).

Its objective, for an image ``y = x / 255`` in [0, 1] and VGG activations ``b`` of the
ImageNet-normalised image ``(y - mean) / std``, is::

    J_k = w_c / n_c sum_c mean((b - b_C)^2) + w_s sum_l lambda_l W2[l](b) + w_tv TV9(y)

with ``lambda_l = w_l / sum |w_l|`` (256:64:16:4:1 by default), ``W2[l]`` its Wasserstein-2
distance (``mean_c (mu - mu_S)^2 + tr(...) / C``, as :func:`stylejax.style_stats.w2_distance`)
and ``TV9`` its nine-point-stencil L2 total variation, a mean over elements. Mapped onto
``J = alpha Jc + beta sum_l lambda_l Js[l] + gamma Jtv`` in this project's units:

* activations: ``a = k b``, where ``k`` is the ratio of the two conventions' network inputs
  (:data:`ACTIVATION_SCALE`): the Caffe convention feeds ``x - 255 mean`` (BGR), within 0.5 of
  ``255 std`` times the normalised image, so ``k = 255 mean(std) = 57.6``; torchvision-convention
  weights see crowsonkb's input itself (``k = 1``). One ``k`` for every layer: a ReLU network
  fed inputs 1/k as large, with biases 1/k as large, has activations exactly 1/k as large
  (measured, and what unscaled biases change: ``scripts/modern_scale.py``, docs/transfer.md).
  Content MSE and W2 are quadratic in the
  activations, so each gets ``1 / k^2`` (a Gram distance, quartic, gets ``1 / k^4``).
* content: ``mean((b - b_C)^2) = (2 / (C h w k^2)) Jc``, so ``alpha = 2 w_c / (n_c C h w k^2)``
  at the (first) content layer at the output size.
* style: ``beta = w_s / k^d`` (``d`` the style distance's degree, :data:`STYLE_DEGREE`),
  ``lambda_l`` as above.
* TV: ``TV9(y) = mean over the C H W elements of (dx^2 + dy^2)`` to second order in spatial
  frequency (its diagonal pairs add ``(dx + dy)^2 + (dx - dy)^2 = 2 (dx^2 + dy^2)``; at the
  Nyquist checkerboard it is 2/3 of that), and ``Jtv = 1/2 sum (dx^2 + dy^2)`` on 0-255 pixels,
  so ``gamma = 2 w_tv / (3 H W 255^2)`` at the output size (H, W).

Then ``J`` equals crowsonkb's objective ``J_k``; Adam's steps do not depend on ``J``'s overall
scale, so ``k`` sets only the TV term against the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stylejax.activations import feature_shapes
from stylejax.errors import StylejaxError
from stylejax.preprocessing import TORCHVISION_STD
from stylejax.style.objective import Spec
from stylejax.weights import Weights

#: Activation scale ``k`` (this project's activations over crowsonkb's) per weights' preprocessing.
ACTIVATION_SCALE = {"caffe": float(255.0 * np.mean(TORCHVISION_STD.astype(np.float64))), "torchvision": 1.0}
#: Degree of each style distance as a function of the activations (``D(k a) = k^d D(a)``).
STYLE_DEGREE = {"w2": 2, "gram": 4}


def loss_weights(weights: Weights, spec: Spec, output_shape: tuple[int, int], content_weight: float,
                 style_weight: float, tv_weight: float, layer_weights: Sequence[float] | None = None
                 ) -> tuple[float, float, float, tuple[float, ...]]:
    """(alpha, beta, gamma, lambdas) equal to crowsonkb's ``content_weight``, style weight,
    ``tv_weight`` and style layer weights (normalised to sum 1; None: equal) at an output of
    ``output_shape`` = (H, W) pixels (see the module's docstring)."""
    if spec.style_loss not in STYLE_DEGREE:
        raise StylejaxError(f"weight_units crowsonkb has no mapping for style_loss {spec.style_loss!r}; "
                            f"use one of {', '.join(STYLE_DEGREE)}")
    k = ACTIVATION_SCALE[weights.preprocessing]
    h, w, c = feature_shapes(weights, output_shape, spec.content_layers[:1],
                             pooling=spec.pooling)[spec.content_layers[0]]
    alpha = 2.0 * content_weight / (len(spec.content_layers) * c * h * w * k**2)
    gamma = 2.0 * tv_weight / (3.0 * output_shape[0] * output_shape[1] * 255.0**2)
    raw = np.asarray(layer_weights if layer_weights is not None else [1.0] * len(spec.style_layers), np.float64)
    lambdas = tuple((raw / max(np.abs(raw).sum(), np.finfo(np.float64).tiny)).tolist())
    return alpha, style_weight / k ** STYLE_DEGREE[spec.style_loss], gamma, lambdas


__all__ = ["ACTIVATION_SCALE", "STYLE_DEGREE", "loss_weights"]
