"""Gatys et al. neural style transfer of arrays: validate, then targets and the loop per scale.

The optimised variable is the image in **pixel space** (RGB, [0, 255], unclipped while
optimising), f32[H, W, 3] per image; with ``luminance_only`` it is the luminance f32[H, W, 1]
(shown to the network as a gray image). Preprocessing for the weights happens inside the
objective, so any backbone and any convention works.

Per scale: the targets once (one compiled call), then the loop (:mod:`stylejax.style.loop`),
then the final iterate's evaluation; the best evaluated iterate is the scale's result and the
next scale's start. Nothing is evaluated twice: the reported terms are those recorded when the
best iterate was evaluated. With ``ema`` the scale's result (and the next scale's start) is the
iterates' average instead, evaluated once at the end of the scale; with Adam the next scale
starts from the previous scale's moments, resized (:func:`stylejax.iterates.carry_adam`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stylejax import color, iterates, memory
from stylejax.errors import StylejaxError
from stylejax.images import fit_longest, resize_longest, resize_to, to_uint8, to_uint16
from stylejax.preprocessing import deprocess
from stylejax.progress import Callback, Progress
from stylejax.style import crowsonkb, objective, tiling
from stylejax.style.config import Options, override, resolve, validate
from stylejax.style.loop import Hyper, LoopState, current, direction, fresh_opt_state, init_state, settle, steps
from stylejax.style.objective import LossWeights, Spec
from stylejax.style_stats import area_resize
from stylejax.weights import Weights


@dataclass
class Result:
    """A finished, interrupted or diverged run.

    ``images`` u8[B, H, W, 3] (``image`` is the first); ``losses`` the objective's terms per
    image at its output (``loss`` is the first: ``total``, ``content``, ``style``, ``tv``,
    ``style/<layer>``); ``history`` the batch-mean J at every iteration. ``pixels`` f32[B, H, W, 3]
    the outputs before rounding (0-255; ``image16`` is the first as u16 for 16-bit files);
    ``memory``: the last scale's tiling plan (:class:`stylejax.style.tiling.Plan`) and the
    process's measured peak resident memory; ``notes``: what was changed to fit (one line each).
    """

    images: np.ndarray
    losses: list[dict]
    iterations: int
    seconds: float
    s_per_iter: float | None
    interrupted: bool = False
    diverged: bool = False
    history: list[float] = field(default_factory=list)
    per_scale: list[dict] = field(default_factory=list)
    objective: dict = field(default_factory=dict)
    options: Options | None = None
    pixels: np.ndarray | None = None
    memory: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def image(self) -> np.ndarray:
        """The first (usually the only) output u8[H, W, 3]."""
        return self.images[0]

    @property
    def loss(self) -> dict:
        """The objective's terms for :attr:`image`."""
        return self.losses[0]

    @property
    def image16(self) -> np.ndarray:
        """The first output as u16[H, W, 3] (0-65535) for 16-bit PNG or TIFF."""
        return to_uint16(self.pixels[0])


