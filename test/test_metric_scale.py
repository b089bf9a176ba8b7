"""Metric scale and the map frame in the stream: odometry-measured window scales, the unobservable start,
a fixed scale; with fake windows whose gauges (rotation, translation, scale) are random."""
import threading

import numpy as np
import pytest

from easi3r_ros.pipeline.metric_scale import odometry_scale
from easi3r_ros.pipeline.scheduler import StreamConfig, StreamConfigError
from easi3r_ros.pipeline.stream import StreamProcessor, StreamSink
from easi3r_ros.pipeline.world import optical_to_body
from stream_fakes import FakeRunner, frame, true_pose

PERIOD_NS = 100_000_000


class Windows(StreamSink):
    def __init__(self):
        self.windows = []
        self.lock = threading.Lock()

    def on_window(self, out):
        with self.lock:
            self.windows.append(out)


def run_stream(cfg, n=40, odometry=None, seed=5):
    sink = Windows()
    runner = FakeRunner(seed=seed)
    proc = StreamProcessor(cfg, lambda: runner, sink, odometry=odometry).start()
    for s in range(n):
        proc.push(frame(s), s * PERIOD_NS, "cam")
    proc.flush()
    assert proc.wait_idle(20)
    proc.close(flush=False, timeout=5)
    poses = {p.frame.seq: p.world_T_cam for w in sink.windows for p in w.published}
    assert sorted(poses) == list(range(n))
    return proc, sink, runner, poses


def odometry_from(first_seq=0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)

    def lookup(stamp_ns):
        seq = int(round(stamp_ns / PERIOD_NS))
        if seq < first_seq:
            return None
        pose = true_pose(seq).copy()
        pose[:3, 3] += rng.normal(scale=noise, size=3)
        return pose
    return lookup


def test_odometry_scale_estimator():
    poses = [true_pose(k) for k in range(8)]
    scaled = [p.copy() for p in poses]
    for p in scaled:
        p[:3, 3] *= 0.25                               # the window's unit is 4 m
    est = odometry_scale(scaled, poses, min_motion=0.05)
    assert est.state == "observed" and abs(est.value - 4.0) < 1e-9 and est.spread < 1e-9 and est.pairs == 28
    # a robot that stands still: nothing to measure
    assert odometry_scale(scaled, [poses[0]] * 8, min_motion=0.05) is None
    # missing odometry for most frames: too few pairs
    assert odometry_scale(scaled, [poses[0], poses[1]] + [None] * 6, min_motion=0.01) is None


def test_odometry_makes_the_trajectory_metric_and_anchors_the_map():
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=80, scale_source="odometry")
    proc, sink, runner, poses = run_stream(cfg, odometry=odometry_from())
    # every window has its own random gauge, yet the published poses are the odometry's, in metres
    for seq, pose in poses.items():
        np.testing.assert_allclose(pose, true_pose(seq), atol=1e-6)
    solved = [w for w in sink.windows if w.result is not None]
    assert all(w.scale.state == "observed" and w.scale.source == "odometry" for w in solved)
    for w, (s, _, _) in zip(solved, runner.gauges):
        assert abs(w.scale.value * s - 1.0) < 1e-6     # metres per window unit = 1 / gauge scale
    # depths come out in metres too
    p = solved[0].published[0]
    np.testing.assert_allclose(p.result.depth * p.depth_scale,
                               2.0 + 0.1 * np.sin(p.frame.seq + np.arange(12 * 16).reshape(12, 16) * 0.01),
                               rtol=1e-5)
    assert proc.stats.scale_source == "odometry" and proc.stats.scale_state == "observed"


def test_unobservable_start_then_metres():
    # no odometry for the first 9 frames (e.g. TF not yet up): the unit is arbitrary, then converted once
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=80, scale_source="odometry")
    proc, sink, runner, poses = run_stream(cfg, n=40, odometry=odometry_from(first_seq=9))
    states = [w.scale.state for w in sink.windows if w.result is not None]
    assert states[0] == "unknown" and "observed" in states
    assert proc.stats.odometry_missing > 0
    late = [seq for seq in poses if seq >= 20]
    for seq in late:
        np.testing.assert_allclose(poses[seq], true_pose(seq), atol=1e-6)


def test_held_scale_when_the_robot_stops(monkeypatch):
    # the robot (camera and odometry alike) stops at frame 20: windows without measurable motion keep
    # the metres through the overlap's depth ratio
    import stream_fakes

    def stopped(seq):
        return true_pose(min(seq, 20))
    monkeypatch.setattr(stream_fakes, "true_pose", stopped)
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=80, scale_source="odometry", scale_min_motion=0.05)
    proc, sink, runner, poses = run_stream(cfg, n=40, odometry=lambda ns: stopped(int(round(ns / PERIOD_NS))))
    solved = [w for w in sink.windows if w.result is not None]
    assert solved[-1].scale.state == "held" and proc.stats.scale_state == "held"
    for w, (s, _, _) in zip(solved, runner.gauges):
        assert abs(w.scale.value * s - 1.0) < 1e-6   # observed, then carried exactly by the depth ratio
    for seq, pose in poses.items():
        np.testing.assert_allclose(pose, stopped(seq), atol=1e-6)


def test_fixed_scale_multiplies_the_first_windows_unit():
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=80, scale_source="fixed", fixed_scale=2.5)
    _, sink, runner, poses = run_stream(cfg, n=20)
    s0 = runner.gauges[0][0]
    a = true_pose(0)
    for seq, pose in poses.items():
        b = true_pose(seq)
        expected = np.eye(4)
        expected[:3, :3] = a[:3, :3].T @ b[:3, :3]
        expected[:3, 3] = 2.5 * s0 * a[:3, :3].T @ (b[:3, 3] - a[:3, 3])
        np.testing.assert_allclose(pose, optical_to_body() @ expected, atol=1e-6)
    assert {w.scale.state for w in sink.windows if w.result is not None} == {"fixed"}


@pytest.mark.parametrize("bad", [dict(scale_source="lidar"), dict(scale_source="fixed", fixed_scale=0.0),
                                 dict(scale_min_motion=-1.0), dict(fixed_scale=float("nan"))])
def test_scale_settings_are_validated(bad):
    with pytest.raises(StreamConfigError):
        StreamConfig(**bad).validate()


def test_inconsistent_window_motion_is_not_taken_for_metres():
    # odometry 30 % noisy per frame against the windows' motion: ratios spread beyond the limit, so no
    # window claims metres; the same odometry with a generous limit is used
    noisy = odometry_from(noise=0.03, seed=1)
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=80, scale_source="odometry", scale_max_spread=0.05)
    proc, sink, _, _ = run_stream(cfg, n=20, odometry=noisy)
    solved = [w for w in sink.windows if w.result is not None]
    assert all(w.scale.state == "unknown" and w.scale.spread > 0.05 for w in solved)
    cfg = StreamConfig(window_size=6, stride=2, queue_limit=80, scale_source="odometry", scale_max_spread=5.0)
    _, sink, _, _ = run_stream(cfg, n=20, odometry=odometry_from(noise=0.03, seed=1))
    assert all(w.scale.state == "observed" for w in sink.windows if w.result is not None)
