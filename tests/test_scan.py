"""The top-patch scan: merge semantics, agreement with a torch reference, resume, multi-device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, data_path
from stylejax.interpret import dataset
from stylejax.interpret.receptive_field import box, for_arch
from stylejax.interpret.scan import (STATE_FILE, init_topk, merge_topk, parse_units, scan, scan_layers,
                                    unit_maxima)

torch = pytest.importorskip("torch")

SIZE = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 real ImageNet-sample images (links) in two sub-folders, plus a text file and a broken JPEG."""
    src = data_path("imagenet-sample")
    names = sorted(p.name for p in src.glob("*.jpg"))[::75][:12]
    root = tmp_path_factory.mktemp("scan") / "images"
    for i, name in enumerate(names):
        sub = root / ("a" if i < 6 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).symlink_to(src / name)
    (root / "a" / "notes.txt").write_text("not an image\n")
    (root / "b" / "broken.jpg").write_bytes((src / names[0]).read_bytes()[:300])
    return root


def _sorted_topk(values, index, k):
    order = np.lexsort((index, -values))[:k]
    return values[order], index[order]


def test_merge_ties_invalid_and_short():
    state = init_topk(2, 3)
    values = np.array([[1.0, 5.0], [2.0, 5.0], [2.0, 0.0], [9.0, 9.0]], np.float32)
    index = np.array([0, 1, 2, 3], np.int32)
    y = np.arange(8, dtype=np.int32).reshape(4, 2)
    valid = np.array([True, True, True, False])
    out = jax.jit(merge_topk)(state, values, index, y, y + 100, valid)
    np.testing.assert_array_equal(out.index, [[1, 2, 0], [0, 1, 2]])  # ties -> earlier image; row 3 invalid
    np.testing.assert_array_equal(out.values, [[2, 2, 1], [5, 5, 0]])
    np.testing.assert_array_equal(out.y, [[2, 4, 0], [1, 3, 5]])
    np.testing.assert_array_equal(out.x, out.y + 100)
    short = jax.jit(merge_topk)(init_topk(1, 4), values[:2, :1], index[:2], y[:2, :1], y[:2, :1], valid[:2])
    np.testing.assert_array_equal(short.index, [[1, 0, -1, -1]])
    assert np.isneginf(short.values[0, 2:]).all()


def test_merge_is_independent_of_batching(rng):
    n, units, k = 50, 3, 7
    values = rng.integers(0, 6, (n, units)).astype(np.float32)  # many ties
    step = jax.jit(merge_topk)
    for batch in (1, 4, 50):
        state = init_topk(units, k)
        for s in range(0, n, batch):
            e = min(n, s + batch)
            pad = batch - (e - s)
            v = np.pad(values[s:e], ((0, pad), (0, 0)))
            idx = np.pad(np.arange(s, e, dtype=np.int32), (0, pad), constant_values=-1)
            pos = np.zeros_like(v, np.int32)
            state = step(state, v, idx, pos, pos, idx >= 0)
        for u in range(units):
            want_v, want_i = _sorted_topk(values[:, u], np.arange(n), k)
            np.testing.assert_array_equal(state.values[u], want_v)
            np.testing.assert_array_equal(state.index[u], want_i)


def test_unit_maxima_first_row_major():
    a = np.zeros((1, 3, 4, 2), np.float32)
    a[0, 1, 3, 0] = a[0, 2, 0, 0] = 7.0  # tie: (1, 3) comes first in row-major order
    a[0, 2, 2, 1] = 3.0
    v, y, x = unit_maxima(a, (1, 0))
    assert v.tolist() == [[3.0, 7.0]] and y.tolist() == [[2, 1]] and x.tolist() == [[2, 3]]


def test_parse_units():
    assert parse_units("2:5", 8) == [2, 3, 4]
    assert parse_units(":3", 8) == [0, 1, 2] and parse_units("6:", 8) == [6, 7]
    assert parse_units("3,7,1", 8) == [3, 7, 1] and parse_units(None, 3) == [0, 1, 2]
    for bad in ("5:2", "0:9", "a", "8", "1,1"):
        with pytest.raises(Exception, match="units"):
            parse_units(bad, 8, "conv1_1")


