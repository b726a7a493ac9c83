"""ONNX files you bring for AlexNet and ResNet: exported by torch.onnx from torchvision-layout
modules (built from torch primitives), converted by stylejax, compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
nn = torch.nn

from stylejax import weights  # noqa: E402
from stylejax.errors import StylejaxError  # noqa: E402
from stylejax.activations import features as extract_features  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class AlexNet(nn.Module):
    """torchvision's alexnet layout (a 10-class head to keep the file small)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Linear(256 * 36, 10)

    def forward(self, x):
        f = self.features(x)
        return self.classifier(torch.flatten(self.avgpool(f), 1)), f


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [64, 128, 256, 512]
        for stage, c in enumerate(chans, 1):
            cin = 64 if stage == 1 else chans[stage - 2]
            stride = 1 if stage == 1 else 2
            setattr(self, f"layer{stage}", nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1)))
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean((2, 3)), 1)), x


def _randomise(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding matters
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _export(model, path, size):
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["x"],
                      output_names=["logits", "features"], dynamo=False)
    return path


@pytest.mark.parametrize("arch,layer,factory,size", [("alexnet", "pool5", AlexNet, 224),
                                                     ("resnet18", "layer4", ResNet18, 64)])
def test_onnx_file_matches_onnxruntime(tmp_path, arch, layer, factory, size):
    torch.manual_seed(0)
    path = _export(_randomise(factory()), tmp_path / f"{arch}.onnx", size)
    pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.float32)
    x = ((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, ref = session.run(None, {"x": x})

    w = weights.load(path, arch, preprocessing="torchvision", progress=None)
    got = np.asarray(extract_features(w, pixels, [layer])[layer]).transpose(0, 3, 1, 2)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_onnx_resnet_with_unfolded_batchnorm_is_refused(tmp_path):
    model = _randomise(ResNet18()).train()  # training mode keeps BatchNormalization nodes
    path = tmp_path / "train.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3, 64, 64),), str(path), dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with pytest.raises(StylejaxError, match="BatchNormalization"):
        weights.load(path, "resnet18", preprocessing="torchvision", progress=None)


def test_onnx_alexnet_of_the_wrong_depth_is_refused(tmp_path):
    class Short(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 64, 11, 4, 2)

        def forward(self, x):
            return self.c(x)

    path = tmp_path / "short.onnx"
    torch.onnx.export(Short().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False)
    with pytest.raises(StylejaxError, match="1 conv layers; alexnet has 5"):
        weights.load(path, "alexnet", preprocessing="torchvision", progress=None)
