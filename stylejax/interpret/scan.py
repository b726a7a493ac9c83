"""The top-patch scan of Zeiler & Fergus: for each unit, the K images that excite it most.

Every image of a folder tree is streamed through the network in fixed-shape, jit-compiled
batches; one compiled call per batch (preprocess -> features -> per-image unit maxima -> merge)
updates a running top-K per unit with one entry per image. The batch is sharded over a 1-D
``jax.sharding.Mesh`` of all local devices. Ties are broken by the image's ordinal in the walk
(earlier first), and within an image the first maximum in row-major order wins (as argmax), so
the result does not depend on the batch size, the device count or interruptions.

State is checkpointed atomically to ``OUT/scan_state.npz`` (the top-K arrays plus a JSON blob
with the walk position, skipped files and paths), one file so a crash can never leave a
mismatched pair. A plain .npz was chosen over orbax: the state is four small arrays, a single
``os.replace`` makes it atomic, and it is readable with numpy alone.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stylejax import models
from stylejax.errors import StylejaxError
from stylejax.images import atomic_write
from stylejax.interpret import dataset
from stylejax.interpret.receptive_field import RF, box, for_arch
from stylejax.preprocessing import preprocess

STATE_FILE = "scan_state.npz"
STATE_VERSION = 1


class TopK(NamedTuple):
    """Running top-K per unit, best first. All arrays are ``[U, K]``.

    values: f32 activation maxima (-inf where empty); index: i32 image ordinal (-1 where empty);
    y, x: i32 position of the maximum in the layer's feature map.
    """

    values: jax.Array
    index: jax.Array
    y: jax.Array
    x: jax.Array


def init_topk(n_units: int, k: int) -> TopK:
    """An empty top-K state for ``n_units`` units."""
    return TopK(np.full((n_units, k), -np.inf, np.float32), np.full((n_units, k), -1, np.int32),
                np.zeros((n_units, k), np.int32), np.zeros((n_units, k), np.int32))


def unit_maxima(acts: jax.Array, units: Sequence[int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-image maximum of each unit and its first row-major position.

    Args:
      acts: f32[B, h, w, C] activations.
      units: the U channel indices (static).
    Returns:
      ``(values f32[B, U], y i32[B, U], x i32[B, U])``.
    """
    b, h, w, c = acts.shape
    units = tuple(int(u) for u in units)
    if units == tuple(range(units[0], units[0] + len(units))):
        a = acts[..., units[0]:units[0] + len(units)]
    else:
        a = jnp.take(acts, jnp.asarray(units, jnp.int32), axis=-1)
    flat = a.reshape(b, h * w, len(units))
    # max, then the first position holding it: two plain reductions, which XLA:CPU runs 2x faster
    # than argmax's variadic (value, index) reduction (77 -> 36 ms per 16 x 224 px batch)
    values = jnp.max(flat, axis=1)
    where = jnp.arange(h * w, dtype=jnp.int32)[None, :, None]
    pos = jnp.min(jnp.where(flat == values[:, None, :], where, h * w - 1), axis=1)
    return values, pos // w, pos % w


def merge_topk(state: TopK, values: jax.Array, index: jax.Array, y: jax.Array, x: jax.Array,
               valid: jax.Array) -> TopK:
    """Merge a batch's per-image maxima into the running top-K (pure; jit it).

    Args:
      state: :class:`TopK` with ``[U, K]`` arrays, sorted best first, ties by lower image index.
      values, y, x: ``[B, U]`` per-image unit maxima and positions.
      index: i32[B] image ordinals, all larger than any in ``state`` and increasing.
      valid: bool[B]; invalid (padding) rows never enter the top-K.
    Returns:
      The new :class:`TopK`. ``lax.top_k`` keeps the lower position first among equal values and
      the concatenation is in image-index order, so ties go to the earlier image.
    """
    k = state.values.shape[1]
    v = jnp.where(valid[:, None], values, -jnp.inf).T
    idx = jnp.broadcast_to(jnp.where(valid, index, -1)[None, :], v.shape)
    all_v = jnp.concatenate([state.values, v], axis=1)
    best, pos = jax.lax.top_k(all_v, k)

    def pick(a, b):
        return jnp.take_along_axis(jnp.concatenate([a, b], axis=1), pos, axis=1)

    new_index = pick(state.index, idx)
    return TopK(best, jnp.where(jnp.isneginf(best), -1, new_index), pick(state.y, y.T), pick(state.x, x.T))


