"""The node's TF tree (REP 105) and the small pose algebra behind its outputs, without rclpy.

Two modes, chosen by ``publish_odom_to_base_tf``:

* **node odometry** (true, the default): the node owns ``odom -> base_frame`` (or ``odom -> camera optical
  frame`` when ``base_frame`` is empty) and ``base_frame -> camera`` (``base_to_camera``, on /tf_static);
  ``map -> odom`` is the identity, published only with ``publish_map_to_odom_tf``. The stream's world is
  ``odom``.
* **robot odometry** (false): the robot owns ``odom -> base_frame`` (wheel odometry, an EKF) and, usually,
  ``base_frame -> camera``. The node never publishes ``odom -> base_frame``; the stream's world is ``map``
  (its first camera placed at the robot's odometry pose) and, with ``publish_map_to_odom_tf``, the node
  publishes ``map -> odom = map_T_cam_est(t) · inv(odom_T_cam_robot(t))`` so that ``map -> base_frame``
  through the robot's tree equals the node's estimate.

One tree, never two parents: :func:`check_frames` refuses combinations that would give a frame a second
parent or that cannot work.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np


def tf_frame_name(frame_id: str) -> str:
    """A header's frame_id as a TF frame name. tf2 refuses a leading '/', and the node's frame parameters
    refuse white space; both are mapped (``/cam`` -> ``cam``, ``my cam`` -> ``my_cam``) rather than lost."""
    return re.sub(r"\s+", "_", frame_id.strip()).lstrip("/")


def robot_owns_odom(values: Dict[str, Any]) -> bool:
    return not values.get("publish_odom_to_base_tf", True)


def world_frame(values: Dict[str, Any]) -> str:
    """The frame of the stream's world: trajectory, path, clouds, map, Odometry."""
    return values["map_frame"] if robot_owns_odom(values) else values["odom_frame"]


def check_frames(values: Dict[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """Why the frame / scale settings cannot work together, and the values a node falls back to at start-up
    (chosen so that the fallback cannot give a frame a second parent), or None when they are fine."""
    robot = robot_owns_odom(values)
    base, odom, mp = values.get("base_frame", ""), values.get("odom_frame", ""), values.get("map_frame", "")
    cam = values.get("camera_frame", "")
    no_tf = {"publish_tf": False}
    if robot and not base:
        return ("publish_odom_to_base_tf=false (the robot owns odom -> base_frame) needs base_frame, e.g. "
                "base_link: the node's estimate is placed in the robot's tree through it",
                dict(no_tf, publish_odom_to_base_tf=True))
    if values.get("scale_source") == "odometry" and not robot:
        return ("scale_source=odometry reads the robot's odom -> base_frame from TF: set "
                "publish_odom_to_base_tf=false (otherwise the node would read back its own estimate)",
                {"scale_source": "none"})
    if not values.get("publish_tf", True):
        return None   # nothing goes on /tf: names cannot clash there
    if not odom:
        return ("odom_frame must not be empty: every pose the node publishes hangs from it",
                {"odom_frame": "odom"})
    uses_map = robot or values.get("publish_map_to_odom_tf", False)
    if uses_map and not mp:
        return ("map_frame must not be empty when map -> odom is published or the robot owns odom", no_tf)
    named = [(n, f) for n, f in (("map_frame", mp if uses_map else ""), ("odom_frame", odom),
                                 ("base_frame", base), ("camera_frame", cam)) if f]
    seen: Dict[str, str] = {}
    for name, frame in named:
        if frame in seen:
            return (f"{seen[frame]} and {name} are both {frame!r}: every frame of the tree needs its own name",
                    no_tf)
        seen[frame] = name
    return None


# ---------------------------------------------------------------------------------------------- poses
def map_T_odom(map_T_cam_est: np.ndarray, odom_T_cam_robot: np.ndarray) -> np.ndarray:
    """``map -> odom`` such that map -> odom -> (robot's tree) -> camera equals the node's estimate."""
    return np.asarray(map_T_cam_est, np.float64) @ np.linalg.inv(np.asarray(odom_T_cam_robot, np.float64))


def rigid(t: np.ndarray) -> np.ndarray:
    """The nearest rigid transform (orthonormal rotation; a similarity's scale removed)."""
    t = np.asarray(t, np.float64)
    u, _, vt = np.linalg.svd(t[:3, :3])
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = r, t[:3, 3]
    return out


def twist_between(prev: np.ndarray, cur: np.ndarray, dt: float) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(linear, angular) velocity of a body from its poses ``prev`` and ``cur`` (4x4, body -> world) ``dt``
    seconds apart, expressed in the body frame (nav_msgs/Odometry's twist convention: child frame).
    None when ``dt`` is not positive."""
    if not (dt > 0 and math.isfinite(dt)):
        return None
    from scipy.spatial.transform import Rotation
    delta = np.linalg.inv(np.asarray(prev, np.float64)) @ np.asarray(cur, np.float64)
    return delta[:3, 3] / dt, Rotation.from_matrix(delta[:3, :3]).as_rotvec() / dt


UNKNOWN_VARIANCE = -1.0


def pose_covariance(residual: float) -> np.ndarray:
    """6x6 (x y z roll pitch yaw) covariance of a published pose: the chain link's residual (RMS of the
    overlap camera centres after alignment, world units) squared on the position diagonal; -1 on a
    diagonal where the variance is unknown (orientation always; position when the residual is not a
    positive finite number, e.g. the first window, which fixes the frame)."""
    cov = np.zeros((6, 6))
    pos = residual * residual if (math.isfinite(residual) and residual > 0) else UNKNOWN_VARIANCE
    cov[np.diag_indices(6)] = [pos, pos, pos, UNKNOWN_VARIANCE, UNKNOWN_VARIANCE, UNKNOWN_VARIANCE]
    return cov


def unknown_covariance() -> np.ndarray:
    cov = np.zeros((6, 6))
    cov[np.diag_indices(6)] = UNKNOWN_VARIANCE
    return cov
