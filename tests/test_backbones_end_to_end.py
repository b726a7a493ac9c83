"""`patches`, `transfer` and `rf` run end to end with AlexNet and ResNet-50 (random torchvision weights)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax.cli import main

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    from test_alexnet import random_state_dict as alexnet_sd
    from test_resnet import random_state_dict as resnet_sd

    folder = tmp_path_factory.mktemp("backbones")
    torch.save(alexnet_sd(), folder / "alexnet.pth")
    torch.save(resnet_sd(50, seed=5), folder / "resnet50.pth")
    return {"alexnet": folder / "alexnet.pth", "resnet50": folder / "resnet50.pth"}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    for path in sorted(data_path("imagenet-sample").glob("*.jpg"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("arch,layer", [("alexnet", "conv2"), ("resnet50", "layer2.1")])
def test_patches_and_transfer(weight_files, image_folder, tmp_path, arch, layer):
    out = tmp_path / "scan"
    assert main(["patches", str(image_folder), "--layer", layer, "--units", "0:4", "--top", "3", "--size", "96",
                 "--arch", arch, "--weights", str(weight_files[arch]), "-q", "-o", str(out)]) == 0
    report = json.loads((out / "patches.json").read_text())
    assert report["arch"] == arch and report["images"] == 6 and len(report["units"]["0"]) == 3
    assert (out / f"{layer}.png").is_file() and (out / "index.html").is_file()

    content = tmp_path / "c.png"
    style = tmp_path / "s.png"
    Image.open(sorted(image_folder.iterdir())[0]).convert("RGB").resize((48, 40)).save(content)
    Image.open(sorted(image_folder.iterdir())[1]).convert("RGB").resize((40, 40)).save(style)
    result = tmp_path / "t.png"
    assert main(["transfer", str(content), str(style), "-o", str(result), "--size", "48", "--iters", "3",
                 "--arch", arch, "--weights", str(weight_files[arch]), "--quiet"]
                + (["--swag"] if arch == "resnet50" else [])) == 0
    transfer_report = json.loads(result.with_suffix(".json").read_text())
    assert transfer_report["weights"]["arch"] == arch and np.isfinite(transfer_report["loss"]["total"])
    assert Image.open(result).size == (48, 40)


@pytest.mark.parametrize("arch", ["alexnet", "resnet50"])
def test_rf_table(arch, capsys):
    assert main(["rf", "--arch", arch, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["arch"] == arch and table["layers"][-1]["size"] > 100
