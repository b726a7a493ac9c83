"""The VGG forward under jit, grad, vmap and sharding; pooling; layer validation."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax import models
from stylejax.errors import StylejaxError
from stylejax.models import vgg
from stylejax.preprocessing import deprocess, preprocess


def _small_params(arch: str, rng) -> dict:
    """Random VGG parameters (He init) for shape-level tests that need no real weights."""
    params, cin = {}, 3
    for layer in vgg.layer_table(arch):
        if layer.kind == "conv":
            params[layer.name] = {
                "kernel": jnp.asarray(rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, layer.channels)), jnp.float32),
                "bias": jnp.asarray(rng.normal(0, 0.01, layer.channels), jnp.float32)}
            cin = layer.channels
    return params


def test_layer_tables():
    assert [l.name for l in vgg.layer_table("vgg16") if l.kind == "conv"][-1] == "conv5_3"
    assert len(vgg.conv_names("vgg16")) == 13 and len(vgg.conv_names("vgg19")) == 16
    assert vgg.conv_names("vgg19")[-1] == "conv5_4"
    assert [l.name for l in vgg.layer_table("vgg19") if l.kind == "pool"] == [f"pool{i}" for i in range(1, 6)]


def test_shapes_and_post_relu(vgg16, rng):
    x = preprocess(rng.uniform(0, 255, (2, 37, 50, 3)), "caffe")
    out = vgg.features(vgg16.params, x, ["conv1_1", "pool1", "conv3_2", "pool5"])
    assert out["conv1_1"].shape == (2, 37, 50, 64)
    assert out["pool1"].shape == (2, 18, 25, 64)
    assert out["conv3_2"].shape == (2, 9, 12, 256)
    assert out["pool5"].shape == (2, 1, 1, 512)
    assert float(out["conv3_2"].min()) >= 0.0


def test_avg_pooling_is_mean_of_2x2(vgg16, rng):
    x = preprocess(rng.uniform(0, 255, (1, 16, 16, 3)), "caffe")
    out = vgg.features(vgg16.params, x, ["conv1_2", "pool1"], pooling="avg")
    a = np.asarray(out["conv1_2"])
    expected = a.reshape(1, 8, 2, 8, 2, 64).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(out["pool1"]), expected, rtol=1e-6, atol=1e-6)
    mx = vgg.features(vgg16.params, x, ["pool1"])["pool1"]
    np.testing.assert_allclose(np.asarray(mx), a.reshape(1, 8, 2, 8, 2, 64).max(axis=(2, 4)), rtol=1e-6)


def test_unknown_layer_lists_valid_names(vgg16):
    with pytest.raises(StylejaxError, match="valid layers: conv1_1, conv1_2, pool1"):
        vgg.features(vgg16.params, jnp.zeros((1, 8, 8, 3)), ["conv9_9"])
    with pytest.raises(StylejaxError, match="unknown arch"):
        models.get("vgg17")


def test_stops_after_deepest_layer(vgg16):
    """Asking for conv1_1 only traces one convolution."""
    jaxpr = jax.make_jaxpr(lambda x: vgg.features(vgg16.params, x, ["conv1_1"]))(jnp.zeros((1, 8, 8, 3)))
    assert str(jaxpr).count("conv_general_dilated") == 1
    jaxpr = jax.make_jaxpr(lambda x: vgg.features(vgg16.params, x, ["conv3_1"]))(jnp.zeros((1, 8, 8, 3)))
    assert str(jaxpr).count("conv_general_dilated") == 5


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_grad_matches_finite_differences(vgg16, rng, pooling):
    """d/dx of a feature-based scalar against central differences, in float64."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), vgg16.params)
        x = jnp.asarray(rng.uniform(-50, 50, (1, 12, 12, 3)), jnp.float64)

        def f(img):
            acts = vgg.features(params, img, ["conv2_1"], pooling=pooling)
            return jnp.sum(acts["conv2_1"] ** 2) * 1e-4

        g = np.asarray(jax.grad(f)(x))
        assert g.dtype == np.float64
        direction = jnp.asarray(rng.normal(size=x.shape))
        direction = direction / jnp.linalg.norm(direction)
        eps = 1e-4
        fd = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
        assert float(jnp.vdot(jnp.asarray(g), direction)) == pytest.approx(float(fd), rel=1e-6)
        idx = (0, 5, 6, 1)
        e = jnp.zeros_like(x).at[idx].set(1.0)
        fd1 = (f(x + eps * e) - f(x - eps * e)) / (2 * eps)
        assert g[idx] == pytest.approx(float(fd1), rel=1e-6, abs=1e-9)


