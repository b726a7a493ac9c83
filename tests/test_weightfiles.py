"""Round trips through real torch / h5py / onnx / safetensors files, and bad-file errors."""

from __future__ import annotations

import collections
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stylejax.errors import StylejaxError
from stylejax.weightfiles import read_any, read_h5, read_onnx, read_pth, read_safetensors

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _assert_one_line_error(call, *args, match: str = "") -> str:
    with pytest.raises(StylejaxError, match=match) as info:
        call(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# ----------------------------------------------------------------------------- .pth


def test_pth_round_trip(tmp_path: Path) -> None:
    import ml_dtypes  # only to state what bfloat16 rounding the file holds

    big = torch.arange(40, dtype=torch.float32)
    transposed = torch.from_numpy(_rand(3, 5)).t()
    f16 = _rand(4, 2)
    bf16 = _rand(6)
    state = collections.OrderedDict(
        conv_w=torch.from_numpy(_rand(8, 3, 3, 3)),
        conv_b=torch.from_numpy(_rand(8)),
        transposed=transposed,
        slice_a=big[5:17].view(3, 4),
        slice_b=big[20:40:2],
        half=torch.from_numpy(f16).half(),
        bf16=torch.from_numpy(bf16).bfloat16(),
        count=torch.tensor([3, 4], dtype=torch.int64),
        flag=torch.tensor([True, False]),
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
        param=torch.nn.Parameter(torch.from_numpy(_rand(2, 2))),
    )
    assert not transposed.is_contiguous() and state["slice_a"].storage_offset() == 5
    file = tmp_path / "w.pth"
    torch.save(state, file)

    got = read_pth(file)
    assert list(got) == list(state)
    for name, tensor in state.items():
        expected = tensor.detach().float().numpy() if name == "bf16" else tensor.detach().numpy()
        assert got[name].shape == expected.shape, name
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)
        assert got[name].flags.c_contiguous
    np.testing.assert_array_equal(got["half"], f16.astype(np.float16))
    np.testing.assert_array_equal(got["bf16"], bf16.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(got["slice_b"], np.arange(20, 40, 2, dtype=np.float32))


def test_pth_module_state_dict_and_wrappers(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    state = model.state_dict()
    assert hasattr(state, "_metadata")
    expected = {k: v.numpy() for k, v in state.items()}
    for name, payload in [
        ("plain.pt", state),
        ("wrapped.pth", {"state_dict": state, "epoch": 7, "dtype": torch.float32}),
        ("model.bin", {"model": state, "optimizer": {"lr": 0.1}}),
    ]:
        torch.save(payload, tmp_path / name)
        fmt, got = read_any(tmp_path / name)
        assert fmt == "pth"
        assert list(got) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value)


class _Custom:
    def __init__(self) -> None:
        self.x = 1


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [_Custom(), {"w": torch.ones(1), "bad": _Evil()}, torch.nn.ReLU()])
def test_pth_refuses_arbitrary_objects(tmp_path: Path, payload: object) -> None:
    file = tmp_path / "evil.pth"
    torch.save(payload, file)
    message = _assert_one_line_error(read_pth, file, match="is not a plain state dict: refuses to unpickle")
    assert "evil.pth" in message
    if isinstance(payload, dict):
        assert "system" in message


def test_pth_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"w": torch.from_numpy(_rand(64, 64))}, good)
    data = good.read_bytes()

    text = tmp_path / "notes.pth"
    text.write_text("just some text\n")
    _assert_one_line_error(read_pth, text, match="notes.pth: is not a PyTorch checkpoint")

    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(read_pth, truncated, match="cut.pth")

    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    _assert_one_line_error(read_pth, legacy, match="legacy.*weights_only=True")

    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hi")
    _assert_one_line_error(read_pth, other_zip, match="not a PyTorch checkpoint")

    no_tensors = tmp_path / "none.pth"
    torch.save({"epoch": 3}, no_tensors)
    _assert_one_line_error(read_pth, no_tensors, match="no tensors")

    # A storage entry cut short inside an otherwise valid zip.
    short = tmp_path / "short.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(short, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            dst.writestr(item, blob[:10] if item.filename.endswith("/data/0") else blob)
    _assert_one_line_error(read_pth, short, match="short.pth")

    _assert_one_line_error(read_pth, tmp_path / "missing.pth", match="missing.pth")


