"""Easi3R on a live frame stream, without ROS: the window scheduler (:mod:`.scheduler`) run on one worker
thread, the network runner, the trajectory in the world (:mod:`.world`), the static map
(:mod:`.voxel_map`), and a :class:`StreamSink` that gets every result, drop and reset.

``StreamProcessor.push`` never blocks on the network. The worker (``start``) plans one job at a time (a
window, a flush of held results, a drop, a segment reset) and runs it; :meth:`StreamProcessor.step` runs one
job on the caller's thread instead, which is how the offline runner uses the same scheduler and chaining
without a thread. Every accepted frame is published once or counted as dropped, with a reason.

Trajectory: see :mod:`easi3r_ros.align.chain` (Sim(3) on the overlap of consecutive windows) and
:mod:`.world` (the world frame, metric scale). When a failed window leaves no frame shared with the last
solved one, the next window is attached at the last known pose with its own scale (a chain break).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..align.sim3 import ChainLink
from ..io.camera_model import CameraModel
from .metric_scale import ScaleEstimate
from .result import FrameResult, WindowResult
from .scheduler import (DROP_NO_MODEL, DROP_QUEUE, DROP_SETTINGS, DROP_SHUTDOWN, DROP_WINDOW_FAILED, Job, StreamConfig,
                        StreamConfigError, StreamFrame, WindowScheduler)
from .voxel_map import VoxelMap, voxel_downsample
from .world import WorldTrajectory, optical_to_body, transform_points

__all__ = ["StreamConfig", "StreamConfigError", "StreamFrame", "PublishedFrame", "WindowOutput", "StreamSink",
           "StreamStats", "StreamProcessor", "optical_to_body", "transform_points"]

log = logging.getLogger(__name__)

# At close, this much of the timeout is kept for the window in progress to stop at its next check point.
CANCEL_GRACE_S = 2.0


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
    points: np.ndarray                     # (N, 3) float32 new static points in the world (published frames)
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
    max_frame_age_s: float = float("nan")  # worst arrival -> publication of any published frame
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


class StreamProcessor:
    """Buffers frames, runs windows (on a worker thread after :meth:`start`, or on the caller's with
    :meth:`step`) and hands results to a :class:`StreamSink`.

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
        self.scheduler = WindowScheduler(config, clock)
        self.odometry = odometry
        self._factory = runner_factory
        self.sink = sink or StreamSink()
        self.clock = clock
        self._cv = threading.Condition()
        self._reload = True
        self._stop = False
        self._closed = False              # close() has accounted for every frame: nothing is handed out later
        self._cancel = threading.Event()  # polled by the runner (WindowPipeline.should_stop)
        self._job: Optional[Job] = None   # the job being run
        self._window_id = 0
        self._latency_sum = 0.0
        self.stats = StreamStats()
        self.runner: Optional[Runner] = None
        self.world = WorldTrajectory(config, odometry=odometry is not None)
        self.map = VoxelMap(config.cloud_voxel_size, config.map_max_points)
        self._thread: Optional[threading.Thread] = None

    @property
    def config(self) -> StreamConfig:
        return self.scheduler.config

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StreamProcessor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="easi3r-stream", daemon=True)
            self._thread.start()
        return self

    def close(self, flush: bool = True, timeout: Optional[float] = None) -> bool:
        """Stop within ``timeout`` s in all. With ``flush``, trailing frames are published first, as far as
        the time allows (``CANCEL_GRACE_S`` of it is kept back); then the window in progress is abandoned at
        its next check point. Every frame not published by then is counted as dropped (``shutdown``) and
        nothing is handed to the sink afterwards. True when the worker ended in time."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)

        def left(reserve: float = 0.0) -> Optional[float]:
            return None if end is None else max(0.0, end - time.monotonic() - reserve)
        if flush and self.stats.state == "ready":
            self.flush()
            if self._thread is not None:
                self.wait_idle(left(min(CANCEL_GRACE_S, (timeout or 0.0) / 2)))
            else:
                self.run_until_idle()
        with self._cv:
            self._stop = True
            running = list(self._job.frames) if self._job is not None else []  # taken off the queue already
            self._cv.notify_all()
        self._cancel.set()
        ok = True
        if self._thread is not None:
            self._thread.join(left())
            ok = not self._thread.is_alive()
        with self._cv:
            self._closed = True
            leftovers = self.scheduler.leftovers(running)
            self.stats.queue_depth = 0
        self._count_dropped(leftovers, DROP_SHUTDOWN)
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
        with self._cv:
            frame, reset_reason = self.scheduler.accept(rgb, stamp_ns, frame_id, header, camera)
            self.stats.frames_in += 1
            no_model = self.stats.state == "error" and not self._reload
            if not no_model:
                dropped = self.scheduler.enqueue(frame)
                self.stats.queue_depth = len(self.scheduler.pending)
                self._cv.notify_all()
        if reset_reason:
            log.debug("stream reset: %s", reset_reason)  # the sink reports it when the reset takes effect
        if no_model:
            self._count_dropped([frame], DROP_NO_MODEL)
        if dropped:
            self._count_dropped(dropped, DROP_QUEUE)
        return frame

    def flush(self) -> None:
        """Publish trailing frames now (see :mod:`.scheduler`); the trajectory continues afterwards."""
        with self._cv:
            self.scheduler.flush_requested = True
            self._cv.notify_all()

    def reset(self, reason: str) -> None:
        """Start a new segment (trajectory, map and caches reset) after flushing the current one."""
        with self._cv:
            self.scheduler.restart(reason)
            self._cv.notify_all()
        log.debug("stream reset requested: %s", reason)

    def reload(self, runner_factory: Optional[Callable[[], Runner]] = None) -> None:
        """Rebuild the runner (e.g. new checkpoint or pipeline settings) once the window in progress ends;
        results waiting for context are published, the backlog no window has taken is dropped (``settings
        changed``), and the stream restarts from a new segment."""
        with self._cv:
            if runner_factory is not None:
                self._factory = runner_factory
            self._reload = True
            backlog = self.scheduler.change_settings("model reload")
            self.stats.queue_depth = len(self.scheduler.pending)
            self._cv.notify_all()
        self._count_dropped(backlog, DROP_SETTINGS)

    def reconfigure(self, config: StreamConfig) -> None:
        """New window/queue settings, applied once the window in progress ends (like :meth:`reload`)."""
        with self._cv:
            backlog = self.scheduler.change_settings("stream settings changed", config)
            self.stats.queue_depth = len(self.scheduler.pending)
            self._cv.notify_all()
        self._count_dropped(backlog, DROP_SETTINGS)

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
        return self.scheduler.plan(peek=True) is not None or (self._reload and not self._stop)

    # ------------------------------------------------------------------ running jobs
    def _next(self) -> Optional[Job]:
        """(under the lock) The next job, a ``reload`` of the runner first when one is due; None: nothing to do."""
        sch = self.scheduler
        # a new runner takes over once the segment it was requested in has been flushed
        if self._reload and (sch.ctx_segment == sch.segment or self.runner is None):
            self._reload = False
            return Job("reload")
        job = sch.plan()
        if job is not None:
            self.stats.queue_depth = len(sch.pending)
        return job

    def step(self) -> bool:
        """Run one job on the caller's thread; False when there is nothing to do (without a worker thread:
        the offline runner)."""
        with self._cv:
            if self._stop:
                return False
            job = self._next()
            if job is None:
                return False
            self.stats.busy = True
            self._job = job
        self._run(job)
        return True

    def run_until_idle(self) -> None:
        while self.step():
            pass

    def _loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop:
                        return
                    job = self._next()
                    if job is not None:
                        break
                    self._cv.wait(0.5)
                self.stats.busy = True
                self._job = job
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            if job.kind == "reload":
                self._do_reload()
            elif job.kind == "drop":
                self._count_dropped(job.frames, job.reason)
            elif job.kind == "reset":
                self._do_reset(job.reason)
            elif job.kind == "held":
                with self._cv:
                    pubs, frames = self.scheduler.take_held()
                self._emit(frames, pubs, None, None, final=True)
            elif self.runner is None:
                self._count_dropped([f for f in job.frames if not f.published], DROP_NO_MODEL)
            else:
                self._run_window(job)
        except Exception as exc:  # keep the worker alive whatever happens
            log.exception("stream worker error")
            with self._cv:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._cv:
                self.stats.busy = False
                self._job = None
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
                dropped = list(self.scheduler.pending)
                self.scheduler.pending.clear()
                self.stats.queue_depth = 0
            self._count_dropped(dropped, DROP_NO_MODEL)
            return
        if hasattr(runner, "should_stop"):
            runner.should_stop = self._cancel.is_set
        self.runner = runner
        self._set_state("ready", "network loaded")

    def _do_reset(self, reason: str) -> None:
        with self._cv:
            new = self.scheduler.start_segment()
            if new is not None:
                self.map.voxel, self.map.max_points = new.cloud_voxel_size, new.map_max_points
            self.world.reset(self.config)
            self.stats.resets += 1
        if self.runner is not None and hasattr(self.runner, "reset"):
            self.runner.reset()
        self.map.clear()
        self._notify("on_reset", reason)

    def _run_window(self, job: Job) -> None:
        frames = job.frames
        n, m = len(frames), self.config.margin
        t0 = time.perf_counter()
        try:
            cameras = [f.camera for f in frames if f.camera is not None]
            extra = {"camera": cameras[-1]} if cameras else {}
            result = self.runner.run([f.rgb for f in frames], [f.stamp_ns for f in frames], [f.seq for f in frames],
                                     **extra)
            if len(result.frames) != n:
                raise RuntimeError(f"the pipeline returned {len(result.frames)} results for {n} frames")
            elapsed = time.perf_counter() - t0
            placed = self.world.place([f.seq for f in frames], result, self._odometry_poses(frames))
        except Exception as exc:
            if self._cancel.is_set():   # abandoned at shutdown: close() counts its frames
                log.info("window over frames %d..%d abandoned at shutdown", frames[0].seq, frames[-1].seq)
                return
            msg = f"window over frames {frames[0].seq}..{frames[-1].seq} failed: {type(exc).__name__}: {exc}"
            log.error(msg)
            with self._cv:
                self.stats.windows_failed += 1
                self.stats.last_error = msg
                lost = self.scheduler.failed(job)
            self._count_dropped(lost, DROP_WINDOW_FAILED)
            return
        if placed.rescaled:
            self.map.clear()   # its points are in the old unit
        with self._cv:
            wid = self._window_id
            self._window_id += 1
        pubs, held = [], {}
        for i, (f, r, pose) in enumerate(zip(frames, result.frames, placed.world_T_cam)):
            if f.published:
                continue
            p = PublishedFrame(f, r, pose, i, wid, placed.to_world)
            if job.publishable(i, m):
                pubs.append(p)
            else:
                held[f.seq] = p
        link, scale = placed.link, placed.scale
        with self._cv:
            self.scheduler.solved(job, held)
            self.stats.windows_ok += 1
            self.stats.last_window_s = elapsed
            self.stats.last_chain_scale, self.stats.last_chain_residual = link.scale, link.residual
            self.stats.scale, self.stats.scale_spread = scale.value, scale.spread
            self.stats.scale_source, self.stats.scale_state = scale.source, scale.state
            if link.broken:
                self.stats.chain_breaks += 1
        self._emit(frames, pubs, result, link, final=job.final, window_id=wid, scale=scale)

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
        age = now - min(p.frame.arrival for p in pubs) if pubs else float("nan")
        stats = getattr(self.runner, "stats", None)
        cache = {k: int(v) for k, v in vars(stats).items() if isinstance(v, (int, np.integer))} \
            if stats is not None and hasattr(stats, "__dict__") else {}
        with self._cv:
            if self._closed:   # close() has counted these frames already; the sink may be gone
                return
            for p in pubs:
                p.frame.published = True
            self.stats.frames_published += len(pubs)
            if pubs:
                old = self.stats.max_frame_age_s
                self.stats.max_frame_age_s = age if not math.isfinite(old) else max(age, old)
            if result is not None:
                self.stats.last_latency_s = latency
                self._latency_sum += latency
                self.stats.mean_latency_s = self._latency_sum / max(self.stats.windows_ok, 1)
                old = self.stats.max_latency_s
                self.stats.max_latency_s = latency if not math.isfinite(old) else max(latency, old)
            self.stats.cache = cache
            dropped = self.stats.frames_dropped
            segment = self.scheduler.ctx_segment
        if window_id is None:
            window_id = pubs[0].window_id if pubs else max(self._window_id - 1, 0)
        if link is None:
            link = ChainLink(np.eye(4), float("nan"), float("nan"), 0)
        out = WindowOutput(window_id=window_id, segment=segment, frames=list(frames), published=pubs,
                           result=result, points=pts.astype(np.float32), colors=cols, link=link, latency_s=latency,
                           final=final, dropped_total=dropped, cache=cache,
                           scale=scale if scale is not None else ScaleEstimate(source=self.config.scale_source))
        self._notify("on_window", out)