def test_load_square_policy(tmp_path):
    rng = np.random.default_rng(1)
    exact = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    Image.fromarray(exact).save(tmp_path / "exact.png")
    np.testing.assert_array_equal(dataset.load_square(tmp_path / "exact.png", SIZE), exact)  # used as is
    wide = rng.integers(0, 256, (40, 100, 3), np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    resized = np.asarray(Image.fromarray(wide).resize((160, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(dataset.load_square(tmp_path / "wide.png", SIZE), resized[:, 48:112])
    tall = rng.integers(0, 256, (90, SIZE, 3), np.uint8)  # shorter side already SIZE: crop only
    Image.fromarray(tall).save(tmp_path / "tall.png")
    np.testing.assert_array_equal(dataset.load_square(tmp_path / "tall.png", SIZE), tall[13:77])


def test_walk_is_sorted_and_skips_hidden(tmp_path):
    for name in ("b/2.png", "b/1.png", "a.png", ".hidden/x.png", "c/.x.png", "c/d/e.png", "out/o.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in dataset.walk_files(tmp_path, exclude=[tmp_path / "out"])]
    assert got == ["a.png", "b/1.png", "b/2.png", "c/d/e.png"]


def _torch_reference(w, root: Path, layer: str, units: list[int], k: int):
    """Per image: torch conv2d/relu/max_pool2d from the raw weights, per-unit max + first argmax."""
    from stylejax import models

    convs = models.get(w.arch).layers
    rows = []
    files = list(dataset.walk_files(root))
    for i, path in enumerate(files):
        try:
            pixels = dataset.load_square(path, SIZE)
        except Exception:  # noqa: BLE001
            continue
        x = torch.from_numpy(pixels[..., ::-1].astype(np.float32).copy()
                             - np.array([103.939, 116.779, 123.68], np.float32))
        x = x.permute(2, 0, 1)[None].double()
        for lay in convs:
            if lay.kind == "conv":
                kern = torch.from_numpy(np.array(w.params[lay.name]["kernel"])).permute(3, 2, 0, 1).double()
                bias = torch.from_numpy(np.array(w.params[lay.name]["bias"])).double()
                x = torch.relu(torch.nn.functional.conv2d(x, kern, bias, padding=1))
            else:
                x = torch.nn.functional.max_pool2d(x, 2)
            if lay.name == layer:
                break
        a = x[0].numpy()  # C, h, w
        rows.append((i, path.relative_to(root).as_posix(), a))
    out = {}
    for u in units:
        maxima = np.array([r[2][u].max() for r in rows])
        order = np.lexsort((np.array([r[0] for r in rows]), -maxima))[:k]
        out[u] = [(rows[j][1], rows[j][2][u]) for j in order]
    return out, len(rows)


def test_scan_matches_torch_reference(vgg16, folder):
    layer, units, k = "conv2_1", list(range(0, 128, 9)), 5
    result = scan(folder, vgg16, layer, units, top=k, size=SIZE, batch=5, progress=False)
    report = result.report()
    assert report["images"] == 12
    assert sorted(s["file"] for s in report["skipped"]) == ["a/notes.txt", "b/broken.jpg"]
    ref, n = _torch_reference(vgg16, folder, layer, units, k)
    assert n == 12
    rf = for_arch("vgg16")[layer]
    for u in units:
        got = report["units"][str(u)]
        assert len(got) == k
        for (ref_image, ref_map), entry in zip(ref[u], got):
            tol = 1e-4 * max(1.0, abs(ref_map.max()))
            assert entry["activation"] == pytest.approx(ref_map.max(), abs=tol)
            if entry["image"] != ref_image:  # only a near-tie may swap two images
                other = next(m for name, m in ref[u] if name == entry["image"])
                assert other.max() == pytest.approx(ref_map.max(), abs=tol)
                continue
            # The position holds the maximum; the first one in row-major order unless near-tied.
            assert ref_map[entry["y"], entry["x"]] == pytest.approx(ref_map.max(), abs=tol)
            first = np.unravel_index(np.argmax(ref_map), ref_map.shape)
            if ref_map.ravel()[np.argsort(ref_map.ravel())[-2]] < ref_map.max() - tol:
                assert (entry["y"], entry["x"]) == tuple(int(v) for v in first)
            assert entry["box"] == list(box(rf, entry["y"], entry["x"], SIZE, SIZE))


def test_interrupted_scan_resumes_to_the_same_result(vgg16, folder, tmp_path):
    layers = {"conv1_2": [0, 5, 33, 63], "conv2_1": [1, 2]}
    kwargs = dict(top=4, size=SIZE, batch=3, progress=False)
    full = {k: r.report() for k, r in scan_layers(folder, vgg16, layers, **kwargs).items()}

    class Stop(Exception):
        pass

    def interrupt(done):
        if done == 2:
            raise Stop

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Stop):
        scan_layers(folder, vgg16, layers, state_dir=out, checkpoint_seconds=0, on_batch=interrupt, **kwargs)
    assert (out / STATE_FILE).exists()
    with np.load(out / STATE_FILE) as z:
        meta = json.loads(bytes(z["meta"]).decode())
    assert 0 < meta["images"] < 12
    with pytest.raises(Exception, match="unfinished scan; resume it"):
        scan_layers(folder, vgg16, layers, state_dir=out, **kwargs)
    with pytest.raises(Exception, match="other settings"):
        scan(folder, vgg16, "conv1_2", [0, 5], state_dir=out, resume=True, **kwargs)
    resumed = scan_layers(folder, vgg16, layers, state_dir=out, resume=True, **kwargs)
    for name in layers:
        got = resumed[name].report()
        assert got["units"] == full[name]["units"]
        assert got["images"] == full[name]["images"] == 12
        assert got["skipped"] == full[name]["skipped"]
        # One pass over several layers gives what a scan of each layer alone gives.
        alone = scan(folder, vgg16, name, layers[name], **kwargs).report()
        assert alone["units"] == got["units"]


def test_two_devices_give_the_same_result(vgg16, folder, tmp_path):
    args = [str(folder), "--layer", "conv2_2", "--units", "0:128", "--top", "3",
            "--size", str(SIZE), "--batch", "4", "--no-pictures", "-q"]
    single = scan(folder, vgg16, "conv2_2", None, top=3, size=SIZE, batch=4, progress=False).report()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    code = ("import jax, sys; from stylejax.cli import main; assert len(jax.devices()) == 2; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "patches", *args, "-o", str(tmp_path / "o")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    double = json.loads((tmp_path / "o" / "patches.json").read_text())
    assert double["devices"] == 2 and single["devices"] == len(jax.devices())
    assert double["images"] == single["images"] and double["skipped"] == single["skipped"]
    for u, entries in single["units"].items():
        other = double["units"][u]
        assert [(e["image"], e["y"], e["x"], e["box"]) for e in other] == \
               [(e["image"], e["y"], e["x"], e["box"]) for e in entries]
        np.testing.assert_allclose([e["activation"] for e in other], [e["activation"] for e in entries],
                                   rtol=1e-5)


def test_progress_records_and_no_output(vgg16, folder, capfd):
    from stylejax.progress import Progress

    seen: list[Progress] = []
    scan(folder, vgg16, "conv1_1", [0, 1], top=2, size=32, batch=5, progress=seen.append)
    assert capfd.readouterr().err == "" and capfd.readouterr().out == ""  # the library never prints
    assert seen and all(isinstance(p, Progress) and p.total is None and p.unit == "file" for p in seen)
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert seen[-1].done == 14  # 12 images + 2 unreadable files


def test_library_does_not_import_the_cli():
    code = ("import sys, stylejax.interpret.scan, stylejax.interpret.grids, stylejax.distributed, "
            "stylejax.progress; sys.exit(any(m.startswith('stylejax.cli') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_scan_arrays_equals_the_folder_scan(vgg16, folder):
    from stylejax.interpret.scan import scan_arrays

    layers = {"conv1_2": [0, 5, 33], "conv2_1": [1, 2, 100]}
    full = scan_layers(folder, vgg16, layers, top=4, size=SIZE, batch=4)
    files, images = [], []
    for path in dataset.walk_files(folder):
        try:
            images.append(dataset.load_square(path, SIZE))
            files.append(path.relative_to(folder).as_posix())
        except Exception:  # noqa: BLE001 - the two unreadable files
            continue
    stack = np.stack(images)
    for pixels in (stack, stack.astype(np.float32)):  # u8 and f32 in 0..255 give the same result
        batches = [pixels[:5], pixels[5:6], pixels[6:]]  # uneven batches: split/padded to one shape
        tops = scan_arrays(iter(batches), vgg16, layers, top=4, batch=3)
        for name, units in layers.items():
            got, want = tops[name], full[name].patches()
            assert got.units == tuple(units) and got.images == 12 and got.input_shape == (SIZE, SIZE)
            boxes = got.boxes()
            for row, unit in enumerate(units):
                assert [files[i] for i in got.top.index[row]] == [p.image for p in want[unit]]
                assert got.top.y[row].tolist() == [p.y for p in want[unit]]
                assert got.top.x[row].tolist() == [p.x for p in want[unit]]
                assert [tuple(b) for b in boxes[row].tolist()] == [p.box for p in want[unit]]
                np.testing.assert_allclose(got.top.values[row], [p.activation for p in want[unit]], rtol=1e-5)


def test_scan_arrays_refuses_bad_batches(vgg16):
    from stylejax.errors import StylejaxError
    from stylejax.interpret.scan import scan_arrays

    good = np.zeros((2, 32, 32, 3), np.uint8)
    cases = [([], "no batches"), ([good[0]], r"\[N, H, W, 3\]"), ([good[..., :1]], r"\[N, H, W, 3\]"),
             ([good.astype(np.int64)], "uint8 or float"), ([np.full((1, 32, 32, 3), 0.5, np.float32)], "0..1"),
             ([np.full((1, 32, 32, 3), 300.0)], "0..255"), ([good, np.zeros((1, 40, 40, 3), np.uint8)], "one size"),
             ([good[:0]], "no images")]
    for batches, message in cases:
        with pytest.raises(StylejaxError, match=message):
            scan_arrays(batches, vgg16, {"conv1_1": [0]})
    with pytest.raises(StylejaxError, match="outside conv1_1"):
        scan_arrays([good], vgg16, {"conv1_1": [64]})
    assert isinstance(StylejaxError("x"), Exception)


def test_class_folder_tree(vgg16, tmp_path):
    """ImageNet's layout, train/WNID/*.JPEG, scanned as it is (copies of real images)."""
    src = sorted(data_path("imagenet-sample").glob("*.jpg"))[:8]
    root = tmp_path / "train"
    for path in src:
        wnid = path.name.split("_")[0]
        (root / wnid).mkdir(parents=True)
        for j in range(2 if wnid == src[0].name.split("_")[0] else 1):  # one class with two images
            (root / wnid / f"{wnid}_{j}.JPEG").write_bytes(path.read_bytes())
    layer, units = "conv1_2", [3, 17, 40]
    result = scan(root, vgg16, layer, units, top=3, size=SIZE, batch=4)
    report = result.report()
    assert report["images"] == 9 and report["skipped"] == []
    ref, n = _torch_reference(vgg16, root, layer, units, 3)
    assert n == 9
    for u in units:
        for (ref_image, ref_map), entry in zip(ref[u], report["units"][str(u)]):
            assert entry["activation"] == pytest.approx(ref_map.max(), abs=1e-4 * max(1.0, ref_map.max()))
            assert entry["image"].count("/") == 1 and entry["image"].endswith(".JPEG")
    # The duplicate image of the first class: the earlier file wins the tie, the copy follows it.
    first = src[0].name.split("_")[0]
    for entries in report["units"].values():
        names = [e["image"] for e in entries]
        if f"{first}/{first}_1.JPEG" in names:
            assert names.index(f"{first}/{first}_0.JPEG") == names.index(f"{first}/{first}_1.JPEG") - 1


def test_pictures_from_a_saved_report(vgg16, folder, tmp_path):
    from stylejax.interpret import grids
    from stylejax.interpret.scan import ScanResult

    result = scan(folder, vgg16, "conv1_1", [0, 9], top=3, size=32, batch=4)
    report = json.loads(json.dumps(result.report()))
    again = ScanResult.from_report(report)
    assert again.report()["units"] == report["units"] and again.select([9]).unit_ids == (9,)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = grids.write_pictures(result, None, tmp_path / "a", tile=16)  # the scanned folder from the result
    b = grids.write_pictures(report, folder, tmp_path / "b", tile=16)
    assert [p.name for p in a] == [p.name for p in b] == ["conv1_1.png", "0.png", "9.png", "index.html"]
    for pa, pb in zip(a[:-1], b[:-1]):
        assert pa.read_bytes() == pb.read_bytes()
    html = a[-1].read_text()  # the timing line differs by rounding only; the tables are the same
    assert html[html.index("<section"):] == b[-1].read_text()[b[-1].read_text().index("<section"):]
