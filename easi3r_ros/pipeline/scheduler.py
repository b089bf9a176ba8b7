"""Which frames go into which window, which frame each window publishes, and which frames are dropped: the
stream's synchronous scheduler (no threads, no network; :class:`~.stream.StreamProcessor` runs it on a
worker thread, the offline runner directly).

Windows. Accepted frames wait in a bounded *pending* queue. The first window of a segment takes its first
``window_size`` (W) frames; every later window is the last ``W - stride`` frames of the previous window (the
overlap) plus the next ``stride`` (S) pending frames. Each frame has a stable id (a stream-wide counter), so
:class:`~easi3r_ros.pipeline.window.WindowPipeline` encodes it once and decodes each ordered pair's pass 1
once, however many windows the frame belongs to.

Publish once. A frame is published by the first window in which at least ``m = (W - S) // 2`` frames follow
it (:func:`context_margin`). In a steady-state window the published positions are ``W - S - m .. W - m - 1``,
and ``W - S - m >= m``, so every published frame has at least ``m`` frames on both sides, except the leading
frames of a segment, which its first window publishes with whatever left context it has. Results of the last
``m`` frames wait (*held*) for the next window, or for a flush.

Flush. On request (a pause in the stream, shutdown) or at a segment's end, held results are published as they
are and frames no window has taken get a final window (the previous window's last frames plus them, W at
most). A segment with fewer than 3 frames cannot form a window: those frames are dropped.

Drop policy. At most ``queue_limit`` frames wait: beyond that the *oldest* are dropped (``queue full``), so the
stream stays current; the next window still overlaps the previous one (it just spans a time gap). With
``max_frame_age`` a frame that waited longer is dropped as soon as newer frames can fill the next window
without it (frames that only wait for their window to fill are kept). A settings change drops the backlog no
window has taken (``settings changed``) instead of working it off with the old settings.

Segments. A stamp earlier than the previous frame's (a bag played in a loop), a change of resolution, a reset
request or new settings start a new *segment*: the old one is flushed first, then the trajectory restarts.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from ..io.camera_model import CameraModel
from .metric_scale import SCALE_SOURCES

MIN_WINDOW = 3  # WindowPipeline needs two partners per frame

# Drop reasons (keys of StreamStats.dropped_by_reason).
DROP_QUEUE = "queue full"
DROP_WINDOW_FAILED = "window failed"
DROP_NO_MODEL = "no model"
DROP_TOO_FEW = "too few frames for a window"
DROP_SHUTDOWN = "shutdown"
DROP_STALE = "older than max_frame_age"
DROP_SETTINGS = "settings changed"


class StreamConfigError(ValueError):
    """Invalid streaming settings; the message says which and why."""


def window_rule_problem(window_size: Any, stride: Any, queue_limit: Any) -> Optional[str]:
    """Why a window size / stride / queue limit cannot work (None when they can): the one rule, shared by the
    stream, the offline runner and the node's parameter checks."""
    w, s, q = window_size, stride, queue_limit
    if not isinstance(w, int) or w < MIN_WINDOW:
        return f"window_size must be an integer >= {MIN_WINDOW} (got {w!r})"
    if not isinstance(s, int) or not 1 <= s <= w - 2:
        return (f"stride must be in [1, window_size - 2] = [1, {w - 2}] so that consecutive windows share at "
                f"least 2 frames for chaining (got {s!r})")
    if not isinstance(q, int) or q < w:
        return f"queue_limit must be >= window_size ({w}): the first window needs that many pending frames (got {q!r})"
    return None


