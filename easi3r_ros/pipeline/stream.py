"""Easi3R on a live frame stream, without ROS: buffering, window scheduling, a worker thread, the drop
policy, publish-once bookkeeping and one chained trajectory.

Windows. Accepted frames wait in a bounded *pending* queue. The first window of a stream takes the
first ``window_size`` (W) frames; every later window is the last ``W - stride`` frames of the previous
window (the overlap) plus the next ``stride`` (S) pending frames. Each frame has a stable id (a
node-wide counter), so :class:`~easi3r_ros.pipeline.window.WindowPipeline` encodes it once and decodes
each ordered pair's pass 1 once, however many windows the frame belongs to.

Publish once. A frame is published by the first window in which at least ``m = (W - S) // 2``
frames follow it (:func:`context_margin`). In a steady-state window the published positions are
``W - S - m .. W - m - 1``, and ``W - S - m >= m``, so every published frame has at least ``m``
frames on both sides, except the leading frames of a stream, which the first window publishes with
whatever left context it has (it publishes W - m frames; every later window S). Latency of a frame:
the arrival of ``m`` to ``m + S - 1`` later frames (up to W - 1 for the first window's frames), then
any queue wait, then the window's compute time.

Stream end. :meth:`StreamProcessor.flush` (called by the node when no frame has arrived for a
while, and at shutdown) publishes the trailing frames: results already computed without their right
context are published as they are; frames that have not been in any window yet get a final window
(the previous window's last frames plus them, W frames at most) and are published by it. A stream
with fewer than 3 frames cannot form a window: those frames are counted as dropped.

Drop policy. At most ``queue_limit`` frames wait in the pending queue. When a new frame would
exceed it, the *oldest pending* frames are dropped (counted, reason ``queue full``) and never
published: the node stays current instead of working through a backlog, latency stays bounded by
about ``queue_limit`` frame periods plus one window, and the next window still overlaps the previous
one, so chaining is unaffected (the window just spans a time gap). Frames of a window that fails are
counted as dropped too (``window failed``), and frames arriving while no model is available are
dropped at once (``no model``).

Resets. A stamp earlier than the previous frame's (e.g. a bag played in a loop) or a change of
resolution starts a new *segment*: the old segment is flushed first, then caches, trajectory and map
are reset (the sink gets :meth:`StreamSink.on_reset`) and the new segment starts a new trajectory at
the odometry origin.

Trajectory. Window ``k``'s poses live in its own world frame with its own (free) scale. They are
mapped onto the running trajectory by the similarity transform that best maps the overlap frames'
poses of window ``k`` onto their poses from window ``k - 1`` (:func:`estimate_chain_sim3`): rotation
from the overlap frames' orientations, scale from the ratio of their depth maps (robust even when the
camera barely moves; camera centres are the fallback), translation from their camera centres. The
first window fixes the frame (its first camera at the origin) and the scale. Nothing closes loops:
per-window errors compose, so position error grows roughly like a random walk over windows and scale
drifts multiplicatively; ``chain_residual`` (RMS of the overlap camera centres after alignment)
reports each link's quality. When a failed window leaves no frame shared with the last solved one,
the next window is attached at the last known pose with its own scale and counted as a chain break.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..align.sim3 import ChainLink, apply_sim3_to_poses, estimate_window_sim3
from ..io.camera_model import CameraModel
from .metric_scale import SCALE_SOURCES, ScaleEstimate, odometry_scale
from .result import FrameResult, WindowResult

log = logging.getLogger(__name__)

MIN_WINDOW = 3  # WindowPipeline needs two partners per frame

# Drop reasons (keys of StreamStats.dropped_by_reason).
DROP_QUEUE = "queue full"
DROP_WINDOW_FAILED = "window failed"
DROP_NO_MODEL = "no model"
DROP_TOO_FEW = "too few frames for a window"
DROP_SHUTDOWN = "shutdown"


class StreamConfigError(ValueError):
    """Invalid streaming settings; the message says which and why."""


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

    def validate(self) -> "StreamConfig":
        w, s, q = self.window_size, self.stride, self.queue_limit
        if not isinstance(w, int) or w < MIN_WINDOW:
            raise StreamConfigError(f"window_size must be an integer >= {MIN_WINDOW} (got {w!r})")
        if not isinstance(s, int) or not 1 <= s <= w - 2:
            raise StreamConfigError(f"stride must be in [1, window_size - 2] = [1, {w - 2}] so that consecutive "
                                    f"windows share at least 2 frames for chaining (got {s!r})")
        if not isinstance(q, int) or q < w:
            raise StreamConfigError(f"queue_limit must be >= window_size ({w}): the first window needs that many "
                                    f"pending frames (got {q!r})")
        if not (self.cloud_voxel_size >= 0 and math.isfinite(self.cloud_voxel_size)):
            raise StreamConfigError(f"cloud_voxel_size must be finite and >= 0 (got {self.cloud_voxel_size!r})")
        if self.map_max_points < 1:
            raise StreamConfigError(f"map_max_points must be >= 1 (got {self.map_max_points!r})")
        if self.odom_T_world is not None and np.asarray(self.odom_T_world, float).shape != (4, 4):
            raise StreamConfigError("odom_T_world must be a 4x4 matrix")
        if self.scale_source not in SCALE_SOURCES:
            raise StreamConfigError(f"scale_source must be one of {', '.join(SCALE_SOURCES)} "
                                    f"(got {self.scale_source!r})")
        if not (self.fixed_scale > 0 and math.isfinite(self.fixed_scale)):
            raise StreamConfigError(f"fixed_scale must be a finite number > 0 (got {self.fixed_scale!r})")
        if not (self.scale_max_spread > 0 and math.isfinite(self.scale_max_spread)):
            raise StreamConfigError(f"scale_max_spread must be a finite number > 0 (got {self.scale_max_spread!r})")
        if not (self.scale_min_motion > 0 and math.isfinite(self.scale_min_motion)):
            raise StreamConfigError(f"scale_min_motion must be a finite number > 0 metres "
                                    f"(got {self.scale_min_motion!r})")
        return self

    @property
    def margin(self) -> int:
        return context_margin(self.window_size, self.stride)


def context_margin(window_size: int, stride: int) -> int:
    """Frames that must follow (and, except at a stream start, precede) a frame in the window that
    publishes it: the largest m with every published position having m frames on both sides."""
    return max(0, (window_size - stride) // 2)


# ---------------------------------------------------------------------------------------------- geometry
# REP 103: camera optical frame (x right, y down, z forward) -> body frame (x forward, y left, z up).
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def optical_to_body() -> np.ndarray:
    """4x4 rotation taking optical-frame coordinates to REP 103 body coordinates."""
    t = np.eye(4)
    t[:3, :3] = R_BODY_OPTICAL
    return t


def transform_points(t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 3)
    return pts @ t[:3, :3].T + t[:3, 3]


def _depth_ratio(anchor_depths: Sequence[np.ndarray], new_depths: Sequence[np.ndarray]) -> Optional[float]:
    ratios = []
    for a, b in zip(anchor_depths, new_depths):
        if a is None or b is None or np.shape(a) != np.shape(b):
            continue
        a = np.asarray(a, np.float64)[::2, ::2].ravel()
        b = np.asarray(b, np.float64)[::2, ::2].ravel()
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        if ok.sum() >= 16:
            ratios.append(a[ok] / b[ok])
    if not ratios:
        return None
    s = float(np.median(np.concatenate(ratios)))
    return s if math.isfinite(s) and s > 0 else None


def estimate_chain_sim3(anchor_poses: Sequence[np.ndarray], new_poses: Sequence[np.ndarray],
                        anchor_depths: Optional[Sequence[np.ndarray]] = None,
                        new_depths: Optional[Sequence[np.ndarray]] = None,
                        scale: Optional[float] = None) -> ChainLink:
    """Similarity ``S`` with ``S ∘ new_pose_i ≈ anchor_pose_i`` over the overlap frames i.

    Poses are camera-to-world 4x4 (rigid, each in its own world). With depth maps of the overlap
    frames from both windows (anchor depths already in anchor units): rotation = chordal mean of
    ``R_anchor R_newᵀ``, scale = median depth ratio, translation = mean of ``c_anchor - s R c_new`` —
    well posed even when the camera stands still, where camera centres carry no scale. Without usable
    depths: :func:`easi3r_ros.align.sim3.estimate_window_sim3` on the poses ("auto": Umeyama on the
    centres when they spread, else rotations + least-squares scale). A given ``scale`` (e.g. measured by
    odometry) is used as it is.
    """
    a = np.asarray(anchor_poses, np.float64).reshape(-1, 4, 4)
    b = np.asarray(new_poses, np.float64).reshape(-1, 4, 4)
    if scale is None and anchor_depths is not None and new_depths is not None:
        scale = _depth_ratio(anchor_depths, new_depths)
    return estimate_window_sim3(a, b, method="auto", scale=scale)


def _scaled_translation(pose: np.ndarray, factor: float, about: Optional[np.ndarray] = None) -> np.ndarray:
    out = np.array(pose, np.float64, copy=True)
    about = np.zeros(3) if about is None else about
    out[:3, 3] = about + factor * (out[:3, 3] - about)
    return out


class TrajectoryChainer:
    """Keeps the latest chained pose (and depth, in chain units) of the last window's frames and attaches
    each new window onto them. The chain frame is the segment's first camera's optical frame."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._poses: Dict[Any, np.ndarray] = {}
        self._depths: Dict[Any, Optional[np.ndarray]] = {}
        self._last_key: Any = None
        self.windows = 0

    @property
    def started(self) -> bool:
        return self.windows > 0

    def attach(self, keys: Sequence[Any], result: WindowResult,
               scale: Optional[float] = None) -> Tuple[ChainLink, List[np.ndarray]]:
        """Chain ``result`` (frames identified by ``keys``); returns the link and every frame's chained
        camera-to-chain pose. ``scale``: chain units per window unit when known (metric scale), else the
        first window sets the unit and later links take it from the overlap's depth ratio."""
        poses = [np.asarray(f.cam_to_world, np.float64) for f in result.frames]
        if not all(p.shape == (4, 4) and np.isfinite(p).all() for p in poses):
            raise ValueError("the window's poses are not finite 4x4 matrices")  # state left untouched
        depths = [getattr(f, "depth", None) for f in result.frames]
        common = [i for i, k in enumerate(keys) if k in self._poses]
        if not self.started:
            # the first camera defines the frame (and, without a known scale, the unit)
            s = 1.0 if scale is None else float(scale)
            sim = np.linalg.inv(poses[0])
            sim[:3, :] *= s
            link = ChainLink(sim, s, 0.0, 0, method="first window")
        elif common:
            link = estimate_chain_sim3([self._poses[keys[i]] for i in common], [poses[i] for i in common],
                                       [self._depths.get(keys[i]) for i in common], [depths[i] for i in common],
                                       scale=scale)
        else:
            # No frame in common (the previous window failed): continue from the last known pose with the
            # window's own scale; the trajectory has a visible break.
            last = self._poses[self._last_key]
            s = 1.0 if scale is None else float(scale)
            sim = last @ np.diag([s, s, s, 1.0]) @ np.linalg.inv(poses[0])
            link = ChainLink(sim, s, float("nan"), 0, method="break", broken=True)
        chained = list(apply_sim3_to_poses(link.sim, np.stack(poses)))
        if not (np.isfinite(link.sim).all() and all(np.isfinite(c).all() for c in chained)):
            raise ValueError("chaining produced a non-finite transform")
        self._poses = {k: p for k, p in zip(keys, chained)}
        self._depths = {k: (None if d is None else np.asarray(d, np.float32) * np.float32(link.scale))
                        for k, d in zip(keys, depths)}
        self._last_key = keys[-1]
        self.windows += 1
        return link, chained

    def rescale(self, factor: float, about: Optional[np.ndarray] = None) -> None:
        """Change the chain's unit, about a point (default: the origin, the first camera): e.g. once metres
        become known."""
        about = np.zeros(3) if about is None else np.asarray(about, np.float64)
        self._poses = {k: _scaled_translation(p, factor, about) for k, p in self._poses.items()}
        self._depths = {k: None if d is None else d * np.float32(factor) for k, d in self._depths.items()}