def check_image(image, what: str) -> np.ndarray:
    """An RGB image u8[..., H, W, 3], or float pixels in [0, 255], as u8 (rounded).

    Refuses other shapes and dtypes, non-finite or out-of-range floats, and float images that
    look like [0, 1] (all values <= 1): multiply those by 255.
    """
    try:
        a = np.asarray(image)
    except Exception as exc:  # noqa: BLE001 - anything numpy cannot take
        raise StylejaxError(f"{what}: not an array ({type(image).__name__}: {exc})") from None
    if a.ndim < 3 or a.shape[-1] != 3 or min(a.shape[-3:-1], default=0) < 1:
        raise StylejaxError(f"{what} must be an RGB image u8[H, W, 3] (0-255), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise StylejaxError(f"{what} must be uint8 or float pixels 0-255, got dtype {a.dtype}")
    f = a.astype(np.float64)
    if not np.isfinite(f).all() or f.min() < 0 or f.max() > 255:
        raise StylejaxError(f"{what}: pixel values must be finite and within [0, 255], "
                            f"got [{np.nanmin(f):.4g}, {np.nanmax(f):.4g}]")
    if np.issubdtype(a.dtype, np.floating) and 0 < f.max() <= 1.0:
        raise StylejaxError(f"{what}: float pixels are all <= 1; stylejax takes 0-255 values, "
                            f"so multiply a [0, 1] image by 255")
    return to_uint8(f)


#: Relative difference of width/height allowed between a region mask and the content.
MASK_ASPECT_TOLERANCE = 0.02


def check_masks(masks, n_styles: int, content_hw: tuple[int, int], names: Sequence[str] | None = None) -> np.ndarray:
    """Region masks, one per style, as f32[S, H, W] in [0, 1] (u8 masks are divided by 255).

    Each mask is u8[H, W] or float [0, 1] [H, W] (white: the style applies, grey: partly), any
    size with the content's aspect ratio (within 2 %); all are resized (area average) to the
    first mask's size. Refuses a wrong count, shape, dtype or range, another aspect ratio and an
    all-zero mask; ``names`` (e.g. file names) name the masks in the messages.
    """
    if isinstance(masks, np.ndarray | jax.Array) and np.ndim(masks) in (2, 3):
        masks = [masks] if np.ndim(masks) == 2 else list(masks)
    masks = list(masks)
    if len(masks) != n_styles:
        raise StylejaxError(f"{len(masks)} style masks for {n_styles} style images; give one mask per style")
    out = []
    for i, m in enumerate(masks):
        what = f"style mask {names[i]}" if names else f"style mask {i + 1}"
        a = np.asarray(m)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2 or min(a.shape) < 1:
            raise StylejaxError(f"{what} must be a grayscale image [H, W], got shape {a.shape}")
        if a.dtype == np.uint8:
            f = a.astype(np.float32) / 255.0
        elif np.issubdtype(a.dtype, np.floating):
            f = a.astype(np.float32)
            if not np.isfinite(f).all() or f.min() < 0 or f.max() > 1:
                raise StylejaxError(f"{what}: float values must be finite and within [0, 1], "
                                    f"got [{np.nanmin(f):.4g}, {np.nanmax(f):.4g}]")
        else:
            raise StylejaxError(f"{what} must be uint8 (0-255) or float (0-1), got dtype {a.dtype}")
        ratio, want = a.shape[1] / a.shape[0], content_hw[1] / content_hw[0]
        if abs(ratio / want - 1) > MASK_ASPECT_TOLERANCE:
            raise StylejaxError(f"{what} is {a.shape[1]}x{a.shape[0]} (aspect {ratio:.3f}) but the content is "
                                f"{content_hw[1]}x{content_hw[0]} (aspect {want:.3f}); give masks of its shape")
        if not f.max() > 0:
            raise StylejaxError(f"{what} is empty (all black): its style would apply nowhere")
        out.append(f)
    return np.stack([m if m.shape == out[0].shape else np.asarray(area_resize(m, *out[0].shape)) for m in out])


def transfer(content, style_or_styles, *, weights: Weights | str = "vgg16", options: Options | None = None,
             preset: str | None = None, key: jax.Array | None = None, init_image=None,
             callback: Callback | None = None, temporal_target: dict | None = None, style_masks=None,
             **overrides) -> Result:
    """Style ``content`` u8[H, W, 3] (or float pixels 0-255) with one style image or a list.

    ``overrides`` are :class:`stylejax.style.config.Options` fields (the CLI's options,
    underscored, with the same defaults); ``preset`` (``"classic"``) sets several at once and
    explicit overrides win over it; or pass a whole ``options`` object (overrides still apply). ``optimizer`` may be a name (``lbfgs``, ``adam``, ``gd``) or an
    ``optax.GradientTransformation``. ``weights`` is a loaded :class:`Weights` or a set name.
    ``key`` seeds ``init="random"`` (default ``PRNGKey(seed)``); ``init_image`` u8[H, W, 3] is
    used when ``init`` is a path. ``callback`` gets a :class:`stylejax.progress.Progress`
    after every compiled call; a ``KeyboardInterrupt`` (Ctrl-C, or raised by the callback) stops
    the run and returns the best image so far with ``interrupted=True``.
    ``temporal_target`` (video, :mod:`stylejax.video`): ``{"image": f32[H, W, 3], "mask":
    f32[H, W], "weight": float}`` at the output size adds ``weight * Jt``
    (:func:`stylejax.temporal.temporal_loss`) to the objective; the weight is traced.
    ``style_masks``: one region mask per style, u8[H, W] (0-255) or f32[H, W] (0-1) with the
    content's aspect ratio (:func:`check_masks`); style ``s`` is then matched on the positions of
    the output its mask weighs (guided Gram / W2, Gatys et al. 2017) instead of being blended.
    """
    content = check_image(content, "content")
    if content.ndim != 3:
        raise StylejaxError(f"content must be one image u8[H, W, 3], got shape {content.shape}; "
                            "use transfer_batch for a batch")
    if temporal_target is not None:
        temporal_target = {"image": np.asarray(temporal_target["image"], np.float32)[None],
                           "mask": np.asarray(temporal_target["mask"], np.float32)[None],
                           "weight": temporal_target["weight"]}
    return transfer_batch(content[None], style_or_styles, weights=weights, options=options, preset=preset,
                          key=key, init_image=init_image, callback=callback, temporal_target=temporal_target,
                          style_masks=style_masks, **overrides)


def transfer_batch(contents, style_or_styles, *, weights: Weights | str = "vgg16", options: Options | None = None,
                   preset: str | None = None, key: jax.Array | None = None, init_image=None,
                   callback: Callback | None = None, temporal_target: dict | None = None,
                   style_masks=None, **overrides) -> Result:
    """Style a batch of same-size contents u8[B, H, W, 3]; each gets its own optimiser state.

    Options as :func:`transfer`; image ``b`` of a random init uses ``fold_in(key, b)``;
    ``temporal_target`` holds ``image`` f32[B, H, W, 3] and ``mask`` f32[B, H, W]; the
    ``style_masks`` apply to every content.
    """
    from stylejax.weights import load

    contents = check_image(contents, "contents")
    if contents.ndim != 4:
        raise StylejaxError(f"contents must be a batch u8[B, H, W, 3], got shape {contents.shape}")
    styles = [style_or_styles] if _is_one_image(style_or_styles) else list(style_or_styles)
    styles = [check_image(s, f"style {i + 1}") for i, s in enumerate(styles)]
    if any(s.ndim != 3 for s in styles):
        raise StylejaxError("each style must be one image u8[H, W, 3]")
    w = weights if isinstance(weights, Weights) else load(weights)
    if options is not None and preset is not None:
        raise StylejaxError("give either options or preset, not both")
    options = resolve(preset, **overrides) if options is None else override(options, **overrides)
    s = validate(options, w.arch, len(styles))
    if s.init not in ("content", "random"):
        if init_image is None:
            raise StylejaxError(f"init {s.init!r}: give init_image (or use init='content' / 'random')")
        init_image = check_image(init_image, "init image")
    masks = None
    if style_masks is not None:
        masks = check_masks(style_masks, len(styles), contents.shape[1:3])
        if s.style_blend is not None:
            raise StylejaxError("style_blend does not apply with style masks: each style keeps its own region")
    return _run(w, contents, styles, s, jax.random.PRNGKey(s.seed) if key is None else key, init_image, callback,
                temporal_target, masks)


def _is_one_image(value) -> bool:
    return isinstance(value, np.ndarray | jax.Array) or (
        isinstance(value, (list, tuple)) and len(value) > 0 and np.ndim(value[0]) < 3)


def spec_of(s: Options) -> Spec:
    """The static objective of validated options."""
    return Spec(tuple(s.content_layers), tuple(s.style_layers), s.pooling, "auto", s.precision,
                bool(s.normalize_gradients), s.swag, s.style_loss, bool(s.luminance_only))


def loss_weights(w: Weights, spec: Spec, s: Options, output_shape: tuple[int, int]) -> LossWeights:
    """alpha, beta, gamma, lambdas of validated options at the output size (H, W)."""
    user = s.style_layer_weights or (1.0 / len(spec.style_layers),) * len(spec.style_layers)
    if s.weight_units == "neural-style":
        alpha, beta, lambdas = objective.neural_style_weights(w, spec, output_shape, s.content_weight, s.style_weight)
        user = s.style_layer_weights or (1.0,) * len(lambdas)
        return LossWeights.of(alpha, beta, s.tv_weight, [l * u for l, u in zip(lambdas, user)])
    if s.weight_units == "crowsonkb":
        return LossWeights.of(*crowsonkb.loss_weights(w, spec, output_shape, s.content_weight, s.style_weight,
                                                       s.tv_weight, s.style_layer_weights))
    return LossWeights.of(s.content_weight, s.style_weight, s.tv_weight, user)


def _run(w: Weights, contents: np.ndarray, styles: Sequence[np.ndarray], s: Options, key: jax.Array,
         init_image, callback: Callback | None, temporal_target: dict | None = None,
         masks: np.ndarray | None = None) -> Result:
    spec = spec_of(s)
    if temporal_target is not None:
        spec = dataclasses.replace(spec, temporal=True)
    plans = _plans(w, spec, s, contents, styles, masks)
    kept = min(p.lbfgs_memory for p in plans)  # one optimiser for every scale: the least that fits
    plans = [dataclasses.replace(p, lbfgs_memory=kept) for p in plans]
    notes = []
    if s.optimizer == "lbfgs" and kept < s.lbfgs_memory:
        hw = _fit(contents.shape[1:3], s.sizes[-1])
        notes.append(f"L-BFGS keeps the last {kept} of {s.lbfgs_memory} steps: {s.lbfgs_memory} would take "
                     f"{memory.gib(s.lbfgs_memory * tiling.history_bytes(hw, channels=_channels(s), batch=contents.shape[0]))} "
                     f"at {hw[1]}x{hw[0]} "
                     f"and the budget is {memory.gib(plans[-1].budget)}")
    tx = direction(s.optimizer, kept) if isinstance(s.optimizer, str) else s.optimizer
    lr = jnp.asarray(s.learning_rate if isinstance(s.optimizer, str) else 1.0, jnp.float32)
    blend = np.asarray(s.style_blend or [1.0] * len(styles), np.float64)
    blend = jnp.asarray(blend / blend.sum(), jnp.float32)
    batch = contents.shape[0]
    out_shape = np.asarray(resize_longest(contents[0], s.sizes[-1])).shape[:2]
    lw = loss_weights(w, spec, s, out_shape)
    if temporal_target is not None:
        lw = lw._replace(temporal=jnp.asarray(temporal_target["weight"], jnp.float32))
    hyper = Hyper(lw, lr)
    total = s.total_iters
    done, history, per_scale = 0, [], []
    state, targets, content_px = None, None, None
    interrupted = diverged = False
    t_start = time.perf_counter()
    try:
        for index, size in enumerate(s.sizes):
            content_px = np.stack([np.asarray(resize_longest(c, size)) for c in contents]).astype(np.float32)
            grid = plans[index].grid
            targets = None  # the previous scale's buffers go before this scale's are made
            targets = _scale_targets(w, spec, s, content_px, styles, blend, size,
                                     _masks_at(masks, content_px.shape[1:3]), plans[index])
            if temporal_target is not None:
                targets = {**targets, "temporal": _temporal_at(temporal_target, content_px.shape[1:3])}
            x = (_initial(s, content_px, key, init_image, w.preprocessing) if state is None else
                 jax.image.resize(state.best_x, (batch, *content_px.shape[1:3], state.best_x.shape[-1]), "bilinear"))
            previous, state = state, None
            state = _shard_batch(scale_state(tx, s, x, _term_names(spec), previous), batch)
            del previous
            targets = _shard_batch(targets, batch)
            call_times: list[float] = []
            k = 0
            iters = s.iters_at(index)
            while k < iters and not diverged:
                n = min(s.steps_per_call, iters - k)
                t0 = time.perf_counter()
                state, values = steps(w, hyper, state, targets, spec=spec, tx=tx, k=n, grid=grid)
                values = np.asarray(values)  # the one host read per call: f32[B, n]
                call_times.append((time.perf_counter() - t0) / n)
                finite = np.isfinite(values).all(axis=0)
                n_ok = int(np.argmin(finite)) if not finite.all() else n
                history.extend(values.mean(axis=0)[:n_ok].tolist())
                diverged = n_ok < n
                k += n_ok
                done += n_ok
                if callback is not None:
                    callback(Progress(done, total, "it", history[-1] if history else None, {"size": size},
                                      functools.partial(_finish_best, state, content_px, s)))
            if not diverged:
                state = settle(w, lw, state, targets, spec=spec, grid=grid)
            steady = call_times[1:] or call_times
            per_scale.append({"size": size, "shape": list(content_px.shape[1:3]), "iterations": k,
                              "s_per_iter": float(np.median(steady)) if steady else None,
                              "first_call_s": call_times[0] if call_times else None, **plans[index].to_dict()})
            if diverged:
                break
    except KeyboardInterrupt:
        interrupted = True
        if state is None:
            raise
    if not np.isfinite(np.asarray(state.best_loss)).all():
        raise StylejaxError("the objective was not finite at any iterate; lower lr or the loss weights")
    seconds = time.perf_counter() - t_start
    best_terms = jax.device_get(state.best_terms)
    losses = [{k: float(v[b]) for k, v in best_terms.items()} for b in range(batch)]
    pixels = _finish(state.best_x, content_px, s)
    return Result(images=to_uint8(pixels), pixels=pixels, losses=losses, iterations=done, seconds=seconds,
                  s_per_iter=per_scale[-1]["s_per_iter"] if per_scale else None, interrupted=interrupted,
                  diverged=diverged, history=history, per_scale=per_scale,
                  objective={**lw.to_dict(spec), "content_layers": list(spec.content_layers),
                             "style_loss": spec.style_loss, "weight_units": s.weight_units,
                             "style_masks": None if masks is None else
                             [{"shape": list(m.shape), "coverage": float(m.mean())} for m in masks],
                             "optimized": "luminance Y (0-255)" if s.luminance_only else "pixels (RGB 0-255)"},
                  options=s, notes=notes,
                  memory={**plans[len(per_scale) - 1 if per_scale else 0].to_dict(), "peak_rss_gib":
                          round(memory.peak_rss() / tiling.GIB, 3)})


def _fit(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(H, W) of an image of ``hw`` (H, W) after :func:`resize_longest` to ``size``."""
    return fit_longest(hw[1], hw[0], size)[::-1]


def _channels(s: Options) -> int:
    """Channels of the optimised variable: 1 (luminance Y) or 3 (RGB)."""
    return 1 if s.luminance_only else 3


def _plans(w: Weights, spec: Spec, s: Options, contents: np.ndarray, styles: Sequence[np.ndarray],
           masks: np.ndarray | None) -> list[tiling.Plan]:
    """Each scale's :class:`stylejax.style.tiling.Plan` (tiles, L-BFGS history) for the budget."""
    plans = []
    for size in s.sizes:
        hw = _fit(contents.shape[1:3], size)
        side = max(1, int(math.ceil(s.style_scale * size)))
        style_hw = [_fit(st.shape[:2], side) for st in styles]
        p = tiling.choose(w.arch, spec, hw, style_shapes=style_hw, batch=contents.shape[0],
                          channels=_channels(s),
                          optimizer=s.optimizer if isinstance(s.optimizer, str) else "optax",
                          lbfgs_memory=s.lbfgs_memory, ema=s.ema is not None, tile=s.tile,
                          max_memory=s.max_memory, regions=0 if masks is None else len(masks))
        if s.tile is not None or p.grid is not None or any(g is not None for g in p.style_grids):
            tiling.check_spec(spec)
        plans.append(p)
    return plans


def scale_state(tx: optax.GradientTransformation, s: Options, x: jax.Array, term_names: Sequence[str],
                previous: LoopState | None = None) -> LoopState:
    """The loop state a scale starts from, for its first iterate ``x`` f32[B, H, W, c].

    With ``ema`` a fresh average starts at ``x``. With the named ``adam`` optimiser and a
    ``previous`` scale's state, Adam's moments are the previous ones resized to ``x``'s shape
    and its step count goes on (:func:`stylejax.iterates.carry_adam`, as crowsonkb's
    ``scale_adam``); any other optimiser starts afresh.
    """
    opt_state = None
    if previous is not None and s.optimizer == "adam":
        opt_state = iterates.carry_adam(previous.opt_state, fresh_opt_state(tx, x))
    return init_state(tx, x, term_names, ema=s.ema, opt_state=opt_state)


def _term_names(spec: Spec) -> tuple[str, ...]:
    return ("total", "content", "style", "tv", *(("temporal",) if spec.temporal else ()),
            *(f"style/{l}" for l in spec.style_layers))


def _temporal_at(temporal_target: dict, hw: tuple[int, int]) -> dict:
    """The temporal target's image f32[B, H, W, 3] and mask f32[B, H, W] resized (bilinear) to ``hw``."""
    image = jnp.asarray(temporal_target["image"], jnp.float32)
    mask = jnp.asarray(temporal_target["mask"], jnp.float32)
    if image.shape[1:3] != tuple(hw):
        image = jax.image.resize(image, (image.shape[0], *hw, 3), "bilinear")
        mask = jax.image.resize(mask, (mask.shape[0], *hw), "bilinear")
    return {"image": image, "mask": mask}


def _shard_batch(tree, batch: int):
    """Split every leaf's leading (batch) axis over the local devices when it divides evenly.

    ``steps`` then runs data-parallel (jit follows the input sharding); with one device, or a
    batch the device count does not divide, the tree is returned unchanged.
    """
    devices = jax.local_devices()
    if len(devices) < 2 or batch % len(devices):
        return tree
    mesh = Mesh(np.array(devices), ("batch",))
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("batch")))


