"""Iterate averaging, sqrt(2) scales with Adam carried over, and the modern preset, end to end on
the real VGG16 at tiny sizes, against independent float64 references."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stylejax.activations import features
from stylejax.images import resize_longest
from stylejax.cli import main
from stylejax.errors import StylejaxError
from stylejax.style import config, crowsonkb
from stylejax.style.loop import Hyper, direction, init_state, steps
from stylejax.style.objective import loss_terms
from stylejax.style.transfer import _scale_targets, loss_weights, scale_state, spec_of, transfer

B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.scale_by_adam's defaults
#: Shallow layers keep the compiles short; every run below shares this spec, the sizes 16, 23 and
#: 32 and Adam with an average, so the compiled steps are shared. Five style layers: the preset's.
SHALLOW = dict(content_layers=("conv2_2",), style_layers=("conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2"))


@functools.partial(jax.jit, static_argnames=("spec",))
def _value_and_grad(w, lw, x, t, *, spec):
    """J and dJ/dx at one image x f32[H, W, 3] against targets t (the reference's gradients)."""
    return jax.value_and_grad(lambda v: loss_terms(w, spec, lw, v, t)[0])(x)


@pytest.fixture(scope="module")
def images():
    r = np.random.default_rng(2)
    yy, xx = np.mgrid[0:32, 0:32]
    content = np.stack([xx * 8, yy * 8, 128 + 60 * np.sin(xx / 3.0)], -1).clip(0, 255).astype(np.uint8)
    return content, r.integers(0, 256, (24, 24, 3)).astype(np.uint8)


def _objective(w, s, content_px, style, size):
    """Validated options, spec, loss weights and the targets (batch of one) at one size."""
    s = config.validate(s, w.arch, 1)
    spec = spec_of(s)
    targets = _scale_targets(w, spec, s, content_px, [style], jnp.ones((1,), jnp.float32), size)
    return s, spec, loss_weights(w, spec, s, content_px.shape[1:3]), targets


def test_sizes_iterations_and_refusals():
    o = config.Options(size=512, min_scale=128, iters=500, iters_first=1000)
    assert o.sizes == (128, 181, 256, 362, 512)
    assert o.total_iters == 1000 + 4 * 500 and o.iters_at(0) == 1000 and o.iters_at(3) == 500
    assert config.Options(size=512, min_scale=128, scales=(100, 200)).sizes == (100, 200)  # --scales wins
    for bad, message in ((dict(ema=1.5), "ema must be a decay"), (dict(ema=0.0), "ema must be a decay"),
                         (dict(ema=-1), "ema must be a decay"), (dict(ema=True), "ema must be a decay"),
                         (dict(min_scale=0), "min_scale must be an integer >= 1"),
                         (dict(iters_first=0), "iters_first must be an integer >= 1")):
        with pytest.raises(StylejaxError, match=message):
            config.validate(config.Options(**bad), "vgg16", 1)


def test_ema_output_is_the_average_of_the_iterates(vgg16, images):
    """The output equals a float64 bias-corrected average of the iterates of a float64 Adam,
    and the reported loss is the objective at that average."""
    content, style = images
    opts = config.Options(size=23, iters=6, optimizer="adam", lr=12.0, ema=0.7, tv_weight=1e-3, **SHALLOW)
    r = transfer(content, style, weights=vgg16, options=opts)
    c23 = np.asarray(resize_longest(content, 23)).astype(np.float32)
    s, spec, lw, targets = _objective(vgg16, opts, c23[None], style, 23)
    t0 = jax.tree.map(lambda a: a[0], targets)
    x = c23.astype(np.float64)
    m = v = np.zeros_like(x)
    xs = [x]
    for n in range(1, 7):
        g = np.asarray(_value_and_grad(vgg16, lw, jnp.asarray(x, jnp.float32), t0, spec=spec)[1], np.float64)
        m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g * g
        x = x - 12.0 * (m / (1 - B1**n)) / (np.sqrt(v / (1 - B2**n)) + EPS)
        xs.append(x)
    d = 0.7
    wts = (1 - d) * d ** (6 - np.arange(7))
    avg = np.tensordot(wts, np.stack(xs), axes=1) / (1 - d**7)
    ref = np.clip(avg, 0, 255)
    assert np.abs(ref - np.clip(xs[-1], 0, 255)).max() > 10  # the average is not the last iterate
    assert np.abs(r.image.astype(np.float64) - ref).max() <= 0.5 + 0.02
    total = float(_value_and_grad(vgg16, lw, jnp.asarray(avg, jnp.float32), t0, spec=spec)[0])
    assert r.loss["total"] == pytest.approx(total, rel=1e-4)
    assert r.per_scale[0]["iterations"] == 6 and len(r.history) == 6


def _torch_resize(a: np.ndarray, hw, mode: str) -> np.ndarray:
    """f[B, h, w, C] resized by PyTorch's interpolate (as crowsonkb's scale_adam), float64."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(t, tuple(hw), mode=mode, align_corners=False).permute(0, 2, 3, 1).numpy()


def test_adam_moments_carried_to_the_next_scale(vgg16, images):
    """The next scale starts from the previous moments resized (bicubic / bilinear as torch) with
    the step count kept, and its first update is Adam's with the bias correction of step n + 1."""
    content, style = images
    opts = config.Options(size=23, iters=3, optimizer="adam", lr=10.0, ema=0.9, **SHALLOW)
    c16 = jax.image.resize(jnp.asarray(content, jnp.float32), (16, 16, 3), "linear")[None]
    s, spec, lw, t16 = _objective(vgg16, opts, np.asarray(c16), style, 16)
    tx = direction("adam")
    names = ("total", "content", "style", "tv", *(f"style/{l}" for l in spec.style_layers))
    state = scale_state(tx, s, c16, names)
    hyper = Hyper(lw, jnp.asarray(10.0, jnp.float32))
    for _ in range(3):
        state, _ = steps(vgg16, hyper, state, t16, spec=spec, tx=tx)
    adam = state.opt_state[0]  # a batch of one: the optimiser state has no batch axis
    mu, nu, count = np.asarray(adam.mu)[None], np.asarray(adam.nu)[None], int(adam.count)
    assert count == 3
    x23 = jax.image.resize(state.x, (1, 23, 23, 3), "linear")
    carried = scale_state(tx, s, x23, names, state)
    new = carried.opt_state[0]
    assert int(new.count) == 3 and new.mu.shape == (23, 23, 3)
    mu23, nu23 = _torch_resize(mu, (23, 23), "bicubic"), np.maximum(_torch_resize(nu, (23, 23), "bilinear"), 0)
    np.testing.assert_allclose(new.mu[None], mu23, rtol=1e-4, atol=1e-6 * np.abs(mu).max())
    np.testing.assert_allclose(new.nu[None], nu23, rtol=1e-4, atol=1e-6 * nu.max())
    # one step at the new scale: Adam's update with step count 4
    c23 = np.asarray(jax.image.resize(jnp.asarray(content, jnp.float32), (23, 23, 3), "linear"))[None]
    _, _, lw23, t23 = _objective(vgg16, opts, c23, style, 23)
    x0 = np.asarray(carried.x, np.float64)
    g = np.asarray(_value_and_grad(vgg16, lw23, jnp.asarray(x0[0], jnp.float32), jax.tree.map(lambda a: a[0], t23),
                                   spec=spec)[1], np.float64)[None]
    m, v = B1 * mu23 + (1 - B1) * g, B2 * nu23 + (1 - B2) * g * g
    want = x0 - 10.0 * (m / (1 - B1**4)) / (np.sqrt(v / (1 - B2**4)) + EPS)
    after, _ = steps(vgg16, Hyper(lw23, jnp.asarray(10.0, jnp.float32)), carried, t23, spec=spec, tx=tx)
    np.testing.assert_allclose(after.x, want, atol=2e-3)
    # L-BFGS restarts per scale
    lb = config.validate(config.Options(size=23, iters=3, **SHALLOW), "vgg16", 1)
    fresh = scale_state(direction("lbfgs"), lb, x23, names, init_state(direction("lbfgs"), c16, names))
    jax.tree.map(np.testing.assert_array_equal, fresh.opt_state, direction("lbfgs").init(x23[0]))


def test_sqrt2_scales_in_the_report(vgg16, images, caplog):
    content, style = images
    common = dict(weights=vgg16, size=32, min_scale=16, optimizer="adam", **SHALLOW)
    r = transfer(content, style, iters=2, iters_first=3, ema=0.9, **common)
    assert [p["size"] for p in r.per_scale] == [16, 23, 32]
    assert [p["iterations"] for p in r.per_scale] == [3, 2, 2] and r.iterations == 7
    assert r.image.shape == (32, 32, 3) and np.isfinite(r.loss["total"])
    with jax.log_compiles(), caplog.at_level(logging.WARNING):  # the decay is traced
        caplog.clear()
        again = transfer(content, style, iters=1, ema=0.5, **common)
        assert [m.getMessage() for m in caplog.records if "Compiling" in m.getMessage()] == []
    assert again.iterations == 3 and again.loss["total"] != r.loss["total"]


def _tv9(y: np.ndarray) -> float:
    """crowsonkb's TVLoss (nine-point stencil, replicate padding) of y f64[H, W, C] in [0, 1]."""
    p = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode="edge")
    d1 = np.mean((p[1:-1, 2:] - p[1:-1, 1:-1]) ** 2) / 3
    d2 = np.mean((p[2:, 1:-1] - p[1:-1, 1:-1]) ** 2) / 3
    d3 = np.mean((p[1:, 1:] - p[:-1, :-1]) ** 2) / 12
    d4 = np.mean((p[1:, :-1] - p[:-1, 1:]) ** 2) / 12
    return 2 * (d1 + d2 + d3 + d4)


