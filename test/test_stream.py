"""The ROS-free streaming core: scheduling, publish once, drop policy, resets, chaining, the map."""
import math
import threading

import numpy as np
import pytest

from easi3r_ros.align.chain import estimate_chain_sim3
from easi3r_ros.pipeline.scheduler import (DROP_NO_MODEL, DROP_QUEUE, DROP_SETTINGS, DROP_SHUTDOWN, DROP_STALE,
                                           DROP_TOO_FEW, DROP_WINDOW_FAILED, StreamConfig, StreamConfigError,
                                           context_margin)
from easi3r_ros.pipeline.stream import StreamProcessor, StreamSink
from easi3r_ros.pipeline.voxel_map import VoxelMap, voxel_downsample
from easi3r_ros.pipeline.world import optical_to_body
from ros_testing import wait_until
from stream_fakes import FakeRunner, frame, random_sim3, scene, true_pose


class Recorder(StreamSink):
    def __init__(self):
        self.windows, self.dropped, self.resets, self.states = [], [], [], []
        self.lock = threading.Lock()

    def on_window(self, out):
        with self.lock:
            self.windows.append(out)

    def on_dropped(self, frames, reason):
        with self.lock:
            self.dropped.extend((f.seq, reason) for f in frames)

    def on_reset(self, reason):
        self.resets.append(reason)

    def on_state(self, state, message):
        self.states.append((state, message))

    @property
    def published(self):
        return [p.frame.seq for w in self.windows for p in w.published]


def make(cfg, runner=None, factory=None):
    sink = Recorder()
    runner = runner or FakeRunner()
    proc = StreamProcessor(cfg, factory or (lambda: runner), sink).start()
    return proc, sink, runner


def feed(proc, seqs, stamp0=0, shape=(12, 16), stamps=None):
    for k, s in enumerate(seqs):
        st = stamps[k] if stamps is not None else stamp0 + s * 100_000_000
        proc.push(frame(s, shape), st, "cam")


def finish(proc):
    proc.flush()
    assert proc.wait_idle(20)
    proc.close(flush=False, timeout=5)


def test_config_validation_and_margin():
    assert context_margin(5, 2) == 1 and context_margin(6, 2) == 2 and context_margin(4, 2) == 1
    StreamConfig(window_size=5, stride=2, queue_limit=5).validate()
    for bad in (dict(window_size=2, stride=1), dict(window_size=5, stride=4), dict(window_size=5, stride=0),
                dict(window_size=5, stride=2, queue_limit=4), dict(cloud_voxel_size=-1.0)):
        with pytest.raises(StreamConfigError):
            StreamConfig(**bad).validate()


@pytest.mark.parametrize("w,s,n", [(5, 2, 23), (6, 3, 17), (4, 2, 4), (8, 4, 30)])
def test_every_frame_published_once_with_context(w, s, n):
    cfg = StreamConfig(window_size=w, stride=s, queue_limit=n + w)
    proc, sink, runner = make(cfg)
    feed(proc, range(n))
    finish(proc)
    assert sink.published == list(range(n))
    m = context_margin(w, s)
    for k, out in enumerate(sink.windows):
        seqs = [f.seq for f in out.frames]
        for p in out.published:
            i = seqs.index(p.frame.seq)
            assert p.index_in_window == i
            if not out.final:
                assert len(seqs) - 1 - i >= m                       # right context
                assert i >= m or k == 0                             # left context except leading frames
        if k > 0 and not out.final:
            assert len(out.published) == s                          # S frames per steady-state window
    # windows overlap by W - S frames; each frame id is passed to the runner (stable ids for caching)
    for a, b in zip(runner.calls, runner.calls[1:]):
        assert len(set(a) & set(b)) >= 2
    st = proc.stats
    assert st.frames_in == n and st.frames_published == n and st.frames_dropped == 0


class RaisingSink(Recorder):
    """Records every event, then raises: a faulty subscriber of the stream."""

    def on_window(self, out):
        super().on_window(out)
        raise RuntimeError("sink failure")

    def on_dropped(self, frames, reason):
        super().on_dropped(frames, reason)
        raise RuntimeError("sink failure")

    def on_reset(self, reason):
        super().on_reset(reason)
        raise RuntimeError("sink failure")

    def on_state(self, state, message):
        super().on_state(state, message)
        raise RuntimeError("sink failure")