def _step(params, states: tuple[TopK, ...], pixels: jax.Array, index: jax.Array, valid: jax.Array, *,
          arch: str, convention: str, layers: tuple[str, ...], units: tuple[tuple[int, ...], ...],
          ) -> tuple[TopK, ...]:
    """One scan step: u8[B, S, S, 3] pixels -> the updated top-K of every scanned layer."""
    x = preprocess(pixels.astype(jnp.float32), convention)
    acts = models.get(arch).features(params, x, layers, conv="auto")
    out = []
    for state, layer, us in zip(states, layers, units):
        values, y, xs = unit_maxima(acts[layer], us)
        out.append(merge_topk(state, values, index, y, xs, valid))
    return tuple(out)


#: XLA options for the scan step (per executable; other backends ignore them). On XLA:CPU the
#: forward-only batch otherwise becomes one YNNPACK graph fusion; Eigen's convolutions (YNNPACK
#: only for dots) scanned 16 x 224 px 27 % faster to conv2_2 and 13 % faster to conv5_3.
SCAN_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def make_step(arch: str, convention: str, layers: Sequence[str], units: Sequence[Sequence[int]],
              mesh: Mesh) -> Callable:
    """``step(params, states, pixels, index, valid) -> states`` jitted, the batch sharded over ``mesh``.

    ``states`` is one :class:`TopK` per layer; all layers come from one forward pass.
    """
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    fn = partial(_step, arch=arch, convention=convention, layers=tuple(layers),
                 units=tuple(tuple(int(u) for u in us) for us in units))
    return jax.jit(fn, in_shardings=(rep, rep, data, data, data), out_shardings=rep,
                   compiler_options=SCAN_COMPILER_OPTIONS)


def parse_units(text: str | None, channels: int, layer: str = "layer") -> list[int]:
    """``"A:B"`` (half-open, either end optional), ``"3,7,12"``, ``"5"`` or None (all) -> unit list."""
    if text is None or text.strip() in ("", ":"):
        return list(range(channels))
    text = text.strip()
    try:
        if ":" in text:
            a, b = text.split(":")
            lo = int(a) if a.strip() else 0
            hi = int(b) if b.strip() else channels
            units = list(range(lo, hi))
            if not units:
                raise StylejaxError(f"--units {text}: empty range")
        else:
            units = [int(item) for item in text.split(",")]
    except ValueError:
        raise StylejaxError(f"--units {text!r}: expected A:B, a list like 3,7,12, or one number") from None
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise StylejaxError(f"--units: unit {bad[0]} is outside {layer}, which has units 0..{channels - 1}")
    if len(set(units)) != len(units):
        raise StylejaxError(f"--units {text}: repeated unit")
    return units


@dataclass(frozen=True)
class Settings:
    """What defines a scan's result (a resumed scan must match these)."""

    root: str
    layers: tuple[str, ...]
    units: tuple[tuple[int, ...], ...]
    top: int
    size: int
    arch: str
    weights: str
    preprocessing: str


@dataclass
class ScanResult:
    """A finished scan: settings, the top-K, and the bookkeeping for the report."""

    settings: Settings
    layer: str
    unit_ids: tuple[int, ...]
    rf: RF
    feature_size: int
    state: TopK
    paths: dict[int, str]
    images: int
    skipped: list[dict]
    seconds: float
    compile_seconds: float
    devices: int

    def units(self) -> dict[str, list[dict]]:
        """``{"<unit>": [{"image", "activation", "y", "x", "box"}, ...]}``, best first."""
        s = self.settings
        values, index, ys, xs = (np.asarray(a) for a in self.state)
        out: dict[str, list[dict]] = {}
        for row, unit in enumerate(self.unit_ids):
            entries = []
            for j in range(values.shape[1]):
                if index[row, j] < 0:
                    continue
                y, x = int(ys[row, j]), int(xs[row, j])
                entries.append({"image": self.paths[int(index[row, j])],
                                "activation": float(values[row, j]), "y": y, "x": x,
                                "box": list(box(self.rf, y, x, s.size, s.size))})
            out[str(unit)] = entries
        return out

    def report(self) -> dict:
        """The ``patches.json`` document."""
        s = self.settings
        return {
            "layer": self.layer, "images": self.images, "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images / self.seconds, 2) if self.seconds > 0 else None,
            "compile_seconds": round(self.compile_seconds, 3),
            "arch": s.arch, "weights": s.weights, "preprocessing": s.preprocessing,
            "size": s.size, "top": s.top, "folder": s.root, "devices": self.devices,
            "resize": "shorter side to size (Lanczos), centre size x size crop",
            "receptive_field": {"size": self.rf.size, "jump": self.rf.jump, "start": self.rf.start},
            "feature_map": [self.feature_size, self.feature_size],
            "units": self.units(),
        }


