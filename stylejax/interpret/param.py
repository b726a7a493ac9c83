"""Image parameterisations and random transforms for feature visualisation (Lucid's defaults).

* :func:`fft_init` / :func:`fft_to_rgb`: an image is a 2-D real-FFT spectrum per colour channel,
  scaled by ``1 / max(freq, 1/max(H, W)) ** decay_power`` (times ``sqrt(H W)``), inverse
  transformed, divided by 4, decorrelated with Lucid's ``color_correlation_svd_sqrt`` (normalised
  by its largest column norm) and squashed to [0, 1] with a sigmoid. Lucid:
  ``param.image(w, fft=True, decorrelate=True)`` with ``sd=0.01, decay_power=1``.
* :func:`random_transform`: Lucid's ``standard_transforms`` (pad 12 with 0.5, jitter 8, scale
  from ``1 + (i - 5) / 50``, rotate by an angle from ``range(-10, 11)`` plus five zeros (degrees),
  jitter 4), done as ONE bilinear resampling of the image onto a fixed canvas of ``H + 12`` by
  ``W + 12`` so shapes stay static under jit. Lucid rescales the canvas itself (its size varies
  from step to step); here the zoom is about the canvas centre and the canvas keeps its size.

All functions are pure and take explicit PRNG keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: Lucid's square root of the ImageNet colour covariance (columns: decorrelated axes).
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION_NORMALIZED = (COLOR_CORRELATION_SVD_SQRT
                                / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)))

PAD, JITTER1, JITTER2 = 12, 8, 4
SCALES = np.array([1 + (i - 5) / 50.0 for i in range(11)], np.float32)
ANGLES_DEG = np.array(list(range(-10, 11)) + 5 * [0], np.float32)
#: Smallest image side the standard transforms accept.
MIN_SIZE = 16


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """f32[h, w // 2 + 1]: spatial frequency magnitude (cycles/pixel) of each rfft2 bin."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy).astype(np.float32)


def fft_init(key: jax.Array, batch: int, h: int, w: int, sd: float = 0.01) -> jax.Array:
    """Initial spectrum f32[2, batch, 3, h, w // 2 + 1] (real and imaginary parts), N(0, sd)."""
    return sd * jax.random.normal(key, (2, batch, 3, h, w // 2 + 1), jnp.float32)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """f32[h, w // 2 + 1]: ``sqrt(h w) / max(freq, 1 / max(h, w)) ** decay_power`` (Lucid)."""
    freqs = rfft2d_freqs(h, w)
    return (np.sqrt(w * h) / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power).astype(np.float32)


def fft_to_rgb(spectrum: jax.Array, h: int, w: int, decay_power: float = 1.0) -> jax.Array:
    """Spectrum f32[2, N, 3, h, w // 2 + 1] -> RGB image f32[N, h, w, 3] in (0, 1)."""
    scale = spectrum_scale(h, w, decay_power)[None, None]  # [1, 1, h, w // 2 + 1]
    scaled = jax.lax.complex(scale * spectrum[0], scale * spectrum[1])
    image = jnp.fft.irfft2(scaled, s=(h, w), axes=(-2, -1))  # [N, 3, h, w]
    image = jnp.transpose(image, (0, 2, 3, 1)) / 4.0
    return jax.nn.sigmoid(image @ COLOR_CORRELATION_NORMALIZED.T)


def _bilinear(image: jax.Array, ys: jax.Array, xs: jax.Array, fill: float) -> jax.Array:
    """Sample f32[H, W, C] at float coordinates ys, xs f32[h, w] (pixel centres at integers)."""
    h, w = image.shape[:2]
    y0, x0 = jnp.floor(ys), jnp.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)

    def tap(yy, xx):
        inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))[..., None]
        value = image[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
        return jnp.where(inside, value, fill)

    return ((1 - wy) * ((1 - wx) * tap(y0, x0) + wx * tap(y0, x0 + 1))
            + wy * ((1 - wx) * tap(y0 + 1, x0) + wx * tap(y0 + 1, x0 + 1)))


def transform_params(key: jax.Array) -> dict[str, jax.Array]:
    """Draw one set of standard-transform parameters: offsets (pixels), scale, angle (radians)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "jitter1": jax.random.randint(k1, (2,), 0, JITTER1 + 1).astype(jnp.float32),
        "scale": jax.random.choice(k2, jnp.asarray(SCALES)),
        "angle": jnp.deg2rad(jax.random.choice(k3, jnp.asarray(ANGLES_DEG))),
        "jitter2": jax.random.randint(k4, (2,), 0, JITTER2 + 1).astype(jnp.float32),
    }


def apply_transform(image: jax.Array, t: dict[str, jax.Array], fill: float = 0.5) -> jax.Array:
    """Pad, jitter, scale, rotate and jitter f32[H, W, C] -> f32[H + 12, W + 12, C].

    Output pixel ``u`` (after the last crop) maps back to ``c + R(-angle) (u + j2 - c) / scale
    + j1 - pad`` in the input, with ``c`` the centre of the ``(H + 16, W + 16)`` canvas left by
    the first jitter; points outside the input read ``fill`` (the padding colour).
    """
    h, w = image.shape[:2]
    ho, wo = h + 2 * PAD - JITTER1 - JITTER2, w + 2 * PAD - JITTER1 - JITTER2
    cy, cx = (h + 2 * PAD - JITTER1 - 1) / 2.0, (w + 2 * PAD - JITTER1 - 1) / 2.0
    uy, ux = jnp.meshgrid(jnp.arange(ho, dtype=jnp.float32), jnp.arange(wo, dtype=jnp.float32),
                          indexing="ij")
    vy, vx = uy + t["jitter2"][0] - cy, ux + t["jitter2"][1] - cx
    cos, sin = jnp.cos(t["angle"]), jnp.sin(t["angle"])
    ry, rx = (cos * vy + sin * vx) / t["scale"], (-sin * vy + cos * vx) / t["scale"]
    ys = ry + cy + t["jitter1"][0] - PAD
    xs = rx + cx + t["jitter1"][1] - PAD
    return _bilinear(image, ys, xs, fill)


def random_transform(key: jax.Array, image: jax.Array) -> jax.Array:
    """Lucid's standard transforms with randomness from ``key``: f32[H, W, C] -> [H+12, W+12, C]."""
    return apply_transform(image, transform_params(key))


def transformed_size(size: int) -> int:
    """Side of the canvas the network sees for an image side ``size``."""
    return size + 2 * PAD - JITTER1 - JITTER2


__all__ = ["COLOR_CORRELATION_SVD_SQRT", "MIN_SIZE", "apply_transform", "fft_init", "fft_to_rgb",
           "random_transform", "rfft2d_freqs", "spectrum_scale", "transform_params", "transformed_size"]
