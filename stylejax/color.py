"""Colour handling for style transfer (Gatys et al. 2016, "Preserving Color in Neural Artistic
Style Transfer"): luminance / YIQ, luma swap, luminance matching and colour-histogram matching.

Pixels are f32[..., H, W, 3] RGB in [0, 255]; functions are pure jnp and work on batches.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# NTSC YIQ (the colour space of Gatys et al. 2016).
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.595716, -0.274453, -0.321263],
                       [0.211456, -0.522591, 0.311135]], np.float32)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ.astype(np.float64)).astype(np.float32)


def rgb_to_yiq(rgb):
    """f32[..., 3] RGB -> YIQ (Y in the same units as RGB)."""
    return jnp.asarray(rgb, jnp.float32) @ RGB_TO_YIQ.T


def yiq_to_rgb(yiq):
    """Inverse of :func:`rgb_to_yiq` (not clipped)."""
    return jnp.asarray(yiq, jnp.float32) @ YIQ_TO_RGB.T


def luminance(rgb):
    """Y channel f32[..., H, W, 1] of RGB pixels."""
    return rgb_to_yiq(rgb)[..., :1]


def gray3(y):
    """A luminance image f32[..., 1] as a gray RGB image f32[..., 3]."""
    return jnp.broadcast_to(y, (*y.shape[:-1], 3))


def with_luminance(y, color_source):
    """RGB with luminance ``y`` f32[..., H, W, 1] and the I, Q chroma of ``color_source`` (same H, W)."""
    chroma = rgb_to_yiq(color_source)[..., 1:]
    return yiq_to_rgb(jnp.concatenate([y, chroma], axis=-1))


def original_colors(output, content):
    """Luma swap (jcjohnson's ``-original_colors 1``): output's luminance, content's chroma."""
    return with_luminance(luminance(output), content)


def match_luminance(style_y, content_y):
    """Affine map of the style luminance to the content's mean and std (Gatys et al. 2016, eq. 1)."""
    s_mu, s_sd = jnp.mean(style_y), jnp.std(style_y)
    c_mu, c_sd = jnp.mean(content_y), jnp.std(content_y)
    return (style_y - s_mu) * (c_sd / jnp.maximum(s_sd, 1e-6)) + c_mu


def _sym_sqrt(cov, inverse: bool = False, eps: float = 1e-5):
    vals, vecs = jnp.linalg.eigh(cov)
    vals = jnp.maximum(vals, eps)
    power = -0.5 if inverse else 0.5
    return (vecs * (vals**power)[None, :]) @ vecs.T


def match_color(style, content, eps: float = 1e-5):
    """Colour-histogram matching of ``style`` to ``content`` by mean and covariance.

    ``x' = A (x - mu_S) + mu_C`` with ``A = Cov_C^{1/2} Cov_S^{-1/2}`` (symmetric square roots),
    so the result has the content's mean and covariance of RGB values (Gatys et al. 2016, sec. 2.1).
    Returns f32[H_s, W_s, 3] clipped to [0, 255].
    """
    s = jnp.asarray(style, jnp.float32).reshape(-1, 3)
    c = jnp.asarray(content, jnp.float32).reshape(-1, 3)
    mu_s, mu_c = s.mean(0, keepdims=True), c.mean(0, keepdims=True)
    cov_s = jnp.cov(s, rowvar=False) + eps * jnp.eye(3)
    cov_c = jnp.cov(c, rowvar=False) + eps * jnp.eye(3)
    a = _sym_sqrt(cov_c, eps=eps) @ _sym_sqrt(cov_s, inverse=True, eps=eps)
    out = (s - mu_s) @ a.T + mu_c
    return jnp.clip(out.reshape(jnp.shape(style)), 0.0, 255.0)
