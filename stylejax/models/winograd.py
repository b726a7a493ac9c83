"""3x3 stride-1 'same' convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016).

Each 2x2 output tile comes from a 4x4 input tile: ``Y = A^T [(G g G^T) * (B^T d B)] A``. Over
channels the elementwise product becomes 16 independent matmuls f32[P, Cin] @ f32[Cin, Cout]
(P = tiles), 2.25x fewer multiplications than direct convolution; the transforms are additions.
The data gradient of a 3x3 same conv is itself a 3x3 same conv (kernel flipped in space,
Cin <-> Cout), so the custom VJP runs it through the same path, with the flip folded into the
kernel transform (no transposed copy of the kernel). The kernel gradient, when asked for, is
XLA's own. Forward-mode differentiation is not defined here (a custom VJP), so
:func:`stylejax.models.vgg.features` only takes this path when asked (``conv="winograd"`` or
``"auto"``); its default stays XLA's convolution.

Measured on a 2-core AVX-512 CPU (XLA:CPU, jax 0.10.2, forward, batch 1): 64x64x256->256
18.4 vs 23.2 ms, 32x32x512->512 22.3 vs 25.9 ms, 16x16x512->512 5.0 vs 7.1 ms. It loses where
the transformed tiles outgrow the cache, so the work runs in chunks of at most 2**18
tile-channels (per-image chunks of 16 x 28 x 28 x 512: 167 vs 319 ms), and where channels are
few (:func:`pays`: Cin, Cout >= 128). fp32 error against direct convolution: about 1e-6 of the
output's peak.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# F(2, 3): input transform B^T (4x4), filter transform G (4x3), output transform A^T (2x4).
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
_M, _N = 2, 4  # output tile, input tile

MIN_CHANNELS = 128
MAX_TILE_CHANNELS = 2**18


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


def _kernel_transform(kernel: jax.Array, flip: bool) -> jax.Array:
    """``G g G^T`` per (Cin, Cout): f32[3, 3, Cin, Cout] -> f32[16, Cin, Cout]; ``flip`` reverses g in space."""
    taps = [2, 1, 0] if flip else [0, 1, 2]
    rows = [_combine(_G[a], [kernel[i] for i in taps]) for a in range(_N)]
    return jnp.stack([_combine(_G[b], [rows[a][j] for j in taps]) for a in range(_N) for b in range(_N)])


def _input_transform(padded: jax.Array) -> jax.Array:
    """``B^T d B`` for every overlapping 4x4 tile of a padded slab.

    ``padded``: f32[N, 2 th + 2, 2 tw + 2, C] (one zero row/column before, enough after) ->
    f32[16, N*th*tw, C].
    """
    n, rows, cols, c = padded.shape
    th, tw = rows // _M - 1, cols // _M - 1
    blocks = padded.reshape(n, th + 1, _M, tw + 1, _M, c)
    # input row i of tile t is padded row 2t + i: block t (i < 2) or block t + 1 (i >= 2)
    tile_rows = [blocks[:, :th, i] if i < _M else blocks[:, 1:, i - _M] for i in range(_N)]
    tiles = []
    for a in range(_N):
        u = _combine(_BT[a], tile_rows)  # f32[N, th, tw + 1, 2, C]
        tile_cols = [u[:, :, :tw, j] if j < _M else u[:, :, 1:, j - _M] for j in range(_N)]
        tiles += [_combine(_BT[b], tile_cols) for b in range(_N)]
    return jnp.stack(tiles).reshape(_N * _N, n * th * tw, c)


def _output_transform(m: jax.Array, n: int, th: int, tw: int) -> jax.Array:
    """``A^T M A``: f32[16, N*th*tw, D] -> f32[N, 2 th, 2 tw, D]."""
    d = m.shape[-1]
    m = m.reshape(_N, _N, n, th, tw, d)
    rows = [_combine(_AT[r], [m[a] for a in range(_N)]) for r in range(_M)]  # f32[4, N, th, tw, D]
    out = jnp.stack([jnp.stack([_combine(_AT[s], [rows[r][b] for b in range(_N)]) for s in range(_M)], axis=3)
                     for r in range(_M)], axis=2)  # f32[N, th, 2, tw, 2, D]
    return out.reshape(n, th * _M, tw * _M, d)


def _winograd(x: jax.Array, kernel_hat: jax.Array, *, transposed: bool = False) -> jax.Array:
    """x conv a transformed kernel f32[16, Cin, Cout] (``transposed``: f32[16, Cout, Cin], used transposed).

    The work runs in unrolled chunks (XLA:CPU runs rolled loops slowly) whose transformed tiles
    fit the cache budget: several images, one image, or a band of tile rows of one image.
    Per-image chunks were 1.8-1.9x faster than one batched pass at 16 x 56 x 56 x 256 and
    16 x 28 x 28 x 512.
    """
    n, h, w, _ = x.shape
    d = kernel_hat.shape[1 if transposed else 2]
    if n * h * w == 0:  # an image smaller than the pools gives empty layers
        return jnp.zeros((n, h, w, d), x.dtype)
    th, tw = -(-h // _M), -(-w // _M)
    budget = MAX_TILE_CHANNELS // max(kernel_hat.shape[1:])
    images = max(1, budget // (th * tw))
    band = th if images > 1 or th * tw <= budget else max(1, budget // tw)
    spec = "kpd,kcd->kpc" if transposed else "kpc,kcd->kpd"
    padded = jnp.pad(x, ((0, 0), (1, (th + 1) * _M - 1 - h), (1, (tw + 1) * _M - 1 - w), (0, 0)))
    outs = []
    for start in range(0, n, images):
        bands = []
        for r0 in range(0, th, band):
            r1 = min(th, r0 + band)
            slab = padded[start:start + images, _M * r0:_M * r1 + _M]
            v = _input_transform(slab)
            m = jnp.einsum(spec, v, kernel_hat, precision=jax.lax.Precision.HIGHEST)
            bands.append(_output_transform(m, slab.shape[0], r1 - r0, tw))
        outs.append(bands[0] if len(bands) == 1 else jnp.concatenate(bands, axis=1))
    y = outs[0] if len(outs) == 1 else jnp.concatenate(outs)
    return y[:, :h, :w]


def _direct(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3, stride 1, padding 1 convolution: f32[N, H, W, Cin] * f32[3, 3, Cin, Cout] (HWIO) -> f32[N, H, W, Cout]."""
    return _winograd(x, _kernel_transform(kernel, flip=False))


def _conv3x3_fwd(x, kernel):
    return conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(res, ct):
    x, kernel = res
    # dx = ct conv (kernel flipped in space, Cin <-> Cout): no transposed copy, the matmul contracts Cout
    dx = _winograd(ct, _kernel_transform(kernel, flip=True), transposed=True)
    _, kernel_vjp = jax.vjp(lambda k: _direct(x, k), kernel)  # dead code unless the kernel grad is used
    return dx, kernel_vjp(ct)[0]


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