def test_crowsonkb_weights_reproduce_its_terms(vgg16):
    """alpha Jc and gamma Jtv against crowsonkb's content MSE on activations / k and its TV on
    [0, 1] images, computed here in float64."""
    yy, xx = np.mgrid[0:48, 0:64]
    x = np.stack([128 + 100 * np.sin(xx / 9.0), 128 + 90 * np.cos(yy / 7.0), 100 + xx + yy], -1)
    p = x + 30 * np.sin((xx + 2 * yy) / 11.0)[..., None]
    s = config.validate(config.Options(weight_units="crowsonkb", content_weight=0.015, style_weight=1.0, tv_weight=2.0,
                                       style_layer_weights=(256, 64, 16, 4, 1)), "vgg16", 1)
    spec = spec_of(s)
    lw = loss_weights(vgg16, spec, s, (48, 64))
    k = crowsonkb.ACTIVATION_SCALE["caffe"]
    assert k == pytest.approx(255 * np.mean([0.229, 0.224, 0.225]))
    a = np.asarray(features(vgg16, x.astype(np.float32), ("conv4_2",))["conv4_2"], np.float64)
    b = np.asarray(features(vgg16, p.astype(np.float32), ("conv4_2",))["conv4_2"], np.float64)
    jc = 0.5 * np.sum((a - b) ** 2)
    assert float(lw.content) * jc == pytest.approx(0.015 * np.mean((a / k - b / k) ** 2), rel=1e-5)
    d = x / 255.0
    jtv = 0.5 * np.sum((x[:-1, :-1] - x[:-1, 1:]) ** 2 + (x[:-1, :-1] - x[1:, :-1]) ** 2)
    assert float(lw.tv) * jtv == pytest.approx(2.0 * _tv9(d), rel=0.05)  # smooth: equal to 2nd order
    np.testing.assert_allclose(lw.style_layers, np.array([256, 64, 16, 4, 1]) / 341, rtol=1e-6)
    assert float(lw.style) == pytest.approx(1 / k**4, rel=1e-5)  # the Gram distance is quartic


