"""3x3 stride-1 'same' convolution by Winograd's minimal filtering F(m x m, 3x3) (Lavin & Gray 2016).

Each m x m output tile (m = 2 by default, or 4) comes from an n x n input tile, n = m + 2:
``Y = A^T [(G g G^T) * (B^T d B)] A``. Over channels, the elementwise product becomes n^2
independent matmuls f32[P, Cin] @ f32[Cin, Cout] (P = tiles). For m = 2 that is 2.25x fewer
multiplications than direct convolution; the transforms are additions.

The data gradient of a 3x3 same conv is itself a 3x3 same conv (kernel flipped in space,
Cin <-> Cout). So the custom VJP runs it through the same path, with the flip folded into the
kernel transform: no transposed copy of the kernel is made. The kernel gradient, when asked
for, is XLA's own. Forward-mode differentiation is not defined here (a custom VJP), so
:func:`stylejax.models.vgg.features` takes this path only when asked (``conv="winograd"`` or
``"auto"``); its default stays XLA's convolution.

Measured on a 2-core AVX-512 CPU (XLA:CPU, jax 0.10.2, forward, batch 1):
- 64x64x256->256: 18.4 vs 23.2 ms direct;
- 32x32x512->512: 22.3 vs 25.9 ms;
- 16x16x512->512: 5.0 vs 7.1 ms.

It loses in two cases:
- when the transformed tiles outgrow the cache, so the work runs in chunks of at most
  :data:`MAX_TRANSFORMED` floats (per-image chunks of 16 x 28 x 28 x 512: 167 vs 319 ms);
- when channels are few (:func:`pays`: Cin, Cout >= 128).

m = 4 was no faster in the VGG step and is 10x less accurate. fp32 error against direct
convolution is about 1e-6 of the output's peak for m = 2 and 2e-5 for m = 4.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

# F(m, 3) for output tiles m = 2 and 4 (Lavin & Gray): input transform B^T (n x n), filter
# transform G (n x 3), output transform A^T (m x n), input tile n = m + 2.
_TRANSFORMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)),
}

MIN_CHANNELS = 128
MAX_TRANSFORMED = 2**22  # floats of transformed input per chunk (16 MiB)


def pays(cin: int, cout: int) -> bool:
    """Whether Winograd beats XLA:CPU's direct conv for a cin -> cout layer (at any input size:
    large inputs run in cache-sized chunks). Narrow layers lose: their 16 matmuls have a short
    contraction (Cin or Cout < 128)."""
    return min(cin, cout) >= MIN_CHANNELS


def _combine(coefs: np.ndarray, arrays: Sequence[jax.Array]) -> jax.Array:
    """``sum_i coefs[i] * arrays[i]``, skipping zeros and multiplying only by non-units."""
    out = None
    for c, a in zip(coefs, arrays):
        if c == 0:
            continue
        term = a if c == 1 else -a if c == -1 else a * a.dtype.type(c)
        out = term if out is None else out + term
    return out


def _kernel_transform(kernel: jax.Array, tile: int, flip: bool) -> jax.Array:
    """``G g G^T`` per (Cin, Cout): f32[3, 3, Cin, Cout] -> f32[n*n, Cin, Cout]; ``flip`` reverses g in space."""
    _, g, _ = _TRANSFORMS[tile]
    taps = [2, 1, 0] if flip else [0, 1, 2]
    rows = [_combine(g[a], [kernel[i] for i in taps]) for a in range(len(g))]
    return jnp.stack([_combine(g[b], [rows[a][j] for j in taps]) for a in range(len(g)) for b in range(len(g))])


def _input_transform(padded: jax.Array, tile: int) -> jax.Array:
    """``B^T d B`` for every overlapping n x n tile (stride m = ``tile``) of a padded slab.

    ``padded``: f32[N, m th + m, m tw + m, C] (one zero row/column before, enough after) ->
    f32[n*n, N*th*tw, C].
    """
    bt, _, _ = _TRANSFORMS[tile]
    m, size = tile, len(bt)
    n, rows, cols, c = padded.shape
    th, tw = rows // m - 1, cols // m - 1
    blocks = padded.reshape(n, th + 1, m, tw + 1, m, c)
    # input row i of tile t is padded row m t + i: block t (i < m) or block t + 1 (i >= m)
    tile_rows = [blocks[:, :th, i] if i < m else blocks[:, 1:, i - m] for i in range(size)]
    tiles = []
    for a in range(size):
        u = _combine(bt[a], tile_rows)  # f32[N, th, tw + 1, m, C]
        tile_cols = [u[:, :, :tw, j] if j < m else u[:, :, 1:, j - m] for j in range(size)]
        tiles += [_combine(bt[b], tile_cols) for b in range(size)]
    return jnp.stack(tiles).reshape(size * size, n * th * tw, c)


def _output_transform(prods: jax.Array, tile: int, n: int, th: int, tw: int) -> jax.Array:
    """``A^T M A``: f32[n*n, N*th*tw, D] -> f32[N, m th, m tw, D]."""
    _, _, at = _TRANSFORMS[tile]
    m, size, d = tile, at.shape[1], prods.shape[-1]
    prods = prods.reshape(size, size, n, th, tw, d)
    rows = [_combine(at[r], [prods[a] for a in range(size)]) for r in range(m)]  # f32[n, N, th, tw, D]
    out = jnp.stack([jnp.stack([_combine(at[s], [rows[r][b] for b in range(size)]) for s in range(m)], axis=3)
                     for r in range(m)], axis=2)  # f32[N, th, m, tw, m, D]
    return out.reshape(n, th * m, tw * m, d)


def _winograd(x: jax.Array, kernel_hat: jax.Array, tile: int, *, transposed: bool = False) -> jax.Array:
    """x conv a transformed kernel f32[n*n, Cin, Cout] (``transposed``: f32[n*n, Cout, Cin], used transposed).

    The work runs in chunks whose transformed tiles fit the cache budget: several images, one
    image, or bands of tile rows of one image. Per-image chunks were 1.8-1.9x faster than one
    batched pass at 16 x 56 x 56 x 256 and 16 x 28 x 28 x 512. Image chunks go through
    ``lax.map`` (as fast as unrolled for this much work per iteration, and compiled 4-8x
    faster); the bands of one image are unrolled.
    """
    n, h, w, _ = x.shape
    d = kernel_hat.shape[1 if transposed else 2]
    if n * h * w == 0:  # an image smaller than the pools gives empty layers
        return jnp.zeros((n, h, w, d), x.dtype)
    m = tile
    th, tw = -(-h // m), -(-w // m)
    budget = MAX_TRANSFORMED // (kernel_hat.shape[0] * max(kernel_hat.shape[1:]))  # tiles per chunk
    images = min(n, max(1, budget // (th * tw)))
    band = th if images > 1 or th * tw <= budget else max(1, budget // tw)
    spec = "kpd,kcd->kpc" if transposed else "kpc,kcd->kpd"
    padded = jnp.pad(x, ((0, 0), (1, (th + 1) * m - 1 - h), (1, (tw + 1) * m - 1 - w), (0, 0)))

    def chunk(slabs: jax.Array) -> jax.Array:  # f32[k, m th + m, m tw + m, C] -> f32[k, m th, m tw, D]
        bands = []
        for r0 in range(0, th, band):
            r1 = min(th, r0 + band)
            slab = slabs[:, m * r0:m * r1 + m]
            prods = jnp.einsum(spec, _input_transform(slab, m), kernel_hat, precision=jax.lax.Precision.HIGHEST)
            bands.append(_output_transform(prods, m, slab.shape[0], r1 - r0, tw))
        return bands[0] if len(bands) == 1 else jnp.concatenate(bands, axis=1)

    whole = n // images * images
    if images == n:
        y = chunk(padded)
    else:  # equal image chunks in a rolled loop: as fast as unrolled here, and 4-8x quicker to compile
        chunks = padded[:whole].reshape(whole // images, images, *padded.shape[1:])
        y = jax.lax.map(chunk, chunks).reshape(whole, th * m, tw * m, d)
        if whole < n:
            y = jnp.concatenate([y, chunk(padded[whole:])])
    return y[:, :h, :w]


def _direct(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, kernel: jax.Array, tile: int = 2) -> jax.Array:
    """3x3, stride 1, padding 1 convolution: f32[N, H, W, Cin] * f32[3, 3, Cin, Cout] (HWIO) -> f32[N, H, W, Cout].

    ``tile``: output tile of F(tile x tile, 3x3), 2 or 4 (static).
    """
    return _winograd(x, _kernel_transform(kernel, tile, flip=False), tile)


def _conv3x3_fwd(x, kernel, tile):
    return _winograd(x, _kernel_transform(kernel, tile, flip=False), tile), (x, kernel)


def _conv3x3_bwd(tile, res, ct):
    x, kernel = res
    # dx = ct conv (kernel flipped in space, Cin <-> Cout): no transposed copy, the matmul contracts Cout
    dx = _winograd(ct, _kernel_transform(kernel, tile, flip=True), tile, transposed=True)
    _, kernel_vjp = jax.vjp(lambda k: _direct(x, k), kernel)  # dead code unless the kernel grad is used
    return dx, kernel_vjp(ct)[0]


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