def test_a_raising_sink_does_not_stop_the_stream():
    cfg = StreamConfig(window_size=5, stride=2, queue_limit=30)
    sink = RaisingSink()
    proc = StreamProcessor(cfg, FakeRunner, sink).start()
    feed(proc, range(9))
    feed(proc, range(9, 18), stamps=[k * 100_000_000 for k in range(9)])   # a bag loop: a reset
    finish(proc)
    assert len(sink.resets) == 1 and proc.stats.resets == 1
    assert sink.published == list(range(18))
    assert proc.stats.frames_published == 18 and proc.stats.windows_failed == 0
    assert not proc.stats.last_error


def test_a_raising_sink_does_not_lose_drop_accounting():
    def broken():
        raise FileNotFoundError("checkpoint not found: /nope.pth")
    sink = RaisingSink()
    proc = StreamProcessor(StreamConfig(window_size=4, stride=2, queue_limit=8), broken, sink).start()
    wait_until(lambda: proc.stats.state == "error", 30, step=0.01, what="error state")
    assert ("error", "FileNotFoundError: checkpoint not found: /nope.pth") in sink.states
    feed(proc, range(3))   # push runs on the caller's thread: the sink's errors must not reach it
    assert [r for _, r in sink.dropped] == [DROP_NO_MODEL] * 3
    proc.close(flush=False, timeout=5)
    assert proc.stats.frames_dropped == 3


def test_flush_publishes_trailing_frames_and_stream_continues():
    cfg = StreamConfig(window_size=5, stride=2, queue_limit=10)
    proc, sink, runner = make(cfg)
    feed(proc, range(8))
    proc.flush()
    assert proc.wait_idle(10)
    assert sink.published == list(range(8))
    assert sink.windows[-1].final
    feed(proc, range(8, 13))
    finish(proc)
    assert sink.published == list(range(13))
    assert proc.stats.frames_dropped == 0


def test_flush_of_too_short_stream_counts_drops():
    proc, sink, _ = make(StreamConfig(window_size=5, stride=2, queue_limit=10))
    feed(proc, range(2))
    finish(proc)
    assert sink.published == [] and sorted(sink.dropped) == [(0, DROP_TOO_FEW), (1, DROP_TOO_FEW)]
    proc, sink, _ = make(StreamConfig(window_size=5, stride=2, queue_limit=10))
    feed(proc, range(3))   # 3 frames: one short final window publishes all
    finish(proc)
    assert sink.published == [0, 1, 2]


def test_queue_full_drops_oldest_pending_frames():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=6), runner=runner)
    feed(proc, range(4))                  # first window starts and blocks
    assert runner.started.wait(5)
    feed(proc, range(4, 20))              # 16 more frames while the worker is busy
    assert proc.stats.queue_depth == 6
    dropped = [s for s, r in sink.dropped if r == DROP_QUEUE]
    assert dropped == list(range(4, 14))  # the oldest pending ones
    gate.set()
    finish(proc)
    pub = sink.published
    assert len(pub) == len(set(pub))
    assert sorted(pub + [s for s, _ in sink.dropped]) == list(range(20))
    st = proc.stats
    assert st.frames_published + st.frames_dropped == st.frames_in == 20
    assert st.dropped_by_reason == {DROP_QUEUE: 10}
    # after the gap the windows still overlap, so the trajectory stays chained
    assert st.chain_breaks == 0 and np.isfinite(st.last_chain_residual)


def _expected(seq, s0, seq0=0):
    a, b = true_pose(seq0), true_pose(seq)
    out = np.eye(4)
    out[:3, :3] = a[:3, :3].T @ b[:3, :3]
    out[:3, 3] = s0 * a[:3, :3].T @ (b[:3, 3] - a[:3, 3])
    return optical_to_body() @ out


@pytest.mark.parametrize("with_depth", [True, False])
def test_chaining_recovers_trajectory_across_random_gauges(with_depth):
    runner = FakeRunner(seed=3, with_depth=with_depth)
    proc, sink, _ = make(StreamConfig(window_size=6, stride=2, queue_limit=80), runner=runner)
    feed(proc, range(60))
    finish(proc)
    s0 = runner.gauges[0][0]
    poses = {p.frame.seq: p.world_T_cam for w in sink.windows for p in w.published}
    assert sorted(poses) == list(range(60))
    for seq, pose in poses.items():
        np.testing.assert_allclose(pose, _expected(seq, s0), atol=1e-6)
    # continuity at window boundaries: consecutive published frames from different windows stay as
    # close as within one window
    steps = [np.linalg.norm(poses[k + 1][:3, 3] - poses[k][:3, 3]) for k in range(59)]
    assert max(steps) < 2 * np.median(steps)
    for w in sink.windows[1:]:
        if w.result is not None:
            assert w.link.residual < 1e-6
    # the static points are the same world points whichever window saw them
    for w in sink.windows:
        if len(w.points):
            assert np.isfinite(w.points).all()


