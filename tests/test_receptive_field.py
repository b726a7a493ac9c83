"""Receptive fields: published VGG16/AlexNet sizes, and exact supports by brute-force mask propagation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stylejax import models
from stylejax.cli import main
from stylejax.interpret.receptive_field import RF, box, chain, for_arch, output_sizes
from stylejax.models.layers import Layer

VGG16_PUBLISHED = {
    "conv1_1": 3, "conv1_2": 5, "pool1": 6, "conv2_1": 10, "conv2_2": 14, "pool2": 16,
    "conv3_1": 24, "conv3_2": 32, "conv3_3": 40, "pool3": 44, "conv4_1": 60, "conv4_2": 76,
    "conv4_3": 92, "pool4": 100, "conv5_1": 132, "conv5_2": 164, "conv5_3": 196, "pool5": 212,
}


def test_vgg16_published_sizes():
    rfs = for_arch("vgg16")
    assert {name: rf.size for name, rf in rfs.items()} == VGG16_PUBLISHED
    assert [(rfs[n].jump, rfs[n].start) for n in ("conv1_1", "pool1", "pool2", "pool3", "pool4", "pool5")] == [
        (1, 0.0), (2, 0.5), (4, 1.5), (8, 3.5), (16, 7.5), (32, 15.5)]


def test_alexnet_published_sizes():
    if "alexnet" not in models.archs():
        pytest.skip("alexnet not registered")
    rfs = for_arch("alexnet")
    # torchvision AlexNet; Araujo et al. (Distill 2019) give 195 for its last layer.
    assert [rfs[n].size for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")] == [
        11, 19, 51, 67, 99, 131, 163, 195]


def _support(layers: list[Layer], in_size: int, y: int, x: int, filled: bool = True,
             ) -> tuple[int, int, int, int] | None:
    """Input pixels that unit (y, x) of the last layer depends on: propagate a mask backwards.

    Independent of the recurrences: each output position marks its kernel window in the padded
    input, then the padding is cut off.
    """
    sizes = [in_size]
    for layer in layers:
        sizes.append((sizes[-1] + 2 * layer.padding - layer.kernel) // layer.stride + 1)
    mask = np.zeros((sizes[-1], sizes[-1]), bool)
    mask[y, x] = True
    for layer, size_in in zip(reversed(layers), reversed(sizes[:-1])):
        padded = np.zeros((size_in + 2 * layer.padding,) * 2, bool)
        for oy, ox in zip(*np.nonzero(mask)):
            padded[oy * layer.stride:oy * layer.stride + layer.kernel,
                   ox * layer.stride:ox * layer.stride + layer.kernel] = True
        p = layer.padding
        mask = padded[p:p + size_in, p:p + size_in]
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    if filled:  # with kernel >= stride everywhere the support is a filled rectangle
        assert mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


@pytest.mark.parametrize("layer", ["conv1_2", "pool1", "conv2_2", "pool2", "conv3_3", "conv4_1", "pool4",
                                   "conv5_3", "pool5"])
def test_vgg16_boxes_match_mask_propagation(layer):
    table = list(models.get("vgg16").layers)
    upto = table[: [t.name for t in table].index(layer) + 1]
    rf = for_arch("vgg16")[layer]
    n = 224
    side = output_sizes(upto, n)[layer]
    for y, x in [(0, 0), (side // 2, side // 3), (side - 1, side - 1), (1, side - 2)]:
        assert box(rf, y, x, n, n) == _support(upto, n, y, x), (layer, y, x)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=5),
       st.integers(40, 70), st.data())
def test_random_chains_match_mask_propagation(spec, n, data):
    layers = [Layer(f"l{i}", "conv", k, s, min(p, k - 1), 1) for i, (k, s, p) in enumerate(spec)]
    sides = output_sizes(layers, n)
    if min(sides.values()) < 1:  # an empty intermediate map: nothing to compare
        return
    side = sides[layers[-1].name]
    rf = chain(layers)[layers[-1].name]
    y, x = data.draw(st.integers(0, side - 1)), data.draw(st.integers(0, side - 1))
    top, left, bottom, right = box(rf, y, x)
    assert bottom - top == right - left == rf.size
    got = box(rf, y, x, n, n)
    support = _support(layers, n, y, x, filled=all(layer.kernel >= layer.stride for layer in layers))
    sizes, exact = n, True
    for layer in layers:  # a layer that floors away border pixels makes them unreachable
        exact &= (sizes + 2 * layer.padding - layer.kernel) % layer.stride == 0
        sizes = (sizes + 2 * layer.padding - layer.kernel) // layer.stride + 1
    if exact:
        assert got == support
    else:
        assert got[:2] == support[:2] and got[2] >= support[2] and got[3] >= support[3]


def test_box_clipping_by_hand():
    rf = RF("conv1_1", 3, 1, 0.0)
    assert box(rf, 0, 0) == (-1, -1, 2, 2)
    assert box(rf, 0, 0, 224, 224) == (0, 0, 2, 2)
    assert box(rf, 223, 223, 224, 224) == (222, 222, 224, 224)
    pool1 = for_arch("vgg16")["pool1"]
    assert box(pool1, 0, 0) == (-2, -2, 4, 4) and box(pool1, 3, 5, 224, 224) == (4, 8, 10, 14)


def test_cli_rf_table_and_json(capsys):
    assert main(["rf", "--arch", "vgg16", "--size", "224"]) == 0
    text = capsys.readouterr().out.splitlines()
    row = next(line for line in text if line.startswith("pool5"))
    assert row.split()[3:] == ["512", "212", "32", "15.5", "7"]
    assert main(["rf", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["layer"]: r["size"] for r in doc["layers"]} == VGG16_PUBLISHED


def test_cli_rf_unknown_arch(capsys):
    assert main(["rf", "--arch", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown arch 'nope'" in err and "vgg16" in err
