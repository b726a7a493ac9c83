"""The style transfer objective and its gradient over tiles, exact, in memory set by the tile.

Every term of ``J`` is a sum over positions given global statistics: ``Jc`` sums over the
content layer's positions, and each style distance is a function of the position sums
(:class:`stylejax.style.objective.Sums`) of its layer, whatever the style loss (Gram or W2)
and with region masks. So, for an image split into tiles:

1. Pass 1, per tile: the network on the tile's *window* (its core plus a halo of at least the
   deepest layer's receptive-field radius), with every window origin a multiple of that
   layer's total stride so pooling windows line up with the whole image's; each layer's sums
   and ``Jc`` are added over the tile's own *core* positions only. The cores partition every
   layer's positions, and a core position's receptive field lies inside its window (or the
   window meets the image's own border there), so each one is computed exactly as on the
   whole image.
2. ``J`` and the cotangents of the global sums from those sums (one small computation).
3. Pass 2, per tile: the VJP of the tile's sums and ``Jc`` with those cotangents with respect
   to the window's pixels, added into the whole image's gradient (plus the gradient of the
   pixel terms, TV and temporal, taken on the whole image).

The tiled ``J`` and gradient equal the untiled ones up to rounding (tests: 1e-4 relative), and
memory is set by the window, not the image. Every window has one shape (the last window of a
row or column is moved back to end at the image's border), so one compiled step serves every
tile: the tiles run in a ``lax.scan``, ``batch`` of them at a time through ``vmap`` (for GPU
and TPU). The content targets and style statistics are computed tiled as well
(:func:`targets`).

Not tiled (refused with a clear error): SWAG (a softmax over a whole layer) and normalised
gradients (normalised by a whole layer's gradient).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import memory, models
from stylejax.activations import feature_shapes
from stylejax.errors import StylejaxError
from stylejax.interpret import receptive_field
from stylejax.style.objective import (LossWeights, Spec, Sums, Targets, activations, assemble_targets, combine,
                                      layer_sums, style_distance, to_pixels)
from stylejax.weights import Weights


@dataclass(frozen=True)
class Grid:
    """How an image of ``shape`` (H, W) is tiled (static, hashable).

    ``window`` (h, w): every window's shape; ``origins``: each window's top-left pixel (y, x);
    ``cores``: each tile's core box in image pixels (y0, y1, x0, x1), half-open; the cores
    partition the image. ``tile``: the core side (a multiple of ``stride``, the deepest layer's
    total stride); ``halo``: pixels of context on each side; ``batch``: tiles per vmapped call.
    """

    shape: tuple[int, int]
    window: tuple[int, int]
    origins: tuple[tuple[int, int], ...]
    cores: tuple[tuple[int, int, int, int], ...]
    tile: int
    halo: int
    stride: int
    batch: int = 1

    @property
    def n(self) -> int:
        """Number of tiles."""
        return len(self.origins)

    def to_dict(self) -> dict:
        return {"tiles": self.n, "tile": self.tile, "halo": self.halo, "window": list(self.window),
                "stride": self.stride, "tile_batch": self.batch}


def geometry(arch: str, layers: Sequence[str]) -> tuple[int, int]:
    """``(stride, halo)`` for tiling ``arch`` up to the deepest of ``layers``: the deepest layer's
    total stride, and the pixels of context a core position needs on either side (the largest
    over the layers up to it), rounded up to a multiple of the stride."""
    table = models.get(arch).layers
    names = [layer.name for layer in table]
    models.get(arch).check_layers(list(layers))
    deepest = max(names.index(l) for l in layers)
    rfs = receptive_field.chain(table[: deepest + 1])
    stride = rfs[names[deepest]].jump
    need = 0
    for rf in rfs.values():
        first = math.floor(rf.start - (rf.size - 1) / 2)  # unit i reads pixels i*jump + first ...
        need = max(need, -first, first + rf.size - rf.jump)  # ... to i*jump + first + size - 1
    return stride, -(-need // stride) * stride


def _window_length(length: int, core: int, halo: int, stride: int) -> int:
    """The windows' length on an axis of ``length`` pixels (the whole axis when one window covers it)."""
    if length <= core + 2 * halo:
        return length
    return core + 2 * halo + (length - core - 2 * halo) % stride