@functools.partial(jax.jit, static_argnames=("spec", "grid", "style_grids"))
def _targets(w: Weights, content: jax.Array, styles: tuple[jax.Array, ...], blend: jax.Array,
             masks: jax.Array | None = None, *, spec: Spec, grid: tiling.Grid | None = None,
             style_grids: tuple[tiling.Grid | None, ...] = ()):
    """Targets per content: content f32[B, H, W, 3], styles f32[B, Hs, Ws, 3] each (per content),
    region masks f32[S, H, W] shared by the contents (None: blended styles); over tiles when a
    ``grid`` (content) or one of ``style_grids`` is given."""
    if grid is None and not any(style_grids):
        return jax.vmap(lambda c, *ss: objective.targets(w, spec, c, ss, blend, masks))(content, *styles)
    whole = grid or tiling.plan(w.arch, spec.layers, content.shape[1:3], max(content.shape[1:3]))
    return jax.vmap(lambda c, *ss: tiling.targets(w, spec, c, ss, blend, masks, whole, style_grids))(content, *styles)


def _masks_at(masks: np.ndarray | None, hw: tuple[int, int]) -> jax.Array | None:
    """Region masks f32[S, h, w] area-averaged to a scale's content size ``hw``: f32[S, H, W]."""
    if masks is None:
        return None
    return jnp.stack([area_resize(m, *hw) for m in masks]) if masks.shape[1:] != tuple(hw) else jnp.asarray(masks)