# ----------------------------------------------------------------------------- .h5


def _write_keras2(group, layers: dict[str, list[tuple[str, np.ndarray]]]) -> None:
    group.attrs["layer_names"] = np.array([name.encode() for name in layers])
    for name, weights in layers.items():
        layer = group.create_group(name)
        layer.attrs["weight_names"] = np.array([w.encode() for w, _ in weights], dtype="S")
        for weight_name, value in weights:
            layer.create_dataset(weight_name, data=value)


VGG_LIKE = {
    "block1_conv1": [("block1_conv1_W_1:0", _rand(3, 3, 3, 4)), ("block1_conv1_b_1:0", _rand(4))],
    "block1_pool": [],
    "block2_conv1": [("block2_conv1/kernel:0", _rand(3, 3, 4, 5)), ("block2_conv1/bias:0", _rand(5))],
}


def _check_keras(got: dict[str, np.ndarray]) -> None:
    assert list(got) == ["block1_conv1/0", "block1_conv1/1", "block2_conv1/0", "block2_conv1/1"]
    for layer, weights in VGG_LIKE.items():
        for i, (_, value) in enumerate(weights):
            np.testing.assert_array_equal(got[f"{layer}/{i}"], value)


def test_h5_keras2_layouts(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    weights_file = tmp_path / "vgg_notop.h5"
    with h5py.File(weights_file, "w") as f:
        _write_keras2(f, VGG_LIKE)
    _check_keras(read_h5(weights_file))

    model_file = tmp_path / "model.hdf5"
    with h5py.File(model_file, "w") as f:
        f.attrs["model_config"] = b"{}"
        _write_keras2(f.create_group("model_weights"), VGG_LIKE)
    fmt, got = read_any(model_file)
    assert fmt == "h5"
    _check_keras(got)


def test_h5_keras3_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    kernel, bias = _rand(3, 3, 3, 2), _rand(2)
    file = tmp_path / "model.weights.h5"
    with h5py.File(file, "w") as f:
        f.create_group("layers/max_pooling2d/vars")
        f.create_dataset("layers/conv2d/vars/0", data=kernel)
        f.create_dataset("layers/conv2d/vars/1", data=bias)
        f.create_group("optimizer/vars")
    got = read_h5(file)
    assert sorted(got) == ["conv2d/0", "conv2d/1"]
    np.testing.assert_array_equal(got["conv2d/0"], kernel)
    np.testing.assert_array_equal(got["conv2d/1"], bias)


def test_h5_bad_files(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.ones(3))
    _assert_one_line_error(read_h5, plain, match="plain.h5: .*no layer_names")

    dangling = tmp_path / "dangling.h5"
    with h5py.File(dangling, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv"])
        f.create_group("conv").attrs["weight_names"] = np.array([b"conv/kernel:0"])
    _assert_one_line_error(read_h5, dangling, match="dangling.h5")

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00not hdf5" * 100)
    _assert_one_line_error(read_h5, garbage, match="garbage.h5: is not a readable Keras HDF5")


# ----------------------------------------------------------------------------- .onnx


def _conv_model(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2, "w2")),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_onnx_round_trip(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    w1, b1, w2 = _rand(4, 3, 3, 3), _rand(4), _rand(2, 4, 1, 1)
    model = _conv_model(w1, b1, w2)
    onnx.checker.check_model(model)
    file = tmp_path / "net.onnx"
    onnx.save(model, file)

    x = _rand(1, 3, 8, 8)
    (y,) = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.shape == (1, 2, 8, 8)

    fmt, convs = read_any(file)
    assert fmt == "onnx"
    assert len(convs) == 2
    (gw1, gb1), (gw2, gb2) = convs
    np.testing.assert_array_equal(gw1, w1)
    np.testing.assert_array_equal(gb1, b1)
    np.testing.assert_array_equal(gw2, w2)
    assert gb2 is None
    assert gw1.flags.writeable and gb1.flags.writeable

    # Reference forward pass from the returned arrays matches onnxruntime.
    fn, tx, tw1, tb1, tw2 = torch.nn.functional, *map(torch.from_numpy, (x, gw1, gb1, gw2))
    ref = fn.conv2d(fn.relu(fn.conv2d(tx, tw1, tb1, padding=1)), tw2)
    np.testing.assert_allclose(ref.numpy(), y, rtol=1e-4, atol=1e-4)


def test_onnx_bad_files(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 8)
    _assert_one_line_error(read_onnx, garbage, match="garbage.onnx: is not a valid ONNX model")

    text = tmp_path / "text.onnx"
    text.write_text("hello onnx\n")
    _assert_one_line_error(read_onnx, text, match="text.onnx: is not a valid ONNX model")

    _assert_one_line_error(read_onnx, tmp_path / "missing.onnx", match="missing.onnx")


def test_onnx_dynamic_weight_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="dyn")],
        "dyn",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 3, 3]) for n in ("x", "w")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    file = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph), file)
    _assert_one_line_error(read_onnx, file, match="'dyn'.*not a constant")


