"""Temporal consistency for video style transfer (Ruder, Dosovitskiy & Brox 2016).

Flow convention: a flow ``w`` f32[H, W, 2] holds ``(dx, dy)`` in pixels per position and
relates two frames by ``a(x) ~ b(x + w(x))``. For frame ``t`` the *backward* flow
``w_b = flow(frame_t, frame_{t-1})`` says where each of its pixels was in the previous frame, so
``warp(G_{t-1}, w_b)(x) = G_{t-1}(x + w_b(x))`` is the previous output moved onto frame ``t``.

* :func:`optical_flow`: OpenCV's DIS (Kroeger et al. 2016) or Farneback flow, on the host.
* :func:`consistency_mask`: ``c`` f32[H, W] in {0, 1}, 0 where the forward-backward check fails
  (disocclusions, pixels that came from outside the previous frame) or on motion boundaries.
* :func:`warp`: bilinear warp in JAX (differentiable, jit-able; edges clamped).
* :func:`temporal_loss`: ``Jt = sum_k c_k (x_k - w_k)^2`` over pixels and channels (Ruder et
  al.'s short-term loss as a sum, not their mean over ``D = H W C``, so that it scales with the
  image like the content loss ``Jc``; the CLI weighs it by ``--temporal-weight``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stylejax.errors import StylejaxError

FLOW_METHODS = ("dis", "farneback")
#: Smallest frame side (px, the shorter one) each flow method handles, found by trying every
#: shape up to 69 x 599 and 20 x 4000 (OpenCV 5.1): DIS (PRESET_MEDIUM) raises on a side under 8 px
#: (both under 12) and, from 8 to 15 px high, crashes the process or returns NaN from 40 px wide on;
#: Farneback works from 1 px, and the consistency mask's gradients need 2.
MIN_FLOW_SIDE: dict[str, int] = {"dis": 16, "farneback": 2}


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise StylejaxError(f"frames must be u8[H, W, 3], got {frame.dtype}{list(frame.shape)}")
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow f32[H, W, 2] from frame ``a`` to frame ``b`` (u8[H, W, 3] each): ``a(x) ~ b(x + w(x))``.

    ``dis``: OpenCV's DIS flow, ``PRESET_MEDIUM`` with variational refinement (fast, accurate at
    the large displacements of video); ``farneback``: Farneback's polynomial expansion (pyramid
    of 5 levels, window 15).
    """
    import cv2

    ga, gb = _gray(a), _gray(b)
    if ga.shape != gb.shape:
        raise StylejaxError(f"frames differ in size: {ga.shape[::-1]} and {gb.shape[::-1]}")
    if min(ga.shape) < MIN_FLOW_SIDE.get(method, 1):
        raise StylejaxError(f"frames of {ga.shape[1]}x{ga.shape[0]} are too small for the {method} flow: "
                            f"it needs at least {MIN_FLOW_SIDE[method]} px on the shorter side")
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(ga, gb, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=5, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.2, flags=0)
    else:
        raise StylejaxError(f"unknown flow method {method!r}; use one of {', '.join(FLOW_METHODS)}")
    return np.asarray(flow, np.float32)