def _scale_targets(w: Weights, spec: Spec, s: Options, content_px: np.ndarray, styles: Sequence[np.ndarray],
                   blend: jax.Array, size: int, masks: jax.Array | None = None, plan: tiling.Plan | None = None):
    """Targets for contents f32[B, H, W, 3] at one scale (styles resized by style_scale, colour
    matched per content when asked; ``masks`` f32[S, H, W] at the contents' size)."""
    style_size = max(1, int(math.ceil(s.style_scale * size)))
    styled = []
    for style in styles:
        sp = jnp.asarray(np.asarray(resize_longest(style, style_size)), jnp.float32)
        per_content = []
        for c in content_px:
            si = color.match_color(sp, c) if s.match_histogram else sp
            if s.luminance_only:
                si = color.gray3(color.match_luminance(color.luminance(si), color.luminance(c)))
            per_content.append(si)
        styled.append(jnp.stack(per_content))
    content_in = jnp.asarray(content_px)
    if s.luminance_only:
        content_in = color.gray3(color.luminance(content_in))
    if plan is None:
        return _targets(w, content_in, tuple(styled), blend, masks, spec=spec)
    return _targets(w, content_in, tuple(styled), blend, masks, spec=spec, grid=plan.grid,
                    style_grids=plan.style_grids)


