"""The W2 style loss and region masks through the engine, against float64 references on real images.

References: activations of a float64 PyTorch VGG16 written from primitives (tests/torch_reference.py)
and the W2 formula in numpy float64 with symmetric eigendecompositions; finite differences of that
reference for the gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from stylejax.errors import StylejaxError
from stylejax.images import read_image, resize_longest
from stylejax.style import objective
from stylejax.style.objective import LossWeights, Spec
from stylejax.style.transfer import check_masks, transfer
from stylejax.style_stats import area_resize

from conftest import data_path
import torch_reference as tr

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
LAMBDAS = (0.2,) * 5


def _image(name: str, size: int) -> np.ndarray:
    return np.asarray(resize_longest(read_image(data_path("images", name)), size))


@pytest.fixture(scope="module")
def pair():
    """tubingen (content) and starry_night (style) at 48 px: u8[36, 48, 3], u8[30, 48, 3]."""
    return _image("tubingen.jpg", 48), _image("starry_night.jpg", 48)


@pytest.fixture(scope="module")
def torch_acts(vgg16):
    """x f64[H, W, 3] -> {layer: f64[h, w, C]} from the float64 PyTorch VGG16."""
    params = tr.oihw(vgg16.params)

    def acts(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = tr.run(tr.VGG16, params, tr.caffe_input(torch.tensor(np.asarray(x, np.float64))[None]),
                         stop="conv5_1")
        return {k: v[0].permute(1, 2, 0).numpy() for k, v in out.items()}

    return acts


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


def _stats(a: np.ndarray, m: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, E[a a^T]) of a f64[h, w, C] over positions weighted by m f64[h, w]."""
    f = a.reshape(-1, a.shape[-1])
    wts = np.ones(len(f)) if m is None else m.reshape(-1)
    return wts @ f / wts.sum(), (f * wts[:, None]).T @ f / wts.sum()


def _w2(g: tuple, s: tuple, eps: float = 1e-4) -> float:
    """W2 between the Gaussians of statistics g = (mu_G, E_G) and s = (mu_S, E_S), float64."""
    c = len(g[0])
    cg = g[1] - np.outer(g[0], g[0]) + eps * np.eye(c)
    cs = s[1] - np.outer(s[0], s[0]) + eps * np.eye(c)
    rs = _sqrt_psd(cs)
    return float(np.mean((g[0] - s[0]) ** 2) + np.trace(cs + cg - 2 * _sqrt_psd(rs @ cg @ rs)) / c)


def _gram(g: tuple, s: tuple) -> float:
    return float(np.sum((g[1] - s[1]) ** 2) / len(g[0]) ** 2)


def _reference_j(acts, x, content, style, alpha, beta, masks=None, distance=_w2):
    """alpha Jc + beta sum_l lambda_l sum_s d(stats_s(G), stats(style_s)) in float64."""
    ax, ac = acts(x), acts(content)
    styles = style if isinstance(style, list) else [style]
    a_s = [acts(s) for s in styles]
    jc = 0.5 * np.sum((ax["conv4_2"] - ac["conv4_2"]) ** 2)
    js = 0.0
    for lam, l in zip(LAMBDAS, LAYERS):
        if masks is None:
            js += lam * distance(_stats(ax[l]), _stats(a_s[0][l]))
        else:
            h, w = ax[l].shape[:2]
            for m, s in zip(masks, a_s):
                ml = cv2_area(m, h, w)
                js += lam * distance(_stats(ax[l], ml), _stats(s[l]))
    return alpha * jc + beta * js, js