def _axis(length: int, core: int, halo: int, stride: int) -> tuple[int, list[int], list[tuple[int, int]]]:
    """One axis: (window length, window starts, core spans). The windows all have one length,
    start at multiples of ``stride`` (the last ends at ``length``); consecutive cores meet."""
    window = _window_length(length, core, halo, stride)
    if window == length:
        return length, [0], [(0, length)]
    starts = [0]
    while starts[-1] + window < length:
        starts.append(min(starts[-1] + core, length - window))
    bounds = [0] + [a + halo for a in starts[1:]] + [length]
    return window, starts, list(zip(bounds[:-1], bounds[1:]))


def plan(arch: str, layers: Sequence[str], shape: tuple[int, int], tile: int, batch: int = 1) -> Grid:
    """The :class:`Grid` for an image of ``shape`` (H, W) with cores of about ``tile`` pixels
    (rounded down to a multiple of the stride, at least one stride)."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise StylejaxError(f"tile must be a positive number of pixels, got {tile!r}")
    stride, halo = geometry(arch, layers)
    core = max(stride, int(tile) // stride * stride)
    wy, ys, cy = _axis(shape[0], core, halo, stride)
    wx, xs, cx = _axis(shape[1], core, halo, stride)
    origins = tuple((y, x) for y in ys for x in xs)
    cores = tuple((a, b, c, d) for a, b in cy for c, d in cx)
    return Grid(tuple(shape), (wy, wx), origins, cores, core, halo, stride, max(1, min(int(batch), len(origins))))


def check_spec(spec: Spec) -> None:
    """Refuse the objectives that are not sums over positions."""
    if spec.swag is not None:
        raise StylejaxError("tiling does not apply with swag (a softmax over a whole layer); drop --tile or --swag")
    if spec.normalize_gradients:
        raise StylejaxError("tiling does not apply with normalize_gradients (normalised by a whole layer's "
                            "gradient); drop --tile or --normalize-gradients")


# ----------------------------------------------------------------------------- per tile


def _tables(weights: Weights, spec: Spec, grid: Grid, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Per layer, one row per tile (padded with empty tiles to a multiple of ``grid.batch``):
    the core box in window-local positions (y0, y1, x0, x1) and the window's offset on the
    layer's whole-image grid (oy, ox): i32[T, 6]. ``"origin"``: the windows' pixel origins i32[T, 2]."""
    full = feature_shapes(weights, grid.shape, layers, pooling=spec.pooling)
    jumps = receptive_field.for_arch(weights.arch)
    pad = -grid.n % grid.batch
    out = {"origin": np.asarray(list(grid.origins) + [(0, 0)] * pad, np.int32).reshape(-1, 2)}
    for layer in layers:
        j, (nh, nw) = jumps[layer].jump, full[layer][:2]
        rows = []
        for (ay, ax), (y0, y1, x0, x1) in zip(grid.origins, grid.cores):
            oy, ox = ay // j, ax // j
            end_y = nh if y1 == grid.shape[0] else y1 // j
            end_x = nw if x1 == grid.shape[1] else x1 // j
            rows.append((y0 // j - oy, end_y - oy, x0 // j - ox, end_x - ox, oy, ox))
        out[layer] = np.asarray(rows + [(0, 0, 0, 0, 0, 0)] * pad, np.int32).reshape(-1, 6)
    return out


def _core(row: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """The core's positions on a window-local layer grid of ``hw``: f32[h, w] of 0/1."""
    iy, ix = jnp.arange(hw[0]), jnp.arange(hw[1])
    inside = ((iy >= row[0]) & (iy < row[1]))[:, None] & ((ix >= row[2]) & (ix < row[3]))[None, :]
    return inside.astype(jnp.float32)


def _window(x: jax.Array, origin: jax.Array, grid: Grid) -> jax.Array:
    return jax.lax.dynamic_slice(x, (origin[0], origin[1], 0), (*grid.window, x.shape[-1]))


def _over_tiles(fn: Callable, add: Callable, init, tables: dict[str, np.ndarray], batch: int):
    """``add(carry, tile_row, fn(tile_row))`` over every tile, ``batch`` tiles per step
    (vmapped), in a ``lax.scan``: memory for ``batch`` windows at a time."""
    chunks = jax.tree.map(lambda v: jnp.asarray(v).reshape(-1, batch, *v.shape[1:]), tables)

    def body(carry, chunk):
        outs = jax.vmap(fn)(chunk)
        for b in range(batch):
            carry = add(carry, jax.tree.map(lambda v: v[b], chunk), jax.tree.map(lambda v: v[b], outs))
        return carry, None

    return jax.lax.scan(body, init, chunks)[0]


def _tile_stats(weights: Weights, spec: Spec, xw: jax.Array, rows: dict, targets: Targets
                ) -> tuple[jax.Array, dict[str, Sums]]:
    """One window's ``Jc`` and style :class:`Sums` over its core positions."""
    acts = activations(weights, spec, to_pixels(xw), spec.layers)
    jc = jnp.zeros((), jnp.float32)
    for l in spec.content_layers:
        a, r = acts[l], rows[l]
        target = jax.lax.dynamic_slice(targets["content"][l], (r[4], r[5], 0), a.shape)
        jc = jc + 0.5 * jnp.sum(_core(r, a.shape[:2])[..., None] * jnp.square(a - target))
    sums = {}
    for l in spec.style_layers:
        a, r = acts[l], rows[l]
        weight = _core(r, a.shape[:2])[None]
        region = targets.get("masks", {}).get(l)
        if region is not None:
            weight = weight * jax.lax.dynamic_slice(region, (0, r[4], r[5]), (region.shape[0], *a.shape[:2]))
        sums[l] = layer_sums(a, weight)
    return jc, sums


def _statistics(weights: Weights, spec: Spec, x: jax.Array, targets: Targets, grid: Grid):
    """Pass 1: ``Jc`` and every style layer's :class:`Sums` of the image ``x`` f32[H, W, c]."""
    tables = _tables(weights, spec, grid, spec.layers)

    def fn(row):
        return _tile_stats(weights, spec, _window(x, row["origin"], grid), row, targets)

    zero = jax.eval_shape(fn, jax.tree.map(lambda v: v[0], tables))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
    return _over_tiles(fn, lambda c, _, o: jax.tree.map(jnp.add, c, o), init, tables, grid.batch)


def _assemble(spec: Spec, lw: LossWeights, x: jax.Array, targets: Targets, jc: jax.Array, sums: dict[str, Sums]):
    per_layer = {l: style_distance(spec, sums[l], targets["style"][l]) for l in spec.style_layers}
    return combine(spec, lw, to_pixels(x), targets, jc, per_layer)


def loss_terms(weights: Weights, spec: Spec, lw: LossWeights, x: jax.Array, targets: Targets, grid: Grid
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(J, terms)`` as :func:`stylejax.style.objective.loss_terms`, over the tiles of ``grid``."""
    jc, sums = _statistics(weights, spec, x, targets, grid)
    return _assemble(spec, lw, x, targets, jc, sums)


def value_and_grad(weights: Weights, spec: Spec, lw: LossWeights, x: jax.Array, targets: Targets, grid: Grid
                   ) -> tuple[tuple[jax.Array, dict[str, jax.Array]], jax.Array]:
    """``((J, terms), dJ/dx)`` for one image ``x`` f32[H, W, c], over the tiles of ``grid``
    (the two passes of the module docstring)."""
    jc, sums = _statistics(weights, spec, x, targets, grid)
    (total, terms), (d_jc, d_sums, grad) = jax.value_and_grad(
        functools.partial(_assemble, spec, lw), argnums=(2, 3, 0), has_aux=True)(x, targets, jc, sums)
    tables = _tables(weights, spec, grid, spec.layers)

    def fn(row):
        _, pull = jax.vjp(lambda xw: _tile_stats(weights, spec, xw, row, targets),
                          _window(x, row["origin"], grid))
        return pull((d_jc, d_sums))[0]

    def add(g, row, gw):
        origin = (row["origin"][0], row["origin"][1], 0)
        return jax.lax.dynamic_update_slice(g, jax.lax.dynamic_slice(g, origin, gw.shape) + gw, origin)

    return (total, terms), _over_tiles(fn, add, grad, tables, grid.batch)


# ----------------------------------------------------------------------------- targets


def content_activations(weights: Weights, spec: Spec, image: jax.Array, grid: Grid, layers: Sequence[str]
                        ) -> dict[str, jax.Array]:
    """``{layer: f32[h, w, C]}`` of ``image`` f32[H, W, 3] (pixels), stitched from the tiles' cores."""
    tables = _tables(weights, spec, grid, layers)
    full = feature_shapes(weights, grid.shape, layers, pooling=spec.pooling)
    init = {l: jnp.zeros(full[l], jnp.float32) for l in layers}

    def fn(row):
        return activations(weights, spec, _window(image, row["origin"], grid), layers)

    def add(bufs, row, acts):
        out = {}
        for l, a in acts.items():
            r = row[l]
            at = (r[4], r[5], 0)
            old = jax.lax.dynamic_slice(bufs[l], at, a.shape)
            out[l] = jax.lax.dynamic_update_slice(bufs[l], jnp.where(_core(r, a.shape[:2])[..., None] > 0, a, old), at)
        return out

    return _over_tiles(fn, add, init, tables, grid.batch)


def image_sums(weights: Weights, spec: Spec, image: jax.Array, grid: Grid) -> dict[str, Sums]:
    """Each style layer's :class:`Sums` (one region, every position) of ``image`` f32[H, W, 3]."""
    tables = _tables(weights, spec, grid, spec.style_layers)

    def fn(row):
        acts = activations(weights, spec, _window(image, row["origin"], grid), spec.style_layers)
        return {l: layer_sums(a, _core(row[l], a.shape[:2])[None]) for l, a in acts.items()}

    zero = jax.eval_shape(fn, jax.tree.map(lambda v: v[0], tables))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
    return _over_tiles(fn, lambda c, _, o: jax.tree.map(jnp.add, c, o), init, tables, grid.batch)


def targets(weights: Weights, spec: Spec, content: jax.Array, styles: Sequence[jax.Array], blend: jax.Array,
            masks: jax.Array | None, grid: Grid, style_grids: Sequence[Grid | None]) -> Targets:
    """:func:`stylejax.style.objective.targets`, with the content's activations computed over
    ``grid`` and each style's statistics over its own grid (None: whole)."""
    acts = content_activations(weights, spec, content, grid, spec.content_layers)
    per_style = []
    for image, g in zip(styles, style_grids):
        if g is None:
            a = activations(weights, spec, image, spec.style_layers)
            per_style.append({l: layer_sums(a[l]) for l in spec.style_layers})
        else:
            per_style.append(image_sums(weights, spec, image, g))
    return assemble_targets(weights, spec, acts, per_style, blend, masks)


# ----------------------------------------------------------------------------- memory plan

#: Bytes the process holds besides the step: the runtime, the weights, compiled code, decoding
#: (1.75 GiB resident after loading VGG16, measured on XLA:CPU).
FIXED_BYTES = 7 << 28
GIB = float(1 << 30)
#: Bytes per activation value (f32) and pixel of the network's step: the activations kept for the
#: backward pass, their gradients and the convolutions' temporaries, for the whole image and for
#: one window of the tiled step (whose two passes free each window's buffers). Fitted to the peak
#: resident memory measured on XLA:CPU (docs/print.md): VGG16's default layers hold 269 values
#: per pixel, so about 6.2 KB per pixel untiled.
NET_BYTES_WHOLE, NET_BYTES_WINDOW = 23, 17
#: The share the parts are scaled by: the peak resident memory of a multi-scale L-BFGS run at
#: 2896x2172 ran 14 % over their sum (the allocator does not hand every freed buffer back
#: between scales and tiles; docs/print.md).
MARGIN = 1.15


@dataclass(frozen=True)
class Plan:
    """How one scale's step fits the budget: ``grid`` (None: untiled), the L-BFGS history kept
    ``lbfgs_memory``, the estimated peak ``estimate`` and the ``budget`` (bytes), and
    ``style_grids`` for the style images' statistics (None each: whole)."""

    grid: Grid | None
    lbfgs_memory: int
    estimate: float
    budget: float
    style_grids: tuple[Grid | None, ...] = ()

    def to_dict(self) -> dict:
        d = {"tiles": 1 if self.grid is None else self.grid.n, "estimated_peak_gib": round(self.estimate / GIB, 3),
             "budget_gib": round(self.budget / GIB, 3), "lbfgs_memory": self.lbfgs_memory}
        return {**d, **(self.grid.to_dict() if self.grid is not None else {})}


def budget_bytes(max_memory_gib: float | None) -> float:
    """The memory budget: ``max_memory_gib`` GiB, else a safe share of what the process can get
    (on an accelerator: of the device's memory)."""
    if max_memory_gib is not None:
        return float(max_memory_gib) * GIB
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() if jax.default_backend() != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return memory.BUDGET_SHARE * stats["bytes_limit"]
    return memory.BUDGET_SHARE * memory.available_memory()


def history_bytes(shape: tuple[int, int], *, channels: int = 3, batch: int = 1) -> int:
    """Bytes of one remembered L-BFGS step (the pair s, y in f32) for ``batch`` images of ``shape``."""
    return 4 * channels * 2 * shape[0] * shape[1] * batch


def _image_floats(optimizer: str, lbfgs_memory: int, ema: bool) -> int:
    """Image-sized f32 buffers per channel of the optimised variable: the iterate, its gradient,
    the best iterate, the update and temporaries, the optimiser's state and the average. L-BFGS
    holds 2 ``lbfgs_memory`` + 2 in its state and about 8 more while it steps (the new pair,
    the two-loop recursion's vectors, the step), measured on XLA:CPU."""
    state = {"adam": 2, "lbfgs": 2 * lbfgs_memory + 10}.get(optimizer, 0)
    return 6 + state + int(ema)


def estimate(arch: str, spec: Spec, shape: tuple[int, int], *, batch: int = 1, channels: int = 3,
             optimizer: str = "lbfgs", lbfgs_memory: int = 100, ema: bool = False, grid: Grid | None = None,
             regions: int = 0, window: tuple[int, int] | None = None) -> float:
    """Estimated peak bytes of a transfer step on ``batch`` images of ``shape`` (H, W): the
    network's activations, their gradients and the convolutions' temporaries for the whole image
    or ``grid.batch`` windows (or one ``window`` (h, w); :data:`NET_BYTES_WHOLE`,
    :data:`NET_BYTES_WINDOW`), the image-sized buffers (:func:`_image_floats`), the content
    targets and region masks (all scaled by :data:`MARGIN`), and :data:`FIXED_BYTES`."""
    floats = memory.activation_floats(arch, spec.layers)
    content = memory.activation_floats(arch, spec.content_layers) - memory.activation_floats(arch, ())
    pixels = shape[0] * shape[1]
    if grid is not None:
        window, tiles = grid.window, grid.batch
    else:
        tiles = 1
    net = NET_BYTES_WHOLE * pixels if window is None else NET_BYTES_WINDOW * tiles * window[0] * window[1]
    per_image = floats * net + 4 * pixels * (channels * _image_floats(optimizer, lbfgs_memory, ema)
                                                          + max(content, 0) + 2 * regions)
    return FIXED_BYTES + MARGIN * batch * per_image


def smallest(arch: str, spec: Spec, shape: tuple[int, int], **kw) -> float:
    """:func:`estimate` with the smallest windows (one stride of core): the least a step at
    ``shape`` can need."""
    stride, halo = geometry(arch, spec.layers)
    return estimate(arch, spec, shape, **kw, window=tuple(_window_length(n, stride, halo, stride) for n in shape))


def choose(arch: str, spec: Spec, shape: tuple[int, int], *, style_shapes: Sequence[tuple[int, int]] = (),
           batch: int = 1, channels: int = 3, optimizer: str = "lbfgs", lbfgs_memory: int = 100, ema: bool = False,
           tile: int | None = None, max_memory: float | None = None, regions: int = 0) -> Plan:
    """The :class:`Plan` of a step at ``shape``: the given ``tile``, else untiled when the
    estimate fits the budget (``max_memory`` GiB, else :func:`budget_bytes`), else the largest
    core that fits. The L-BFGS history is cut to what fits in half the budget; on an
    accelerator, windows are batched as far as they fit. Raises StylejaxError when not even
    the image-sized buffers fit."""
    budget = budget_bytes(max_memory)
    kw = dict(batch=batch, channels=channels, optimizer=optimizer, ema=ema, regions=regions)
    kept = lbfgs_memory
    if optimizer == "lbfgs":
        history = history_bytes(shape, channels=channels, batch=batch)
        kept = int(min(lbfgs_memory, max(1, (budget / 2 - FIXED_BYTES) // history)))
    kw["lbfgs_memory"] = kept
    stride, halo = geometry(arch, spec.layers)

    def window(core: int) -> tuple[int, int]:
        return tuple(_window_length(n, core, halo, stride) for n in shape)

    bare = smallest(arch, spec, shape, **kw)
    if bare > budget:
        raise StylejaxError(f"a {shape[1]}x{shape[0]} transfer needs about {memory.gib(bare)} even with the "
                            f"smallest tiles and about {memory.gib(budget)} is available; use a smaller size")
    whole = estimate(arch, spec, shape, **kw)
    if tile is None and whole <= budget:
        grid = None
    elif tile is not None:
        grid = plan(arch, spec.layers, shape, tile)
    else:
        core = stride * max(1, max(shape) // stride)
        while core > stride and estimate(arch, spec, shape, **kw, window=window(core)) > budget:
            core -= stride
        grid = plan(arch, spec.layers, shape, core)
    if grid is not None and grid.n == 1:
        grid = None
    if grid is not None and jax.default_backend() != "cpu":
        for b in range(grid.n, 1, -1):
            wide = Grid(**{**grid.__dict__, "batch": b})
            if estimate(arch, spec, shape, **kw, grid=wide) <= budget:
                grid = wide
                break
    styles = []
    for hw in style_shapes:  # forward only: activations of the style layers, no gradients
        need = FIXED_BYTES + 4 * batch * memory.activation_floats(arch, spec.style_layers) * hw[0] * hw[1]
        core = grid.tile if grid is not None else max(hw)
        g = plan(arch, spec.style_layers, hw, core) if need > budget or grid is not None else None
        styles.append(None if g is None or g.n == 1 else g)
    return Plan(grid, kept, estimate(arch, spec, shape, **kw, grid=grid), budget, tuple(styles))


__all__ = ["FIXED_BYTES", "GIB", "MARGIN", "NET_BYTES_WHOLE", "NET_BYTES_WINDOW", "Grid", "Plan", "budget_bytes", "check_spec", "choose", "content_activations", "estimate",
           "geometry", "history_bytes", "image_sums", "loss_terms", "plan", "smallest", "targets", "value_and_grad"]