@pytest.fixture(scope="module")
def files(tmp_path_factory, images):
    d = tmp_path_factory.mktemp("modern")
    Image.fromarray(images[0]).save(d / "content.png")
    Image.fromarray(images[1]).save(d / "style.png")
    return d


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_modern_preset(files, tmp_path, vgg16, capsys):
    # style_loss gram until the W2 style loss is in STYLE_LOSSES: the preset's other parts; five
    # shallow style layers (the preset weighs five) keep the compile short
    out = tmp_path / "modern.png"
    argv = ["transfer", str(files / "content.png"), str(files / "style.png"), "-o", str(out), "--preset", "modern",
            "--style-loss", "gram", "--size", "32", "--min-scale", "16", "--iters", "1", "--iters-first", "2",
            "--content-layer", "relu2_2", "--style-layers", ",".join(SHALLOW["style_layers"]), "--quiet"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    report = json.loads(out.with_suffix(".json").read_text())
    assert [p["size"] for p in report["per_scale"]] == [16, 23, 32] and report["iterations"] == 4
    st = report["settings"]
    assert st["ema"] == 0.99 and st["optimizer"] == "adam" and st["lr"] == pytest.approx(5.1)
    assert st["weight_units"] == "crowsonkb" and st["init"] == "content"
    k = crowsonkb.ACTIVATION_SCALE["caffe"]
    # 32 x 32 content -> conv2_2 is 16 x 16 x 128
    assert report["objective"]["alpha"] == pytest.approx(2 * 0.015 / (16 * 16 * 128 * k**2), rel=1e-5)
    assert report["objective"]["gamma"] == pytest.approx(2 * 2 / (3 * 32 * 32 * 255**2), rel=1e-5)
    assert report["objective"]["style_layer_weights"]["conv1_1"] == pytest.approx(256 / 341)
    from stylejax.cli import build_parser
    from stylejax.cli.transfer_cmd import options_of

    args = build_parser().parse_args(["transfer", "c.png", "s.png", "-o", "o.png", "--preset", "modern"])
    assert options_of(args, "modern") == config.resolve("modern") == config.Options(**config.PRESETS["modern"])
    assert config.resolve("modern").sizes == (128, 181, 256, 362, 512)
    assert config.resolve("modern").style_loss == "w2"
    code, stdout, _ = _run(["transfer", "--help"], capsys)
    assert "--ema DECAY" in stdout and "--min-scale N" in stdout and "--iters-first N" in stdout
    assert "modern" in stdout


@pytest.mark.parametrize("flag, value, message", [("--ema", "1.5", "decay between 0 and 1"),
                                                  ("--ema", "-1", "decay between 0 and 1"),
                                                  ("--min-scale", "0", "positive integer")])
def test_cli_refusals(files, tmp_path, flag, value, message, capsys):
    out = tmp_path / "never.png"
    code, _, err = _run(["transfer", str(files / "content.png"), str(files / "style.png"), "-o", str(out),
                         flag, value, "--size", "16", "--iters", "1", "--quiet"], capsys)
    assert code not in (0, None)
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_cli_refusal_in_a_subprocess_is_one_line(files, tmp_path):
    env = dict(os.environ, STYLEJAX_CACHE=os.environ.get("STYLEJAX_CACHE", "/tmp/sjcache"))
    proc = subprocess.run([sys.executable, "-m", "stylejax", "transfer", str(files / "content.png"),
                           str(files / "style.png"), "-o", str(tmp_path / "x.png"), "--ema", "1.5"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--ema" in proc.stderr and not (tmp_path / "x.png").exists()