def _jsonish(value):
    return json.loads(json.dumps(value))


def _save_state(path: Path, settings: Settings, states: Sequence[TopK], meta: dict) -> None:
    arrays = {f"{i}.{name}": np.asarray(value) for i, state in enumerate(states)
              for name, value in state._asdict().items()}
    doc = {"version": STATE_VERSION, "settings": asdict(settings), **meta}
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _load_state(path: Path, settings: Settings) -> tuple[tuple[TopK, ...], dict]:
    try:
        with np.load(path) as z:
            doc = json.loads(bytes(z["meta"]).decode())
            states = tuple(TopK(*(np.array(z[f"{i}.{name}"]) for name in TopK._fields))
                           for i in range(len(settings.layers)))
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise StylejaxError(f"{path}: unreadable scan state ({type(exc).__name__}); "
                            "delete it to start over") from None
    saved, want = doc.get("settings", {}), _jsonish(asdict(settings))
    if doc.get("version") != STATE_VERSION or saved != want:
        diff = [k for k, v in want.items() if saved.get(k) != v]
        raise StylejaxError(f"{path} is a scan with other settings ({', '.join(diff) or 'version'}); "
                            "use the same settings or another output folder")
    return states, doc


def merge_processes(states: Sequence[TopK]) -> TopK:
    """Merge per-process top-K states (host arrays, disjoint image sets) into one, exactly.

    Sorted by activation (descending), then image ordinal (ascending): the order a single
    process produces, so the result does not depend on the number of processes.
    """
    k = states[0].values.shape[1]
    values, index, ys, xs = (np.concatenate([np.asarray(getattr(s, f)) for s in states], axis=1)
                             for f in TopK._fields)
    order = np.lexsort((np.where(index < 0, np.iinfo(np.int32).max, index), -values.astype(np.float64)), axis=1)[:, :k]
    pick = partial(np.take_along_axis, indices=order, axis=1)
    return TopK(pick(values), pick(index), pick(ys), pick(xs))


def _gather(states: Sequence[TopK], paths: dict[int, str], images: int, skipped: list,
            seconds: float) -> tuple[list[TopK], dict[int, str], int, list, float]:
    """Combine every process's scan (a no-op for one process)."""
    from stylejax import distributed

    if jax.process_count() == 1:
        return list(states), paths, images, skipped, seconds
    merged = [merge_processes([TopK(*parts) for parts in zip(*(distributed.allgather(np.asarray(a)) for a in state))])
              for state in states]
    docs = distributed.allgather_json({"paths": {str(k): v for k, v in _prune(paths, states).items()},
                                       "images": images, "skipped": skipped, "seconds": seconds})
    all_paths = {int(k): v for doc in docs for k, v in doc["paths"].items()}
    all_skipped = sorted((item for doc in docs for item in doc["skipped"]), key=lambda d: d["file"])
    return (merged, _prune(all_paths, merged), sum(d["images"] for d in docs), all_skipped,
            max(d["seconds"] for d in docs))


def state_file(process_index: int = 0, process_count: int = 1) -> str:
    """Checkpoint file name of one process's share of a scan."""
    return STATE_FILE if process_count == 1 else f"scan_state.{process_index}of{process_count}.npz"


def _prune(paths: dict[int, str], states: Sequence[TopK]) -> dict[int, str]:
    keep = set()
    for state in states:
        keep.update(np.unique(np.asarray(state.index)).tolist())
    return {i: p for i, p in paths.items() if i in keep}