def cv2_area(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """OpenCV's INTER_AREA resize in float64 (the independent mask-to-layer reference)."""
    import cv2

    return cv2.resize(np.asarray(m, np.float64), (w, h), interpolation=cv2.INTER_AREA)


_targets = jax.jit(objective.targets, static_argnums=1)


@functools.partial(jax.jit, static_argnames=("spec",))
def _value_and_grad(w, lw, x, t, *, spec):
    """(J, terms), dJ/dx of the engine's objective: one compile per spec and target structure."""
    return jax.value_and_grad(lambda v: objective.loss_terms(w, spec, lw, v, t), has_aux=True)(x)


def _engine(vgg16, style_loss, content, styles, masks=None, normalize=False):
    # conv="direct": the plain XLA convolutions compile 10x faster than the CPU fast path on 2 cores
    spec = Spec(("conv4_2",), LAYERS, conv="direct", style_loss=style_loss, normalize_gradients=normalize)
    t = _targets(vgg16, spec, jnp.asarray(content, jnp.float32), [jnp.asarray(s, jnp.float32) for s in styles],
                 jnp.full((len(styles),), 1.0 / len(styles), jnp.float32),
                 None if masks is None else jnp.asarray(np.stack(masks), jnp.float32))
    return spec, t


def _terms(vgg16, spec, lw, x, t):
    (total, terms), _ = _value_and_grad(vgg16, lw, jnp.asarray(x, jnp.float32), t, spec=spec)
    return total, terms


def _probe(content, seed=0):
    return (content.astype(np.float32) + np.random.default_rng(seed).normal(0, 8, content.shape)).astype(np.float32)


# ----------------------------------------------------------------------------- W2 through loss_terms

def test_w2_loss_terms_match_float64_reference(vgg16, pair, torch_acts):
    content, style = pair
    spec, t = _engine(vgg16, "w2", content, [style])
    lw = LossWeights.of(1.0, 1e4, 0.0, LAMBDAS)
    x = _probe(content)
    total, terms = _terms(vgg16, spec, lw, x, t)
    ax, a_s = torch_acts(x), torch_acts(style)
    for l in LAYERS:
        ref = _w2(_stats(ax[l]), _stats(a_s[l]))
        assert float(terms[f"style/{l}"]) == pytest.approx(ref, rel=2e-3), l
    ref_j, ref_js = _reference_j(torch_acts, x, content, style, 1.0, 1e4)
    assert float(terms["style"]) == pytest.approx(ref_js, rel=2e-3)
    assert float(total) == pytest.approx(ref_j, rel=2e-3)


def test_w2_gradient_matches_float64_finite_differences(vgg16, pair, torch_acts):
    content, style = pair
    spec, t = _engine(vgg16, "w2", content, [style])
    alpha, beta = 1.0, 1e4
    lw = LossWeights.of(alpha, beta, 0.0, LAMBDAS)
    x = _probe(content, seed=1)
    grad = np.asarray(_value_and_grad(vgg16, lw, jnp.asarray(x), t, spec=spec)[1], np.float64)
    d = np.random.default_rng(2).normal(size=x.shape)
    h = 1e-3  # central differences of the float64 reference along d
    fd = (_reference_j(torch_acts, x + h * d, content, style, alpha, beta)[0]
          - _reference_j(torch_acts, x - h * d, content, style, alpha, beta)[0]) / (2 * h)
    print("directional derivative: engine", np.sum(grad * d), "float64 finite differences", fd)
    assert np.sum(grad * d) == pytest.approx(fd, rel=1e-2)


def test_normalized_gradients_wrap_the_w2_layer_loss(vgg16, pair):
    content, style = pair
    lw = LossWeights.of(1.0, 1.0, 0.0, LAMBDAS)
    spec_s, t_s = _engine(vgg16, "w2", content, [style])
    # normalize_gradients wraps the per-layer W2: same value, L1-normalised gradient per term
    spec_n, t_n = _engine(vgg16, "w2", content, [style], normalize=True)
    x = jnp.asarray(_probe(content), jnp.float32)
    (_, nterms), g = _value_and_grad(vgg16, lw, x, t_n, spec=spec_n)
    _, plain = _terms(vgg16, spec_s, lw, x, t_s)
    assert float(nterms["style"]) == pytest.approx(float(plain["style"]), rel=1e-5)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0


# ----------------------------------------------------------------------------- mask weighting

def test_mask_of_ones_and_complementary_masks_at_the_statistics(vgg16, pair, rng):
    content, _ = pair
    spec = Spec(("conv4_2",), LAYERS, conv="direct")
    acts = objective.activations(vgg16, spec, jnp.asarray(_probe(content)), LAYERS)
    m = rng.uniform(0, 1, content.shape[:2]).astype(np.float32)
    layer_masks = objective.style_masks(vgg16, spec, jnp.asarray(np.stack([m, 1 - m])))
    for l in LAYERS:
        a = acts[l]
        plain = objective.layer_sums(a)
        ones = objective.layer_sums(a, jnp.ones((1, *a.shape[:2]), jnp.float32))
        for got, want in zip(ones, plain):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(jnp.max(want)))
        two = objective.layer_sums(a, layer_masks[l])
        np.testing.assert_allclose(np.asarray(layer_masks[l]).sum(0), 1.0, atol=1e-5)
        for got, want in zip(two, plain):  # region sums add up to the unmasked sums
            np.testing.assert_allclose(np.asarray(got).sum(0), want[0], rtol=1e-4, atol=1e-5 * float(jnp.max(want)))
        # against float64 brute force: mass-weighted region statistics
        a64, ml = np.asarray(a, np.float64), cv2_area(m, *a.shape[:2])
        mean, second = _stats(a64, ml)
        np.testing.assert_allclose(np.asarray(two.first[0]) / float(two.mass[0]), mean, rtol=1e-4,
                                   atol=1e-5 * np.abs(mean).max())
        np.testing.assert_allclose(np.asarray(two.second[0]) / float(two.mass[0]), second, rtol=1e-3,
                                   atol=1e-5 * np.abs(second).max())


