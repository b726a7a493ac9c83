"""stylejax: what a pretrained CNN has learned, and neural style transfer, in JAX.

The public API (documented in docs/api.md). Every function is pure or says what it reads
and writes; arrays are NHWC, pixels are RGB values 0-255::

    import stylejax
    w = stylejax.load_weights("vgg16")                       # a pytree: params + static arch
    acts = stylejax.features(w, pixels, ("conv1_1", "conv4_2"))  # {layer: f32[N, h, w, C]}
    result = stylejax.transfer(content, style, size=256, iters=100)
    result.image, result.loss["total"]

Importing stylejax changes no process-wide setting; see :mod:`stylejax.runtime` for the two
that make the CPU step faster.
"""

from __future__ import annotations

import os

from stylejax.activations import feature_shapes, features
from stylejax.errors import StylejaxError
from stylejax.interpret.projection import project_unit, projection_of
from stylejax.interpret.receptive_field import RF, of_layer as receptive_field
from stylejax.interpret.scan import scan_arrays
from stylejax.losses import (content_loss, gram, layer_stats, normalized_gram, style_layer_loss, style_loss,
                             total_loss, tv_loss)
from stylejax.models import archs
from stylejax.progress import Progress
from stylejax.style.config import DEFAULTS, PRESETS, Options
from stylejax.style.lbfgs import lbfgs
from stylejax.style.objective import LossWeights, Spec, loss_terms, targets as style_targets
from stylejax.style.tiling import Grid, loss_terms as tiled_loss_terms, plan as plan_tiles
from stylejax.style.tiling import value_and_grad as tiled_value_and_grad
from stylejax.style.transfer import Result, transfer, transfer_batch
from stylejax.weights import Weights

__version__ = "0.1.0"


def load_weights(name_or_file: str | os.PathLike = "vgg16", *, arch: str | None = None) -> Weights:
    """A weight set by name (``vgg16``, or one imported with ``stylejax weights import``) or
    from a ``.pth`` / ``.h5`` / ``.onnx`` / ``.safetensors`` file (then ``arch`` says which
    network it holds). Returns :class:`Weights`: the params pytree, its arch and preprocessing.
    A built-in set is converted into the cache once, silently."""
    from stylejax import weights

    return weights.load(name_or_file, arch)


__all__ = [
    "DEFAULTS", "Grid", "PRESETS", "RF", "LossWeights", "Options", "Progress", "Result", "Spec", "StylejaxError", "Weights",
    "archs", "content_loss", "feature_shapes", "features", "gram", "layer_stats", "lbfgs", "load_weights",
    "loss_terms", "normalized_gram", "project_unit", "projection_of", "receptive_field", "scan_arrays", "style_layer_loss",
    "plan_tiles", "style_loss", "style_targets", "tiled_loss_terms", "tiled_value_and_grad", "total_loss", "transfer",
    "transfer_batch", "tv_loss",
]
