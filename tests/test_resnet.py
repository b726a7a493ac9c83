"""ResNets against an independent PyTorch forward built from primitives on the same state dict.

The state dict is random (weights, BN affine AND running mean/var) with torchvision's key names,
saved with ``torch.save`` and read back through stylejax's own ``.pth`` reader and converter.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax import convert, models
from stylejax.errors import StylejaxError

torch = pytest.importorskip("torch")
F = torch.nn.functional

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def random_state_dict(depth: int, seed: int = 0) -> OrderedDict:
    """A torchvision-layout ResNet state dict with random weights and running statistics."""
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict = OrderedDict()

    def conv(key, cout, cin, k):
        sd[f"{key}.weight"] = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float32) * (2.0 / (cin * k * k)) ** 0.5

    def bn(key, c, gain=1.0):
        sd[f"{key}.weight"] = gain * (0.5 + torch.rand(c, generator=g, dtype=torch.float32))
        sd[f"{key}.bias"] = 0.1 * torch.randn(c, generator=g, dtype=torch.float32)
        sd[f"{key}.running_mean"] = 0.2 * torch.randn(c, generator=g, dtype=torch.float32)
        sd[f"{key}.running_var"] = 0.5 + 1.5 * torch.rand(c, generator=g, dtype=torch.float32)
        sd[f"{key}.num_batches_tracked"] = torch.tensor(7)

    bottleneck = depth >= 50
    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for s, n in enumerate(STAGES[depth], 1):
        width = 64 * 2 ** (s - 1)
        cout = width * (4 if bottleneck else 1)
        for b in range(n):
            p = f"layer{s}.{b}"
            stride = 2 if s > 1 and b == 0 else 1
            if bottleneck:
                conv(f"{p}.conv1", width, cin, 1), bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width, 3), bn(f"{p}.bn2", width)
                conv(f"{p}.conv3", cout, width, 1), bn(f"{p}.bn3", cout, 0.3)
            else:
                conv(f"{p}.conv1", width, cin, 3), bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width, 3), bn(f"{p}.bn2", width, 0.3)
            if stride != 1 or cin != cout:
                conv(f"{p}.downsample.0", cout, cin, 1), bn(f"{p}.downsample.1", cout)
            cin = cout
    sd["fc.weight"] = 0.01 * torch.randn(1000, cin, generator=g, dtype=torch.float32)
    sd["fc.bias"] = torch.zeros(1000, dtype=torch.float32)
    return sd


def torch_reference(sd, x: np.ndarray, depth: int) -> dict[str, np.ndarray]:
    """ResNet v1.5 (stride on the 3x3) from F.conv2d / F.batch_norm (eval) / F.max_pool2d."""
    def bn(y, key):
        return F.batch_norm(y, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                            sd[f"{key}.bias"], training=False, eps=1e-5)

    out = {}
    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
        h = F.relu(bn(F.conv2d(h, sd["conv1.weight"], stride=2, padding=3), "bn1"))
        out["relu"] = h
        h = F.max_pool2d(h, 3, 2, 1)
        out["maxpool"] = h
        for s, n in enumerate(STAGES[depth], 1):
            for b in range(n):
                p = f"layer{s}.{b}"
                stride = 2 if s > 1 and b == 0 else 1
                if depth >= 50:
                    y = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
                    y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
                    y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
                else:
                    y = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
                    y = bn(F.conv2d(y, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
                skip = h
                if f"{p}.downsample.0.weight" in sd:
                    skip = bn(F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
                h = F.relu(y + skip)
                out[p] = h
            out[f"layer{s}"] = h
    return {k: np.transpose(v.numpy(), (0, 2, 3, 1)) for k, v in out.items()}


def tubingen(size: int) -> np.ndarray:
    img = Image.open(data_path("images", "tubingen.jpg")).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def torchvision_input(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) / 255.0 - MEAN) / STD)[None]


def assert_close(ours, ref, name):
    a, b = np.asarray(ours), ref
    assert a.shape == b.shape, (name, a.shape, b.shape)
    scale = np.abs(b).max()
    assert scale > 0, name
    err = np.abs(a - b).max() / scale
    assert err < 1e-4, f"{name}: max error {err:.2e} of the layer's peak"
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5, name


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Random resnet18 and resnet50 state dicts saved with torch.save."""
    folder = tmp_path_factory.mktemp("resnet")
    out = {}
    for depth in (18, 50):
        sd = random_state_dict(depth, seed=depth)
        path = folder / f"resnet{depth}-random.pth"
        torch.save(sd, path)
        out[depth] = (sd, path)
    return out


