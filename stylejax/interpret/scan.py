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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stylejax import models
from stylejax.activations import features
from stylejax.errors import StylejaxError
from stylejax.images import atomic_write
from stylejax.interpret import dataset
from stylejax.interpret.receptive_field import RF, box, for_arch
from stylejax.progress import Callback, Progress
from stylejax.weights import Weights

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


def _step(w: Weights, states: tuple[TopK, ...], pixels: jax.Array, index: jax.Array, valid: jax.Array, *,
          layers: tuple[str, ...], units: tuple[tuple[int, ...], ...]) -> tuple[TopK, ...]:
    """One scan step: u8[B, S, S, 3] pixels -> the updated top-K of every scanned layer."""
    acts = features(w, pixels, layers, conv="auto")
    out = []
    for state, layer, us in zip(states, layers, units):
        values, y, xs = unit_maxima(acts[layer], us)
        out.append(merge_topk(state, values, index, y, xs, valid))
    return tuple(out)


#: XLA options for the scan step (per executable; other backends ignore them). On XLA:CPU the
#: forward-only batch otherwise becomes one YNNPACK graph fusion; Eigen's convolutions (YNNPACK
#: only for dots) scanned 16 x 224 px 27 % faster to conv2_2 and 13 % faster to conv5_3.
SCAN_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def make_step(layers: Sequence[str], units: Sequence[Sequence[int]], mesh: Mesh) -> Callable:
    """``step(weights, states, pixels, index, valid) -> states`` jitted, the batch sharded over ``mesh``.

    ``states`` is one :class:`TopK` per layer; all layers come from one forward pass.
    """
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    fn = partial(_step, layers=tuple(layers),
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
            units = list(range(int(a) if a.strip() else 0, int(b) if b.strip() else channels))
        else:
            units = [int(item) for item in text.split(",")]
    except ValueError:
        raise StylejaxError(f"units {text!r}: expected A:B, a list like 3,7,12, or one number") from None
    if not units:
        raise StylejaxError(f"units {text}: empty range")
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise StylejaxError(f"unit {bad[0]} is outside {layer}, which has units 0..{channels - 1}")
    if len(set(units)) != len(units):
        raise StylejaxError(f"units {text}: repeated unit")
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


class Patch(NamedTuple):
    """One entry of a unit's top-K: the image, the unit's maximum there and where it is.

    ``y, x`` index the layer's feature map; ``box`` is the receptive field ``(top, left, bottom,
    right)`` (half-open) in the scanned ``size x size`` image's pixels, clipped to it.
    """

    image: str
    activation: float
    y: int
    x: int
    box: tuple[int, int, int, int]


@dataclass
class ScanResult:
    """A finished scan of one layer: settings, the top-K, and the bookkeeping for the report."""

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

    def patches(self) -> dict[int, list[Patch]]:
        """``{unit: [Patch, ...]}``, best first (fewer than ``top`` when fewer images were read)."""
        size = self.settings.size
        values, index, ys, xs = (np.asarray(a) for a in self.state)
        out: dict[int, list[Patch]] = {}
        for row, unit in enumerate(self.unit_ids):
            out[unit] = [Patch(self.paths[int(index[row, j])], float(values[row, j]), int(ys[row, j]),
                               int(xs[row, j]), box(self.rf, int(ys[row, j]), int(xs[row, j]), size, size))
                         for j in range(values.shape[1]) if index[row, j] >= 0]
        return out

    def units(self) -> dict[str, list[dict]]:
        """``{"<unit>": [{"image", "activation", "y", "x", "box"}, ...]}``, best first."""
        return {str(unit): [{**p._asdict(), "box": list(p.box)} for p in entries]
                for unit, entries in self.patches().items()}

    def select(self, units: Sequence[int]) -> ScanResult:
        """The same result restricted to ``units`` (in that order), e.g. for a figure."""
        rows = [self.unit_ids.index(int(u)) for u in units]
        state = TopK(*(np.asarray(a)[rows] for a in self.state))
        return replace(self, unit_ids=tuple(int(u) for u in units), state=state)

    @classmethod
    def from_report(cls, report: Mapping) -> ScanResult:
        """Rebuild the typed result from a ``patches.json`` document (as :meth:`report` wrote it)."""
        try:
            units = tuple(int(u) for u in report["units"])
            k = int(report["top"])
            names = sorted({e["image"] for entries in report["units"].values() for e in entries})
            ordinal = {name: i for i, name in enumerate(names)}
            state = init_topk(len(units), k)
            for row, entries in enumerate(report["units"].values()):
                for j, e in enumerate(entries[:k]):
                    state.values[row, j], state.index[row, j] = e["activation"], ordinal[e["image"]]
                    state.y[row, j], state.x[row, j] = e["y"], e["x"]
            rf = report["receptive_field"]
            settings = Settings(str(report.get("folder", "")), (report["layer"],), (units,), k,
                                int(report["size"]), report["arch"], str(report["weights"]),
                                report["preprocessing"])
            return cls(settings, report["layer"], units, RF(report["layer"], rf["size"], rf["jump"], rf["start"]),
                       int(report["feature_map"][0]), state, dict(enumerate(names)), int(report["images"]),
                       list(report["skipped"]), float(report["seconds"]), float(report["compile_seconds"]),
                       int(report["devices"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StylejaxError(f"not a patches report ({type(exc).__name__}: {exc})") from None

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


def state_file(process_index: int = 0, process_count: int = 1) -> str:
    """Checkpoint file name of one process's share of a scan."""
    return STATE_FILE if process_count == 1 else f"scan_state.{process_index}of{process_count}.npz"


def _prune(paths: dict[int, str], states: Sequence[TopK]) -> dict[int, str]:
    keep = set()
    for state in states:
        keep.update(np.unique(np.asarray(state.index)).tolist())
    return {i: p for i, p in paths.items() if i in keep}


# ---------------------------------------------------------------------------------------------
# The folder scan, in its steps: validate -> resume -> compile -> run batches -> finish.


def _check_layers(weights, layers: Mapping[str, Sequence[int] | None], height: int, width: int,
                  ) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], dict[str, tuple[int, int]]]:
    """Layer names, unit tuples and each layer's feature-map ``(h, w)`` for an ``height x width`` input."""
    from stylejax.interpret.receptive_field import output_sizes

    if not layers:
        raise StylejaxError("no layer requested")
    backbone = models.get(weights.arch)
    backbone.check_layers(list(layers))
    channels = {lay.name: lay.channels for lay in backbone.layers}
    rows, cols = output_sizes(backbone.layers, height), output_sizes(backbone.layers, width)
    names, unit_lists = tuple(layers), []
    for name in names:
        units = list(range(channels[name])) if layers[name] is None else [int(u) for u in layers[name]]
        if not units:
            raise StylejaxError(f"no units selected for {name}")
        bad = [u for u in units if not 0 <= u < channels[name]]
        if bad:
            raise StylejaxError(f"unit {bad[0]} is outside {name}, which has units 0..{channels[name] - 1}")
        if len(set(units)) != len(units):
            raise StylejaxError(f"unit {units[[units.count(u) > 1 for u in units].index(True)]} "
                                f"is requested twice for {name}")
        if min(rows[name], cols[name]) < 1:
            raise StylejaxError(f"{height} x {width} px is too small for {name}; its feature map would be empty")
        unit_lists.append(tuple(units))
    return names, tuple(unit_lists), {n: (rows[n], cols[n]) for n in names}


def _validate(root: str | os.PathLike, weights, layers, top: int, size: int, batch: int,
              ) -> tuple[Settings, dict[str, tuple[int, int]]]:
    """Check the arguments of a folder scan; return its :class:`Settings` and feature-map sides."""
    root_path = Path(root)
    if not root_path.exists():
        raise StylejaxError(f"{root}: no such folder")
    if not root_path.is_dir():
        raise StylejaxError(f"{root}: not a folder")
    if top < 1:
        raise StylejaxError(f"top must be >= 1, got {top}")
    if size < 1 or batch < 1:
        raise StylejaxError("size and batch must be positive")
    names, unit_lists, sides = _check_layers(weights, layers, size, size)
    settings = Settings(str(root_path.resolve()), names, unit_lists, int(top), int(size), weights.arch,
                        weights.name, weights.preprocessing)
    return settings, sides


@dataclass
class _Tally:
    """A scan in progress: the merged top-K and the bookkeeping that goes with it.

    ``position`` counts files consumed from the walk (all processes' files, images and skipped);
    ``last`` is the relative path of the last of them, to check the tree on resume.
    """

    states: tuple
    paths: dict[int, str] = field(default_factory=dict)
    images: int = 0
    skipped: list[dict] = field(default_factory=list)
    position: int = 0
    last: str | None = None
    seconds: float = 0.0

    def meta(self, seconds: float) -> dict:
        return {"position": self.position, "last": self.last, "images": self.images, "skipped": self.skipped,
                "seconds": seconds, "paths": {str(k): v for k, v in self.paths.items()}}


def _resume(state_path: Path | None, settings: Settings, resume: bool) -> _Tally:
    """A fresh tally, or the one saved at ``state_path`` when ``resume`` (refused without it)."""
    fresh = _Tally(tuple(init_topk(len(u), settings.top) for u in settings.units))
    if state_path is None or not state_path.exists():
        return fresh
    if not resume:
        raise StylejaxError(f"{state_path} holds an unfinished scan; resume it (same settings), "
                            "or delete it to start over")
    states, doc = _load_state(state_path, settings)
    return _Tally(states, {int(k): v for k, v in doc["paths"].items()}, doc["images"], doc["skipped"],
                  doc["position"], doc.get("last"), doc["seconds"])


def _compile(weights, settings_layers: Sequence[str], units: Sequence[Sequence[int]], states, batch: int,
             height: int, width: int, dtype) -> tuple[Callable, object, object, NamedSharding, int, float]:
    """Compile the step for fixed-shape batches on all local devices.

    Returns ``(compiled, weights on the devices, states, data sharding, batch rounded to the device count, seconds)``.
    """
    devices = jax.local_devices()
    mesh = Mesh(np.array(devices), ("data",))
    batch = -(-batch // len(devices)) * len(devices)
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = make_step(settings_layers, units, mesh)
    params = jax.device_put(weights, rep)
    states = jax.device_put(states, rep)
    t0 = time.perf_counter()
    compiled = step.lower(params, states,
                          jax.ShapeDtypeStruct((batch, height, width, 3), dtype, sharding=data),
                          jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data),
                          jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=data)).compile()
    return compiled, params, states, data, batch, time.perf_counter() - t0


def _open_walk(root: Path, exclude: Sequence, tally: _Tally) -> Iterator[Path]:
    """The tree's files from the tally's position on, after checking the tree did not change."""
    walk = dataset.walk_files(root, exclude)
    if not tally.position:
        first = next(walk, None)  # a peek, not a second walk: an empty tree fails before compiling
        if first is None:
            raise StylejaxError(f"{root}: no files to scan")
        return itertools.chain([first], walk)
    walk = itertools.islice(walk, tally.position - 1, None)
    last = next(walk, None)
    if last is None or last.relative_to(root).as_posix() != tally.last:
        raise StylejaxError(f"{root} changed since the scan began (file {tally.position} is no longer "
                            f"{tally.last}); start over in a new output folder")
    return walk


def _run_batches(compiled, params, data: NamedSharding, tally: _Tally, batches: Iterable[dataset.Batch],
                 root: Path, *, save: Callable[[], None] | None, checkpoint_seconds: float,
                 tick: Callable[[int], None], on_batch: Callable[[int], None] | None) -> int:
    """Stream ``batches`` through the compiled step, updating ``tally`` in place; return batches done.

    ``tick(files)`` reports files finished (on the device, not just queued); ``save()`` writes a
    checkpoint every ``checkpoint_seconds`` and, when a batch is done, on any exception.
    """
    t_last = time.perf_counter()
    done, lagged = 0, 0
    try:
        for b in batches:
            new_skipped = [{"file": path.relative_to(root).as_posix(), "reason": reason}
                           for path, reason in b.skipped]
            for i, path in zip(b.index[: b.count].tolist(), b.paths):
                tally.paths[i] = path.relative_to(root).as_posix()
            new_states, previous = tally.states, tally.states
            if b.count:
                new_states = compiled(params, tally.states, jax.device_put(b.pixels, data),
                                      jax.device_put(b.index, data), jax.device_put(b.valid, data))
            ends_on_image = b.count and int(b.index[b.count - 1]) == b.position - 1
            rel = (b.paths[-1] if ends_on_image else b.skipped[-1][0]).relative_to(root).as_posix()
            # No calls between these stores: an interrupt cannot split the bookkeeping from the state.
            tally.states, tally.images, tally.position, tally.last, tally.skipped = (
                new_states, tally.images + b.count, b.position, rel, tally.skipped + new_skipped)
            # Keep one step queued behind the running one: the device never idles, progress shows
            # finished work, and the host cannot run ahead of the device by more than a batch.
            jax.block_until_ready(previous)
            tick(lagged)
            lagged = b.count + len(b.skipped)
            done += 1
            if on_batch is not None:
                on_batch(done)
            if save is not None and time.perf_counter() - t_last >= checkpoint_seconds:
                jax.block_until_ready(tally.states)
                save()
                t_last = time.perf_counter()
        jax.block_until_ready(tally.states)
        tick(lagged)
    except BaseException:
        # Save what is merged so far (the state always covers whole batches) and re-raise.
        if save is not None and done:
            save()
        raise
    return done


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


def _finish(settings: Settings, sides: Mapping[str, tuple[int, int]], tally: _Tally, compile_seconds: float,
            ) -> dict[str, ScanResult]:
    """Gather every process's share and build the typed per-layer results."""
    host = [TopK(*(np.asarray(a) for a in state)) for state in tally.states]
    host, paths, images, skipped, seconds = _gather(host, tally.paths, tally.images, tally.skipped, tally.seconds)
    if images == 0:
        raise StylejaxError(f"{settings.root}: no readable images among {len(skipped)} files")
    paths = _prune(paths, host)
    rfs = for_arch(settings.arch)
    return {name: ScanResult(settings, name, units, rfs[name], sides[name][0], state, paths, images, skipped,
                             seconds, compile_seconds, jax.device_count())
            for name, units, state in zip(settings.layers, settings.units, host)}


def scan(root: str | os.PathLike, weights, layer: str, units: Sequence[int] | None = None,
         **kwargs) -> ScanResult:
    """Scan every image under ``root`` for one layer; see :func:`scan_layers` for the arguments."""
    return scan_layers(root, weights, {layer: units}, **kwargs)[layer]


def scan_layers(root: str | os.PathLike, weights, layers: Mapping[str, Sequence[int] | None], *,
                top: int = 9, size: int = 224, batch: int = 16,
                state_dir: str | os.PathLike | None = None, resume: bool = False,
                checkpoint_seconds: float = 60.0, workers: int | None = None,
                progress: Callback | bool | None = None,
                on_batch: Callable[[int], None] | None = None,
                exclude: Sequence[str | os.PathLike] = ()) -> dict[str, ScanResult]:
    """Scan every image under ``root``; return each unit's top ``top`` images, per layer.

    The tree is walked once, lazily (never held in memory). With several processes joined by
    :func:`stylejax.distributed.initialize`, process ``i`` of ``n`` scans the files whose walk
    ordinal is ``i`` modulo ``n`` and the results are merged exactly (every process returns them).

    Args:
      root: folder tree of images (any number, any sub-folders, e.g. ImageNet's ``train/WNID/*.JPEG``);
        each is decoded to u8[size, size, 3] (shorter side to ``size``, centre crop).
      weights: a :class:`stylejax.weights.Weights`.
      layers: ``{layer name: unit indices or None (all)}``; all layers share one forward pass.
      top: K, entries per unit (one per image). ``size``: images are resized so the shorter side
        is ``size`` then centre-cropped to ``size x size``. ``batch``: images per compiled step
        (rounded up to a multiple of the local device count).
      state_dir: where this process's checkpoint (:func:`state_file`) is written every
        ``checkpoint_seconds`` and on interruption; ``resume`` continues from it. None: none.
      progress: called with a :class:`stylejax.progress.Progress` (files of this process's share
        done; ``total`` None, as the walk is lazy) after each batch. Booleans are accepted and
        ignored (the library draws no bar).
      on_batch: called with the number of batches done after each one (hooks, tests).
      exclude: folders under ``root`` not to scan (``state_dir`` is always excluded).
    Returns:
      ``{layer: ScanResult}``.
    Raises:
      StylejaxError for a missing/empty folder, bad layer/units/top/size, an unfinished scan in
      ``state_dir`` without ``resume``, or no readable image.
    """
    settings, sides = _validate(root, weights, layers, top, size, batch)
    root_path = Path(root)
    exclude = [*exclude] + ([state_dir] if state_dir is not None else [])
    pid, nproc = jax.process_index(), jax.process_count()
    state_path = Path(state_dir) / state_file(pid, nproc) if state_dir is not None else None
    tally = _resume(state_path, settings, resume)
    walk = _open_walk(root_path, exclude, tally)
    compiled, params, tally.states, data, batch, compile_seconds = _compile(
        weights, settings.layers, settings.units, tally.states, batch, size, size, jnp.uint8)

    t_start = time.perf_counter()
    seconds_before = tally.seconds

    def save() -> None:
        tally.paths = _prune(tally.paths, tally.states)
        _save_state(state_path, settings, tally.states, tally.meta(seconds_before + time.perf_counter() - t_start))

    report = progress if callable(progress) else None
    files = len(range(pid, tally.position, nproc))  # this process's files consumed so far

    def tick(n: int) -> None:
        nonlocal files
        files += n
        if report is not None and n:
            report(Progress(files, None, "file"))

    batches = dataset.batches(walk, size, batch, start=tally.position, workers=workers, share=(pid, nproc))
    if report is not None:
        report(Progress(files, None, "file"))
    _run_batches(compiled, params, data, tally, batches, root_path, save=save if state_path is not None else None,
                 checkpoint_seconds=checkpoint_seconds, tick=tick, on_batch=on_batch)
    tally.seconds = seconds_before + time.perf_counter() - t_start
    return _finish(settings, sides, tally, compile_seconds)


# ---------------------------------------------------------------------------------------------
# The array-in form.


@dataclass
class LayerTop:
    """The top-K of one layer over a stream of arrays.

    Attributes:
      layer: layer name. units: the U unit (channel) indices, one row each.
      rf: the layer's receptive field (input pixels).
      input_shape: ``(H, W)`` of the scanned arrays.
      feature_shape: ``(h, w)`` of the layer's feature map for that input size.
      top: :class:`TopK` of host arrays ``[U, K]``; ``top.index`` is the image's position in the
        stream (0 = first row of the first batch), -1 where fewer than K images were seen.
      images: images scanned.
    """

    layer: str
    units: tuple[int, ...]
    rf: RF
    input_shape: tuple[int, int]
    feature_shape: tuple[int, int]
    top: TopK
    images: int

    def boxes(self) -> np.ndarray:
        """i32[U, K, 4] receptive-field boxes ``(top, left, bottom, right)`` of the entries, clipped
        to the input (zeros where ``index`` is -1)."""
        h, w = self.input_shape
        out = np.zeros(self.top.index.shape + (4,), np.int32)
        for (u, j), i in np.ndenumerate(self.top.index):
            if i >= 0:
                out[u, j] = box(self.rf, int(self.top.y[u, j]), int(self.top.x[u, j]), h, w)
        return out


def _check_pixels(array, shape: tuple[int, int] | None, n: int) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise StylejaxError(f"batch {n}: expected RGB pixels [N, H, W, 3], got shape {a.shape}")
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise StylejaxError(f"batch {n}: expected uint8 or float pixels, got {a.dtype}")
    if shape is not None and a.shape[1:3] != shape:
        raise StylejaxError(f"batch {n}: images are {a.shape[1]} x {a.shape[2]} px, "
                            f"the first batch's are {shape[0]} x {shape[1]}; use one size")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        if a.size and not np.isfinite(a).all():
            raise StylejaxError(f"batch {n}: pixels must be finite")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise StylejaxError(f"batch {n}: float pixels must be in 0..255, got {a.min():.3g}..{a.max():.3g}")
        if a.size and 0 < a.max() <= 1.0:
            raise StylejaxError(f"batch {n}: float pixels look like 0..1 (max {a.max():.3g}); "
                                "scale them to 0..255")
    return a


def scan_arrays(batches: Iterable, weights, layers: Mapping[str, Sequence[int] | None], *, top: int = 9,
                batch: int | None = None, progress: Callback | None = None) -> dict[str, LayerTop]:
    """Top-K patch scan over a stream of pixel arrays: for each unit, the ``top`` images whose
    maximum activation is highest (one entry per image), exactly as the folder scan keeps them.

    Args:
      batches: an iterable of RGB pixel batches ``u8[N, H, W, 3]`` or ``f32[N, H, W, 3]`` in 0..255
        (N may vary, H and W may not); preprocessing happens inside. Only one batch is held at a time.
      weights: a :class:`stylejax.weights.Weights`.
      layers: ``{layer name: unit indices or None (all)}``; all layers share one forward pass.
      top: K, entries per unit.
      batch: images per compiled step (default: the first batch's N, rounded up to the local
        device count); longer batches are split, shorter ones padded, so one shape is compiled.
      progress: called with a :class:`stylejax.progress.Progress` (images done) after each step.
    Returns:
      ``{layer: LayerTop}``; for each unit, values ``f32[U, K]`` best first, ties going to the
      earlier image and, within an image, to the first maximum in row-major order.
    Raises:
      StylejaxError for bad layers/units/top, a batch of the wrong rank, channel count, dtype,
      size or value range, or an empty stream.

    Example::

        tops = scan_arrays((imgs[i:i + 32] for i in range(0, len(imgs), 32)), w, {"conv3_1": range(8)})
        tops["conv3_1"].top.index  # i32[8, 9], positions in imgs
    """
    if top < 1:
        raise StylejaxError(f"top must be >= 1, got {top}")
    if batch is not None and batch < 1:
        raise StylejaxError(f"batch must be positive, got {batch}")
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise StylejaxError("no batches to scan")
    first = _check_pixels(first, None, 0)
    h, w = first.shape[1:3]
    names, unit_lists, sides = _check_layers(weights, layers, h, w)
    states = tuple(init_topk(len(u), top) for u in unit_lists)
    compiled, params, states, data, rows, _ = _compile(
        weights, names, unit_lists, states, batch or max(1, first.shape[0]), h, w, first.dtype)
    seen = 0
    for n, array in enumerate(itertools.chain([first], it)):
        a = _check_pixels(array, (h, w), n) if n else first
        if a.dtype != first.dtype:
            a = a.astype(first.dtype)
        for s in range(0, a.shape[0], rows):
            chunk = a[s:s + rows]
            count = chunk.shape[0]
            pixels = np.zeros((rows, h, w, 3), first.dtype)
            pixels[:count] = chunk
            index = np.full((rows,), -1, np.int32)
            index[:count] = np.arange(seen, seen + count, dtype=np.int32)
            states = compiled(params, states, jax.device_put(pixels, data), jax.device_put(index, data),
                              jax.device_put(index >= 0, data))
            seen += count
            if progress is not None:
                jax.block_until_ready(states)
                progress(Progress(seen, None, "image"))
    if seen == 0:
        raise StylejaxError("no images to scan (every batch was empty)")
    rfs = for_arch(weights.arch)
    return {name: LayerTop(name, units, rfs[name], (h, w), sides[name], TopK(*(np.asarray(a) for a in state)), seen)
            for name, units, state in zip(names, unit_lists, states)}


def clear_state(state_dir: str | os.PathLike) -> None:
    """Remove a finished scan's checkpoint (this process's share), and any half-written copy of
    it that a process killed while saving left behind."""
    name = state_file(jax.process_index(), jax.process_count())
    for path in [Path(state_dir) / name, *Path(state_dir).glob(f".{name}.*.tmp")]:
        path.unlink(missing_ok=True)
