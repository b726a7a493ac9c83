"""SWAG: Stylization With Activation smoothinG (Wang, Li & Vasconcelos, CVPR 2021).

Residual networks produce peaky, low-entropy activations whose Gram matrices transfer style
poorly. SWAG applies a softmax over *all* activations of a layer (every channel and position of
one image) before the Gram/content losses:

    swag(F)[n, i, j, c] = exp(F[n, i, j, c] / tau) / sum_{i', j', c'} exp(F[n, i', j', c'] / tau)

``tau`` is a temperature (1 in the paper); a larger ``tau`` smooths more. Each image's result
sums to 1, so losses on it are tiny: scale the loss weights accordingly (or multiply by
``h * w * c``, which :func:`swag` does when ``rescale=True``, giving mean 1).
"""

from __future__ import annotations

import jax

from stylejax.errors import StylejaxError


def swag(activation: jax.Array, tau: float = 1.0, *, rescale: bool = False) -> jax.Array:
    """Softmax of each image's whole activation map: f32[..., h, w, C] -> the same shape.

    Args:
      activation: f32[N, h, w, C] or f32[h, w, C] (one layer's output, NHWC; leading axes are
        separate images).
      tau: temperature > 0 (a Python float or a traced scalar).
      rescale: multiply by ``h * w * C`` so that the values average 1 instead of summing to 1.

    Returns:
      Non-negative values summing to 1 over (h, w, C) for every image (``h*w*C`` if ``rescale``).
      Pure and differentiable; numerically stable (max subtracted); composes with jit/grad/vmap.
    """
    if isinstance(tau, (int, float)) and not tau > 0:
        raise StylejaxError(f"SWAG temperature must be positive, got {tau!r}")
    if activation.ndim < 3:
        raise StylejaxError(f"swag expects an activation of shape (..., h, w, C), got {activation.shape}")
    flat = activation.reshape(*activation.shape[:-3], -1) / tau
    out = jax.nn.softmax(flat, axis=-1)
    if rescale:
        out = out * flat.shape[-1]
    return out.reshape(activation.shape)


__all__ = ["swag"]
