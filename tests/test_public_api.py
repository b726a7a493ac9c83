"""A researcher's script on the public API only: jit, grad, vmap, explicit sharding, compile
counts, and refusals of bad shapes and dtypes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stylejax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def w():
    return stylejax.load_weights("vgg16")


@pytest.fixture(scope="module")
def pair():
    r = np.random.default_rng(4)
    yy, xx = np.mgrid[0:24, 0:32]
    content = np.stack([xx * 8, yy * 10, 128 + 60 * np.sin(xx / 3.0)], -1).clip(0, 255).astype(np.uint8)
    return content, r.integers(0, 256, (20, 20, 3)).astype(np.uint8)


def test_every_public_name_is_exported():
    for name in stylejax.__all__:
        assert hasattr(stylejax, name), name
    assert issubclass(stylejax.StylejaxError, ValueError)
    assert os.path.exists(os.path.join(os.path.dirname(stylejax.__file__), "py.typed"))


def test_features_compose_with_jit_grad_jvp_vmap(w, rng):
    x = jnp.asarray(rng.uniform(0, 255, (2, 16, 16, 3)), jnp.float32)
    eager = stylejax.features(w, x, "conv1_2")["conv1_2"]
    jitted = jax.jit(lambda w, x: stylejax.features(w, x, ("conv1_2",))["conv1_2"])(w, x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-4)
    per_image = jax.vmap(lambda xi: stylejax.features(w, xi, "conv1_2")["conv1_2"])(x)
    np.testing.assert_allclose(per_image, eager, rtol=1e-5, atol=1e-4)
    f = lambda v: jnp.sum(stylejax.features(w, v, "pool1")["pool1"])
    g = jax.grad(f)(x)
    t = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    _, jvp = jax.jvp(f, (x,), (t,))
    assert float(jvp) == pytest.approx(float(jnp.vdot(g, t)), rel=1e-3)  # forward == reverse mode


def test_integer_pixels_are_converted_by_value(w, rng):
    u8 = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    a = stylejax.features(w, u8, "conv1_1")["conv1_1"]
    b = stylejax.features(w, u8.astype(np.float32), "conv1_1")["conv1_1"]
    assert a.dtype == jnp.float32 and float(jnp.max(b)) > 1.0
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((16, 16), np.float32), r"f32\[N, H, W, 3\]"),
    (np.zeros((1, 16, 16, 4), np.float32), r"f32\[N, H, W, 3\]"),
    (np.zeros((1, 16, 16, 3), bool), "dtype bool"),
    (np.zeros((1, 16, 16, 3), np.complex64), "dtype complex64"),
])
def test_features_refuse_bad_pixels(w, bad, match):
    with pytest.raises(ValueError, match=match):
        stylejax.features(w, bad, "conv1_1")


def test_a_single_layer_name_is_one_layer(w):
    x = np.zeros((1, 8, 8, 3), np.float32)
    assert list(stylejax.features(w, x, "conv1_1")) == ["conv1_1"]
    with pytest.raises(ValueError, match="unknown layer 'conv9_1'"):
        stylejax.features(w, x, ["conv9_1"])


def test_losses_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        stylejax.content_loss(jnp.ones((4, 4, 8)), jnp.ones((1, 4, 4, 8)))
    with pytest.raises(ValueError, match="target Gram"):
        stylejax.style_layer_loss(jnp.ones((4, 4, 8)), jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="expected"):
        stylejax.gram(jnp.ones((4, 8)))
    a = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(stylejax.gram(a), np.einsum("ijk,ijl->kl", a, a))


def test_transfer_refuses_unit_range_and_bad_images(w, pair):
    content, style = pair
    with pytest.raises(ValueError, match=r"multiply a \[0, 1\] image by 255"):
        stylejax.transfer(content / 255.0, style, weights=w, size=32, iters=1)
    with pytest.raises(ValueError, match="u8\\[H, W, 3\\]"):
        stylejax.transfer(content[..., :2], style, weights=w, size=32, iters=1)
    with pytest.raises(ValueError, match="unknown option 'style_wieght'"):
        stylejax.transfer(content, style, weights=w, style_wieght=1.0)
    with pytest.raises(ValueError, match="within"):
        stylejax.transfer(content.astype(np.float32) * 2, style, weights=w, size=32, iters=1)
    r = stylejax.transfer(content.astype(np.float32), style, weights=w, size=32, iters=1, optimizer="adam")
    assert r.image.dtype == np.uint8 and r.image.shape == content.shape


def test_loss_weight_and_lr_changes_compile_nothing_new(w, pair, caplog):
    content, style = pair
    common = dict(weights=w, size=32, iters=2, optimizer="adam")
    first = stylejax.transfer(content, style, **common)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        second = stylejax.transfer(content, style, content_weight=3.0, style_weight=1e4, tv_weight=1e-3,
                                   style_layer_weights=(1.0, 2.0, 3.0, 4.0, 5.0), lr=4.0, **common)
        compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiled == []
    assert second.loss["total"] != first.loss["total"]


def test_repeat_runs_compile_nothing_new(w, pair, caplog):
    content, style = pair
    common = dict(weights=w, size=32, iters=1, optimizer="gd", lr=1e-5)
    stylejax.transfer(content, style, **common)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        for beta in (1.0, 100.0):
            stylejax.transfer(content, style, style_weight=beta, **common)
        assert [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()] == []


def test_a_jitted_user_step_traces_once(w, pair):
    import chex

    content, style = pair
    spec = stylejax.Spec(("conv2_1",), ("conv1_1", "conv2_1"), conv="direct")
    t = stylejax.style_targets(w, spec, jnp.asarray(content, jnp.float32), [jnp.asarray(style, jnp.float32)],
                               jnp.ones((1,)))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def value_and_grad(lw, x):
        return jax.value_and_grad(lambda v: stylejax.loss_terms(w, spec, lw, v, t)[0])(x)

    x = jnp.asarray(content, jnp.float32)
    for beta in (1.0, 10.0, 1e3):
        value, grad = value_and_grad(stylejax.LossWeights.of(1.0, beta, 0.0, (0.5, 0.5)), x)
        assert np.isfinite(float(value)) and grad.shape == x.shape


def test_divergence_stops_keeps_the_best_finite_iterate(w, pair):
    content, style = pair
    r = stylejax.transfer(content, style, weights=w, size=32, iters=20, optimizer="gd", lr=1e30)
    assert r.diverged and r.iterations < 20
    assert np.isfinite(r.loss["total"]) and np.isfinite(r.history).all()
    assert r.loss["total"] == pytest.approx(r.history[0], rel=1e-6)  # the start was the best finite one


def test_explicit_sharding_mode(tmp_path):
    code = (
        "import jax, jax.numpy as jnp, numpy as np\n"
        "from jax.sharding import AxisType, PartitionSpec as P\n"
        "import stylejax\n"
        "w = stylejax.load_weights('vgg16')\n"
        "x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)\n"
        "ref = stylejax.features(w, x, ('pool2',))['pool2']\n"
        "with jax.set_mesh(jax.make_mesh((2,), ('data',), axis_types=(AxisType.Explicit,))):\n"
        "    xs = jax.device_put(jnp.asarray(x), P('data'))\n"
        "    out = jax.jit(lambda w, x: stylejax.features(w, x, ('pool2',))['pool2'])(w, xs)\n"
        "    assert out.sharding.spec[0] == 'data', out.sharding\n"
        "    g = jax.jit(jax.grad(lambda x: jnp.sum(stylejax.features(w, x, 'pool2')['pool2'])))(xs)\n"
        "np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-3)\n"
        "assert np.isfinite(np.asarray(g)).all()\n"
        "print('ok')\n")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_in_process_cli_leaves_process_settings_alone(tmp_path, pair, monkeypatch):
    from PIL import Image

    from stylejax import runtime
    from stylejax.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("main(argv) changed a process-wide setting")

    monkeypatch.setattr(runtime, "configure", refuse)
    monkeypatch.setattr(runtime, "keep_allocations", refuse)
    monkeypatch.setattr(runtime, "set_xla_flags", refuse)

    content, style = pair
    Image.fromarray(content).save(tmp_path / "c.png")
    Image.fromarray(style).save(tmp_path / "s.png")
    before = os.environ.get("XLA_FLAGS")
    assert main(["transfer", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"),
                 "--size", "32", "--iters", "1", "--quiet"]) == 0
    assert os.environ.get("XLA_FLAGS") == before


def test_readme_python_example_runs_as_written():
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index("```python\n") + len("```python\n")
    code = text[start:text.index("```", start)]
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_transfer_takes_an_optax_optimiser(w, pair):
    import optax

    content, style = pair
    r = stylejax.transfer(content, style, weights=w, size=32, iters=4, optimizer=optax.adam(8.0))
    assert r.loss["total"] < r.history[0] and r.options.to_dict()["optimizer"] == "optax"


def test_cli_python_and_presets_share_one_source_of_defaults():
    from stylejax.cli import build_parser
    from stylejax.cli.transfer_cmd import options_of
    from stylejax.style import config

    args = build_parser().parse_args(["transfer", "c.png", "s.png", "-o", "o.png"])
    assert options_of(args) == config.DEFAULTS == stylejax.Options()
    classic = options_of(build_parser().parse_args(["transfer", "c.png", "s.png", "-o", "o.png",
                                                    "--preset", "classic", "--iters", "7"]), "classic")
    assert classic == config.resolve("classic", iters=7) and classic.weight_units == "neural-style"
    demo = build_parser().parse_args(["demo", "-o", "o.png"])
    assert options_of(demo, base=config.DEMO) == config.resolve(None, **config.DEMO)
