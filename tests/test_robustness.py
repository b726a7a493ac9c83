"""Faults and abuse a real user brings: no traceback, no lost work, no silent nonsense.

Each test is one case of the robustness review: most fail in the pre-flight (before weights are
loaded or anything is compiled), so they are fast; the signal tests run a real tiny transfer or
scan in a subprocess and stop it.
"""

from __future__ import annotations

import fcntl
import inspect
import os
import pydoc
import resource
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylejax import models, runtime, weights
from stylejax.cli import main
from stylejax.errors import StylejaxError
from stylejax.images import open_rgb, read_image

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(err: str, *words: str) -> str:
    """stderr holds exactly one line, an error naming every word; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("stylejax: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def image(path: Path, width: int = 40, height: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def pics(tmp_path):
    return image(tmp_path / "c.png"), image(tmp_path / "s.png", seed=1)


def subprocess_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("XLA_FLAGS", None)
    return env


#: ``python -c WITH_CTRL_C ARGV`` runs ``stylejax ARGV`` with SIGINT raising KeyboardInterrupt, as
#: at a terminal, also when the tests were started with SIGINT ignored (as a background job is).
WITH_CTRL_C = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "sys.argv[0] = 'stylejax'; runpy.run_module('stylejax', run_name='__main__')")


def refused(folder: Path, *argv, words: tuple[str, ...] = ()) -> str:
    """``stylejax ARGV`` in a subprocess exits 1 with one error line naming ``words``, no traceback,
    and leaves ``folder`` (where its outputs would go) as it found it."""
    before = sorted(folder.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "stylejax", *map(str, argv)], capture_output=True, text=True,
                       timeout=120, env=subprocess_env())
    assert r.returncode == 1, r.stderr
    line = one_error(r.stderr, *words)
    assert sorted(folder.rglob("*")) == before
    return line


def head_file(folder: Path) -> Path:
    """A .pth name, as a classifier needs (the size is refused before the file is read)."""
    path = folder / "head.pth"
    path.write_bytes(b"")
    return path


def frames(folder: Path, n: int = 2, width: int = 40, height: int = 32) -> Path:
    folder.mkdir()
    for t in range(n):
        image(folder / f"{t:03d}.png", width, height, seed=t)
    return folder


# ----------------------------------------------------------------------------- crashes

@pytest.mark.parametrize("command", ["transfer", "features", "patches", "visualize"])
def test_unwritable_output_folder_is_refused_before_any_work(capsys, pics, tmp_path, command):
    # /proc accepts no new files, like a read-only mount (and unlike chmod, even for root)
    content, style = pics
    argv = {"transfer": ["transfer", content, style, "-o", "/proc/out.png"],
            "features": ["features", content, "--layers", "conv1_1", "-o", "/proc/out.npz"],
            "patches": ["patches", tmp_path, "--layer", "conv1_1", "-o", "/proc/stylejax-out"],
            "visualize": ["visualize", "--layer", "conv1_1", "--units", "0", "-o", "/proc/out.png"]}[command]
    t0 = time.perf_counter()
    rc, out, err = cli(capsys, *argv)
    assert rc == 1 and out == ""
    one_error(err, "/proc", "not writable")
    assert time.perf_counter() - t0 < 5  # no weights loaded, nothing compiled


def test_full_disk_is_found_by_the_preflight_not_after_the_run(tmp_path, pics):
    """A file-size limit makes every write fail like a full disk (EFBIG instead of ENOSPC)."""
    content, _ = pics

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    r = subprocess.run([sys.executable, "-m", "stylejax", "features", str(content), "--layers", "conv1_1",
                        "-o", str(tmp_path / "f.npz")], capture_output=True, text=True, timeout=120,
                       preexec_fn=limit, env=subprocess_env())
    assert r.returncode == 1, r.stderr
    one_error(r.stderr, "not writable", "too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "s.png"]


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unusable_cache_converts_in_memory_with_one_note(tmp_path, pics, where):
    content, _ = pics
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        cache = tmp_path / "file" / "cache"
    else:
        cache = Path("/proc/stylejax-cache")
    out = tmp_path / "f.npz"
    r = subprocess.run([sys.executable, "-m", "stylejax", "features", str(content), "--layers", "conv1_1",
                        "-o", str(out)], capture_output=True, text=True, timeout=300,
                       env=subprocess_env(STYLEJAX_CACHE=str(cache)))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    notes = [line for line in r.stderr.splitlines() if "not usable" in line]
    assert len(notes) == 1 and "converted in memory" in notes[0]
    assert np.load(out)["conv1_1"].shape == (1, 32, 40, 64)


@pytest.mark.parametrize("command", ["transfer", "visualize", "patches", "features"])
def test_huge_size_says_the_largest_that_fits_before_any_work(capsys, pics, tmp_path, command):
    content, style = pics
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    argv = {"transfer": ["transfer", content, style, "--size", 100000, "-o", tmp_path / "o.png"],
            "visualize": ["visualize", "--layer", "conv3_1", "--units", "0", "--size", 100000, "-o", tmp_path / "o.png"],
            "patches": ["patches", folder, "--layer", "conv3_1", "--size", 100000, "-o", tmp_path / "scan"],
            "features": ["features", content, "--layers", "conv3_1", "--size", 100000, "-o", tmp_path / "o.npz"]}[command]
    t0 = time.perf_counter()
    rc, out, err = cli(capsys, *argv)
    assert rc == 1 and out == ""
    line = one_error(err, "--size 100000", "largest --size that fits is")
    largest = int(line.split("fits is ")[1].split()[0])
    assert 16 <= largest < 100000
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "scan").exists() and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("command", ["attribute", "video", "classify"])
def test_huge_size_is_refused_by_the_budget_not_by_running_out(tmp_path, pics, command):
    content, style = pics
    if command == "video":
        argv = ["video", frames(tmp_path / "clip"), style, "--size", 100000, "-o", tmp_path / "o"]
    else:
        argv = {"attribute": ["attribute", content, "--layer", "conv3_1", "--unit", 0, "-o", tmp_path / "o.npz"],
                "classify": ["classify", content, "--weights", head_file(tmp_path), "--report", tmp_path / "o.json"],
                }[command]
        argv += ["--size", 100000]
    line = refused(tmp_path, *argv, words=("--size 100000", "largest --size that fits is"))
    assert 16 <= int(line.split("fits is ")[1].split()[0]) < 100000


def test_patches_under_a_memory_limit_leaves_no_blocking_state(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    out = tmp_path / "scan"
    os.environ["STYLEJAX_MEMORY"] = "1G"
    try:
        rc, _, err = cli(capsys, "patches", folder, "--layer", "conv1_1", "--size", 4000, "-o", out)
    finally:
        del os.environ["STYLEJAX_MEMORY"]
    assert rc == 1
    one_error(err, "--size 4000", "largest --size that fits")
    assert not out.exists()  # no folder, no scan_state.npz to block the next plain run


def test_patches_with_nothing_readable_leaves_no_state(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"t{i}.png").write_text("not an image")
    out = tmp_path / "scan"
    rc, _, err = cli(capsys, "patches", folder, "--layer", "conv1_1", "--size", 32, "--batch", 1,
                     "--checkpoint-every", 0.0001, "--quiet", "-o", out)
    assert rc == 1 and "no readable images" in err
    assert not (out / "scan_state.npz").exists()


# ----------------------------------------------------------------------------- lost work

def _wait_for(proc, predicate, timeout=240.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_sighup_and_sigterm_raise_keyboard_interrupt_only_inside_the_cli():
    from stylejax.cli import signals

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # importing stylejax installs nothing
    for signum, code in ((signal.SIGHUP, 129), (signal.SIGTERM, 143)):
        with pytest.raises(KeyboardInterrupt), signals.as_interrupt() as received:
            os.kill(os.getpid(), signum)
            time.sleep(1)
        assert received.exit_code == code
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143)])
def test_transfer_stopped_by_a_scheduler_saves_image_and_report(tmp_path, pics, signum, code):
    content, style = pics
    out = tmp_path / "out.png"
    log = tmp_path / "stderr.txt"
    cache = tmp_path / "cache"  # a small network compiles in seconds; what is tested is the stop
    weights.save_set(cache / "weights" / "alex.safetensors", _random_set("alexnet"), arch="alexnet",
                     preprocessing="torchvision", source="test")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "stylejax", "transfer", str(content), str(style),
                                 "--weights", "alex", "--size", "64", "--iters", "100000", "--print-every", "1",
                                 "--quiet", "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                env=subprocess_env(STYLEJAX_CACHE=str(cache)))
        try:
            assert _wait_for(proc, lambda: "iteration 2/" in log.read_text()), log.read_text()
            proc.send_signal(signum)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == code, log.read_text()
    assert "Traceback" not in log.read_text()
    assert read_image(out).shape == (51, 64, 3)
    import json

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["interrupted"] is True and report["iterations"] >= 2


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_patches_stopped_keeps_its_checkpoint_and_says_resume(tmp_path, signum, code):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(400):
        image(folder / f"{i:03d}.png", 24, 24, seed=i)
    out = tmp_path / "scan"
    proc = subprocess.Popen([sys.executable, "-c", WITH_CTRL_C, "patches", str(folder), "--layer", "conv1_1",
                             "--size", "16", "--batch", "1", "--workers", "1", "--checkpoint-every", "0.0001",
                             "--quiet", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert _wait_for(proc, lambda: (out / "scan_state.npz").exists())
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert (out / "scan_state.npz").exists()
    assert "--resume" in err.splitlines()[-1]


def test_second_patches_run_into_a_locked_folder_is_refused(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    out = tmp_path / "scan"
    out.mkdir()
    fd = os.open(out / ".stylejax.lock", os.O_RDWR | os.O_CREAT)  # another run holds the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, _, err = cli(capsys, "patches", folder, "--layer", "conv1_1", "--size", 32, "-o", out)
    finally:
        os.close(fd)
    assert rc == 1
    one_error(err, "another stylejax run is writing to")
    assert sorted(p.name for p in out.iterdir()) == [".stylejax.lock"]


def test_patches_rerun_removes_stale_unit_strips_and_prints_summary_on_stdout(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        image(folder / f"{i}.png", 32, 32, seed=i)
    out = tmp_path / "scan"
    rc, stdout, _ = cli(capsys, "patches", folder, "--layer", "conv1_1", "--units", "0:4", "--size", 32,
                        "--top", 2, "--quiet", "-o", out)
    assert rc == 0 and "scanned 3 images" in stdout
    rc, stdout, _ = cli(capsys, "patches", folder, "--layer", "conv1_1", "--units", "2", "--size", 32,
                        "--top", 2, "--quiet", "-o", out)
    assert rc == 0 and "scanned 3 images" in stdout
    assert sorted(p.name for p in (out / "units" / "conv1_1").iterdir()) == ["2.png"]


# ----------------------------------------------------------------------------- silent wrong results

def test_degenerate_content_is_refused_with_the_minimum(capsys, tmp_path, pics):
    _, style = pics
    thin = tmp_path / "thin.png"
    Image.new("RGB", (10000, 20), (90, 40, 20)).save(thin)
    rc, out, err = cli(capsys, "transfer", thin, style, "-o", tmp_path / "o.png")
    assert rc == 1 and out == ""
    one_error(err, "256x1", "needs at least 16 px")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("command", ["transfer", "features", "patches"])
def test_size_one_is_refused_with_the_minimum(capsys, tmp_path, pics, command):
    content, style = pics
    argv = {"transfer": ["transfer", content, style, "--size", 1, "-o", tmp_path / "o.png"],
            "features": ["features", content, "--layers", "pool5", "--size", 1, "-o", tmp_path / "o.npz"],
            "patches": ["patches", tmp_path, "--layer", "pool5", "--size", 1, "-o", tmp_path.parent / f"{tmp_path.name}-scan"]}[command]
    rc, out, err = cli(capsys, *argv)
    assert rc == 1 and out == ""
    one_error(err)
    assert any(word in err for word in ("at least", ">="))
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("command", ["visualize", "attribute", "classify"])
def test_too_small_for_the_layer_states_the_minimum(tmp_path, command):
    # visualize: pool5 is 1 x 1 on the 28 px canvas of the transforms, but empty on the 16 px
    # image its objective is reported on (NaN); attribute: a 8x6 image; classify: the head's pool5
    small = image(tmp_path / "small.png", 8, 6)
    argv = {"visualize": ["visualize", "--layer", "pool5", "--units", 0, "--size", 16, "-o", tmp_path / "o.png"],
            "attribute": ["attribute", small, "--layer", "pool5", "--unit", 0, "-o", tmp_path / "o.npz"],
            "classify": ["classify", small, "--weights", head_file(tmp_path), "--size", 16,
                         "--report", tmp_path / "o.json"]}[command]
    refused(tmp_path, *argv, words=("at least 32",))


@pytest.mark.parametrize("size,words", [(1, ("1x1", "conv4_2 needs at least 16 px")),
                                        (48, ("48x12", "dis optical flow needs at least 16 px"))])
def test_video_too_small_is_refused_before_the_first_frame(tmp_path, pics, size, words):
    """At 1 px the first frame ran before the flow failed with a traceback, leaving frame_0000.png;
    at 48x12 (a shallow layer is 1 x 1 at 1 px) OpenCV's DIS flow crashed the process."""
    _, style = pics
    clip = frames(tmp_path / "clip", width=64, height=16)
    layers = [] if size == 1 else ["--content-layer", "conv1_1", "--style-layers", "conv1_1"]
    refused(tmp_path, "video", clip, style, "--size", size, *layers, "--iters", 1, "-o", tmp_path / "out",
            words=words)


