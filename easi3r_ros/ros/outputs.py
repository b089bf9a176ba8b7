"""The node's output topics, declared once: topic, message type, the parameter that enables it, what it
carries, and the builder that makes its message. The publishers, ``easi3r_node --help`` and the README's
topic table all come from :data:`OUTPUTS`; a new output is one row here and one builder (plus its enable
parameter in :mod:`~easi3r_ros.ros.parameters`).

Builders run on the stream's worker thread. Per-frame builders get a :class:`FrameContext` (one published
frame: its source header, result, poses, frames), per-window builders a :class:`WindowContext`. Messages are
imported when first built, so the table and the help text need no rclpy.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .frames import rigid

PER_FRAME, PER_WINDOW, TIMER = "frame", "window", "timer"


@dataclass(frozen=True)
class Output:
    key: str                       # the publisher's name in the node
    topic: str                     # relative names are remappable; ~/ is the node's namespace
    msg_type: str                  # package/Type
    enable: Optional[str]          # the bool parameter that switches it on (None: always)
    when: str                      # PER_FRAME | PER_WINDOW | TIMER (the node's timers build those)
    what: str                      # one line for --help and the README
    build: Optional[Callable[[Any], Any]] = None   # context -> message, or None to skip this time
    latched: bool = False          # transient local: late subscribers get the last message


def message_class(msg_type: str):
    pkg, name = msg_type.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


# ---------------------------------------------------------------------------------------------- contexts
@dataclass
class FrameContext:
    """One published frame, everything its messages are made of."""

    header: Any                    # the source image's header (stamp, frame_id) -- outputs carry it
    result: Any                    # easi3r_ros.pipeline.result.FrameResult
    world: str                     # the fixed frame (odom, or map when the robot owns odom)
    child: str                     # base_frame, or the camera optical frame without one
    world_T_cam: np.ndarray
    world_T_body: np.ndarray
    depth_scale: float             # world units per window unit
    window_id: int
    index_in_window: int
    moving: bool
    pose_covariance: np.ndarray
    twist: Optional[Tuple[np.ndarray, np.ndarray]]
    calibration: Any = None        # io.camera_model.CameraModel used for this frame, or None

    @property
    def size(self) -> Tuple[int, int]:
        h, w = self.result.mask_camera.shape
        return int(w), int(h)

    @cached_property
    def mask_msg(self):
        from .conversions import mask_to_image
        return mask_to_image(self.result.mask_camera, self.header)

    @cached_property
    def info_msg(self):
        """The intrinsics used: the calibration (with its distortion: masks and depth are aligned with the
        image as received) when the frame used it, else the estimate."""
        from .conversions import camera_info
        w, h = self.size
        k = self.result.intrinsics_camera
        c = self.calibration
        if c is not None and np.allclose(np.asarray(k, np.float64), c.K, rtol=1e-6, atol=1e-6):
            return camera_info(self.header, c.K, w, h, c.distortion_model, c.D)
        return camera_info(self.header, k, w, h)


@dataclass
class WindowContext:
    """One window's publication: its stream output and the frames' contexts."""

    out: Any                       # easi3r_ros.pipeline.stream.WindowOutput
    frames: List[FrameContext]
    world: str
    stamp: Any                     # the last published frame's stamp
    path_poses: List[Any] = field(default_factory=list)   # geometry_msgs/PoseStamped kept for ~/path
    stats_stamp: Any = None        # the node clock's now (ROS time: /clock under use_sim_time)


# ---------------------------------------------------------------------------------------------- builders
def _depth(c: FrameContext):
    from .conversions import depth_to_image
    if c.result.depth_camera is None:
        return None
    return depth_to_image(c.result.depth_camera * np.float32(c.depth_scale), c.header)


def _depth_info(c: FrameContext):
    return c.info_msg if c.result.depth_camera is not None else None


def _odometry(c: FrameContext):
    from std_msgs.msg import Header

    from .conversions import odometry_msg
    from .frames import unknown_covariance
    return odometry_msg(Header(stamp=c.header.stamp, frame_id=c.world), c.child, c.world_T_body,
                        c.pose_covariance, c.twist, unknown_covariance())


def _frame_result(c: FrameContext):
    from easi3r_ros.msg import FrameResult

    from .conversions import matrix_to_pose
    w, h = c.size
    r = c.result
    return FrameResult(header=c.header, window_id=int(c.window_id), index_in_window=int(c.index_in_window),
                       odom_frame_id=c.world, pose=matrix_to_pose(c.world_T_cam), width=w, height=h,
                       k=[float(x) for x in np.asarray(r.intrinsics_camera).ravel()], mask=c.mask_msg,
                       dynamic_ratio=float(r.dynamic_ratio), mean_confidence=float(np.mean(r.confidence)),
                       moving_window=bool(c.moving))


def _static_cloud(w: WindowContext):
    from std_msgs.msg import Header

    from .conversions import array_to_cloud
    if w.out.result is None:
        return None
    return array_to_cloud(w.out.points, w.out.colors, Header(stamp=w.stamp, frame_id=w.world))


def _path(w: WindowContext):
    from nav_msgs.msg import Path
    from std_msgs.msg import Header
    return Path(header=Header(stamp=w.stamp, frame_id=w.world), poses=list(w.path_poses))


def _window_stats(w: WindowContext):
    from std_msgs.msg import Header

    from easi3r_ros.msg import WindowStats

    from .conversions import ns_to_stamp
    out = w.out
    r = out.result
    if r is None:
        return None
    t = r.timings
    scale = out.scale
    return WindowStats(
        header=Header(stamp=w.stats_stamp, frame_id=w.world),
        window_id=int(out.window_id), n_frames=len(out.frames),
        first_stamp=ns_to_stamp(out.frames[0].stamp_ns), last_stamp=ns_to_stamp(out.frames[-1].stamp_ns),
        latency_s=float(out.latency_s), encode_s=float(t.get("encode_s", 0.0)), pass1_s=float(t.get("pass1_s", 0.0)),
        masks_s=float(t.get("masks1_s", 0.0) + t.get("masks2_s", 0.0) + t.get("masks_s", 0.0)),
        pass2_s=float(t.get("pass2_s", 0.0)), align_s=float(t.get("align_s", 0.0)),
        total_s=float(t.get("total_s", 0.0)), focal_px=float(np.asarray(r.frames[0].intrinsics_camera)[0, 0]),
        motion_score=float(r.motion_score) if r.motion_score is not None else float("nan"),
        moving=bool(r.moving), otsu_threshold=float("nan") if r.otsu_threshold is None else float(r.otsu_threshold),
        align_iterations=int(r.align_iterations), align_warm_start=bool(r.align_warm),
        align_loss=float("nan") if r.align_loss is None else float(r.align_loss),
        frames_dropped_total=int(out.dropped_total), chain_scale=float(out.link.scale),
        chain_residual=float(out.link.residual), scale=float(scale.value), scale_spread=float(scale.spread),
        scale_source=str(scale.source), scale_state=str(scale.state))


# ---------------------------------------------------------------------------------------------- the table
OUTPUTS: Tuple[Output, ...] = (
    Output("mask", "~/dynamic_mask", "sensor_msgs/Image", "publish_mask", PER_FRAME,
           "mono8 0/255 dynamic-object mask at the source image's size, stamp and frame_id",
           lambda c: c.mask_msg),
    Output("depth", "~/depth", "sensor_msgs/Image", "publish_depth", PER_FRAME,
           "32FC1 z-depth of the source image's pixels (same size, stamp, frame_id); metres when the scale is "
           "known, else the first window's unit; NaN where the network saw nothing", _depth),
    Output("depth_info", "~/depth/camera_info", "sensor_msgs/CameraInfo", "publish_depth", PER_FRAME,
           "the intrinsics of ~/depth (the same message as ~/camera_info)", _depth_info),
    Output("odometry", "~/odometry", "nav_msgs/Odometry", "publish_odometry", PER_FRAME,
           "pose of base_frame (or of the camera optical frame without one) in the fixed frame, with covariance",
           _odometry),
    Output("camera_info", "~/camera_info", "sensor_msgs/CameraInfo", "publish_camera_info", PER_FRAME,
           "the intrinsics used, at the camera's resolution: the calibration from camera_info (with its "
           "distortion) or the estimate", lambda c: c.info_msg),
    Output("frame_result", "~/frame_result", "easi3r_ros/FrameResult", "publish_results", PER_FRAME,
           "per frame: stamp, camera pose in the fixed frame, intrinsics, mask, dynamic ratio", _frame_result),
    Output("static_cloud", "~/static_cloud", "sensor_msgs/PointCloud2", "publish_cloud", PER_WINDOW,
           "new static, confident points of each window (x y z rgb) in the fixed frame", _static_cloud),
    Output("path", "~/path", "nav_msgs/Path", "publish_path", PER_WINDOW,
           "the chained trajectory of base_frame (or the camera) in the fixed frame (at most path_max_poses, "
           "older ones decimated)", _path),
    Output("window_stats", "~/window_stats", "easi3r_ros/WindowStats", "publish_results", PER_WINDOW,
           "per window: stage timings, latency, focal, guard statistic, alignment iterations/loss/warm start, "
           "chain scale/residual, metric scale",
           _window_stats),
    Output("static_map", "~/static_map", "sensor_msgs/PointCloud2", "publish_map", TIMER,
           "voxel-downsampled accumulation of the static clouds (map_period; at most map_max_points voxels)",
           latched=True),
    Output("diagnostics", "/diagnostics", "diagnostic_msgs/DiagnosticArray", None, TIMER,
           "state, model, device, frames in / published / dropped (by reason) / lost before the node, latency, "
           "camera_info, scale, TF mode, last error (diagnostics_period)"),
)

# Not publishers of ours: the TF broadcaster's (tf2_ros's QoS); listed for the help text and the README.
TF_OUTPUTS = (("/tf", "tf2_msgs/TFMessage", "publish_tf",
               "odom -> base_frame (or -> the camera optical frame), or map -> odom when the robot owns odom"),
              ("/tf_static", "tf2_msgs/TFMessage", "publish_tf",
               "base_frame -> camera (base_to_camera), map -> odom identity (publish_map_to_odom_tf)"))

BY_KEY: Dict[str, Output] = {o.key: o for o in OUTPUTS}


def enabled(o: Output, values: Dict[str, Any]) -> bool:
    return o.enable is None or bool(values.get(o.enable, True))


def help_lines() -> List[str]:
    rows = [(o.topic, o.msg_type, o.what) for o in OUTPUTS] + [(t, ty, what) for t, ty, _, what in TF_OUTPUTS]
    return [f"  {t:22s} {ty:32s} {what}" for t, ty, what in rows]


def markdown_table() -> str:
    """The README's output table."""
    lines = ["| topic | type | enabled by | what |", "|---|---|---|---|"]
    for o in OUTPUTS:
        lat = " (transient local)" if o.latched else ""
        lines.append(f"| `{o.topic}` | `{o.msg_type}`{lat} | {f'`{o.enable}`' if o.enable else 'always'} | {o.what} |")
    for t, ty, en, what in TF_OUTPUTS:
        lines.append(f"| `{t}` | `{ty}` | `{en}` | {what} |")
    return "\n".join(lines)


def body_pose(world_T_cam: np.ndarray, base_T_cam: np.ndarray) -> np.ndarray:
    return rigid(world_T_cam @ np.linalg.inv(base_T_cam))


if __name__ == "__main__":   # the README's table: python -m easi3r_ros.ros.outputs
    print(markdown_table())