def context_margin(window_size: int, stride: int) -> int:
    """Frames that must follow (and, except at a stream start, precede) a frame in the window that
    publishes it: the largest m with every published position having m frames on both sides."""
    return max(0, (window_size - stride) // 2)


@dataclass(frozen=True)
class StreamConfig:
    window_size: int = 8        # frames per window (W)
    stride: int = 4             # new frames per window (S)
    queue_limit: int = 16       # pending frames before the oldest are dropped
    cloud_voxel_size: float = 0.02   # voxel edge of the per-window cloud and the map (odometry units); 0: none
    map_max_points: int = 1_000_000  # map voxels kept (least recently seen dropped first)
    odom_T_world: Optional[Tuple[Tuple[float, ...], ...]] = None  # 4x4; None: optical -> REP 103 body axes
    scale_source: str = "none"      # none | odometry | fixed (see pipeline.metric_scale)
    fixed_scale: float = 1.0        # "fixed": metres per unit of the segment's first window
    scale_min_motion: float = 0.05  # "odometry": metres two frames must be apart to measure the scale
    scale_max_spread: float = 1.0   # "odometry": a window whose pair ratios spread more is not trusted
    max_frame_age: float = 0.0      # s a frame may wait for a window before it is dropped as stale; 0: no limit

    def validate(self) -> "StreamConfig":
        why = window_rule_problem(self.window_size, self.stride, self.queue_limit)
        if why:
            raise StreamConfigError(why)
        positive = {"fixed_scale": self.fixed_scale, "scale_max_spread": self.scale_max_spread,
                    "scale_min_motion (metres)": self.scale_min_motion}
        for name, v in positive.items():
            if not (v > 0 and math.isfinite(v)):
                raise StreamConfigError(f"{name} must be a finite number > 0 (got {v!r})")
        for name, v in {"cloud_voxel_size": self.cloud_voxel_size, "max_frame_age (s)": self.max_frame_age}.items():
            if not (v >= 0 and math.isfinite(v)):
                raise StreamConfigError(f"{name} must be a finite number >= 0 (got {v!r})")
        if self.map_max_points < 1:
            raise StreamConfigError(f"map_max_points must be >= 1 (got {self.map_max_points!r})")
        if self.odom_T_world is not None and np.asarray(self.odom_T_world, float).shape != (4, 4):
            raise StreamConfigError("odom_T_world must be a 4x4 matrix")
        if self.scale_source not in SCALE_SOURCES:
            raise StreamConfigError(f"scale_source must be one of {', '.join(SCALE_SOURCES)} "
                                    f"(got {self.scale_source!r})")
        return self

    @property
    def margin(self) -> int:
        return context_margin(self.window_size, self.stride)


@dataclass
class StreamFrame:
    """An accepted input frame. ``seq`` is the stream-wide frame counter (the pipeline's cache id);
    ``header`` is whatever the caller wants back at publication (the source message's header)."""

    seq: int
    rgb: np.ndarray
    stamp_ns: int
    frame_id: str = ""
    header: Any = None
    arrival: float = 0.0
    segment: int = 0
    published: bool = False                 # published, or counted as dropped: never handed out again
    camera: Optional[CameraModel] = None    # the calibration the frame came with (None: estimate intrinsics)


@dataclass
class Job:
    kind: str                       # "window", "held", "drop", "reset"
    frames: List[StreamFrame] = field(default_factory=list)
    final: bool = False             # a flush: the last frames are published without right context
    reason: str = ""

    def publishable(self, i: int, margin: int) -> bool:
        """Whether a window job's frame ``i`` is published by it: context on the right, or a flush."""
        return self.final or len(self.frames) - 1 - i >= margin


class WindowScheduler:
    """The pending queue, the last window's frames and held results, segments; plans one job at a time.
    Not thread-safe: the caller serialises access."""

    def __init__(self, config: StreamConfig, clock: Callable[[], float]):
        self.config = config.validate()
        self.clock = clock
        self.pending: Deque[StreamFrame] = deque()
        self.ctx: List[StreamFrame] = []          # the last window's frames
        self.ctx_segment = 0
        self.held: Dict[int, Any] = {}            # seq -> a result of the last window waiting for right context
        self.segment = 0
        self._segment_reason: Dict[int, str] = {}
        self._last_size: Optional[Tuple[int, int]] = None
        self._last_stamp: Optional[int] = None
        self._seq = 0
        self.flush_requested = False
        self.pending_config: Optional[StreamConfig] = None

    # ------------------------------------------------------------------ input
    def accept(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "", header: Any = None,
               camera: Optional[CameraModel] = None) -> Tuple[StreamFrame, Optional[str]]:
        """A new frame (not queued yet: see :meth:`enqueue`) and, when it starts a new segment, why."""
        size = tuple(np.shape(rgb)[:2])
        reason = None
        if self._last_size is not None and size != self._last_size:
            reason = f"resolution changed from {self._last_size[1]}x{self._last_size[0]} to {size[1]}x{size[0]}"
        elif self._last_stamp is not None and int(stamp_ns) < self._last_stamp:
            reason = (f"time went backwards by {(self._last_stamp - int(stamp_ns)) / 1e9:.3f} s "
                      "(bag loop or clock reset)")
        if reason:
            self.new_segment(reason)
        self._last_size, self._last_stamp = size, int(stamp_ns)
        frame = StreamFrame(self._seq, rgb, int(stamp_ns), frame_id, header, self.clock(), self.segment,
                            camera=camera)
        self._seq += 1
        return frame, reason

    def enqueue(self, frame: StreamFrame) -> List[StreamFrame]:
        """Queue ``frame``; returns the oldest frames dropped to keep ``queue_limit``."""
        self.pending.append(frame)
        dropped = []
        while len(self.pending) > self.config.queue_limit:
            dropped.append(self.pending.popleft())
        return dropped

    def new_segment(self, reason: str) -> None:
        self.segment += 1
        self._segment_reason[self.segment] = reason

    def restart(self, reason: str) -> None:
        """A new segment on request (reset service): the current one is flushed, the next frame starts over."""
        self.new_segment(reason)
        self._last_size = self._last_stamp = None

    def change_settings(self, reason: str, config: Optional[StreamConfig] = None) -> List[StreamFrame]:
        """A new segment for new settings (applied when it starts); returns the backlog no window has taken,
        dropped rather than worked off with the old settings."""
        if config is not None:
            self.pending_config = config.validate()
        self.new_segment(reason)
        old = [f for f in self.pending if f.segment < self.segment]
        self.pending = deque(f for f in self.pending if f.segment >= self.segment)
        return old

    # ------------------------------------------------------------------ planning
    def plan(self, peek: bool = False) -> Optional[Job]:
        """The next job (taken off the queue unless ``peek``), or None when nothing can be done yet."""
        cfg = self.config
        w, s = cfg.window_size, cfg.stride
        seg = self.ctx_segment
        same = []
        for f in self.pending:
            if f.segment != seg:
                break
            same.append(f)
        closing = self.segment > seg
        flushing = closing or self.flush_requested
        if cfg.max_frame_age > 0 and not peek:
            stale = self._take_stale(seg)
            if stale:
                return Job("drop", stale, reason=DROP_STALE)
        job = None
        if not self.ctx:
            if len(same) >= w:
                job = Job("window", same[:w])
            elif flushing and len(same) >= MIN_WINDOW:
                job = Job("window", same, final=True)
            elif flushing and same:
                job = Job("drop", same, reason=DROP_TOO_FEW)
        else:
            overlap = self.ctx[-(w - s):]
            if len(same) >= s:
                job = Job("window", overlap + same[:s])
            elif flushing and same:
                job = Job("window", self.ctx[-(w - len(same)):] + same, final=True)
            elif flushing and self.held:
                job = Job("held", final=True)
        if job is None and closing:
            job = Job("reset", reason=self._segment_reason.get(seg + 1, "reset"))
        if job is None and self.flush_requested and not peek:
            self.flush_requested = False  # nothing left to flush
        if job is not None and not peek:
            taken = {f.seq for f in job.frames}
            while self.pending and self.pending[0].seq in taken:
                self.pending.popleft()
        return job

    def _take_stale(self, seg: int) -> List[StreamFrame]:
        """Backlog older than ``max_frame_age``, from the front of the queue, while enough newer frames wait
        to make the next window without it."""
        need = self.config.stride if self.ctx else self.config.window_size
        oldest_kept = self.clock() - self.config.max_frame_age
        stale = []
        while len(self.pending) > need and self.pending[0].segment == seg and self.pending[0].arrival < oldest_kept:
            stale.append(self.pending.popleft())
        return stale

    # ------------------------------------------------------------------ bookkeeping of jobs
    def start_segment(self) -> Optional[StreamConfig]:
        """A ``reset`` job: the next segment starts; returns the settings that take effect with it, if new."""
        self.ctx, self.held = [], {}
        nxt = self.pending[0].segment if self.pending else self.segment
        self.ctx_segment = max(self.ctx_segment + 1, min(nxt, self.segment))
        for seg in [k for k in self._segment_reason if k <= self.ctx_segment]:  # bounded over hours of resets
            del self._segment_reason[seg]
        new, self.pending_config = self.pending_config, None
        if new is not None:
            self.config = new
        return new

    def solved(self, job: Job, held: Dict[int, Any]) -> None:
        """A window job succeeded; ``held``: its results that wait for right context."""
        self.ctx, self.held = list(job.frames), held

    def failed(self, job: Job) -> List[StreamFrame]:
        """A window job failed: the frames it should have published are lost (returned, marked accounted)."""
        m = self.config.margin
        lost = [f for i, f in enumerate(job.frames) if not f.published and job.publishable(i, m)]
        for f in lost:
            f.published = True
        self.ctx, self.held = list(job.frames), {}
        return lost

    def take_held(self) -> Tuple[List[Any], List[StreamFrame]]:
        """A ``held`` job: the held results, oldest first, and the last window's frames."""
        held = sorted(self.held.values(), key=lambda p: p.frame.seq)
        self.held = {}
        return held, list(self.ctx)

    def leftovers(self, running: List[StreamFrame]) -> List[StreamFrame]:
        """At close: every frame not published yet (waiting, held, or in the job that was running), once
        each; all are marked accounted, so nothing is handed out afterwards."""
        seen, left = set(), []
        for f in list(self.pending) + list(self.ctx) + list(running):
            if not f.published and f.seq not in seen:
                seen.add(f.seq)
                left.append(f)
            f.published = True
        self.pending.clear()
        self.held.clear()
        return left