@pytest.mark.parametrize("depth,size,block", [(18, 64, "layer2.1"), (50, 96, "layer3.2")])
def test_features_match_torch(saved, depth, size, block):
    sd, path = saved[depth]
    arch = f"resnet{depth}"
    params = convert.convert_file(path, arch)
    x = torchvision_input(tubingen(size))
    ref = torch_reference(sd, x, depth)
    names = ("relu", "maxpool", "layer1", "layer2", "layer3", "layer4", block)
    import jax

    ours = jax.jit(models.get(arch).features, static_argnums=2)(params, x, names)
    assert set(ours) == set(names)
    for name in names:
        assert_close(ours[name], ref[name], name)
    # batch statistics really are the running ones: changing running_var changes the output
    shifted = jax.tree_util.tree_map(lambda a: a, params)
    shifted["batch_stats"]["layers_0"]["ConvBlock_0"]["BatchNorm_0"]["var"] = \
        params["batch_stats"]["layers_0"]["ConvBlock_0"]["BatchNorm_0"]["var"] * 4.0
    changed = models.get(arch).features(shifted, x, ("relu",))["relu"]
    assert not np.allclose(np.asarray(changed), ref["relu"], rtol=1e-2, atol=1e-3)


def test_layer_table_and_stopping():
    b = models.get("resnet50")
    names = b.layer_names
    assert names[:6] == ["relu", "maxpool", "layer1.0", "layer1.1", "layer1.2", "layer1"]
    assert names[-1] == "layer4" and "layer3.5" in names and "layer3.6" not in names
    assert len([n for n in names if n.count(".") == 1]) == 16
    assert len(models.get("resnet152").layer_names) == 2 + 50 + 4
    # bottleneck block main path 1x1, 3x3/s, 1x1; basic 3x3/s, 3x3 composed
    table = {layer.name: layer for layer in b.layers}
    assert (table["layer2.0"].kernel, table["layer2.0"].stride, table["layer2.0"].padding) == (3, 2, 1)
    t18 = {layer.name: layer for layer in models.get("resnet18").layers}
    assert (t18["layer2.0"].kernel, t18["layer2.0"].stride, t18["layer2.0"].padding) == (7, 2, 3)
    assert (t18["layer1.1"].kernel, t18["layer1.1"].stride, t18["layer1.1"].padding) == (5, 1, 2)
    assert t18["layer4"].channels == 512 and table["layer4"].channels == 2048
    with pytest.raises(StylejaxError, match="valid layers: relu, maxpool, layer1.0"):
        b.check_layers(["layer5"])
    # only modules up to the deepest requested layer are applied: the rest may be absent
    import jax

    shapes = b.param_shapes()
    params = jax.tree_util.tree_map(lambda s: np.zeros(s, np.float32), shapes,
                                    is_leaf=lambda s: isinstance(s, tuple))
    params["batch_stats"] = {k: v for k, v in params["batch_stats"].items() if k in ("layers_0", "layers_2")}
    params["params"] = {k: v for k, v in params["params"].items() if k in ("layers_0", "layers_2")}
    out = jax.eval_shape(lambda p, x: b.features(p, x, ("layer1.0", "maxpool")),
                         params, jax.ShapeDtypeStruct((2, 64, 48, 3), np.float32))
    assert out["layer1.0"].shape == (2, 16, 12, 256) and out["maxpool"].shape == (2, 16, 12, 64)


