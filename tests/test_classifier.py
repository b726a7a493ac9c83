"""Classifier heads from torchvision-layout .pth files, ImageNet class names, and class targets.

The state dicts are written with torch.save in torchvision's key layout (``features.{i}``,
``classifier.{i}``) with random weights; the hidden fc width is 64 instead of torchvision's 4096
(the head reads its widths from the file) so that the files stay small. References: float64
PyTorch forwards from primitives (tests/torch_reference.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import torch_reference as ref
from conftest import data_path
from stylejax import classifier
from stylejax.cli import main
from stylejax.errors import StylejaxError
from stylejax.images import read_image
from stylejax.interpret import attribution as A

HIDDEN, CLASSES = 64, 1000
VGG_CONV = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
            "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
VGG_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
ALEX_CONV = {"conv1": (0, 64, 11), "conv2": (3, 192, 5), "conv3": (6, 384, 3), "conv4": (8, 256, 3), "conv5": (10, 256, 3)}


def _state_dict(arch: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd, cin = {}, 3

    def conv(index, cout, k):
        nonlocal cin
        sd[f"features.{index}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        sd[f"features.{index}.bias"] = torch.randn(cout, generator=g) * 0.05
        cin = cout

    if arch == "alexnet":
        for index, cout, k in ALEX_CONV.values():
            conv(index, cout, k)
        fc, side = (1, 4, 6), 6
    else:
        for index, cout in zip(VGG_CONV.values(), VGG_CHANNELS):
            conv(index, cout, 3)
        fc, side = (0, 3, 6), 7
    fan_in = cin * side * side
    for i, out in zip(fc, (HIDDEN, HIDDEN, CLASSES)):
        sd[f"classifier.{i}.weight"] = torch.randn(out, fan_in, generator=g) * (2.0 / fan_in) ** 0.5
        sd[f"classifier.{i}.bias"] = torch.randn(out, generator=g) * 0.1
        fan_in = out
    return sd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    out = {}
    for arch in ("vgg16", "alexnet"):
        sd = _state_dict(arch)
        torch.save(sd, root / f"{arch}.pth")
        out[arch] = (root / f"{arch}.pth", sd)
    torch.save({k: v for k, v in out["vgg16"][1].items() if k.startswith("features.")}, root / "features_only.pth")
    return out


def _reference(sd: dict, arch: str, pixels: np.ndarray, layer: str = "fc8", guided: bool = False):
    layers = ref.ALEXNET if arch == "alexnet" else ref.VGG16
    index = {k: v[0] for k, v in ALEX_CONV.items()} if arch == "alexnet" else VGG_CONV
    weights = {name: (sd[f"features.{i}.weight"].double(), sd[f"features.{i}.bias"].double())
               for name, i in index.items()}
    x = ref.torchvision_input(pixels)
    pooled = ref.run(layers, weights, x, stop="pool5")["pool5"]
    return ref.torchvision_head(sd, arch, pooled)[layer]


@pytest.mark.parametrize("arch,size", [("vgg16", 64), ("alexnet", 100)])
def test_logits_and_fc_layers_match_pytorch(files, arch, size):
    path, sd = files[arch]
    clf = classifier.load(path, arch)
    assert clf.classes == CLASSES and clf.weights.preprocessing == "torchvision"
    pixels = read_image(data_path("images", "golden_gate.jpg"), size)  # pool5 is 2x2 here: 7x7/6x6 bins overlap
    got = classifier.logits(clf, pixels)
    with torch.no_grad():
        want = _reference(sd, arch, torch.tensor(pixels[None], dtype=torch.float64))[0].numpy()
        fc7 = _reference(sd, arch, torch.tensor(pixels[None], dtype=torch.float64), "fc7")[0].numpy()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale, np.abs(got - want).max() / scale
    print(f"{arch} logits error / peak {np.abs(got - want).max() / scale:.2e}")
    forward = jax.jit(A.activations, static_argnums=(2, 3))
    acts = forward(clf.params, np.asarray(pixels, np.float32)[None], A.Net(arch, "torchvision", "fc7"),
                   ("fc7", "logits"))
    assert np.abs(np.asarray(acts["logits"][0]) - want).max() <= 1e-4 * scale
    assert np.abs(np.asarray(acts["fc7"][0]) - fc7).max() <= 1e-4 * np.abs(fc7).max()
    top = classifier.top_k(got, 5)
    assert [t["index"] for t in top] == list(np.argsort(-want)[:5])
    assert top[0]["name"] == classifier.class_names()[top[0]["index"]]


def test_class_target_saliency_and_gradcam(files):
    path, sd = files["alexnet"]
    clf = classifier.load(path, "alexnet")
    pixels = read_image(data_path("images", "golden_gate.jpg"), 100)
    cls = int(np.argmax(classifier.logits(clf, pixels)))
    r = A.attribute(clf, pixels, A.Settings("saliency", "fc8", cls))
    x = torch.tensor(pixels[None], dtype=torch.float64, requires_grad=True)
    logit = _reference(sd, "alexnet", x)[0, cls]
    logit.backward()
    want_saliency = x.grad[0].numpy()
    assert abs(r.target - logit.item()) <= 1e-4 * abs(logit.item())
    assert np.abs(r.map - want_saliency).max() <= 1e-3 * np.abs(want_saliency).max()
    # Grad-CAM of the logit at conv5 (the default: the last conv), through pool5 and the head.
    cam = A.attribute(clf, pixels, A.Settings("gradcam", "logits", cls))
    weights = {name: (sd[f"features.{i}.weight"].double(), sd[f"features.{i}.bias"].double())
               for name, (i, _, _) in ALEX_CONV.items()}
    x = ref.torchvision_input(torch.tensor(pixels[None], dtype=torch.float64))
    a = ref.run(ref.ALEXNET, weights, x, stop="conv5")["conv5"].detach().requires_grad_(True)
    pooled = ref.run(ref.ALEXNET, weights, a, start="conv5", stop="pool5")["pool5"]
    ref.torchvision_head(sd, "alexnet", pooled)["fc8"][0, cls].backward()
    want = torch.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))[0].detach().numpy()
    assert cam.at == "conv5" and cam.map.shape == want.shape
    assert np.abs(want).max() > 0 and np.abs(cam.map - want).max() <= 1e-3 * np.abs(want).max()
    print(f"class saliency / Grad-CAM error / peak {np.abs(r.map - want_saliency).max() / np.abs(want_saliency).max():.2e}"
          f" / {np.abs(cam.map - want).max() / np.abs(want).max():.2e}")


def test_class_names_are_torchvision_order():
    names = classifier.class_names()
    assert len(names) == 1000 == len(set(names))
    assert names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"
    # The sample files are WNID_label.jpg for 900 classes; the class index is the WNID's rank, so in
    # WNID order each label names a later class than the one before. (torchvision tells apart the
    # two "crane"s as "crane bird"/"crane", the two "maillot"s as "maillot"/"maillot tank suit".)
    files = sorted(p.name for p in data_path("imagenet-sample").glob("*.jpg"))
    norm = [n.lower().replace(" ", "_").replace("-", "_").replace("'", "") for n in names]
    last = -1
    for f in files:
        label = f[:-4].split("_", 1)[1].lower().replace("-", "_").replace("'", "")
        later = [i for i, n in enumerate(norm) if i > last and (n == label or n.startswith(label + "_"))]
        assert later, f
        last = later[0]
    assert len(files) == 900


def test_class_index():
    assert classifier.class_index("tabby") == 281 == classifier.class_index("281") == classifier.class_index(" Tabby ")
    assert classifier.class_index("Cardigan") == 264 and classifier.class_index("cardigan") == 474
    for spec, needle in (("1000", "outside the head's classes 0..999"), ("-1", "outside"),
                         ("tabbby", "did you mean 'tabby'"), ("no such thing at all", "unknown class")):
        with pytest.raises(StylejaxError, match=None) as info:
            classifier.class_index(spec)
        assert needle in str(info.value)
    with pytest.raises(StylejaxError, match="give an index"):
        classifier.class_index("tabby", 10)


def test_missing_heads_are_said_plainly(files, tmp_path, vgg16):
    root = files["vgg16"][0].parent
    for spec, needle in ((None, "tumour"), ("vgg16", "tumour"), (root / "features_only.pth", "no classifier.0.weight")):
        with pytest.raises(StylejaxError, match=None) as info:
            classifier.load(spec, "vgg16")
        assert needle in str(info.value)
    with pytest.raises(StylejaxError, match="no classifier head for arch 'resnet18'"):
        classifier.load(files["vgg16"][0], "resnet18")
    sd = dict(files["vgg16"][1])
    sd["classifier.0.weight"] = sd["classifier.0.weight"][:, :9216]  # an AlexNet-sized fc6
    torch.save(sd, tmp_path / "bad_fc6.pth")
    with pytest.raises(StylejaxError, match=r"classifier.0.weight has shape \(64, 9216\).*needs \[F, 25088\]"):
        classifier.load(tmp_path / "bad_fc6.pth", "vgg16")


def _cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_classify_cli(files, tmp_path, capsys):
    path, sd = files["alexnet"]
    image = data_path("imagenet-sample", "n01443537_goldfish.jpg")
    report = tmp_path / "top.json"
    assert _cli(["classify", str(image), "--arch", "alexnet", "--weights", str(path), "--size", "96",
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out.splitlines()
    doc = json.loads(report.read_text())
    assert len(out) == 6 and len(doc["top"]) == 5 and doc["classes"] == 1000
    assert all(row["name"] in line for row, line in zip(doc["top"], out[1:]))
    assert _cli(["classify", str(image)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tumour" in err and "Traceback" not in err
    assert _cli(["attribute", str(image), "--class", "goldfish", "-o", str(tmp_path / "a.npz")]) == 1
    assert "tumour" in capsys.readouterr().err and not (tmp_path / "a.npz").exists()
    out_npz = tmp_path / "cls.npz"
    assert _cli(["attribute", str(image), "--size", "96", "--arch", "alexnet", "--weights", str(path),
                 "--class", "goldfish", "--method", "saliency", "-o", str(out_npz), "-q"]) == 0
    doc = json.loads(out_npz.with_suffix(".json").read_text())
    assert doc["class"] == "goldfish" and doc["unit"] == 1 and doc["layer"] == "fc8"
    with np.load(out_npz) as z:
        assert z["map"].shape == (72, 96, 3) or z["map"].shape[2] == 3
        assert np.isclose(float(z["target"]), doc["target"])
