"""Synthetic window runners for the streaming tests: known trajectories, per-window random Sim(3) gauges."""
import threading

import numpy as np

from easi3r_ros.pipeline.result import FrameResult, WindowResult


def rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def true_pose(seq):
    """Camera-to-world of frame ``seq`` on a smooth curve (optical frame convention)."""
    t = np.eye(4)
    t[:3, :3] = rot([0.2, 1.0, 0.1], 0.05 * seq)
    t[:3, 3] = [0.3 * np.sin(0.2 * seq), 0.05 * seq, 0.1 * seq]
    return t


def random_sim3(rng):
    q = rng.normal(size=3)
    r = rot(q, rng.uniform(-np.pi, np.pi))
    s = float(np.exp(rng.uniform(-1.0, 1.0)))
    t = rng.normal(size=3) * 3
    return s, r, t


class FakeRunner:
    """``run`` returns a WindowResult whose poses are the true trajectory seen through a random Sim(3)
    gauge of its own (as a real window's world frame is), with consistent depths and static points."""

    def __init__(self, seed=0, size=(12, 16), gate=None, fail_on=None, with_depth=True, points_per_frame=20):
        self.rng = np.random.default_rng(seed)
        self.size = size
        self.gate = gate                # threading.Event: run blocks until set (simulates a slow window)
        self.fail_on = fail_on or set()  # window numbers (0-based) that raise
        self.with_depth = with_depth
        self.points_per_frame = points_per_frame
        self.calls = []
        self.gauges = []
        self.resets = 0
        self.started = threading.Event()

    def reset(self):
        self.resets += 1

    def run(self, frames, stamps_ns, frame_ids):
        k = len(self.calls)
        self.calls.append(list(frame_ids))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if k in self.fail_on:
            raise RuntimeError("synthetic failure")
        s, r, t = random_sim3(self.rng)
        self.gauges.append((s, r, t))
        h, w = self.size
        out = []
        for i, (fid, stamp) in enumerate(zip(frame_ids, stamps_ns)):
            tp = true_pose(fid)
            pose = np.eye(4)
            pose[:3, :3] = r @ tp[:3, :3]
            pose[:3, 3] = s * r @ tp[:3, 3] + t
            true_depth = 2.0 + 0.1 * np.sin(fid + np.arange(h * w).reshape(h, w) * 0.01)
            # static points: fixed world points (seeded by frame id), seen in this window's gauge
            wp = np.random.default_rng(1000 + fid).normal(size=(self.points_per_frame, 3))
            pts = (s * wp @ r.T + t).astype(np.float32)
            out.append(FrameResult(
                index=i, stamp_ns=stamp, mask=np.zeros((h, w), bool),
                mask_camera=np.zeros(np.shape(frames[i])[:2], bool), cam_to_world=pose,
                intrinsics=np.array([[10.0, 0, w / 2], [0, 10.0, h / 2], [0, 0, 1]]),
                intrinsics_camera=np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]]),
                depth=(s * true_depth).astype(np.float32) if self.with_depth else None,
                confidence=np.full((h, w), 5.0, np.float32), static_points=pts,
                static_colors=np.full((self.points_per_frame, 3), 128, np.uint8)))
        return WindowResult(frames=out, focal=10.0, edges=np.zeros((0, 2), np.int64), moving=False,
                            motion_score=0.5, timings={"encode_s": 0.01, "pass1_s": 0.01, "masks1_s": 0.0,
                                                       "pass2_s": 0.01, "masks2_s": 0.0, "align_s": 0.01,
                                                       "total_s": 0.04})


def frame(seq, shape=(12, 16)):
    rng = np.random.default_rng(seq)
    return rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8)


def scene(k, h=96, w=128):
    """A textured frame with a red square moving right: a small synthetic sequence."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(xx * 0.3 + k * 0.2) * 60 + 120, np.cos(yy * 0.25) * 60 + 120,
                    ((xx + yy + 2 * k) % 64) * 3], -1)
    x0 = (10 + 6 * k) % max(w - 25, 1)
    img[h // 3:h // 3 + h // 3, x0:x0 + 25] = [250, 30, 30]
    return img.clip(0, 255).astype(np.uint8)
