"""Metres for a monocular trajectory: the scale of each window from the robot's odometry, or a fixed one.

A window's poses have a free scale. With odometry (camera poses from the robot, e.g. wheel odometry
composed with the camera mounting), the window's scale is the median, over pairs of its frames that the
odometry says are at least ``min_motion`` metres apart, of odometry distance / estimated distance; its
spread is the scaled median absolute deviation of those ratios relative to the median. Pairs that
moved less carry mostly noise: when no pair qualifies (the robot stands still, or turns in place with a
short lever arm) the scale is *unobservable*, and when the ratios spread more than a limit the window's
own motion is too inconsistent to trust (a weak network); either way the chain's depth-ratio link carries
the last good value forward ("held"), or the unit stays unknown. Only distances are used, so odometry
drift in heading does not bias the scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

SCALE_SOURCES = ("none", "odometry", "fixed")
MIN_PAIRS = 3
METRIC_STATES = ("observed", "held", "fixed")   # states in which the window's outputs are in metres


@dataclass
class ScaleEstimate:
    """The metric scale of one window: metres per unit of the window's own reconstruction."""

    value: float = float("nan")   # metres per window unit (nan: the unit is arbitrary)
    spread: float = float("nan")  # robust relative spread of the pair ratios (1.4826·MAD / median)
    source: str = "none"          # none | odometry | fixed
    state: str = "unknown"        # unknown | observed | held | fixed
    pairs: int = 0                # frame pairs that measured it

    @property
    def metric(self) -> bool:
        return self.state in METRIC_STATES


def odometry_scale(window_poses: Sequence[np.ndarray], odometry_poses: Sequence[Optional[np.ndarray]],
                   min_motion: float, min_pairs: int = MIN_PAIRS) -> Optional[ScaleEstimate]:
    """Window scale from camera centres: estimated (window units) vs odometry (metres); None if unobservable."""
    est = [np.asarray(p, np.float64)[:3, 3] for p in window_poses]
    odo = [None if p is None else np.asarray(p, np.float64)[:3, 3] for p in odometry_poses]
    ratios = []
    for i in range(len(est)):
        for j in range(i + 1, len(est)):
            if odo[i] is None or odo[j] is None:
                continue
            d_odo = float(np.linalg.norm(odo[i] - odo[j]))
            d_est = float(np.linalg.norm(est[i] - est[j]))
            if d_odo >= min_motion and d_est > 0 and math.isfinite(d_odo / d_est):
                ratios.append(d_odo / d_est)
    if len(ratios) < min_pairs:
        return None
    r = np.asarray(ratios)
    median = float(np.median(r))
    spread = float(1.4826 * np.median(np.abs(r - median)) / median)
    return ScaleEstimate(median, spread, "odometry", "observed", len(r))