def test_chain_sim3_estimator_exact_and_degenerate():
    rng = np.random.default_rng(0)
    s, r, t = random_sim3(rng)
    anchor = [true_pose(k) for k in range(3)]
    new = []
    for a in anchor:
        p = np.eye(4)
        p[:3, :3] = r.T @ a[:3, :3]
        p[:3, 3] = r.T @ (a[:3, 3] - t) / s
        new.append(p)
    link = estimate_chain_sim3(anchor, new)
    assert abs(link.scale - s) < 1e-9 and link.residual < 1e-9
    # a camera that does not move: centres give no scale, depths do
    still = [true_pose(0)] * 3
    link = estimate_chain_sim3(still, still, [np.full((10, 10), 2.0)] * 3, [np.full((10, 10), 1.0)] * 3)
    assert abs(link.scale - 2.0) < 1e-9


def test_time_backwards_resets_cleanly():
    runner = FakeRunner()
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=20), runner=runner)
    feed(proc, range(9))
    # a bag loop: stamps start again; frame ids keep counting
    feed(proc, range(9, 18), stamps=[k * 100_000_000 for k in range(9)])
    finish(proc)
    assert len(sink.resets) == 1 and "backwards" in sink.resets[0]
    assert runner.resets == 1
    assert sink.published == list(range(18))
    # no window mixes the two segments; the new segment starts at the odometry origin
    for call in runner.calls:
        assert all(c < 9 for c in call) or all(c >= 9 for c in call)
    first_new = [p for w in sink.windows for p in w.published if p.frame.seq == 9][0]
    np.testing.assert_allclose(first_new.world_T_cam, optical_to_body(), atol=1e-9)
    assert proc.stats.resets == 1


def test_resolution_change_resets():
    proc, sink, runner = make(StreamConfig(window_size=4, stride=2, queue_limit=20))
    feed(proc, range(6))
    feed(proc, range(6, 12), shape=(10, 20))
    finish(proc)
    assert len(sink.resets) == 1 and "resolution" in sink.resets[0]
    assert sink.published == list(range(12))
    for call in runner.calls:
        assert all(c < 6 for c in call) or all(c >= 6 for c in call)


def test_failed_load_reports_error_then_reload_recovers():
    def broken():
        raise FileNotFoundError("checkpoint not found: /nope.pth")
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=8), factory=broken)
    wait_until(lambda: proc.stats.state == "error", 30, step=0.01, what="error state")
    assert proc.stats.state == "error" and "not found" in proc.stats.last_error
    feed(proc, range(3))
    assert [r for _, r in sink.dropped] == [DROP_NO_MODEL] * 3
    runner = FakeRunner()
    proc.reload(lambda: runner)
    feed(proc, range(3, 11))
    finish(proc)
    assert proc.stats.state == "ready"
    assert sink.published == list(range(3, 11))
    assert proc.stats.frames_in == proc.stats.frames_published + proc.stats.frames_dropped


def test_failed_window_counts_drops_and_continues():
    runner = FakeRunner(fail_on={1})
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=30), runner=runner)
    feed(proc, range(14))
    finish(proc)
    failed = [s for s, r in sink.dropped if r == DROP_WINDOW_FAILED]
    assert len(failed) == 2
    assert sorted(sink.published + failed) == list(range(14))
    assert proc.stats.windows_failed == 1 and "synthetic failure" in proc.stats.last_error


def test_close_without_flush_counts_shutdown():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=10), runner=runner)
    feed(proc, range(7))
    assert runner.started.wait(5)
    gate.set()
    proc.close(flush=False, timeout=5)
    st = proc.stats
    assert st.frames_published + st.frames_dropped == 7
    assert st.dropped_by_reason.get(DROP_SHUTDOWN, 0) >= 1


def test_cache_reuse_with_the_real_pipeline():
    torch = pytest.importorskip("torch", reason="the rest of this file tests the ROS-free, torch-free stream")
    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    torch.set_num_threads(1)
    net, _ = random_network("tiny-224-linear", seed=0)
    pipe = WindowPipeline(net, preset_config("robot", niter=20, scene_graph="swinstride-2", kmeans="torch",
                                             device="cpu"))
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=10), runner=pipe)
    for k in range(6):
        proc.push(scene(k, 48, 64), k * 10**8, "cam")
    finish(proc)
    assert sink.published == list(range(6))
    assert pipe.stats.encoded == 6                      # every frame encoded once
    assert pipe.stats.encodings_reused > 0 and pipe.stats.pairs_reused > 0
    assert sink.windows[-1].cache["encoded"] == 6
    out = sink.windows[0]
    assert out.published[0].result.mask_camera.shape == (48, 64)