# ---------------------------------------------------------------------------------------------- clouds
_KEY_BITS = 21
_KEY_OFF = 1 << (_KEY_BITS - 1)


def _voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    q = np.floor(points / voxel).astype(np.int64) + _KEY_OFF
    q = np.clip(q, 0, (1 << _KEY_BITS) - 1)  # far outliers share the border voxels instead of wrapping
    return (q[:, 0] << (2 * _KEY_BITS)) | (q[:, 1] << _KEY_BITS) | q[:, 2]


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel: float) -> Tuple[np.ndarray, np.ndarray]:
    """Centroid position and mean colour per occupied voxel (unchanged when ``voxel`` is 0)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    if voxel <= 0 or len(points) == 0:
        return points, colors
    keys = _voxel_keys(points, voxel)
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    n = len(counts)
    p = np.zeros((n, 3)); c = np.zeros((n, 3))
    for d in range(3):
        p[:, d] = np.bincount(inv, points[:, d], n)
        c[:, d] = np.bincount(inv, colors[:, d], n)
    return (p / counts[:, None]).astype(np.float32), np.round(c / counts[:, None]).astype(np.uint8)


class VoxelMap:
    """Voxel-downsampled accumulation of static points (running centroid and colour per voxel), bounded
    by ``max_points``: the voxels seen longest ago go first. Thread-safe."""

    def __init__(self, voxel: float, max_points: int = 1_000_000):
        self.voxel = float(voxel)
        self.max_points = int(max_points)
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._keys = np.zeros(0, np.int64)
            self._sum = np.zeros((0, 3)); self._col = np.zeros((0, 3)); self._n = np.zeros(0)
            self._seen = np.zeros(0, np.int64)
            self._tick = 0
            self.version = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        colors = np.asarray(colors, np.float64).reshape(-1, 3)
        ok = np.isfinite(points).all(1)
        points, colors = points[ok], colors[ok]
        if not len(points):
            return
        # without a voxel size, every point is its own voxel (an unbounded map would still be capped)
        voxel = self.voxel if self.voxel > 0 else 1e-6
        with self._lock:
            self._tick += 1
            keys = np.concatenate([self._keys, _voxel_keys(points, voxel)])
            uniq, inv = np.unique(keys, return_inverse=True)
            m = len(uniq)
            s = np.zeros((m, 3)); c = np.zeros((m, 3))
            allp = np.concatenate([self._sum, points]); allc = np.concatenate([self._col, colors])
            n = np.bincount(inv, np.concatenate([self._n, np.ones(len(points))]), m)
            for d in range(3):
                s[:, d] = np.bincount(inv, allp[:, d], m)
                c[:, d] = np.bincount(inv, allc[:, d], m)
            seen = np.zeros(m, np.int64)
            np.maximum.at(seen, inv, np.concatenate([self._seen, np.full(len(points), self._tick)]))
            if m > self.max_points:
                keep = np.sort(np.argsort(-seen, kind="stable")[:self.max_points])
                uniq, s, c, n, seen = uniq[keep], s[keep], c[keep], n[keep], seen[keep]
            self._keys, self._sum, self._col, self._n, self._seen = uniq, s, c, n, seen
            self.version += 1

    def snapshot(self) -> Tuple[np.ndarray, np.ndarray]:
        """(points float32 (K, 3), colours uint8 (K, 3)): the voxel centroids."""
        with self._lock:
            if not len(self._keys):
                return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
            n = self._n[:, None]
            return (self._sum / n).astype(np.float32), np.round(self._col / n).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- stream
@dataclass
class StreamFrame:
    """An accepted input frame. ``seq`` is the node-wide frame counter (the pipeline's cache id);
    ``header`` is whatever the caller wants back at publication (the source message's header)."""

    seq: int
    rgb: np.ndarray
    stamp_ns: int
    frame_id: str = ""
    header: Any = None
    arrival: float = 0.0
    segment: int = 0
    published: bool = False
    camera: Optional[CameraModel] = None   # the calibration the frame came with (None: estimate intrinsics)


@dataclass
class PublishedFrame:
    """One frame's output. The stream's *world* is the odometry frame (REP 103 axes, first camera at the
    origin) or, when the robot's odometry is given, the map frame (first camera at its odometry pose)."""

    frame: StreamFrame
    result: FrameResult
    world_T_cam: np.ndarray       # (4, 4) camera optical frame -> world (rigid; metres when the scale is known)
    index_in_window: int
    window_id: int                # the window whose result this is
    to_world: np.ndarray          # (4, 4) similarity: that window's reconstruction -> world

    @property
    def depth_scale(self) -> float:
        """World units per window unit: multiply the result's depths by it."""
        return float(np.cbrt(np.linalg.det(self.to_world[:3, :3])))


@dataclass
class WindowOutput:
    """What one window (or a flush of held results) publishes."""

    window_id: int
    segment: int
    frames: List[StreamFrame]              # the window's frames, oldest first
    published: List[PublishedFrame]        # frames published now, oldest first
    result: Optional[WindowResult]         # None for a flush of results computed earlier
    points: np.ndarray                     # (N, 3) float32 new static points in odom (published frames)
    colors: np.ndarray                     # (N, 3) uint8
    link: ChainLink
    latency_s: float                       # arrival of the window's last frame -> results ready
    final: bool                            # a flush: published frames may lack right context
    dropped_total: int
    cache: Dict[str, int] = field(default_factory=dict)
    scale: ScaleEstimate = field(default_factory=ScaleEstimate)


class StreamSink:
    """Receives the stream's events, on the worker thread (override what you need)."""

    def on_window(self, out: WindowOutput) -> None:
        pass

    def on_dropped(self, frames: List[StreamFrame], reason: str) -> None:
        pass

    def on_reset(self, reason: str) -> None:
        pass

    def on_state(self, state: str, message: str) -> None:
        pass


@dataclass
class StreamStats:
    frames_in: int = 0
    frames_published: int = 0
    frames_dropped: int = 0
    dropped_by_reason: Dict[str, int] = field(default_factory=dict)
    windows_ok: int = 0
    windows_failed: int = 0
    resets: int = 0
    chain_breaks: int = 0
    last_latency_s: float = float("nan")
    mean_latency_s: float = float("nan")
    max_latency_s: float = float("nan")
    last_window_s: float = float("nan")
    last_chain_scale: float = float("nan")
    last_chain_residual: float = float("nan")
    scale: float = float("nan")           # metres per unit of the last window (nan: unknown)
    scale_spread: float = float("nan")
    scale_source: str = "none"
    scale_state: str = "unknown"
    odometry_missing: int = 0             # frames of solved windows without an odometry pose at their stamp
    last_error: str = ""
    state: str = "idle"
    state_message: str = ""
    queue_depth: int = 0
    busy: bool = False
    cache: Dict[str, int] = field(default_factory=dict)

    @property
    def frames_in_flight(self) -> int:
        return self.frames_in - self.frames_published - self.frames_dropped


Runner = Any  # an object with run(frames, stamps_ns, frame_ids) -> WindowResult and reset(); e.g. WindowPipeline


@dataclass
class _Job:
    kind: str                       # "window", "held", "drop", "reset"
    frames: List[StreamFrame] = field(default_factory=list)
    final: bool = False
    reason: str = ""


class StreamProcessor:
    """Buffers frames, runs windows on one worker thread and hands results to a :class:`StreamSink`.

    ``runner_factory`` builds the runner (loads the network) on the worker thread, so a slow or failing
    load never blocks the caller; a failure leaves the processor in state ``error`` (frames are then
    dropped with reason ``no model``) until :meth:`reload` is given a working factory.
    """

    def __init__(self, config: StreamConfig, runner_factory: Callable[[], Runner], sink: Optional[StreamSink] = None,
                 clock: Callable[[], float] = time.monotonic,
                 odometry: Optional[Callable[[int], Optional[np.ndarray]]] = None):
        """``odometry(stamp_ns)``: the camera optical frame's pose in the robot's odometry frame at that
        stamp (4x4, metres) or None; called on the worker thread, a few frames after the image arrived.
        With it the world is the map frame, anchored at the first frame's odometry pose."""
        self.config = config.validate()
        self.odometry = odometry
        self._factory = runner_factory
        self.sink = sink or StreamSink()
        self.clock = clock
        self._cv = threading.Condition()
        self._pending: Deque[StreamFrame] = deque()
        self._ctx: List[StreamFrame] = []
        self._ctx_segment = 0
        self._held: Dict[int, PublishedFrame] = {}  # results of the last window waiting for right context
        self._segment = 0
        self._segment_reason: Dict[int, str] = {}
        self._last_size: Optional[Tuple[int, int]] = None
        self._last_stamp: Optional[int] = None
        self._seq = 0
        self._flush = False
        self._reload = True
        self._pending_config: Optional[StreamConfig] = None
        self._stop = False
        self._window_id = 0
        self._latency_sum = 0.0
        self.stats = StreamStats()
        self.runner: Optional[Runner] = None
        self.chainer = TrajectoryChainer()
        self.map = VoxelMap(config.cloud_voxel_size, config.map_max_points)
        self._world_T_chain = self._odom_of(config)
        self._anchored = False           # the world has been placed on the robot's odometry
        self._anchor_point = np.zeros(3)  # chain coordinates of the camera the world was placed by
        self._metric = False             # the chain's unit is metres (a scale was observed or fixed)
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def _odom_of(config: StreamConfig) -> np.ndarray:
        return optical_to_body() if config.odom_T_world is None else np.asarray(config.odom_T_world, np.float64)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StreamProcessor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="easi3r-stream", daemon=True)
            self._thread.start()
        return self

    def close(self, flush: bool = True, timeout: Optional[float] = None) -> bool:
        """Stop the worker; with ``flush``, publish trailing frames first (waits up to ``timeout`` s).
        Frames still unpublished afterwards are counted as dropped (``shutdown``). True when the worker
        ended in time."""
        if flush and self._thread is not None and self.stats.state == "ready":
            self.flush()
            self.wait_idle(timeout)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        ok = True
        if self._thread is not None:
            self._thread.join(timeout)
            ok = not self._thread.is_alive()
        with self._cv:
            left = list(self._pending) + [f for f in self._ctx if not f.published]
            self._pending.clear()
            self._held.clear()
            for f in self._ctx:
                f.published = True
        self._count_dropped(left, DROP_SHUTDOWN)
        return ok

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Until no work is waiting or running (or ``timeout`` s); True when idle."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._stop and (self._has_work() or self.stats.busy):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left if left is not None else 0.5)
            return True

    # ------------------------------------------------------------------ input
    def push(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "", header: Any = None,
             camera: Optional[CameraModel] = None) -> StreamFrame:
        """Accept one RGB frame (H, W, 3) uint8, with its calibration when known. Never blocks on the worker."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
        dropped: List[StreamFrame] = []
        no_model = False
        reset_reason = None
        with self._cv:
            size = rgb.shape[:2]
            if self._last_size is not None and size != self._last_size:
                reset_reason = (f"resolution changed from {self._last_size[1]}x{self._last_size[0]} "
                                f"to {size[1]}x{size[0]}")
            elif self._last_stamp is not None and int(stamp_ns) < self._last_stamp:
                reset_reason = (f"time went backwards by {(self._last_stamp - int(stamp_ns)) / 1e9:.3f} s "
                                "(bag loop or clock reset)")
            if reset_reason:
                self._new_segment(reset_reason)
            self._last_size, self._last_stamp = size, int(stamp_ns)
            frame = StreamFrame(self._seq, rgb, int(stamp_ns), frame_id, header, self.clock(), self._segment,
                                camera=camera)
            self._seq += 1
            self.stats.frames_in += 1
            if self.stats.state == "error" and not self._reload:
                no_model = True
            else:
                self._pending.append(frame)
                limit = self.config.queue_limit
                while len(self._pending) > limit:
                    dropped.append(self._pending.popleft())
                self.stats.queue_depth = len(self._pending)
                self._cv.notify_all()
        if reset_reason:
            log.debug("stream reset: %s", reset_reason)  # the sink reports it when the reset takes effect
        if no_model:
            self._count_dropped([frame], DROP_NO_MODEL)
        if dropped:
            self._count_dropped(dropped, DROP_QUEUE)
        return frame

    def flush(self) -> None:
        """Publish trailing frames now (see the module notes); the trajectory continues afterwards."""
        with self._cv:
            self._flush = True
            self._cv.notify_all()

    def reset(self, reason: str) -> None:
        """Start a new segment (trajectory, map and caches reset) after flushing the current one."""
        with self._cv:
            self._new_segment(reason)
            self._last_size = self._last_stamp = None
            self._cv.notify_all()
        log.debug("stream reset requested: %s", reason)

    def reload(self, runner_factory: Optional[Callable[[], Runner]] = None) -> None:
        """Rebuild the runner (e.g. new checkpoint or pipeline settings) on the worker, after the current
        segment is flushed; the stream restarts from a new segment."""
        with self._cv:
            if runner_factory is not None:
                self._factory = runner_factory
            self._reload = True
            self._new_segment("model reload")
            self._cv.notify_all()

    def reconfigure(self, config: StreamConfig) -> None:
        """New window/queue settings, applied at a segment boundary (the current segment is flushed)."""
        config.validate()
        with self._cv:
            self._pending_config = config
            self._new_segment("stream settings changed")
            self._cv.notify_all()

    def _new_segment(self, reason: str) -> None:
        self._segment += 1
        self._segment_reason[self._segment] = reason

    # ------------------------------------------------------------------ bookkeeping
    def _count_dropped(self, frames: List[StreamFrame], reason: str) -> None:
        if not frames:
            return
        with self._cv:
            self.stats.frames_dropped += len(frames)
            self.stats.dropped_by_reason[reason] = self.stats.dropped_by_reason.get(reason, 0) + len(frames)
        self._notify("on_dropped", frames, reason)

    def _notify(self, event: str, *args) -> None:
        """Call ``sink.<event>(*args)``; a sink error is logged and must not kill the stream."""
        try:
            getattr(self.sink, event)(*args)
        except Exception:
            log.exception("sink.%s failed", event)

    def _set_state(self, state: str, message: str) -> None:
        with self._cv:
            self.stats.state, self.stats.state_message = state, message
            if state == "error":
                self.stats.last_error = message
        self._notify("on_state", state, message)

    def _has_work(self) -> bool:
        return self._plan(peek=True) is not None or (self._reload and not self._stop)

    # ------------------------------------------------------------------ planning (under the lock)
    def _plan(self, peek: bool = False) -> Optional[_Job]:
        cfg = self.config
        w, s = cfg.window_size, cfg.stride
        seg = self._ctx_segment
        same = []
        for f in self._pending:
            if f.segment != seg:
                break
            same.append(f)
        closing = self._segment > seg
        flushing = closing or self._flush
        job = None
        if not self._ctx:
            if len(same) >= w:
                job = _Job("window", same[:w])
            elif flushing and len(same) >= MIN_WINDOW:
                job = _Job("window", same, final=True)
            elif flushing and same:
                job = _Job("drop", same, reason=DROP_TOO_FEW)
        else:
            overlap = self._ctx[-(w - s):]
            if len(same) >= s:
                job = _Job("window", overlap + same[:s])
            elif flushing and same:
                job = _Job("window", self._ctx[-(w - len(same)):] + same, final=True)
            elif flushing and self._held:
                job = _Job("held", final=True)
        if job is None and closing:
            job = _Job("reset", reason=self._segment_reason.get(seg + 1, "reset"))
        if job is None and self._flush and not peek:
            self._flush = False  # nothing left to flush
        if job is not None and not peek:
            taken = {f.seq for f in job.frames}
            while self._pending and self._pending[0].seq in taken:
                self._pending.popleft()
            self.stats.queue_depth = len(self._pending)
        return job

    # ------------------------------------------------------------------ the worker
    def _loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop:
                        return
                    # a new runner takes over once the segment it was requested in has been flushed
                    if self._reload and (self._ctx_segment == self._segment or self.runner is None):
                        self._reload, job = False, None
                        break
                    job = self._plan()
                    if job is not None:
                        break
                    self._cv.wait(0.5)
                self.stats.busy = True
            try:
                if job is None:
                    self._do_reload()
                else:
                    self._run_job(job)
            except Exception as exc:  # keep the worker alive whatever happens
                log.exception("stream worker error")
                with self._cv:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._cv:
                    self.stats.busy = False
                    self._cv.notify_all()

    def _do_reload(self) -> None:
        self._set_state("loading", "loading the network")
        self.runner = None
        try:
            runner = self._factory()
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            log.debug("network load failed: %s", msg)  # reported through sink.on_state
            self._set_state("error", msg)
            with self._cv:
                dropped = list(self._pending)
                self._pending.clear()
                self.stats.queue_depth = 0
            self._count_dropped(dropped, DROP_NO_MODEL)
            return
        self.runner = runner
        self._set_state("ready", "network loaded")

    def _run_job(self, job: _Job) -> None:
        if job.kind == "drop":
            self._count_dropped(job.frames, job.reason)
        elif job.kind == "reset":
            self._do_reset(job.reason)
        elif job.kind == "held":
            self._publish_held()
        elif self.runner is None:
            self._count_dropped([f for f in job.frames if not f.published], DROP_NO_MODEL)
        else:
            self._run_window(job)

    def _do_reset(self, reason: str) -> None:
        with self._cv:
            self._ctx = []
            self._held = {}
            nxt = self._pending[0].segment if self._pending else self._segment
            self._ctx_segment = max(self._ctx_segment + 1, min(nxt, self._segment))
            if self._pending_config is not None:
                new, self._pending_config = self._pending_config, None
                self.config = new
                self.map.voxel, self.map.max_points = new.cloud_voxel_size, new.map_max_points
            self._world_T_chain = self._odom_of(self.config)
            self._anchored = self._metric = False
            self._anchor_point = np.zeros(3)
            self.stats.resets += 1
        if self.runner is not None and hasattr(self.runner, "reset"):
            self.runner.reset()
        self.chainer.reset()
        self.map.clear()
        self._notify("on_reset", reason)

    def _publish_held(self) -> None:
        with self._cv:
            pubs = sorted(self._held.values(), key=lambda p: p.frame.seq)
            self._held = {}
            frames = list(self._ctx)
        self._emit(frames, pubs, None, None, final=True)

    def _run_window(self, job: _Job) -> None:
        frames = job.frames
        m = self.config.margin
        n = len(frames)

        def publishable(i: int) -> bool:   # context on the right, or the segment ends here
            return job.final or n - 1 - i >= m
        t0 = time.perf_counter()
        try:
            cameras = [f.camera for f in frames if f.camera is not None]
            extra = {"camera": cameras[-1]} if cameras else {}
            result = self.runner.run([f.rgb for f in frames], [f.stamp_ns for f in frames], [f.seq for f in frames],
                                     **extra)
            if len(result.frames) != n:
                raise RuntimeError(f"the pipeline returned {len(result.frames)} results for {n} frames")
            elapsed = time.perf_counter() - t0
            odom = self._odometry_poses(frames)
            scale = self._window_scale(result, odom)
            link, chained = self._attach(frames, result, scale)
            self._anchor(chained, odom)
        except Exception as exc:
            msg = f"window over frames {frames[0].seq}..{frames[-1].seq} failed: {type(exc).__name__}: {exc}"
            log.error(msg)
            with self._cv:
                self.stats.windows_failed += 1
                self.stats.last_error = msg
                self._ctx = frames
                self._held = {}
                lost = [f for i, f in enumerate(frames) if not f.published and publishable(i)]
                for f in lost:
                    f.published = True  # accounted for (as dropped): never published later
            self._count_dropped(lost, DROP_WINDOW_FAILED)
            return
        if scale.state != "observed" and self._metric:  # the overlap's depth ratio carried the metres here
            scale = ScaleEstimate(link.scale, scale.spread, scale.source,
                                  "fixed" if scale.source == "fixed" else "held", scale.pairs)
        to_world = self._world_T_chain @ link.sim
        with self._cv:
            wid = self._window_id
            self._window_id += 1
        pubs, held = [], {}
        for i, (f, r, pose) in enumerate(zip(frames, result.frames, chained)):
            if f.published:
                continue
            p = PublishedFrame(f, r, self._world_T_chain @ pose, i, wid, to_world)
            if publishable(i):
                pubs.append(p)
            else:
                held[f.seq] = p
        with self._cv:
            self._ctx = frames
            self._held = held
            self.stats.windows_ok += 1
            self.stats.last_window_s = elapsed
            self.stats.last_chain_scale, self.stats.last_chain_residual = link.scale, link.residual
            self.stats.scale, self.stats.scale_spread = scale.value, scale.spread
            self.stats.scale_source, self.stats.scale_state = scale.source, scale.state
            if link.broken:
                self.stats.chain_breaks += 1
        self._emit(frames, pubs, result, link, final=job.final, window_id=wid, scale=scale)

    # ------------------------------------------------------------------ metric scale and the world frame
    def _odometry_poses(self, frames: List[StreamFrame]) -> List[Optional[np.ndarray]]:
        if self.odometry is None:
            return [None] * len(frames)
        poses = []
        for f in frames:
            try:
                pose = self.odometry(f.stamp_ns)
                pose = None if pose is None else np.asarray(pose, np.float64).reshape(4, 4)
                if pose is not None and not np.isfinite(pose).all():
                    pose = None
            except Exception as exc:  # a lookup problem must not lose the window
                log.debug("odometry lookup at %d failed: %s", f.stamp_ns, exc)
                pose = None
            poses.append(pose)
        missing = sum(p is None for p in poses)
        if missing:
            with self._cv:
                self.stats.odometry_missing += missing
        return poses

    def _window_scale(self, result: WindowResult, odom: List[Optional[np.ndarray]]) -> ScaleEstimate:
        """This window's metres per window unit, as far as it is known."""
        source = self.config.scale_source
        if source == "fixed":
            if self.chainer.started:  # later windows inherit the unit through the depth-ratio links
                return ScaleEstimate(float("nan"), float("nan"), "fixed", "fixed", 0)
            return ScaleEstimate(self.config.fixed_scale, 0.0, "fixed", "fixed", 0)
        if source == "odometry":
            est = odometry_scale([f.cam_to_world for f in result.frames], odom, self.config.scale_min_motion)
            if est is not None and est.spread <= self.config.scale_max_spread:
                return est
            if est is not None:  # the window's own motion is too inconsistent to give metres: not used
                return ScaleEstimate(spread=est.spread, source=source, pairs=est.pairs)
        return ScaleEstimate(source=source)

    def _attach(self, frames: List[StreamFrame], result: WindowResult, scale: ScaleEstimate):
        """Chain the window, in metres from the first window whose scale is known."""
        keys = [f.seq for f in frames]
        known = math.isfinite(scale.value) and scale.state in ("observed", "fixed")
        if not known or self._metric or not self.chainer.started:
            link, chained = self.chainer.attach(keys, result, scale=scale.value if known else None)
            self._metric = self._metric or known
            return link, chained
        # The first metres of a segment that started unobservable: chain by the overlap, then convert
        # everything chained so far to metres about the camera the world is anchored at (so the map frame
        # stays on the robot's odometry; later poses jump once, reported); the map in the old unit is dropped.
        link, chained = self.chainer.attach(keys, result)
        factor = scale.value / link.scale
        about = self._anchor_point
        self.chainer.rescale(factor, about)
        to_metres = np.eye(4)
        to_metres[:3, :3] *= factor
        to_metres[:3, 3] = (1 - factor) * about
        chained = [_scaled_translation(c, factor, about) for c in chained]
        link = replace(link, sim=to_metres @ link.sim, scale=scale.value, residual=link.residual * factor)
        self.map.clear()
        self._metric = True
        log.info("metric scale known from odometry: the trajectory so far was rescaled by %.4g", factor)
        return link, chained

    def _anchor(self, chained: List[np.ndarray], odom: List[Optional[np.ndarray]]) -> None:
        """With robot odometry, place the world (map) so that the first frame that has an odometry pose
        sits at it: map and odom then coincide at the start."""
        if self._anchored or self.odometry is None:
            return
        for chain_T_cam, o in zip(chained, odom):   # chained poses are rigid (apply_sim3_to_poses)
            if o is not None:
                self._world_T_chain = o @ np.linalg.inv(chain_T_cam)
                self._anchor_point = chain_T_cam[:3, 3].copy()
                self._anchored = True
                return

    def _emit(self, frames: List[StreamFrame], pubs: List[PublishedFrame], result: Optional[WindowResult],
              link: Optional[ChainLink], final: bool, window_id: Optional[int] = None,
              scale: Optional[ScaleEstimate] = None) -> None:
        parts = [transform_points(p.to_world, p.result.static_points) for p in pubs]
        pts = np.concatenate(parts) if parts else np.zeros((0, 3))
        cols = np.concatenate([np.asarray(p.result.static_colors, np.uint8).reshape(-1, 3) for p in pubs]) \
            if pubs else np.zeros((0, 3), np.uint8)
        finite = np.isfinite(pts).all(1)
        pts, cols = voxel_downsample(pts[finite], cols[finite], self.config.cloud_voxel_size)
        if len(pts):
            self.map.add(pts, cols)
        now = self.clock()
        latency = now - max(f.arrival for f in frames) if frames else float("nan")
        stats = getattr(self.runner, "stats", None)
        cache = {k: int(v) for k, v in vars(stats).items() if isinstance(v, (int, np.integer))} \
            if stats is not None and hasattr(stats, "__dict__") else {}
        with self._cv:
            for p in pubs:
                p.frame.published = True
            self.stats.frames_published += len(pubs)
            if result is not None:
                self.stats.last_latency_s = latency
                k = self.stats.windows_ok
                self._latency_sum += latency
                self.stats.mean_latency_s = self._latency_sum / max(k, 1)
                old = self.stats.max_latency_s
                self.stats.max_latency_s = latency if not math.isfinite(old) else max(latency, old)
            self.stats.cache = cache
            dropped = self.stats.frames_dropped
        if window_id is None:
            window_id = pubs[0].window_id if pubs else max(self._window_id - 1, 0)
        if link is None:
            link = ChainLink(np.eye(4), float("nan"), float("nan"), 0)
        out = WindowOutput(window_id=window_id, segment=self._ctx_segment, frames=list(frames), published=pubs,
                           result=result, points=pts.astype(np.float32), colors=cols, link=link, latency_s=latency,
                           final=final, dropped_total=dropped, cache=cache,
                           scale=scale if scale is not None else ScaleEstimate(source=self.config.scale_source))
        self._notify("on_window", out)