def _same_targets(got: dict, want: dict) -> None:
    """Equal style targets; the W2 covariance root through its square (a float32 eigh resolves a
    near-zero eigenvalue only to ~sqrt(eps ||S||), so the root itself differs there)."""
    for k, v in want.items():
        g, v = np.asarray(got[k], np.float64), np.asarray(v, np.float64)
        if k == "cov_sqrt":
            g, v = g @ g, v @ v
        np.testing.assert_allclose(g, v, rtol=1e-5, atol=1e-5 * np.abs(v).max(), err_msg=k)


@pytest.mark.parametrize("style_loss", ["gram", "w2"])
def test_masks_through_the_targets_and_loss_terms(vgg16, pair, torch_acts, style_loss):
    content, style = pair
    x = jnp.asarray(_probe(content, seed=3))
    lw = LossWeights.of(1.0, 10.0, 0.0, LAMBDAS)
    spec, plain = _engine(vgg16, style_loss, content, [style])
    _, ones = _engine(vgg16, style_loss, content, [style], masks=[np.ones(content.shape[:2], np.float32)])
    for l in LAYERS:  # one style, all-ones mask: the same targets and the same terms
        _same_targets(ones["style"][l], plain["style"][l])
        np.testing.assert_allclose(ones["masks"][l], 1.0, atol=1e-5)
    t_plain = _terms(vgg16, spec, lw, x, plain)[1]
    t_ones = _terms(vgg16, spec, lw, x, ones)[1]
    for k in t_plain:
        assert float(t_ones[k]) == pytest.approx(float(t_plain[k]), rel=1e-4), k
    # one style twice under complementary left/right masks: each region's target is the style's,
    # and J is the float64 sum over both regions of each region's distance to it
    left = np.zeros(content.shape[:2], np.float32)
    left[:, : content.shape[1] // 2] = 1.0
    _, two = _engine(vgg16, style_loss, content, [style, style], masks=[left, 1 - left])
    for l in LAYERS:
        _same_targets(two["style"][l], {k: np.concatenate([v] * 2) for k, v in plain["style"][l].items()})
    total, terms = _terms(vgg16, spec, lw, x, two)
    distance = _w2 if style_loss == "w2" else _gram
    ref_j, ref_js = _reference_j(torch_acts, np.asarray(x), content, [style, style], 1.0, 10.0, masks=[left, 1 - left],
                                 distance=distance)
    assert float(terms["style"]) == pytest.approx(ref_js, rel=2e-3)
    assert float(total) == pytest.approx(ref_j, rel=2e-3)


def test_masks_are_checked():
    ok = np.full((30, 40), 255, np.uint8)
    assert check_masks([ok, np.full((60, 80), 0.5, np.float32)], 2, (24, 32)).shape == (2, 30, 40)
    assert check_masks([np.full((60, 81), 1.0, np.float32)], 1, (24, 32)).shape == (1, 60, 81)  # 1.3 % off
    for bad, message in (([ok], "2 style images"), ([ok, np.zeros((30, 40), np.uint8)], "empty"),
                         ([ok, np.ones((30, 41), np.uint8)], "aspect"), ([ok, np.full((30, 40), 2.0)], "within"),
                         ([ok, np.ones((30, 40, 3), np.uint8)], "grayscale"), ([ok, np.ones((30, 40), bool)], "dtype")):
        with pytest.raises(StylejaxError, match=message):
            check_masks(bad, 2, (24, 32))