def _initial(s: Options, content_px: np.ndarray, key: jax.Array, init_image, convention: str) -> jax.Array:
    """Starting variable f32[B, H, W, 1|3] in pixels."""
    batch, h, wd, _ = content_px.shape
    if s.init == "content":
        x = jnp.asarray(content_px)
    elif s.init == "random":
        mean = deprocess(jnp.zeros((1, 1, 1, 3)), convention)
        noise = jnp.stack([jax.random.normal(jax.random.fold_in(key, b), (h, wd, 3)) for b in range(batch)])
        x = mean + s.init_noise * noise
    else:
        img = resize_to(np.asarray(init_image, np.uint8), h, wd).astype(np.float32)
        x = jnp.broadcast_to(jnp.asarray(img), (batch, h, wd, 3))
    if s.luminance_only:
        x = color.luminance(x)
    return jnp.asarray(x, jnp.float32)


def _finish(x: jax.Array, content_px: np.ndarray, s: Options) -> np.ndarray:
    """Variable -> f32[B, H, W, 3] output pixels clipped to 0-255, with colour handling."""
    if s.luminance_only:
        rgb = color.with_luminance(x, jnp.asarray(content_px))
    elif s.original_colors:
        rgb = color.original_colors(x, jnp.asarray(content_px))
    else:
        rgb = x
    return np.clip(np.asarray(rgb, np.float32), 0.0, 255.0)


def _finish_best(state, content_px: np.ndarray, s: Options) -> np.ndarray:
    """The result so far (the iterate average with ``ema``, else the best evaluated iterate),
    u8[H, W, 3] (the first of the batch), for snapshots."""
    return to_uint8(_finish(current(state), content_px, s)[0])


__all__ = ["Result", "check_image", "check_masks", "loss_weights", "scale_state", "spec_of", "transfer",
           "transfer_batch"]
