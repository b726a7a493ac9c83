"""Gatys et al. neural style transfer: targets once, then jit-compiled optimisation steps.

The optimised variable is the image in **pixel space** (RGB, [0, 255], unclipped while
optimising), f32[H, W, 3] per image; with ``luminance_only`` it is the luminance f32[H, W, 1]
(shown to the network as a gray image). Preprocessing for the weights happens inside the
objective, so any backbone of :mod:`stylejax.models` and any convention works.

One optimisation step (value, gradient, optax update) is one compiled call; the whole batch of
images is ``vmap``-ed through it, each image with its own optimiser state. Between calls the
host only reads the scalar loss (for the progress bar and for keeping the best image).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stylejax import color, losses, models, temporal
from stylejax.errors import StylejaxError
from stylejax.images import resize_longest, resize_to, to_uint8
from stylejax.preprocessing import deprocess, preprocess
from stylejax.swag import swag
from stylejax.weights import Weights

DEFAULT_CONTENT_LAYER = {"vgg16": "conv4_2", "vgg19": "conv4_2"}
DEFAULT_STYLE_LAYERS = {"vgg16": ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
                        "vgg19": ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")}
OPTIMIZERS = ("lbfgs", "adam")
PRECISIONS = ("float32", "bfloat16")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0}


def default_layers(arch: str) -> tuple[str, tuple[str, ...]]:
    """(content layer, style layers) for ``arch``; raises StylejaxError for an arch with none."""
    if arch in DEFAULT_CONTENT_LAYER:
        return DEFAULT_CONTENT_LAYER[arch], DEFAULT_STYLE_LAYERS[arch]
    convs = [layer.name for layer in models.get(arch).layers if layer.kind == "conv"]
    if len(convs) < 5:
        raise StylejaxError(f"no default style-transfer layers for {arch}; give --content-layer and --style-layers")
    return convs[len(convs) * 2 // 3], tuple(convs[i * (len(convs) - 1) // 4] for i in range(5))


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Objective:
    """Static description of ``J = alpha Jc + beta sum_l lambda_l Js[l] + gamma Jtv`` (hashable)."""

    arch: str
    convention: str
    content_layer: str
    style_layers: tuple[str, ...]
    style_layer_weights: tuple[float, ...]
    content_weight: float
    style_weight: float
    tv_weight: float = 0.0
    pooling: str = "max"
    normalize_gradients: bool = False
    swag: float | None = None  # SWAG temperature: softmax-smooth activations before the losses
    precision: str = "float32"  # dtype of the network's convolutions; losses stay float32

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.content_layer, *self.style_layers)))

    def features(self, params, pixels: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        """Activations of RGB pixels f32[N, H, W, 3] at ``layers``, SWAG-smoothed if enabled."""
        x = preprocess(pixels, self.convention).astype(self.precision)
        acts = models.get(self.arch).fast_features(params, x, tuple(layers), pooling=self.pooling)
        acts = {k: v.astype(jnp.float32) for k, v in acts.items()}
        if self.swag is None:
            return acts
        return {k: swag(v, self.swag, rescale=True) for k, v in acts.items()}


@dataclass(frozen=True)
class Optimizer:
    """An optax optimiser by name: ``lbfgs`` (no line search, step ``lr``, like torch.optim.LBFGS
    and jcjohnson/neural-style) or ``adam``."""

    name: str = "lbfgs"
    lr: float = 1.0
    memory: int = 100

    def build(self) -> optax.GradientTransformation:
        if self.name == "lbfgs":
            return optax.lbfgs(learning_rate=self.lr, memory_size=self.memory, linesearch=None)
        if self.name == "adam":
            return optax.adam(self.lr)
        raise StylejaxError(f"unknown optimizer {self.name!r}; use one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class Settings:
    """Everything a transfer run depends on (see ``stylejax transfer --help``)."""

    size: int = 256
    iters: int = 300
    optimizer: str = "lbfgs"
    lr: float | None = None
    init: str = "content"  # "content", "random" or a path (the CLI reads it)
    content_weight: float = 1.0
    style_weight: float = 1e3
    tv_weight: float = 0.0
    content_layer: str | None = None
    style_layers: tuple[str, ...] | None = None
    style_layer_weights: tuple[float, ...] | None = None
    style_blend: tuple[float, ...] | None = None
    style_scale: float = 1.0
    original_colors: bool = False
    luminance_only: bool = False
    match_histogram: bool = False
    normalize_gradients: bool = False
    swag: float | None = None
    precision: str = "float32"
    scales: tuple[int, ...] | None = None
    pooling: str = "max"
    seed: int = 0
    init_noise: float = 0.001
    steps_per_call: int = 1
    lbfgs_memory: int = 100

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(self.scales) if self.scales else (self.size,)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr"] = self.learning_rate
        return d


def validate(settings: Settings, arch: str, n_styles: int) -> Settings:
    """Check every setting before any work; fills in default layers. Raises StylejaxError."""
    backbone = models.get(arch)
    content_layer, style_layers = default_layers(arch) if (
        settings.content_layer is None or settings.style_layers is None) else (None, None)
    s = replace(settings,
                content_layer=settings.content_layer or content_layer,
                style_layers=tuple(settings.style_layers or style_layers))
    backbone.check_layers([s.content_layer])
    backbone.check_layers(list(s.style_layers))
    if len(set(s.style_layers)) != len(s.style_layers):
        raise StylejaxError(f"style layers repeat a layer: {','.join(s.style_layers)}")
    if s.optimizer not in OPTIMIZERS:
        raise StylejaxError(f"unknown optimizer {s.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if s.pooling not in ("max", "avg"):
        raise StylejaxError(f"unknown pooling {s.pooling!r}; use max or avg")
    for name in ("iters", "size", "steps_per_call", "lbfgs_memory"):
        value = getattr(s, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise StylejaxError(f"{name} must be a positive integer, got {value!r}")
    for name in ("content_weight", "style_weight", "tv_weight", "style_scale", "init_noise"):
        _check_number(name, getattr(s, name))
    if s.style_scale <= 0:
        raise StylejaxError(f"style_scale must be > 0, got {s.style_scale!r}")
    if s.precision not in PRECISIONS:
        raise StylejaxError(f"unknown precision {s.precision!r}; use one of {', '.join(PRECISIONS)}")
    if s.swag is not None:
        _check_number("swag", s.swag)
        if s.swag <= 0:
            raise StylejaxError(f"swag temperature must be > 0, got {s.swag!r}")
    _check_number("lr", s.learning_rate)
    if s.learning_rate <= 0:
        raise StylejaxError(f"lr must be > 0, got {s.learning_rate!r}")
    if s.style_layer_weights is not None:
        if len(s.style_layer_weights) != len(s.style_layers):
            raise StylejaxError(f"{len(s.style_layer_weights)} style layer weights for "
                                f"{len(s.style_layers)} style layers ({','.join(s.style_layers)})")
        for w in s.style_layer_weights:
            _check_number("style layer weight", w)
    if n_styles < 1:
        raise StylejaxError("no style image given")
    if s.style_blend is not None:
        if len(s.style_blend) != n_styles:
            raise StylejaxError(f"{len(s.style_blend)} blend weights for {n_styles} style images")
        for w in s.style_blend:
            _check_number("style blend weight", w)
        if sum(s.style_blend) <= 0:
            raise StylejaxError("style blend weights sum to 0")
    if s.scales is not None:
        if not s.scales or any(not isinstance(v, (int, np.integer)) or v < 1 for v in s.scales):
            raise StylejaxError(f"scales must be positive integers, got {s.scales!r}")
    if s.original_colors and s.luminance_only:
        raise StylejaxError("use either original_colors or luminance_only, not both")
    return s


def _check_number(name: str, value) -> None:
    try:
        ok = math.isfinite(float(value)) and float(value) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise StylejaxError(f"{name} must be a finite number >= 0, got {value!r}")


# ----------------------------------------------------------------------------- objective

def _to_pixels(x: jax.Array) -> jax.Array:
    """The optimised variable f32[..., H, W, 1 or 3] as RGB pixels."""
    return color.gray3(x) if x.shape[-1] == 1 else x


def objective_terms(obj: Objective, params, x: jax.Array, targets: dict) -> tuple[jax.Array, dict]:
    """``(J, terms)`` for one image ``x`` f32[H, W, 1|3] (pixels) against ``targets``.

    ``targets = {"content": f32[h, w, C], "style": {layer: f32[C, C] normalised Gram}}``, and
    optionally ``"temporal": {"image": f32[H, W, 3], "mask": f32[H, W], "weight": f32[]}``, which
    adds ``weight * Jt`` (:func:`stylejax.temporal.temporal_loss` of the pixels against the
    image); its weight is traced, so it changes nothing compiled.
    ``terms`` holds the unweighted ``content``, ``style`` (``sum_l lambda_l Js[l]``), ``tv``,
    ``temporal`` (when given) and each ``style/<layer>``.
    """
    pixels = _to_pixels(x)
    acts = {k: v[0] for k, v in obj.features(params, pixels[None], obj.layers).items()}
    if obj.normalize_gradients:
        jc = losses.normalized_term(losses.content_loss, acts[obj.content_layer], targets["content"])
        per_layer = {l: losses.normalized_term(losses.style_layer_loss, acts[l], targets["style"][l])
                     for l in obj.style_layers}
    else:
        jc = losses.content_loss(acts[obj.content_layer], targets["content"])
        per_layer = {l: losses.style_layer_loss(acts[l], targets["style"][l]) for l in obj.style_layers}
    js = sum(w * per_layer[l] for l, w in zip(obj.style_layers, obj.style_layer_weights))
    jtv = losses.tv_loss(pixels) if obj.tv_weight else jnp.zeros((), jnp.float32)
    total = losses.total_loss(jc, js, jtv, obj.content_weight, obj.style_weight, obj.tv_weight)
    terms = {"total": total, "content": jc, "style": js, "tv": jtv}
    if "temporal" in targets:
        t = targets["temporal"]
        jt = temporal.temporal_loss(pixels, t["image"], t["mask"])
        total = total + t["weight"] * jt
        terms.update(total=total, temporal=jt)
    terms.update({f"style/{l}": v for l, v in per_layer.items()})
    return total, terms


@partial(jax.jit, static_argnames=("obj",))
def evaluate(params, x: jax.Array, targets: dict, *, obj: Objective) -> dict:
    """Terms of :func:`objective_terms` for a batch x f32[B, H, W, 1|3] (targets batched on axis 0)."""
    return jax.vmap(lambda xi, ti: objective_terms(obj, params, xi, ti)[1])(x, targets)


@partial(jax.jit, static_argnames=("obj", "opt", "steps", "unroll"))
def steps(params, x: jax.Array, opt_state, targets: dict, *, obj: Objective, opt: Optimizer, steps: int = 1,
          unroll: bool = True):
    """``steps`` optimisation steps on a batch x f32[B, H, W, 1|3], one compiled call.

    ``steps > 1`` runs a ``fori_loop`` inside the call, unrolled unless ``unroll=False``.

    Returns ``(x_new, opt_state, x_evaluated, loss)``: ``loss`` f32[B] is ``J`` at
    ``x_evaluated``, the iterate just before the last update.
    """
    tx = opt.build()

    def one(xi, si, ti):
        def body(_, carry):
            xc, sc, _, _ = carry
            loss, grad = jax.value_and_grad(lambda v: objective_terms(obj, params, v, ti)[0])(xc)
            updates, sc = tx.update(grad, sc, xc)
            return optax.apply_updates(xc, updates), sc, xc, loss

        carry = (xi, si, xi, jnp.zeros((), jnp.float32))
        if steps == 1:
            return body(0, carry)
        return jax.lax.fori_loop(0, steps, body, carry, unroll=unroll)

    if x.shape[0] == 1:  # no vmap for a single image: measured 9% faster on XLA:CPU
        out = one(*jax.tree.map(lambda a: a[0], (x, opt_state, targets)))
        return jax.tree.map(lambda a: a[None], out)
    return jax.vmap(one)(x, opt_state, targets)


def init_state(opt: Optimizer, x: jax.Array):
    """Per-image optimiser state for a batch x f32[B, ...]."""
    return jax.vmap(opt.build().init)(x)


@partial(jax.jit, static_argnames=("obj",))
def _targets(params, content_pixels, style_pixels, blend, *, obj: Objective) -> dict:
    """content f32[B, H, W, 3], styles: tuple of f32[B, Hs, Ws, 3] (B per content), blend f32[S]."""
    content = obj.features(params, content_pixels, (obj.content_layer,))[obj.content_layer]
    grams = {l: 0.0 for l in obj.style_layers}
    for w, style in zip(blend, style_pixels):
        acts = obj.features(params, style, obj.style_layers)
        for l in obj.style_layers:
            grams[l] = grams[l] + w * losses.normalized_gram(acts[l])
    return {"content": content, "style": grams}


# ----------------------------------------------------------------------------- the run

@dataclass
class Result:
    """A finished (or interrupted) run: ``images`` u8[B, H, W, 3] and what it measured."""

    images: np.ndarray
    loss: list[dict]
    iterations: int
    seconds: float
    s_per_iter: float | None
    interrupted: bool
    history: list[float] = field(default_factory=list)
    per_scale: list[dict] = field(default_factory=list)
    objective: dict = field(default_factory=dict)


Callback = Callable[[int, int, float, Callable[[], np.ndarray]], None]


def classic_weights(arch: str, params, content_shape: tuple[int, int], content_layer: str,
                    style_layers: Sequence[str], content_strength: float = 5.0, style_strength: float = 100.0,
                    pooling: str = "max") -> tuple[float, float, tuple[float, ...]]:
    """(alpha, beta, lambdas) equal to jcjohnson/neural-style's ``-content_weight 5 -style_weight 100``.

    Its ContentLoss is ``w_c mean((a - p)^2) = w_c (2 / (C h w)) Jc`` and its StyleLoss is
    ``w_s mean((G/(C h w) - T)^2) = (w_s / C^2) Js[l]`` (Gram over the element count, MSE over C^2
    entries), so ``alpha = 2 w_c / (C h w)`` at the content layer, ``beta = w_s`` and
    ``lambda_l = 1 / C_l^2``.
    """
    backbone = models.get(arch)
    layers = tuple(dict.fromkeys((content_layer, *style_layers)))
    x = jax.ShapeDtypeStruct((1, *content_shape, 3), jnp.float32)
    shapes = jax.eval_shape(lambda p, v: backbone.features(p, v, layers, pooling=pooling), params, x)
    _, h, w, c = shapes[content_layer].shape
    alpha = 2.0 * content_strength / (c * h * w)
    lambdas = tuple(1.0 / shapes[l].shape[-1] ** 2 for l in style_layers)
    return alpha, float(style_strength), lambdas


def _resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(resize_longest(img, size)) for img in images])


def _style_at(style: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(resize_longest(style, max(1, int(math.ceil(size)))))


def transfer_batch(w: Weights, contents: np.ndarray, styles: Sequence[np.ndarray], settings: Settings, *,
                   key: jax.Array | None = None, init_image: np.ndarray | None = None,
                   callback: Callback | None = None, temporal_target: dict | None = None) -> Result:
    """Style a batch of same-size contents u8[B, H, W, 3] with ``styles`` (u8[Hs, Ws, 3] each).

    Every content gets its own optimiser state (the step is ``vmap``-ed); style Grams are blended
    by ``settings.style_blend``. ``key`` seeds random init (default ``PRNGKey(settings.seed)``);
    image ``b`` uses ``fold_in(key, b)``. ``init_image`` u8[H, W, 3] is used for ``init`` paths.
    ``callback(done, total, loss, get_images)`` runs after every compiled call. Ctrl-C between calls
    stops the run and returns the best images so far with ``interrupted=True``.
    ``temporal_target``: ``{"image": f32[B, H, W, 3], "mask": f32[B, H, W], "weight": float}`` at
    the output size adds the temporal term of :func:`objective_terms` (resized for coarser scales).
    """
    contents = np.asarray(contents)
    if contents.ndim != 4 or contents.shape[-1] != 3:
        raise StylejaxError(f"contents must be u8[B, H, W, 3], got shape {contents.shape}")
    s = validate(settings, w.arch, len(styles))
    if s.init not in ("content", "random") and init_image is None:
        raise StylejaxError(f"init {s.init!r}: give init_image (or use content / random)")
    key = jax.random.PRNGKey(s.seed) if key is None else key
    blend = np.asarray(s.style_blend or [1.0] * len(styles), np.float64)
    blend = tuple(float(b) for b in blend / blend.sum())
    layer_weights = tuple(losses.default_layer_weights(s.style_layers, s.style_layer_weights).values())
    obj = Objective(w.arch, w.preprocessing, s.content_layer, tuple(s.style_layers), layer_weights,
                    float(s.content_weight), float(s.style_weight), float(s.tv_weight), s.pooling,
                    bool(s.normalize_gradients), s.swag, s.precision)
    opt = Optimizer(s.optimizer, s.learning_rate, s.lbfgs_memory)
    batch = contents.shape[0]
    total = s.iters * len(s.sizes)
    done, history, per_scale = 0, [], []
    best_loss = np.full(batch, np.inf)
    best_x = None
    x = None
    interrupted = False
    t_start = time.perf_counter()
    try:
        for scale_index, size in enumerate(s.sizes):
            content_px = _resize_batch(contents, size).astype(np.float32)
            targets, x0 = _scale_targets(w, obj, s, content_px, styles, blend, size)
            targets = _with_temporal(targets, temporal_target, content_px.shape[1:3])
            if x is None:
                x = _initial(s, content_px, key, init_image, w.preprocessing)
            else:
                x = jax.image.resize(x, (*x.shape[:1], *content_px.shape[1:3], x.shape[-1]), "bilinear")
            state = init_state(opt, x)
            x, state, targets = _shard_batch((x, state, targets), batch)
            best_loss[:] = np.inf
            call_times: list[float] = []
            k = 0
            while k < s.iters:
                n = min(s.steps_per_call, s.iters - k)
                t0 = time.perf_counter()
                x_new, state, x_eval, loss = steps(w.params, x, state, targets, obj=obj, opt=opt, steps=n)
                loss_np = np.asarray(loss)  # the one host read per call
                call_times.append((time.perf_counter() - t0) / n)
                better = loss_np < best_loss
                if best_x is None or best_x.shape != x_eval.shape:
                    best_x = x_eval
                if better.any():
                    best_x = jnp.where(jnp.asarray(better)[:, None, None, None], x_eval, best_x)
                    best_loss = np.where(better, loss_np, best_loss)
                x = x_new
                k += n
                done += n
                history.append(float(loss_np.mean()))
                if callback is not None:
                    callback(done, total, float(loss_np.mean()),
                             lambda xe=x_eval, cp=content_px: _finish(xe, cp, s))
            # the final iterate may be better than any evaluated one
            final_terms = evaluate(w.params, x, targets, obj=obj)
            final_loss = np.asarray(final_terms["total"])
            better = final_loss < best_loss
            best_x = jnp.where(jnp.asarray(better)[:, None, None, None], x, best_x)
            best_loss = np.where(better, final_loss, best_loss)
            x = best_x
            steady = call_times[1:] or call_times
            per_scale.append({"size": size, "shape": list(content_px.shape[1:3]), "iterations": k,
                              "s_per_iter": float(np.median(steady)), "first_call_s": call_times[0]})
    except KeyboardInterrupt:
        interrupted = True
        if best_x is None:
            raise
        x = best_x
    seconds = time.perf_counter() - t_start
    content_px = _match_shape(contents, x.shape[1:3])
    targets, _ = _scale_targets(w, obj, s, content_px, styles, blend, max(x.shape[1:3]))
    targets = _with_temporal(targets, temporal_target, content_px.shape[1:3])
    terms = evaluate(w.params, x, targets, obj=obj)
    loss = [{k: float(v[b]) for k, v in terms.items()} for b in range(batch)]
    images = _finish(x, content_px, s)
    return Result(images=images, loss=loss, iterations=done, seconds=seconds,
                  s_per_iter=per_scale[-1]["s_per_iter"] if per_scale else None,
                  interrupted=interrupted, history=history, per_scale=per_scale,
                  objective={"alpha": obj.content_weight, "beta": obj.style_weight, "gamma": obj.tv_weight,
                             "style_layer_weights": dict(zip(obj.style_layers, obj.style_layer_weights)),
                             "content_layer": obj.content_layer, "optimized": "pixels (RGB 0-255)"
                             if not s.luminance_only else "luminance Y (0-255)"})


def _with_temporal(targets: dict, temporal_target: dict | None, hw: tuple[int, int]) -> dict:
    """``targets`` plus the temporal target resized (bilinear) to ``hw``, weight traced f32[B]."""
    if temporal_target is None:
        return targets
    image = jnp.asarray(temporal_target["image"], jnp.float32)
    mask = jnp.asarray(temporal_target["mask"], jnp.float32)
    batch = image.shape[0]
    if image.shape[1:3] != tuple(hw):
        image = jax.image.resize(image, (batch, *hw, 3), "bilinear")
        mask = jax.image.resize(mask, (batch, *hw), "bilinear")
    weight = jnp.full((batch,), temporal_target["weight"], jnp.float32)
    return {**targets, "temporal": {"image": image, "mask": mask, "weight": weight}}


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


def _match_shape(contents: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return np.stack([resize_to(c, int(hw[0]), int(hw[1])) for c in contents]).astype(np.float32)


def _scale_targets(w: Weights, obj: Objective, s: Settings, content_px: np.ndarray,
                   styles: Sequence[np.ndarray], blend: tuple[float, ...], size: int):
    """Targets for contents f32[B, H, W, 3] at one scale (styles resized by style_scale)."""
    style_size = max(1, int(math.ceil(s.style_scale * size)))
    batch = content_px.shape[0]
    styled = []
    for style in styles:
        sp = _style_at(np.asarray(style), style_size).astype(np.float32)
        per_content = []
        for b in range(batch):
            si = jnp.asarray(sp)
            if s.match_histogram:
                si = color.match_color(si, content_px[b])
            if s.luminance_only:
                y = color.match_luminance(color.luminance(si), color.luminance(content_px[b]))
                si = color.gray3(y)
            per_content.append(si)
        styled.append(jnp.stack(per_content))
    content_in = jnp.asarray(content_px)
    if s.luminance_only:
        content_in = color.gray3(color.luminance(content_in))
    targets = _targets(w.params, content_in, tuple(styled), jnp.asarray(blend, jnp.float32), obj=obj)
    return targets, content_in


def _initial(s: Settings, content_px: np.ndarray, key: jax.Array, init_image, convention: str) -> jax.Array:
    """Starting variable f32[B, H, W, 1|3] in pixels."""
    batch, h, wd, _ = content_px.shape
    if s.init == "content":
        x = jnp.asarray(content_px)
    elif s.init == "random":
        mean = deprocess(jnp.zeros((3,)), convention)
        noise = jnp.stack([jax.random.normal(jax.random.fold_in(key, b), (h, wd, 3)) for b in range(batch)])
        x = mean + s.init_noise * noise
    else:
        img = resize_to(np.asarray(init_image, np.uint8), h, wd).astype(np.float32)
        x = jnp.broadcast_to(jnp.asarray(img), (batch, h, wd, 3))
    if s.luminance_only:
        x = color.luminance(x)
    return jnp.asarray(x, jnp.float32)


def _finish(x: jax.Array, content_px: np.ndarray, s: Settings) -> np.ndarray:
    """Variable -> u8[B, H, W, 3] output, with colour handling."""
    if s.luminance_only:
        rgb = color.with_luminance(x, jnp.asarray(content_px))
    elif s.original_colors:
        rgb = color.original_colors(x, jnp.asarray(content_px))
    else:
        rgb = x
    return to_uint8(np.asarray(rgb))


def transfer(w: Weights, content: np.ndarray, styles: Sequence[np.ndarray], settings: Settings, *,
             key: jax.Array | None = None, init_image: np.ndarray | None = None,
             callback: Callback | None = None, temporal_target: dict | None = None) -> Result:
    """Style one content u8[H, W, 3] (already at any size; resized to ``settings.sizes``).

    ``temporal_target``: ``{"image": f32[H, W, 3], "mask": f32[H, W], "weight": float}``, see
    :func:`transfer_batch`.
    """
    content = np.asarray(content, np.uint8)
    if temporal_target is not None:
        temporal_target = {"image": np.asarray(temporal_target["image"], np.float32)[None],
                           "mask": np.asarray(temporal_target["mask"], np.float32)[None],
                           "weight": float(temporal_target["weight"])}
    return transfer_batch(w, content[None], styles, settings, key=key, init_image=init_image, callback=callback,
                          temporal_target=temporal_target)