def _sample(field: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``field(x + flow(x))`` bilinearly, edges clamped (host side, OpenCV)."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(field, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistency_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Ruder et al.'s mask ``c`` f32[H, W] for frame t from ``backward = flow(t, t-1)`` and
    ``forward = flow(t-1, t)`` (f32[H, W, 2] each).

    With ``w~(x) = forward(x + backward(x))`` (the forward flow seen from frame t), ``c = 0``
    where the round trip does not return,
    ``|w~ + w_b|^2 > 0.01 (|w~|^2 + |w_b|^2) + 0.5`` (disocclusion), where ``x + w_b(x)`` lies
    outside the previous frame, and on motion boundaries
    ``|grad u_b|^2 + |grad v_b|^2 > 0.01 |w_b|^2 + 0.002``; ``c = 1`` elsewhere.
    """
    wb = np.asarray(backward, np.float32)
    wf = np.asarray(forward, np.float32)
    if wb.ndim != 3 or wb.shape[-1] != 2 or wb.shape != wf.shape:
        raise StylejaxError(f"flows must both be f32[H, W, 2], got {list(wb.shape)} and {list(wf.shape)}")
    h, w = wb.shape[:2]
    wt = _sample(wf, wb)
    round_trip = np.sum((wt + wb) ** 2, -1)
    occluded = round_trip > 0.01 * (np.sum(wt ** 2, -1) + np.sum(wb ** 2, -1)) + 0.5
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    px, py = gx + wb[..., 0], gy + wb[..., 1]
    outside = (px < 0) | (px > w - 1) | (py < 0) | (py > h - 1)
    du_y, du_x = np.gradient(wb[..., 0])
    dv_y, dv_x = np.gradient(wb[..., 1])
    boundary = du_x ** 2 + du_y ** 2 + dv_x ** 2 + dv_y ** 2 > 0.01 * np.sum(wb ** 2, -1) + 0.002
    return (~(occluded | outside | boundary)).astype(np.float32)


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
    """``image(x + flow(x))``: bilinear, edges clamped. f32[H, W, C], f32[H, W, 2] -> f32[H, W, C].

    Pure JAX (differentiable in both arguments, jit-able, any backend).
    """
    image = jnp.asarray(image)
    flow = jnp.asarray(flow, image.dtype)
    if image.ndim != 3 or flow.shape != (*image.shape[:2], 2):
        raise ValueError(f"warp needs image f32[H, W, C] and flow f32[H, W, 2], got {image.shape} and {flow.shape}")
    h, w = image.shape[:2]
    gy, gx = jnp.meshgrid(jnp.arange(h, dtype=image.dtype), jnp.arange(w, dtype=image.dtype), indexing="ij")
    x = jnp.clip(gx + flow[..., 0], 0, w - 1)
    y = jnp.clip(gy + flow[..., 1], 0, h - 1)
    x0 = jnp.clip(jnp.floor(x), 0, w - 2).astype(jnp.int32) if w > 1 else jnp.zeros_like(x, jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, h - 2).astype(jnp.int32) if h > 1 else jnp.zeros_like(y, jnp.int32)
    x1 = jnp.minimum(x0 + 1, w - 1)
    y1 = jnp.minimum(y0 + 1, h - 1)
    fx = (x - x0.astype(image.dtype))[..., None]
    fy = (y - y0.astype(image.dtype))[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def temporal_loss(x: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """``Jt = sum_k c_k (x_k - target_k)^2`` over pixels and channels (Ruder et al. 2016, eq. 7,
    times their ``D = H W C``).

    ``x``, ``target``: f32[H, W, C] pixels (the frame being optimised and the warped previous
    output); ``mask`` f32[H, W] (the consistency ``c``, broadcast over channels). A scalar.
    """
    if x.shape != target.shape or x.ndim != 3 or mask.shape != x.shape[:2]:
        raise ValueError(f"temporal_loss needs x, target f32[H, W, C] and mask f32[H, W], "
                         f"got {x.shape}, {target.shape}, {mask.shape}")
    return jnp.sum(mask[..., None] * (x - target) ** 2)


def flicker(outputs: np.ndarray, shift: tuple[int, int]) -> float:
    """``mean |O_{t+1}(x) - O_t(x + shift)|`` over frames and the overlap, for a clip u8[T, H, W, 3]
    whose content moves by ``shift = (dx, dy)`` pixels per frame towards negative x / y (a pan that
    shows ``O_t(x + shift)`` at ``x`` in frame t+1). 0 for a perfectly stable output."""
    o = np.asarray(outputs, np.float64)
    dx, dy = shift
    h, w = o.shape[1:3]
    nxt = o[1:, : h - dy if dy else h, : w - dx if dx else w]
    prev = o[:-1, dy:, dx:]
    return float(np.mean(np.abs(nxt - prev)))
