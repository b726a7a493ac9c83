"""Two CPU processes joined by jax.distributed on 127.0.0.1: a lost process ends the other with one
line, every checkpoint survives, and resuming gives the single-process scan result."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, data_path
from stylejax.interpret.scan import TopK, merge_processes, scan

LAYER, UNITS, TOP, SIZE = "conv2_1", list(range(12)), 9, 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _patches(folder, out, *extra):
    return [sys.executable, "-m", "stylejax", "patches", str(folder), "--layer", LAYER, "--units", "0:12",
            "--top", str(TOP), "--size", str(SIZE), "--batch", "2", "--no-pictures", "-q", "-o", str(out),
            "--checkpoint-every", "0.01", *extra]


HEARTBEAT = 5  # seconds (the default is 10; shorter keeps the test short)
ENV = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}


def _job(folder, out, *extra):
    """Start the two processes of a job, each in its own session (its process group = a host)."""
    port = _free_port()
    return [subprocess.Popen(_patches(folder, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                      "--process-id", str(i), "--heartbeat-timeout", str(HEARTBEAT), *extra),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                             start_new_session=True) for i in range(2)]


def _meta(path) -> dict:
    with np.load(path) as z:
        return json.loads(bytes(z["meta"]).decode())


def _kill_when_saved(procs, watched, victim: int, timeout: float = 120.0):
    """SIGKILL process ``victim``'s whole group as soon as ``watched`` (a checkpoint) is rewritten;
    return the survivor's (exit code, stderr, seconds from the kill to its exit)."""
    before = watched.stat().st_mtime_ns if watched.exists() else None
    t0 = time.monotonic()
    while not (watched.exists() and watched.stat().st_mtime_ns != before):
        assert time.monotonic() - t0 < timeout, "the scan never checkpointed"
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        time.sleep(0.005)
    os.killpg(procs[victim].pid, signal.SIGKILL)
    killed = time.monotonic()
    survivor = procs[1 - victim]
    _, err = survivor.communicate(timeout=60)
    procs[victim].wait(timeout=30)
    return survivor.returncode, err, time.monotonic() - killed


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err and "Check failure" not in err, err
    return err


@pytest.mark.slow
def test_lost_process_stops_the_job_and_resume_equals_one_process(tmp_path, vgg16):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in sorted(data_path("imagenet-sample").glob("*.jpg"))[:18]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "two"
    states = [out / f"scan_state.{i}of2.npz" for i in range(2)]
    procs = _job(folder, out)
    try:
        # Host 1 is lost mid-scan: process 0 stops within the heartbeat timeout, with one line.
        code, err, seconds = _kill_when_saved(procs, states[1], victim=1)
        assert code == 1 and seconds < HEARTBEAT + 15, (code, seconds, err)
        line = _one_line(err)
        assert f"process 1 of 2 stopped sending heartbeats for {HEARTBEAT} s" in line and "--resume" in line, line
        assert str(states[0]) in line
        first = [_meta(s) for s in states]
        assert 0 < first[1]["images"] < 9, first[1]  # process 1 was stopped part-way through its share

        # Resumed, and now the coordinator (host 0) is lost: process 1 stops within seconds.
        procs = _job(folder, out, "--resume")
        code, err, seconds = _kill_when_saved(procs, states[1], victim=0)
        assert code == 1 and seconds < 15, (code, seconds, err)
        line = _one_line(err)
        assert "process 0 (the coordinator" in line and "was lost" in line and "--resume" in line, line
        second = [_meta(s) for s in states]
        assert second[1]["position"] > first[1]["position"]  # the resumed run went on from the checkpoint

        # Resumed again to the end: the top-9 of one uninterrupted single-process scan.
        procs = _job(folder, out, "--resume")
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    finally:
        _stop(procs)
    two = json.loads((out / "patches.json").read_text())
    one = scan(folder, vgg16, LAYER, UNITS, top=TOP, size=SIZE, batch=4).report()
    assert two["images"] == one["images"] == 18 and two["skipped"] == one["skipped"]
    assert two["devices"] == 2
    for unit, entries in one["units"].items():
        other = two["units"][unit]
        assert len(entries) == TOP
        assert [(e["image"], e["y"], e["x"], e["box"]) for e in entries] == \
               [(e["image"], e["y"], e["x"], e["box"]) for e in other]
        np.testing.assert_allclose([e["activation"] for e in other], [e["activation"] for e in entries], rtol=1e-5)
    assert not list(out.glob("scan_state*")) and not list(out.glob(".scan_state*"))


@pytest.mark.slow
def test_unreachable_coordinator_is_one_line_within_the_join_timeout(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(next(iter(sorted(data_path("imagenet-sample").glob("*.jpg")))).read_bytes())
    t0 = time.monotonic()
    proc = subprocess.run(_patches(folder, tmp_path / "o", "--coordinator", f"127.0.0.1:{_free_port()}",
                                   "--num-processes", "2", "--process-id", "1", "--join-timeout", "2"),
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert "within 2 s" in line and "--join-timeout" in line, line
    assert time.monotonic() - t0 < 60


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


@pytest.mark.parametrize("log, want", [
    ("F1202 client.h:80] Terminating process because the JAX distributed service detected fatal errors. x\n"
     "UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n1\nThe tasks have crashed.",
     "process 1 of 2 stopped sending heartbeats for 10 s"),
    ("F1202 client.h:80] Terminating process because the JAX distributed service detected fatal errors. "
     "absl::Status: DEADLINE_EXCEEDED: Deadline Exceeded\n\nRPC: /xla.coordination.CoordinationService/RegisterTask",
     "within 60 s"),
    ("nothing from the runtime", None),
])
def test_describe_runtime_log(log, want):
    from stylejax.distributed import describe_runtime_log

    got = describe_runtime_log(log, coordinator="h:1", process_id=0, num_processes=2)
    assert got is None if want is None else want in got