def test_voxel_downsample_and_map_cap():
    pts = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [1.0, 1.0, 1.0]], np.float32)
    cols = np.array([[0, 0, 0], [100, 100, 100], [255, 0, 0]], np.uint8)
    p, c = voxel_downsample(pts, cols, 0.1)
    assert len(p) == 2
    np.testing.assert_allclose(sorted(p[:, 0]), [0.015, 1.0], atol=1e-6)
    m = VoxelMap(0.1, max_points=3)
    m.add(pts, cols)
    m.add(pts + 0.001, cols)
    assert len(m) == 2
    m.add(np.array([[5, 5, 5], [6, 6, 6]], np.float32), np.zeros((2, 3), np.uint8))
    assert len(m) == 3                                 # capped: the voxel seen longest ago went
    p, c = m.snapshot()
    assert p.dtype == np.float32 and c.dtype == np.uint8 and len(p) == 3
    m.clear()
    assert len(m) == 0


def test_reconfigure_and_reload_mid_stream():
    """A settings change takes effect once the window in progress ends: the old backlog is dropped
    (counted, ``settings changed``) instead of being worked off with the old settings."""
    gate = threading.Event()
    first, second = FakeRunner(seed=1, gate=gate), FakeRunner(seed=2)
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=20), runner=first)
    feed(proc, range(7))
    assert first.started.wait(10)                 # window 0..3 in progress, 4..6 waiting
    proc.reconfigure(StreamConfig(window_size=5, stride=3, queue_limit=20))
    gate.set()
    feed(proc, range(7, 15))
    assert proc.wait_idle(20)
    proc.reload(lambda: second)
    feed(proc, range(15, 22))
    finish(proc)
    assert sink.published == [0, 1, 2, 3] + list(range(7, 22))
    assert sorted(sink.dropped) == [(4, DROP_SETTINGS), (5, DROP_SETTINGS), (6, DROP_SETTINGS)]
    assert proc.config.window_size == 5 and proc.stats.resets == 2
    assert first.calls[0] == [0, 1, 2, 3] and all(c[0] >= 7 and len(c) <= 5 for c in first.calls[1:])
    assert second.calls and all(c[0] >= 15 for c in second.calls)  # the new runner only sees new frames


def test_non_finite_points_never_reach_the_cloud():
    class NanRunner(FakeRunner):
        def run(self, frames, stamps_ns, frame_ids):
            res = super().run(frames, stamps_ns, frame_ids)
            for f in res.frames:
                f.static_points[0] = np.nan
            return res
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=20), runner=NanRunner())
    feed(proc, range(6))
    finish(proc)
    assert all(np.isfinite(w.points).all() for w in sink.windows)
    p, _ = proc.map.snapshot()
    assert len(p) and np.isfinite(p).all()


class _CancellableRunner(FakeRunner):
    """A window that runs until released or until the stream asks it to stop (as WindowPipeline does)."""

    def __init__(self, polls=True, **kw):
        super().__init__(**kw)
        if polls:
            self.should_stop = lambda: False
        self.release = threading.Event()

    def run(self, frames, stamps_ns, frame_ids):
        if len(self.calls) >= 1:            # the second window hangs
            self.calls.append(list(frame_ids))
            self.started.set()
            while not self.release.wait(0.01):
                if getattr(self, "should_stop", lambda: False)():
                    raise RuntimeError("cancelled")
        return super().run(frames, stamps_ns, frame_ids)


@pytest.mark.parametrize("cancellable", [True, False])
def test_close_mid_window_counts_every_frame_once(cancellable):
    """close() during a window: one deadline in all, the window abandoned at its next check point, and
    every frame published once or dropped once (``shutdown``); nothing reaches the sink afterwards."""
    runner = _CancellableRunner(polls=cancellable)   # not polled: the worker outlives close()
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=20), runner=runner)
    feed(proc, range(9))
    assert runner.started.wait(10)
    ended = proc.close(flush=True, timeout=0.5)
    assert ended is cancellable
    n_pub, n_drop = len(sink.published), len(sink.dropped)
    runner.release.set()                        # a worker that outlived close() finishes: ignored
    if not cancellable:
        proc._thread.join(10)
    assert (len(sink.published), len(sink.dropped)) == (n_pub, n_drop)
    seen = sink.published + [s for s, _ in sink.dropped]
    assert sorted(seen) == list(range(9))       # once each
    assert {r for _, r in sink.dropped} == {DROP_SHUTDOWN}
    assert proc.stats.frames_published + proc.stats.frames_dropped == proc.stats.frames_in == 9