# ----------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    a, b = _rand(2, 3), _rand(5)
    file = tmp_path / "w.safetensors"
    st.save_file({"a": torch.from_numpy(a), "b": torch.from_numpy(b).bfloat16(), "i": torch.arange(3)}, file)
    fmt, got = read_any(file)
    assert fmt == "safetensors"
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], torch.from_numpy(b).bfloat16().float().numpy())
    np.testing.assert_array_equal(got["i"], np.arange(3))

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(file.read_bytes()[:40])
    _assert_one_line_error(read_safetensors, bad, match="bad.safetensors")


# ----------------------------------------------------------------------------- dispatch


def test_read_any_rejects_missing_empty_dirs_and_unknown(tmp_path: Path) -> None:
    _assert_one_line_error(read_any, tmp_path / "nope.pth", match="nope.pth: no such file")
    (tmp_path / "empty.h5").write_bytes(b"")
    _assert_one_line_error(read_any, tmp_path / "empty.h5", match="empty.h5: is empty")
    (tmp_path / "dir.onnx").mkdir()
    _assert_one_line_error(read_any, tmp_path / "dir.onnx", match="dir.onnx: is a directory")
    (tmp_path / "w.npz").write_bytes(b"x")
    _assert_one_line_error(read_any, tmp_path / "w.npz", match=r"unknown weight file type \.npz")
    (tmp_path / "weights").write_bytes(b"x")
    _assert_one_line_error(read_any, tmp_path / "weights", match="no suffix")
    (tmp_path / "notes.pth").write_text("text")
    _assert_one_line_error(read_any, tmp_path / "notes.pth", match="notes.pth")


def test_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, stylejax.weightfiles; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_read_safetensors_float32_and_bfloat16(tmp_path, rng):
    import jax.numpy as jnp
    from safetensors.flax import save_file

    a = rng.normal(size=(3, 4)).astype(np.float32)
    save_file({"a": jnp.asarray(a), "b": jnp.asarray(a, jnp.bfloat16)}, str(tmp_path / "w.safetensors"))
    got = read_safetensors(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(got["a"], a)
    assert got["b"].dtype == np.float32
    np.testing.assert_allclose(got["b"], a, rtol=1e-2)  # bfloat16 keeps 8 bits of mantissa
