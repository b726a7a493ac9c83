"""Two CPU processes joined by jax.distributed on 127.0.0.1 give the single-process scan result."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

from conftest import data_path
from stylejax.interpret.scan import TopK, merge_processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _patches(folder, out, *extra):
    return [sys.executable, "-m", "stylejax", "patches", str(folder), "--layer", "conv2_1", "--units", "0:12",
            "--top", "4", "--size", "48", "--batch", "4", "--no-pictures", "-q", "-o", str(out), *extra]


def test_two_processes_equal_one(tmp_path):
    src = sorted(data_path("imagenet-sample").glob("*.jpg"))[:13]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in src:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    env = {**os.environ, "XLA_FLAGS": ""}
    single = subprocess.run(_patches(folder, tmp_path / "one"), capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    port = _free_port()
    procs = [subprocess.Popen(_patches(folder, tmp_path / "two", "--coordinator", f"127.0.0.1:{port}",
                                       "--num-processes", "2", "--process-id", str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    one = json.loads((tmp_path / "one" / "patches.json").read_text())
    two = json.loads((tmp_path / "two" / "patches.json").read_text())
    assert two["images"] == one["images"] == 13 and two["skipped"] == one["skipped"]
    assert two["devices"] == 2
    for unit, entries in one["units"].items():
        other = two["units"][unit]
        assert [(e["image"], e["y"], e["x"], e["box"]) for e in entries] == \
               [(e["image"], e["y"], e["x"], e["box"]) for e in other]
        np.testing.assert_allclose([e["activation"] for e in other], [e["activation"] for e in entries], rtol=1e-5)
    assert not list((tmp_path / "two").glob("scan_state*"))


def test_merge_processes_orders_like_one_process():
    inf = -np.inf
    a = TopK(np.array([[5.0, 3.0, inf]], np.float32), np.array([[2, 0, -1]], np.int32),
             np.array([[1, 2, 0]], np.int32), np.array([[3, 4, 0]], np.int32))
    b = TopK(np.array([[5.0, 4.0, 3.0]], np.float32), np.array([[1, 3, 5]], np.int32),
             np.array([[7, 8, 9]], np.int32), np.array([[0, 1, 2]], np.int32))
    m = merge_processes([a, b])
    assert m.values.tolist() == [[5.0, 5.0, 4.0]]
    assert m.index.tolist() == [[1, 2, 3]]  # equal activations: the earlier image first
    assert m.y.tolist() == [[7, 1, 8]] and m.x.tolist() == [[0, 3, 1]]
