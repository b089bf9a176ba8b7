"""Chaining sliding windows into one trajectory (spec §11): each window's Sim(3) onto the running
trajectory, estimated on the frames it shares with the previous window.

Rotation from the overlap frames' orientations, scale from the median ratio of their depth maps (well posed
even when the camera stands still, where camera centres carry no scale), translation from their centres. The
first window fixes the frame (its first camera at the origin) and, without a known metric scale, the unit.
Nothing closes loops: per-window errors compose, so position error grows roughly like a random walk over
windows and scale drifts multiplicatively; ``ChainLink.residual`` reports each link's fit. No ROS, no torch.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sim3 import ChainLink, apply_sim3_to_poses, estimate_window_sim3


def depth_ratio(anchor_depths: Sequence[np.ndarray], new_depths: Sequence[np.ndarray]) -> Optional[float]:
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
        scale = depth_ratio(anchor_depths, new_depths)
    return estimate_window_sim3(a, b, method="auto", scale=scale)


def scaled_translation(pose: np.ndarray, factor: float, about: Optional[np.ndarray] = None) -> np.ndarray:
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

    def attach(self, keys: Sequence[Any], result: Any,
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
        self._poses = {k: scaled_translation(p, factor, about) for k, p in self._poses.items()}
        self._depths = {k: None if d is None else d * np.float32(factor) for k, d in self._depths.items()}