def test_features_refuses_an_empty_pool5(capsys, tmp_path):
    small = image(tmp_path / "small.png", 20, 20)
    rc, _, err = cli(capsys, "features", small, "--layers", "pool5", "-o", tmp_path / "o.npz")
    assert rc == 1
    one_error(err, "pool5 needs at least 32 px")


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    mid = header + (len(data) - header) // 2
    data[mid:mid + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def test_damaged_builtin_weights_are_rebuilt_from_their_source(tmp_cache):
    assert weights.cache_dir().parent == tmp_cache
    notes: list[str] = []
    w = weights.load("vgg16", progress=notes.append)
    path = tmp_cache / "weights" / "vgg16.safetensors"
    _damage(path)
    notes.clear()
    w2 = weights.load("vgg16", progress=notes.append)
    assert any("damaged" in n for n in notes), notes
    weights.read_set(path)  # the rebuilt file passes its content hash
    for layer in ("conv1_1", "conv5_3"):
        np.testing.assert_array_equal(np.asarray(w2.params[layer]["kernel"]), np.asarray(w.params[layer]["kernel"]))


def _random_set(arch: str, seed: int = 0) -> dict:
    from stylejax.convert import unflatten, flatten

    rng = np.random.default_rng(seed)
    return unflatten({k: rng.normal(0, 0.01, shape).astype(np.float32)
                      for k, shape in flatten(models.get(arch).param_shapes())})


def test_damaged_imported_set_says_how_to_reimport(tmp_cache):
    params = _random_set("alexnet")
    path = weights.save_set(tmp_cache / "weights" / "alex.safetensors", params, arch="alexnet",
                            preprocessing="torchvision", source="/data/alexnet.pth")
    _damage(path)
    with pytest.raises(StylejaxError, match=r"damaged.*stylejax weights import /data/alexnet.pth --arch alexnet "
                                            r"--name alex --force"):
        weights.load("alex")


# ----------------------------------------------------------------------------- messages

def test_image_under_the_documented_limit_is_read(tmp_path):
    big = tmp_path / "big.png"
    Image.new("1", (9999, 9999), 1).save(big)  # 99.98 MP: over Pillow's 89.5 MP guard, under ours
    img = open_rgb(big)
    assert img.size == (9999, 9999)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width,height", [(12000, 9000), (30000, 30000)])
def test_bombs_get_their_own_words(tmp_path, width, height):
    bomb = _png_header_only(tmp_path / "bomb.png", width, height)
    with pytest.raises(StylejaxError, match="decompression bomb"):
        read_image(bomb)


def test_fifo_is_not_an_empty_file(capsys, tmp_path, pics):
    _, style = pics
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    rc, _, err = cli(capsys, "transfer", fifo, style, "-o", tmp_path / "o.png")
    assert rc == 1
    line = one_error(err, "FIFO (named pipe), not an image file")
    assert "empty file" not in line
    with pytest.raises(StylejaxError, match="FIFO"):
        read_image(fifo)


@pytest.mark.parametrize("command", ["transfer", "visualize"])
def test_report_equal_to_output_gets_the_right_words(capsys, tmp_path, pics, command):
    content, style = pics
    out = tmp_path / "o.png"
    argv = ([command, content, style] if command == "transfer" else [command, "--layer", "conv1_1", "--units", "0"])
    rc, _, err = cli(capsys, *argv, "-o", out, "--report", out)
    assert rc == 1
    line = one_error(err, "--report", "is the output image")
    assert "input" not in line


@pytest.mark.parametrize("command", ["transfer", "features", "visualize"])
def test_output_folder_given_as_file_gets_the_right_words(capsys, tmp_path, pics, command):
    content, style = pics
    argv = {"transfer": ["transfer", content, style], "features": ["features", content, "--layers", "conv1_1"],
            "visualize": ["visualize", "--layer", "conv1_1", "--units", "0"]}[command]
    rc, _, err = cli(capsys, *argv, "-o", tmp_path)
    assert rc == 1
    line = one_error(err, "is a folder; give a file name")
    assert "extension" not in line


def test_weights_set_without_arch_uses_the_arch_it_records(capsys, tmp_cache, pics):
    content, _ = pics
    weights.save_set(tmp_cache / "weights" / "alex.safetensors", _random_set("alexnet"), arch="alexnet",
                     preprocessing="torchvision", source="test")
    out = content.parent / "f.npz"
    rc, stdout, err = cli(capsys, "features", content, "--weights", "alex", "--layers", "conv5",
                          "--size", 64, "-o", out)
    assert rc == 0, err
    assert np.load(out)["conv5"].shape[-1] == 256


def test_configure_help_does_not_show_the_environment(monkeypatch):
    monkeypatch.setenv("STYLEJAX_TEST_SECRET", "hunter2-do-not-print")
    text = pydoc.render_doc(runtime.configure) + pydoc.render_doc(runtime.set_xla_flags)
    assert "hunter2" not in text
    assert inspect.signature(runtime.configure).parameters["environ"].default is None
    env = {}
    runtime.set_xla_flags(env)
    assert "xla_cpu_enable_concurrency_optimized_scheduler" in env["XLA_FLAGS"]


def test_save_every_with_huge_iters_starts_at_once(capsys, pics, tmp_path):
    content, style = pics
    t0 = time.perf_counter()
    # --size 1 is refused after the snapshot check: what the check costs is all that is timed
    rc, _, err = cli(capsys, "transfer", content, style, "--iters", 10**7, "--save-every", 20, "--size", 1,
                     "-o", tmp_path / "o.png")
    assert rc == 1 and "at least" in err
    assert time.perf_counter() - t0 < 3


def test_save_every_snapshot_over_an_input_is_still_refused(capsys, tmp_path, pics):
    _, style = pics
    content = image(tmp_path / "o_40.png")
    rc, _, err = cli(capsys, "transfer", content, style, "--iters", 100, "--save-every", 20,
                     "-o", tmp_path / "o.png")
    assert rc == 1
    one_error(err, "o_40.png", "also an input")


def test_legacy_pth_refusal_does_not_advise_unpickling(tmp_path):
    torch = pytest.importorskip("torch")
    from stylejax.weightfiles import read_pth

    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(StylejaxError) as info:
        read_pth(legacy)
    text = str(info.value)
    assert "torch.load(old)" not in text and "weights_only=True" in text


def test_patches_output_inside_the_scanned_folder_is_refused(capsys, tmp_path):
    image(tmp_path / "a.png")
    rc, _, err = cli(capsys, "patches", tmp_path, "--layer", "conv1_1", "-o", tmp_path / "out")
    assert rc == 1
    one_error(err, "inside the scanned folder")
    assert not (tmp_path / "out").exists()


def test_links_and_fifos_in_a_scanned_tree_are_listed_as_skipped(tmp_path):
    from stylejax.interpret import dataset

    image(tmp_path / "a.png", 32, 32)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub_link").symlink_to(tmp_path / "sub")
    paths = list(dataset.walk_files(tmp_path))
    skipped, count = [], 0
    for b in dataset.batches(paths, 16, 8, workers=1):
        skipped += [(p.name, reason) for p, reason in b.skipped]
        count += b.count
    reasons = dict(skipped)
    assert count == 1
    assert reasons["dangling.png"] == "dangling symbolic link"
    assert reasons["loop.png"] == "symbolic link loop"
    assert "FIFO" in reasons["pipe.png"]
    assert "not followed" in reasons["sub_link"]


# ----------------------------------------------------------------------------- parity

def test_neural_style_relu_names_are_aliases_of_the_post_relu_convs():
    vgg = models.get("vgg19")
    assert vgg.canonical(["relu4_2", "relu1_1", "conv5_1", "pool2"]) == ["conv4_2", "conv1_1", "conv5_1", "pool2"]
    with pytest.raises(StylejaxError, match="unknown layer 'relu6_1'"):
        vgg.canonical(["relu6_1"])


def test_features_accepts_relu_names_and_writes_compressed_npz(capsys, tmp_path, pics):
    content, _ = pics
    out = tmp_path / "f.npz"
    rc, _, err = cli(capsys, "features", content, "--layers", "relu1_1,conv1_1", "-o", out)
    assert rc == 0, err
    with zipfile.ZipFile(out) as z:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in z.infolist())
    data = np.load(out)
    np.testing.assert_array_equal(data["relu1_1"], data["conv1_1"])
    assert data["relu1_1"].min() >= 0  # post-ReLU