def scan(root: str | os.PathLike, weights, layer: str, units: Sequence[int] | None = None,
         **kwargs) -> ScanResult:
    """Scan every image under ``root`` for one layer; see :func:`scan_layers` for the arguments."""
    return scan_layers(root, weights, {layer: units}, **kwargs)[layer]


def scan_layers(root: str | os.PathLike, weights, layers: Mapping[str, Sequence[int] | None], *,
                top: int = 9, size: int = 224, batch: int = 16,
                state_dir: str | os.PathLike | None = None, resume: bool = False,
                checkpoint_seconds: float = 60.0, workers: int | None = None, progress: bool = True,
                on_batch: Callable[[int], None] | None = None,
                exclude: Sequence[str | os.PathLike] = ()) -> dict[str, ScanResult]:
    """Scan every image under ``root``; return each unit's top ``top`` images, per layer.

    Args:
      root: folder tree of images (any number; streamed, decoded in a thread pool).
      weights: a :class:`stylejax.weights.Weights`.
      layers: ``{layer name: unit indices or None (all)}``; all layers share one forward pass.
      top: K, entries per unit (one per image). ``size``: images are resized so the shorter side
        is ``size`` then centre-cropped to ``size x size``. ``batch``: images per compiled step
        (rounded up to a multiple of the device count).
      state_dir: where ``scan_state.npz`` is checkpointed every ``checkpoint_seconds`` and on
        interruption; ``resume`` continues from it. None: no checkpoints.
      on_batch: called with the number of batches done after each one (progress hooks, tests).
    Returns:
      ``{layer: ScanResult}``.
    Raises:
      StylejaxError for a missing/empty folder, bad layer/units/top/size, or no readable image.
    """
    from stylejax.cli.common import progress_bar
    from stylejax.interpret.receptive_field import output_sizes

    root_path = Path(root)
    if not root_path.exists():
        raise StylejaxError(f"{root}: no such folder")
    if not root_path.is_dir():
        raise StylejaxError(f"{root}: not a folder")
    if top < 1:
        raise StylejaxError(f"top must be >= 1, got {top}")
    if size < 1 or batch < 1:
        raise StylejaxError("size and batch must be positive")
    if not layers:
        raise StylejaxError("no layer requested")
    backbone = models.get(weights.arch)
    backbone.check_layers(list(layers))
    channels = {lay.name: lay.channels for lay in backbone.layers}
    sides = output_sizes(backbone.layers, size)
    names, unit_lists = tuple(layers), []
    for name in names:
        units = list(range(channels[name])) if layers[name] is None else [int(u) for u in layers[name]]
        if not units:
            raise StylejaxError(f"no units selected for {name}")
        bad = [u for u in units if not 0 <= u < channels[name]]
        if bad:
            raise StylejaxError(f"unit {bad[0]} is outside {name}, which has units 0..{channels[name] - 1}")
        if sides[name] < 1:
            raise StylejaxError(f"size {size} is too small for {name}; its feature map would be empty")
        unit_lists.append(tuple(units))
    settings = Settings(str(root_path.resolve()), names, tuple(unit_lists), int(top), int(size), weights.arch,
                        weights.name, weights.preprocessing)
    exclude = [*exclude] + ([state_dir] if state_dir is not None else [])
    total = dataset.count_files(root_path, exclude)
    if total == 0:
        raise StylejaxError(f"{root}: no files to scan")
    # Several processes (jax.distributed): each takes every P-th file and its local devices.
    pid, nproc = jax.process_index(), jax.process_count()
    total = len(range(pid, total, nproc))

    state_path = Path(state_dir) / state_file(pid, nproc) if state_dir is not None else None
    states = tuple(init_topk(len(u), top) for u in unit_lists)
    paths: dict[int, str] = {}
    images, skipped, position, seconds, doc = 0, [], 0, 0.0, {}
    if state_path is not None and state_path.exists():
        if not resume:
            raise StylejaxError(f"{state_path} holds an unfinished scan; pass --resume to continue it, "
                                "or delete it to start over")
        states, doc = _load_state(state_path, settings)
        paths = {int(k): v for k, v in doc["paths"].items()}
        images, skipped, position, seconds = doc["images"], doc["skipped"], doc["position"], doc["seconds"]

    devices = jax.local_devices()
    mesh = Mesh(np.array(devices), ("data",))
    batch = -(-batch // len(devices)) * len(devices)
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = make_step(weights.arch, weights.preprocessing, names, unit_lists, mesh)
    params = jax.device_put(weights.params, rep)
    states = jax.device_put(states, rep)
    t0 = time.perf_counter()
    compiled = step.lower(params, states,
                          jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8, sharding=data),
                          jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data),
                          jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=data)).compile()
    compile_seconds = time.perf_counter() - t0

    walk = dataset.walk_files(root_path, exclude)
    if position:
        walk = itertools.islice(walk, position - 1, None)
        last = next(walk, None)
        if last is None or last.relative_to(root_path).as_posix() != doc.get("last"):
            raise StylejaxError(f"{root} changed since the scan began (file {position} is no longer "
                                f"{doc.get('last')}); start over in a new output folder")
    last_rel = doc.get("last")

    def checkpoint() -> None:
        nonlocal paths
        if state_path is None:
            return
        paths = _prune(paths, states)
        _save_state(state_path, settings, states, {
            "position": position, "last": last_rel, "images": images, "skipped": skipped,
            "seconds": seconds + (time.perf_counter() - t_start), "paths": {str(k): v for k, v in paths.items()}})

    bar = progress_bar(total, f"scan {','.join(names)}", unit="img", quiet=not progress)
    bar.update(position)
    t_start = t_last = time.perf_counter()
    done, lagged = 0, 0
    try:
        for b in dataset.batches(walk, size, batch, start=position, workers=workers, share=(pid, nproc)):
            new_skipped = [{"file": path.relative_to(root_path).as_posix(), "reason": reason}
                           for path, reason in b.skipped]
            for i, path in zip(b.index[: b.count].tolist(), b.paths):
                paths[i] = path.relative_to(root_path).as_posix()
            new_states, previous = states, states
            if b.count:
                new_states = compiled(params, states, jax.device_put(b.pixels, data),
                                      jax.device_put(b.index, data), jax.device_put(b.valid, data))
            ends_on_image = b.count and int(b.index[b.count - 1]) == b.position - 1
            rel = (b.paths[-1] if ends_on_image else b.skipped[-1][0]).relative_to(root_path).as_posix()
            # No calls between these stores: an interrupt cannot split the bookkeeping from the state.
            states, images, position, last_rel, skipped = (
                new_states, images + b.count, b.position, rel, skipped + new_skipped)
            # Keep one step queued behind the running one: the device never idles, the bar shows
            # finished work, and the host cannot run ahead of the device by more than a batch.
            jax.block_until_ready(previous)
            bar.update(lagged)
            lagged = b.count + len(b.skipped)
            done += 1
            if on_batch is not None:
                on_batch(done)
            if state_path is not None and time.perf_counter() - t_last >= checkpoint_seconds:
                jax.block_until_ready(states)
                checkpoint()
                t_last = time.perf_counter()
        jax.block_until_ready(states)
        bar.update(lagged)
    except BaseException:
        # Save what is merged so far (the state always covers whole batches) and re-raise.
        if state_path is not None and done:
            checkpoint()
            print(f"stylejax: scan state saved in {state_path}; rerun with --resume to continue",
                  file=sys.stderr, flush=True)
        raise
    finally:
        bar.close()
    seconds += time.perf_counter() - t_start
    host = [TopK(*(np.asarray(a) for a in state)) for state in states]
    host, paths, images, skipped, seconds = _gather(host, paths, images, skipped, seconds)
    if images == 0:
        raise StylejaxError(f"{root}: no readable images among {len(skipped)} files")
    paths = _prune(paths, host)
    rfs = for_arch(weights.arch)
    return {name: ScanResult(settings, name, units, rfs[name], sides[name], state, paths, images, skipped,
                             seconds, compile_seconds, jax.device_count())
            for name, units, state in zip(names, unit_lists, host)}


def clear_state(state_dir: str | os.PathLike) -> None:
    """Remove a finished scan's checkpoint (this process's share)."""
    try:
        (Path(state_dir) / state_file(jax.process_index(), jax.process_count())).unlink()
    except FileNotFoundError:
        pass