def test_param_shapes_match_jax_resnet():
    """Our variables are jax-resnet's (minus the head) and the torchvision map covers all of them."""
    from jax_resnet import ResNet50

    import jax
    import jax.numpy as jnp

    full = jax.eval_shape(lambda: ResNet50(n_classes=1000).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    head = "layers_19"  # Dense after 2 + 16 blocks and the mean
    ours = dict(convert.flatten(models.get("resnet50").param_shapes()))
    theirs = {k: tuple(v.shape) for k, v in convert.flatten(full) if f".{head}." not in k}
    assert ours == theirs
    from stylejax.models import resnet

    for arch in resnet.ARCHS:
        paths = {".".join(p) for p in resnet.torchvision_map(arch).values()}
        assert paths == set(dict(convert.flatten(models.get(arch).param_shapes()))), arch


def test_pooling_avg_changes_only_after_stem(saved):
    _, path = saved[18]
    params = convert.convert_file(path, "resnet18")
    x = torchvision_input(tubingen(64))
    b = models.get("resnet18")
    mx = b.features(params, x, ("relu", "maxpool"), pooling="max")
    av = b.features(params, x, ("relu", "maxpool"), pooling="avg")
    np.testing.assert_array_equal(np.asarray(mx["relu"]), np.asarray(av["relu"]))
    r = torch.from_numpy(np.transpose(np.array(mx["relu"]), (0, 3, 1, 2)))
    ref = F.avg_pool2d(r, 3, 2, 1, count_include_pad=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(av["maxpool"]), ref, rtol=1e-5, atol=1e-6)


def test_wrong_files_one_line(saved, tmp_path):
    sd18, path18 = saved[18]
    _, path50 = saved[50]
    cases = {
        # a resnet50 file given as resnet18, and the other way round
        "r50as18": (path50, "resnet18", "not a torchvision resnet18 state dict"),
        "r18as50": (path18, "resnet50", "not a torchvision resnet50 state dict"),
        "r50as101": (path50, "resnet101", "not a torchvision resnet101 state dict"),
    }
    vgg = OrderedDict((f"features.{i}.weight", torch.zeros(64, 3, 3, 3, dtype=torch.float32)) for i in (0, 2))
    torch.save(vgg, tmp_path / "vgg.pth")
    cases["vgg"] = (tmp_path / "vgg.pth", "resnet50", "not a torchvision ResNet state dict")
    broken = OrderedDict(sd18)
    del broken["layer3.1.bn2.running_var"]
    torch.save(broken, tmp_path / "missing.pth")
    cases["missing"] = (tmp_path / "missing.pth", "resnet18", "missing \\['layer3.1.bn2.running_var'\\]")
    bad = OrderedDict(sd18)
    bad["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5, dtype=torch.float32)
    torch.save(bad, tmp_path / "shape.pth")
    cases["shape"] = (tmp_path / "shape.pth", "resnet18", r"has shape \(5, 5, 64, 128\), resnet18 needs \(3, 3, 64, 128\)")
    neg = OrderedDict(sd18)
    neg["bn1.running_var"] = -neg["bn1.running_var"]
    torch.save(neg, tmp_path / "neg.pth")
    cases["neg"] = (tmp_path / "neg.pth", "resnet18", "negative variances")
    for label, (path, arch, message) in cases.items():
        with pytest.raises(StylejaxError, match=message) as info:
            convert.convert_file(path, arch)
        assert "\n" not in str(info.value), label


def test_cli_features_resnet(saved, tmp_path, capsys):
    """End to end through weights.load and the CLI, on a real image."""
    from stylejax import cli

    sd, path = saved[18]
    img = tmp_path / "tubingen64.png"
    Image.fromarray(tubingen(64)).save(img)
    out = tmp_path / "f.npz"
    assert cli.main(["features", str(img), "--arch", "resnet18", "--weights", str(path),
                     "--layers", "relu,layer4", "-o", str(out)]) in (0, None)
    ref = torch_reference(sd, torchvision_input(tubingen(64)), 18)
    with np.load(out) as f:
        assert_close(f["layer4"][0:1], ref["layer4"], "layer4")
        assert_close(f["relu"], ref["relu"], "relu")
    code = cli.main(["features", str(img), "--arch", "resnet50", "--weights", str(path),
                     "--layers", "relu", "-o", str(tmp_path / "g.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "resnet50" in err, err
    assert not (tmp_path / "g.npz").exists()


def chain_rf(layers, name):
    """Receptive field (size, jump, start) by the usual chain recurrences (written out here)."""
    size, jump, start = 1, 1, 0.0
    for layer in layers:
        start += ((layer.kernel - 1) / 2 - layer.padding) * jump
        size += (layer.kernel - 1) * jump
        jump *= layer.stride
        if layer.name == name:
            return size, jump, start
    raise KeyError(name)


def linear_params(backbone, seed=0):
    """Positive kernels, unit BN and large biases: every ReLU is on, so the network is linear with
    positive weights and the input gradient of a unit is nonzero exactly on its receptive field."""
    import jax

    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name = path[-1].key
        if name == "kernel":
            return rng.uniform(0.1, 1.0, shape).astype(np.float32) / np.prod(shape[:-1])
        fill = {"scale": 1.0, "var": 1.0, "mean": 0.0}.get(name, 10.0)
        return np.full(shape, fill, np.float32)

    return jax.tree_util.tree_map_with_path(leaf, backbone.param_shapes(), is_leaf=lambda s: isinstance(s, tuple))


@pytest.mark.parametrize("arch,layer,size", [("resnet18", "layer1.1", 64), ("resnet50", "layer2.1", 96),
                                             ("resnet34", "layer2.0", 97)])
def test_layer_table_gives_exact_receptive_field(arch, layer, size):
    """The table's main-path chain equals the true field (gradient support), skip paths included."""
    import jax
    import jax.numpy as jnp

    b = models.get(arch)
    params = linear_params(b)
    rf_size, jump, start = chain_rf(b.layers, layer)

    def unit(x, y):
        return b.features(params, x, (layer,), pooling="avg")[layer][0, y, y, 0]

    x = jnp.zeros((1, size, size, 3))
    h = jax.eval_shape(lambda x: b.features(params, x, (layer,))[layer], x).shape[1]
    y = h // 2
    g = np.abs(np.asarray(jax.jit(jax.grad(unit), static_argnums=1)(x, y))[0]).sum(-1)
    rows, cols = np.nonzero(g > 0)
    top = int(start + y * jump - (rf_size - 1) / 2)
    expected = (max(0, top), min(size, top + rf_size))
    assert (rows.min(), rows.max() + 1) == expected and (cols.min(), cols.max() + 1) == expected


@pytest.mark.parametrize("arch,count", [("resnet18", 1 + 8 * 2), ("resnet50", 1 + 16 * 3)])
def test_relu_hook_is_every_rectifier(arch, count):
    """``relu=`` (for deconvnet / guided backprop) is called once per ReLU of the network."""
    import jax

    calls = []

    def counting(x):
        calls.append(x.shape)
        return jax.nn.relu(x)

    b = models.get(arch)
    shapes = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, np.float32), b.param_shapes(),
                                    is_leaf=lambda s: isinstance(s, tuple))
    jax.eval_shape(lambda p, v: b.features(p, v, ("layer4",), relu=counting), shapes,
                   jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32))
    assert len(calls) == count


def test_relu_hook_identity_makes_network_affine(saved):
    """With the identity as ``relu`` (and avg pooling) no rectifier is left: the map is affine."""
    import jax
    import jax.numpy as jnp

    b = models.get("resnet18")
    params = convert.convert_file(saved[18][1], "resnet18")
    x = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
    x = jnp.asarray(np.concatenate([x, (x[0] + x[1] - x[2])[None]]))

    def gap(out):  # f(x0 + x1 - x2) - (f(x0) + f(x1) - f(x2)), relative to the output's peak
        out = np.asarray(out)
        return np.abs(out[3] - (out[0] + out[1] - out[2])).max() / np.abs(out).max()

    linear = jax.jit(lambda p, v: b.features(p, v, ("layer4",), pooling="avg", relu=lambda a: a)["layer4"])
    real = jax.jit(lambda p, v: b.features(p, v, ("layer4",), pooling="avg")["layer4"])
    assert gap(linear(params, x)) < 1e-4
    assert gap(real(params, x)) > 1e-2
