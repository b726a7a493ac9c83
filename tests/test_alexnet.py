"""AlexNet against an independent PyTorch forward (F.conv2d / F.relu / F.max_pool2d) of the
same random torchvision-layout state dict, read back through ``weights.load``."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax import cli, models, weights
from stylejax.errors import StylejaxError
from stylejax.activations import features as extract_features

torch = pytest.importorskip("torch")
F = torch.nn.functional

# torchvision alexnet: features.{i} (Cout, Cin, k, stride, padding), classifier.{1,4,6}
CONVS = {0: (64, 3, 11, 4, 2), 3: (192, 64, 5, 1, 2), 6: (384, 192, 3, 1, 1),
         8: (256, 384, 3, 1, 1), 10: (256, 256, 3, 1, 1)}
NAMES = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]


def random_state_dict(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict = OrderedDict()
    for i, (cout, cin, k, _, _) in CONVS.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float32) * (2.0 / (cin * k * k)) ** 0.5
        sd[f"features.{i}.bias"] = 0.1 * torch.randn(cout, generator=g, dtype=torch.float32)
    # the classifier is not used by the features; shrunk (really 4096x9216, 4096x4096, 1000x4096)
    # so the test does not write and read 230 MB
    for i, (cout, cin) in {1: (16, 9216), 4: (16, 16), 6: (10, 16)}.items():
        sd[f"classifier.{i}.weight"] = torch.zeros(cout, cin, dtype=torch.float32)
        sd[f"classifier.{i}.bias"] = torch.zeros(cout, dtype=torch.float32)
    return sd


def torch_reference(sd, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """torchvision preprocessing written out here, then the features from primitives."""
    x = (pixels.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) \
        / np.array([0.229, 0.224, 0.225], np.float32)
    h = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None])
    out = {}
    with torch.no_grad():
        for name, i in zip(["conv1", "conv2", "conv3", "conv4", "conv5"], CONVS):
            _, _, _, stride, pad = CONVS[i]
            h = F.relu(F.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], stride=stride, padding=pad))
            out[name] = h
            if name in ("conv1", "conv2", "conv5"):
                h = F.max_pool2d(h, 3, 2)
                out[{"conv1": "pool1", "conv2": "pool2", "conv5": "pool5"}[name]] = h
    return {k: v.numpy().transpose(0, 2, 3, 1) for k, v in out.items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    sd = random_state_dict()
    path = tmp_path_factory.mktemp("alexnet") / "alexnet-random.pth"
    torch.save(sd, path)
    return sd, path


@pytest.fixture(scope="module")
def tubingen224():
    img = Image.open(data_path("images", "tubingen.jpg")).convert("RGB").resize((224, 224), Image.BILINEAR)
    return np.asarray(img)


def test_every_layer_matches_torch(saved, tubingen224):
    sd, path = saved
    w = weights.load(path, arch="alexnet", progress=None)
    assert w.arch == "alexnet" and w.preprocessing == "torchvision"
    ours = extract_features(w, tubingen224[None], NAMES)
    ref = torch_reference(sd, tubingen224)
    assert ref["conv1"].shape == (1, 55, 55, 64) and ref["pool5"].shape == (1, 6, 6, 256)
    for name in NAMES:
        a, b = np.asarray(ours[name]), ref[name]
        assert a.shape == b.shape, name
        scale = np.abs(b).max()
        assert scale > 0, name
        assert np.abs(a - b).max() / scale < 1e-4, name
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5, name


def test_table_shapes_and_avg_pool(saved, tubingen224):
    b = models.get("alexnet")
    assert b.layer_names == NAMES
    assert [(l.kernel, l.stride, l.padding) for l in b.layers if l.kind == "conv"] == \
        [(k, s, p) for (_, _, k, s, p) in CONVS.values()]
    with pytest.raises(StylejaxError, match="valid layers: conv1, pool1"):
        b.check_layers(["conv1_1"])
    w = weights.load(saved[1], arch="alexnet", progress=None)
    mx = extract_features(w, tubingen224[None], ["conv1", "pool1"])
    av = extract_features(w, tubingen224[None], ["pool1"], pooling="avg")
    c1 = torch.from_numpy(np.array(mx["conv1"]).transpose(0, 3, 1, 2))
    ref = F.avg_pool2d(c1, 3, 2).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(av["pool1"]), ref, rtol=1e-5, atol=1e-5)


def test_cli_features(saved, tubingen224, tmp_path):
    sd, path = saved
    img = tmp_path / "tubingen224.png"
    Image.fromarray(tubingen224).save(img)
    out = tmp_path / "out.npz"
    assert cli.main(["features", str(img), "--arch", "alexnet", "--weights", str(path),
                     "--layers", "conv1,pool5", "-o", str(out)]) in (0, None)
    ref = torch_reference(sd, tubingen224)
    with np.load(out) as f:
        assert sorted(f.files) == ["conv1", "pool5"]
        for name in ("conv1", "pool5"):
            np.testing.assert_allclose(f[name], ref[name], rtol=1e-4, atol=1e-4 * np.abs(ref[name]).max())


def test_wrong_files(saved, tmp_path, capsys):
    sd, path = saved
    vgg = OrderedDict((f"features.{i}.weight", torch.zeros(64, 3, 3, 3, dtype=torch.float32)) for i in (0, 2))
    torch.save(vgg, tmp_path / "vgg.pth")
    resnet = OrderedDict([("conv1.weight", torch.zeros(64, 3, 7, 7, dtype=torch.float32))])
    torch.save(resnet, tmp_path / "resnet.pth")
    broken = OrderedDict(sd)
    del broken["features.8.bias"]
    torch.save(broken, tmp_path / "broken.pth")
    cases = [(tmp_path / "vgg.pth", "not a torchvision alexnet state dict"),
             (tmp_path / "resnet.pth", "not a torchvision alexnet state dict"),
             (tmp_path / "broken.pth", "no 'features.8.bias'")]
    for file, message in cases:
        with pytest.raises(StylejaxError, match=message) as info:
            weights.load(file, arch="alexnet", progress=None)
        assert "\n" not in str(info.value)
    # the alexnet file given as vgg16: one line on stderr, exit 1, no output
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(img)
    code = cli.main(["features", str(img), "--arch", "vgg16", "--weights", str(path),
                     "--layers", "conv1_1", "-o", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("stylejax: error:"), err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("layer,size", [("conv3", 160), ("pool5", 224)])
def test_layer_table_gives_exact_receptive_field(layer, size):
    """Chain recurrences over the table = support of a unit's input gradient in a network made
    linear (positive kernels, biases keeping every ReLU on, average pools)."""
    import jax
    import jax.numpy as jnp

    b = models.get("alexnet")
    rng = np.random.default_rng(0)
    params = {name: {"kernel": rng.uniform(0.1, 1.0, s["kernel"]).astype(np.float32) / np.prod(s["kernel"][:-1]),
                     "bias": np.full(s["bias"], 10.0, np.float32)} for name, s in b.param_shapes().items()}
    rf, jump, start = 1, 1, 0.0
    for entry in b.layers:
        start += ((entry.kernel - 1) / 2 - entry.padding) * jump
        rf += (entry.kernel - 1) * jump
        jump *= entry.stride
        if entry.name == layer:
            break
    x = jnp.zeros((1, size, size, 3))
    h = jax.eval_shape(lambda x: b.features(params, x, (layer,))[layer], x).shape[1]
    y = h // 2
    g = jax.jit(jax.grad(lambda x: b.features(params, x, (layer,), pooling="avg")[layer][0, y, y, 0]))(x)
    rows, cols = np.nonzero(np.abs(np.asarray(g)[0]).sum(-1) > 0)
    top = int(start + y * jump - (rf - 1) / 2)
    expected = (max(0, top), min(size, top + rf))
    assert (rows.min(), rows.max() + 1) == expected and (cols.min(), cols.max() + 1) == expected