def test_vmap_and_batch_equal_per_image(vgg16, rng):
    x = preprocess(rng.uniform(0, 255, (3, 20, 24, 3)), "caffe")
    layers = ("conv2_2", "conv3_1")
    batched = vgg.features(vgg16.params, x, layers)
    mapped = jax.vmap(lambda im: vgg.features(vgg16.params, im[None], layers))(x)
    for i in range(3):
        single = vgg.features(vgg16.params, x[i:i + 1], layers)
        for name in layers:
            np.testing.assert_allclose(np.asarray(batched[name][i]), np.asarray(single[name][0]), rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(np.asarray(mapped[name][i, 0]), np.asarray(single[name][0]), rtol=1e-5, atol=1e-4)


def test_jit_does_not_recompile(vgg16, rng):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(params, x):
        return vgg.features(params, x, ("conv1_2",))["conv1_2"].sum()

    x = jnp.asarray(rng.uniform(-100, 100, (1, 16, 16, 3)), jnp.float32)
    a = f(vgg16.params, x)
    b = f(vgg16.params, x + 1.0)
    assert np.isfinite(float(a)) and float(a) != float(b)


def test_sharded_batch_equals_unsharded(vgg16, rng):
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    n = 2 * len(devices)
    x = jnp.asarray(preprocess(rng.uniform(0, 255, (n, 16, 16, 3)), "caffe"))
    f = jax.jit(lambda p, im: vgg.features(p, im, ("conv2_1",))["conv2_1"])
    ref = f(vgg16.params, x)
    sharded = f(vgg16.params, jax.device_put(x, spec))
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(ref), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("convention", ["caffe", "torchvision"])
def test_preprocess_round_trip(convention, rng):
    pixels = rng.integers(0, 256, (2, 5, 7, 3)).astype(np.float32)
    back = np.asarray(deprocess(preprocess(pixels, convention), convention))
    np.testing.assert_allclose(back, pixels, atol=1e-4)
    np.testing.assert_array_equal(np.rint(back).astype(np.uint8), pixels.astype(np.uint8))


def test_caffe_convention_values():
    x = np.asarray(preprocess(np.array([[[10.0, 20.0, 30.0]]]), "caffe"))
    np.testing.assert_allclose(x[0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    t = np.asarray(preprocess(np.array([[[255.0, 0.0, 127.5]]]), "torchvision"))
    np.testing.assert_allclose(t[0, 0], [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.5 - 0.406) / 0.225], rtol=1e-5)


def test_vgg19_random_params_forward(rng):
    params = _small_params("vgg19", rng)
    out = vgg.features(params, jnp.zeros((1, 32, 32, 3)), ["conv5_4", "pool5"])
    assert out["conv5_4"].shape == (1, 2, 2, 512) and out["pool5"].shape == (1, 1, 1, 512)
    assert vgg.arch_of(params) == "vgg19"


def test_remat_gives_the_same_values_and_gradients(vgg16, rng):
    x = jnp.asarray(preprocess(rng.uniform(0, 255, (1, 20, 20, 3)), "caffe"))
    layers = ("conv1_1", "conv3_1", "conv4_2")

    def f(img, remat):
        acts = vgg.features(vgg16.params, img, layers, remat=remat)
        return sum(jnp.sum(a ** 2) * 1e-6 for a in acts.values())

    plain, checkpointed = jax.value_and_grad(f)(x, False), jax.value_and_grad(f)(x, True)
    assert float(plain[0]) == pytest.approx(float(checkpointed[0]), rel=1e-6)
    np.testing.assert_allclose(np.asarray(checkpointed[1]), np.asarray(plain[1]), rtol=1e-5, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda img: f(img, True)))(x))
    assert "remat" in jaxpr or "checkpoint" in jaxpr