def test_close_waits_for_flush_within_one_timeout():
    """A flush that finishes in time publishes everything; the timeout is not spent twice."""
    proc, sink, _ = make(StreamConfig(window_size=4, stride=2, queue_limit=20))
    feed(proc, range(9))
    assert proc.close(flush=True, timeout=10)
    assert sink.published == list(range(9)) and not sink.dropped


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_max_frame_age_drops_backlog_but_not_frames_waiting_for_their_window():
    clock = _Clock()
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    sink = Recorder()
    proc = StreamProcessor(StreamConfig(window_size=4, stride=2, queue_limit=40, max_frame_age=1.0),
                           lambda: runner, sink, clock=clock).start()
    feed(proc, range(4))                     # the first window starts at once and hangs on the gate
    assert runner.started.wait(10)
    for k in range(4, 14):                   # a backlog builds up, 0.1 s apart
        clock.t += 0.1
        feed(proc, [k])
    clock.t += 5.0                           # the window took long: everything waiting is stale
    gate.set()
    assert proc.wait_idle(20)
    stale = [s for s, r in sink.dropped if r == DROP_STALE]
    # the oldest went; the last stride's worth of frames stayed to make the next window
    assert stale == list(range(4, 12)) and runner.calls[1][-2:] == [12, 13]
    clock.t += 30.0                          # a slow camera: frames only wait for their window to fill
    feed(proc, [14])
    clock.t += 30.0
    feed(proc, [15])
    assert proc.wait_idle(20)
    assert [s for s, r in sink.dropped if r == DROP_STALE] == stale and runner.calls[-1][-2:] == [14, 15]
    finish(proc)
    assert sorted(sink.published + [s for s, _ in sink.dropped]) == list(range(16))
    assert proc.stats.max_frame_age_s >= 5.0


def _simulate_overload(cfg, period, window_s, n_frames):
    """Discrete-event run of the scheduler on the caller's thread (``step``, no worker): a camera every
    ``period`` s, windows taking ``window_s`` s each (the frames that arrive meanwhile are pushed while the
    window runs). Returns the processor (its stats hold the worst arrival -> publication age)."""
    clock = _Clock()
    arrivals = iter(k * period for k in range(n_frames))
    next_t = [next(arrivals)]

    def arrive_until(t):
        while next_t[0] is not None and next_t[0] <= t:
            clock.t = next_t[0]
            proc.push(frame(int(round(next_t[0] / period)), (12, 16)), int(next_t[0] * 1e9) + 1, "cam")
            next_t[0] = next(arrivals, None)

    class TimedRunner(FakeRunner):
        def run(self, frames, stamps_ns, frame_ids):
            done = clock.t + window_s
            arrive_until(done)
            clock.t = done
            return super().run(frames, stamps_ns, frame_ids)
    runner = TimedRunner()
    proc = StreamProcessor(cfg, lambda: runner, Recorder(), clock=clock)
    while next_t[0] is not None:
        if not proc.step():          # nothing to do until the next frame
            arrive_until(next_t[0])
    return proc


@pytest.mark.parametrize("max_age", [0.0, 2.0])
@pytest.mark.parametrize("period", [0.1, 0.38])
def test_worst_latency_under_overload_matches_the_documented_bound(max_age, period):
    """A camera faster than the windows. A frame's arrival -> publication age stays within
    min(Q frame periods, ceil(Q / S) windows) + 2 windows + (m + S) frame periods, where max_frame_age, when
    set, replaces the first term if smaller. The worst case is a camera just faster than the windows
    (0.38 s vs 0.4 s per new frame here): the queue fills slowly and each frame waits ceil(Q / S) windows."""
    window_s = 0.8                              # windows of W=6, S=2 take 0.8 s: 2.5 new frames/s
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=16, max_frame_age=max_age)
    proc = _simulate_overload(cfg, period, window_s, 1500)
    st = proc.stats
    m, s, q = cfg.margin, cfg.stride, cfg.queue_limit
    context = (m + s) * period
    queue_wait = min(q * period, math.ceil(q / s) * window_s)
    bound = (min(max_age, queue_wait) if max_age else queue_wait) + 2 * window_s + context
    assert st.frames_published > 100 and st.frames_dropped > 20
    assert st.max_frame_age_s <= bound
    if not max_age:   # the queue does fill: the bound is reached within a window
        assert st.max_frame_age_s > bound - window_s - context
    elif queue_wait > max_age:
        assert st.dropped_by_reason.get(DROP_STALE, 0) > 0