def test_lbfgs_memory_and_print_every_flags_map_to_settings():
    from stylejax.cli import build_parser
    from stylejax.cli.transfer_cmd import options_of

    args = build_parser().parse_args(["transfer", "c.png", "s.png", "-o", "o.png", "--lbfgs-memory", "7",
                                      "--print-every", "50"])
    assert options_of(args, args.preset).lbfgs_memory == 7 and args.print_every == 50


def test_relu_names_reach_the_transfer_options(pics):
    from stylejax.cli import build_parser
    from stylejax.cli.transfer_cmd import canonical_layers, options_of

    content, style = pics
    args = build_parser().parse_args(["transfer", str(content), str(style), "-o", "o.png", "--arch", "vgg16",
                                      "--content-layer", "relu4_2", "--style-layers", "relu1_1,conv2_1"])
    canonical_layers(args)
    options = options_of(args, args.preset)
    assert options.content_layers == ("conv4_2",) and options.style_layers == ("conv1_1", "conv2_1")


def test_atlas_gets_the_same_preflight(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    rc, _, err = cli(capsys, "atlas", folder, "--layers", "conv1_1", "-o", folder / "site")
    assert rc == 1
    one_error(err, "inside the scanned folder")
    rc, _, err = cli(capsys, "atlas", folder, "--layers", "relu1_1", "--size", 100000, "-o", tmp_path / "site")
    assert rc == 1
    one_error(err, "largest --size that fits")
    rc, _, err = cli(capsys, "atlas", folder, "--layers", "pool5", "--size", 8, "-o", tmp_path / "site")
    assert rc == 1
    one_error(err, "use at least 32")
    assert not (tmp_path / "site").exists() and not (folder / "site").exists()
