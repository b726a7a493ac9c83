"""Style a clip frame by frame, with temporal consistency (Ruder, Dosovitskiy & Brox 2016).

Each frame ``t`` is a style transfer run of its own (every transfer setting applies). With
temporal consistency on, frame ``t > 0`` also gets

* the previous output warped onto it, ``w_t = warp(O_{t-1}, flow(C_t, C_{t-1}))``, as its
  initialisation, and
* the short-term temporal term ``lambda_t Jt``, ``Jt = sum c (G_t - w_t)^2``, with ``c`` the
  consistency mask of the forward and backward flow between the content frames ``C_{t-1}``,
  ``C_t`` (:mod:`stylejax.temporal`), added to the objective.

The flow is computed between the content frames resized to the output size. Every frame of a
clip has the same shape, so the compiled step is reused for all of them: frame 0, and every frame
styled alone (``temporal_weight=None``), carries the term with a mask of zeros (it vanishes), so
it runs the same compiled step as the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from stylejax import temporal
from stylejax.errors import StylejaxError
from stylejax.images import resize_longest
from stylejax.progress import Progress
from stylejax.style import config
from stylejax.style.transfer import transfer
from stylejax.weights import Weights

#: ``lambda_t`` when none is given: balanced against ``alpha = 1, beta = 10`` (the defaults).
DEFAULT_TEMPORAL_WEIGHT = 1e3


@dataclass
class FrameResult:
    """One finished frame: ``image`` u8[H, W, 3] and what its run measured.

    ``loss`` holds the transfer run's terms (``total`` includes ``lambda_t Jt``; ``objective`` is
    ``alpha Jc + beta Js + gamma Jtv`` alone, comparable with an independent run's ``total``);
    ``consistent`` is the fraction of pixels the mask keeps (None without temporal consistency).
    """

    index: int
    image: np.ndarray
    loss: dict
    seconds: float
    flow_seconds: float
    iterations: int
    consistent: float | None


FrameCallback = Callable[[int, int, int, float], None]  # (frame, done iterations, total, loss)


def content_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """The content frames u8[T, h, w, 3] at the output size (longest side ``size``)."""
    return np.stack([np.asarray(resize_longest(f, size)) for f in frames])


def stylize_clip(w: Weights, frames: np.ndarray, styles: Sequence[np.ndarray], options: config.Options, *,
                 temporal_weight: float | None = DEFAULT_TEMPORAL_WEIGHT, flow_method: str = "dis",
                 start: int = 0, previous: np.ndarray | None = None,
                 callback: FrameCallback | None = None) -> Iterator[FrameResult]:
    """Yield each stylised frame of ``frames`` u8[T, H, W, 3] from ``start`` on, in order.

    ``temporal_weight``: ``lambda_t`` (None: each frame alone, as ``stylejax transfer`` would).
    ``options``: the transfer's :class:`stylejax.style.config.Options`, applied to every frame.
    ``previous``: the output of frame ``start - 1`` u8[h, w, 3] when resuming, so the temporal
    term carries on across the resume. ``callback(frame, done, total, loss)`` runs after every
    compiled call. Ctrl-C during a frame raises KeyboardInterrupt with that frame unfinished.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise StylejaxError(f"frames must be u8[T, H, W, 3] with T >= 1, got {frames.dtype}{list(frames.shape)}")
    if not 0 <= start <= len(frames):
        raise StylejaxError(f"start frame {start} is outside the clip's {len(frames)} frames")
    if temporal_weight is not None and (isinstance(temporal_weight, bool) or not isinstance(temporal_weight, (
            int, float, np.floating, np.integer)) or not math.isfinite(temporal_weight) or temporal_weight < 0):
        raise StylejaxError(f"temporal_weight must be a finite number >= 0, got {temporal_weight!r}")
    if flow_method not in temporal.FLOW_METHODS:
        raise StylejaxError(f"unknown flow method {flow_method!r}; use one of {', '.join(temporal.FLOW_METHODS)}")
    s = config.validate(options, w.arch, len(styles))
    content = content_frames(frames, s.sizes[-1])
    shape = content.shape[1:3]
    if previous is not None and (previous.shape[:2] != shape):
        raise StylejaxError(f"previous output is {previous.shape[1]}x{previous.shape[0]}, "
                            f"the frames are {shape[1]}x{shape[0]} at size {s.sizes[-1]}")
    init_image = None
    if s.init not in ("content", "random"):
        raise StylejaxError("video frames start from the content or from noise (init content or random); "
                            "later frames start from the previous output")
    for t in range(start, len(frames)):
        t0 = time.perf_counter()
        frame_settings, init_image, consistent = s, None, None
        # the first frame, and every frame styled alone, carry the term masked out entirely
        image, mask = content[t].astype(np.float32), np.zeros(shape, np.float32)
        if temporal_weight is not None and previous is not None:
            backward = temporal.optical_flow(content[t], content[t - 1], flow_method)
            forward = temporal.optical_flow(content[t - 1], content[t], flow_method)
            mask = temporal.consistency_mask(backward, forward)
            image = np.asarray(temporal.warp(previous.astype(np.float32), backward))
            init_image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            frame_settings = replace(s, init="previous")
            consistent = float(mask.mean())
        target = {"image": image, "mask": mask, "weight": float(temporal_weight or 0.0)}
        flow_seconds = time.perf_counter() - t0

        def on_step(p: Progress, t=t) -> None:
            if callback is not None:
                callback(t, p.done, p.total, p.loss)

        result = transfer(frames[t], styles, weights=w, options=frame_settings, init_image=init_image,
                          callback=on_step, temporal_target=target)
        if result.interrupted:
            raise KeyboardInterrupt
        loss = dict(result.loss)
        loss["objective"] = loss["total"] - float(temporal_weight or 0.0) * loss["temporal"]
        previous = result.image
        yield FrameResult(t, previous, loss, time.perf_counter() - t0, flow_seconds, result.iterations, consistent)
