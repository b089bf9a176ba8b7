"""Where a stream's chained windows sit in the world, and in which unit.

The *chain* (:class:`~easi3r_ros.align.chain.TrajectoryChainer`) has the segment's first camera at its origin
and, until a metric scale is known, the first window's unit. The *world* is the odometry frame (REP 103 axes,
first camera at the origin) or, with the robot's odometry, the map frame (placed so that the first frame with
an odometry pose sits at it: map and odom coincide at the start). The metric scale comes from the robot's
odometry or a fixed value (:mod:`.metric_scale`); a segment that starts unobservable is converted to metres
once, about the camera the world is anchored at. No ROS, no threads.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, List, Optional, Sequence

import numpy as np

from ..align.chain import TrajectoryChainer, scaled_translation
from ..align.sim3 import ChainLink
from .metric_scale import ScaleEstimate, odometry_scale

log = logging.getLogger(__name__)

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


@dataclass
class Placement:
    """One window placed in the world."""

    link: ChainLink                # the window -> chain similarity and its fit
    world_T_cam: List[np.ndarray]  # every frame's camera pose in the world (rigid)
    to_world: np.ndarray           # the window's reconstruction -> world (similarity)
    scale: ScaleEstimate           # metres per window unit, as far as known (state held/fixed when inherited)
    rescaled: bool                 # the trajectory so far was converted to metres: earlier map points are stale


class WorldTrajectory:
    """The chain of one stream segment, placed in the world, in metres once a scale is known."""

    def __init__(self, config: Any, odometry: bool = False):
        """``config``: a StreamConfig (scale settings, odom_T_world); ``odometry``: the robot's odometry is
        given (the world is then the map frame, anchored at the first odometry pose)."""
        self.odometry = odometry
        self.chainer = TrajectoryChainer()
        self.reset(config)

    def reset(self, config: Any) -> None:
        self.config = config
        self.chainer.reset()
        self.world_T_chain = optical_to_body() if config.odom_T_world is None else \
            np.asarray(config.odom_T_world, np.float64)
        self.anchored = False              # the world has been placed on the robot's odometry
        self.anchor_point = np.zeros(3)    # chain coordinates of the camera the world was placed by
        self.metric = False                # the chain's unit is metres (a scale was observed or fixed)

    def window_scale(self, result: Any, odom: Sequence[Optional[np.ndarray]]) -> ScaleEstimate:
        """This window's metres per window unit, as far as it is known."""
        cfg = self.config
        source = cfg.scale_source
        if source == "fixed":
            if self.chainer.started:  # later windows inherit the unit through the depth-ratio links
                return ScaleEstimate(float("nan"), float("nan"), "fixed", "fixed", 0)
            return ScaleEstimate(cfg.fixed_scale, 0.0, "fixed", "fixed", 0)
        if source == "odometry":
            est = odometry_scale([f.cam_to_world for f in result.frames], odom, cfg.scale_min_motion)
            if est is not None and est.spread <= cfg.scale_max_spread:
                return est
            if est is not None:  # the window's own motion is too inconsistent to give metres: not used
                return ScaleEstimate(spread=est.spread, source=source, pairs=est.pairs)
        return ScaleEstimate(source=source)

    def place(self, keys: Sequence[Any], result: Any, odom: Sequence[Optional[np.ndarray]]) -> Placement:
        """Chain ``result`` (frames identified by ``keys``; ``odom``: each frame's camera pose in the robot's
        odometry frame, or None) and place it in the world. Raises ValueError for non-finite poses (the
        trajectory is then left as it was)."""
        scale = self.window_scale(result, odom)
        link, chained, rescaled = self._attach(keys, result, scale)
        self._anchor(chained, odom)
        if scale.state != "observed" and self.metric:  # the overlap's depth ratio carried the metres here
            scale = ScaleEstimate(link.scale, scale.spread, scale.source,
                                  "fixed" if scale.source == "fixed" else "held", scale.pairs)
        return Placement(link, [self.world_T_chain @ c for c in chained], self.world_T_chain @ link.sim, scale,
                         rescaled)

    def _attach(self, keys: Sequence[Any], result: Any, scale: ScaleEstimate):
        known = math.isfinite(scale.value) and scale.state in ("observed", "fixed")
        if not known or self.metric or not self.chainer.started:
            link, chained = self.chainer.attach(keys, result, scale=scale.value if known else None)
            self.metric = self.metric or known
            return link, chained, False
        # The first metres of a segment that started unobservable: chain by the overlap, then convert
        # everything chained so far to metres about the camera the world is anchored at (so the map frame
        # stays on the robot's odometry; later poses jump once, reported).
        link, chained = self.chainer.attach(keys, result)
        factor = scale.value / link.scale
        about = self.anchor_point
        self.chainer.rescale(factor, about)
        to_metres = np.eye(4)
        to_metres[:3, :3] *= factor
        to_metres[:3, 3] = (1 - factor) * about
        chained = [scaled_translation(c, factor, about) for c in chained]
        link = replace(link, sim=to_metres @ link.sim, scale=scale.value, residual=link.residual * factor)
        self.metric = True
        log.info("metric scale known from odometry: the trajectory so far was rescaled by %.4g", factor)
        return link, chained, True

    def _anchor(self, chained: List[np.ndarray], odom: Sequence[Optional[np.ndarray]]) -> None:
        """With robot odometry, place the world (map) so that the first frame that has an odometry pose
        sits at it: map and odom then coincide at the start."""
        if self.anchored or not self.odometry:
            return
        for chain_T_cam, o in zip(chained, odom):   # chained poses are rigid (apply_sim3_to_poses)
            if o is not None:
                self.world_T_chain = o @ np.linalg.inv(chain_T_cam)
                self.anchor_point = chain_T_cam[:3, 3].copy()
                self.anchored = True
                return
