"""``easi3r_node``: Easi3R on a monocular camera stream.

Subscribes   image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage, with
             input_transport:=compressed), camera_info (sensor_msgs/CameraInfo, optional: the
             calibration used instead of an estimated focal), /tf and /tf_static when the robot owns
             odom -> base_frame
Publishes    ~/dynamic_mask (mono8, 0/255, source stamp and size), ~/depth (32FC1) and
             ~/depth/camera_info, ~/odometry, ~/static_cloud, ~/static_map (transient local), ~/path,
             ~/camera_info, ~/frame_result, ~/window_stats, /tf, /tf_static, /diagnostics
Services     ~/reset, ~/save_map (std_srvs/Trigger)

TF (REP 105, see :mod:`easi3r_ros.ros.frames`): odom -> base_frame (or camera optical frame) from the
node's estimate; or, when the robot owns odom -> base_frame, map -> odom so that map -> base_frame
equals the estimate.

The node is thin: frames are decoded and handed to :class:`~easi3r_ros.pipeline.stream.StreamProcessor`,
whose worker thread loads the network, runs windows and calls back here to publish (rclpy publishers
are thread-safe). The executor only decodes images and runs timers, so it never blocks on the network.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..pipeline.stream import (StreamConfig, StreamConfigError, StreamProcessor, StreamSink, WindowOutput,
                               optical_to_body)
from .frames import (map_T_odom, pose_covariance, rigid, robot_owns_odom, twist_between, unknown_covariance,
                     world_frame)
from .parameters import PARAMS, SPECS, check_all, current_values, declare_all

DEFAULT_NODE_NAME = "easi3r"
DEFAULT_CAMERA_FRAME = "camera_optical_frame"


def _snapshot_value(v):
    return list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "array" else v


def make_runner_factory(values: Dict[str, Any], report: Optional[Dict[str, str]] = None, logger=None):
    """A callable that builds the WindowPipeline from parameter values (run on the stream's worker: torch
    and the network are imported and loaded there, never on the executor)."""
    values = dict(values)
    report = report if report is not None else {}

    def factory():
        import torch

        from ..model.checkpoint import CheckpointError, load_checkpoint, random_network
        from ..model.default import DEFAULT_MODEL_NAME, calibrated_overrides, default_model_path
        from ..pipeline.window import WindowPipeline, preset_config

        if values["torch_threads"] > 0:
            torch.set_num_threads(int(values["torch_threads"]))
        if values["random_weights"]:
            if logger is not None:
                logger.warning("=" * 72)
                logger.warning(f"RANDOM WEIGHTS ({values['random_weights']}): a smoke run; every mask, pose and "
                               "point this node publishes is MEANINGLESS")
                logger.warning("=" * 72)
            net, text = random_network(values["random_weights"], seed=0)
            calibration = {}
            report["model"] = f"random:{values['random_weights']}"
        else:
            checkpoint = values["checkpoint"] or default_model_path()
            if checkpoint is None:
                raise CheckpointError("no checkpoint configured and no shipped model installed: set the "
                                      "'checkpoint' parameter (a .pth file or a Hugging Face folder)")
            net, info = load_checkpoint(checkpoint, allow_pickle=bool(values["trust_checkpoint"]))
            name = info.model_string.split("(")[0] if values["checkpoint"] else DEFAULT_MODEL_NAME
            report["model"] = f"{name} ({info.format}: {info.path})"
            calibration = calibrated_overrides(checkpoint)
        cfg = preset_config(values["preset"], image_size=values["image_size"] or None,
                            scene_graph=f"swinstride-{values['scene_graph_width']}", niter=values["ga_iters"],
                            kmeans=values["kmeans"], device=values["device"], precision=values["precision"],
                            static_conf_threshold=values["cloud_conf_threshold"], **calibration)
        pipe = WindowPipeline(net, cfg)
        report["device"] = str(pipe.device)
        return pipe

    return factory


def odom_T_world(values: Dict[str, Any]) -> np.ndarray:
    """The odometry frame from the chain frame (the first camera's optical frame): REP 103 axes, or, with
    base_frame set, base_to_camera so that base_frame starts at the odometry origin."""
    if values.get("base_frame"):
        from .conversions import pose7_to_matrix
        return pose7_to_matrix(values["base_to_camera"])
    return optical_to_body()


def stream_config(values: Dict[str, Any]) -> StreamConfig:
    return StreamConfig(window_size=int(values["window_size"]), stride=int(values["stride"]),
                        queue_limit=int(values["queue_limit"]), cloud_voxel_size=float(values["cloud_voxel_size"]),
                        map_max_points=int(values["map_max_points"]),
                        odom_T_world=tuple(map(tuple, odom_T_world(values))),
                        scale_source=str(values["scale_source"]), fixed_scale=float(values["fixed_scale"]),
                        scale_min_motion=float(values["scale_min_motion"]),
                        scale_max_spread=float(values["scale_max_spread"])).validate()


class _RosLogHandler(logging.Handler):
    """Forwards the core's Python logging (window failures, worker errors) to the node's ROS logger."""

    def __init__(self, logger):
        super().__init__(logging.INFO)
        self.ros_logger = logger

    def emit(self, record):
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # logging must never raise into the worker
            pass


class _LogLimiter:
    """Logs a message when its kind changes or every ``period`` s, so repeated bad input is visible without
    flooding the log."""

    def __init__(self, period: float = 5.0):
        self.period = period
        self._last: Dict[str, float] = {}

    def ok(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.period:
            self._last[kind] = now
            return True
        return False


def _build_node_class():
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data

    from .qos import qos_profile

    class Easi3rNode(Node):
        def __init__(self, node_name: str = DEFAULT_NODE_NAME, **kwargs):
            super().__init__(node_name, **kwargs)
            self._lock = threading.Lock()
            self._limiter = _LogLimiter()
            self._report: Dict[str, str] = {"model": "", "device": ""}
            self._counters = dict(received=0, rejected=0, param_errors=0)
            self._reported = dict(rejected=0, dropped=0, failed=0, param_errors=0, resets=0, tf_failures=0)
            self._last_input_error = ""
            self._param_errors: List[str] = []
            self._last_reset = ""
            self._last_frame_time: Optional[float] = None
            self._flushed = True
            self._camera_info_fx = float("nan")
            self._estimated_fx = float("nan")
            self._camera_model = None        # the latest usable calibration from camera_info
            self._camera_status = "not received"
            self._camera_frame_seen = ""
            self._last_frame_id = ""
            self._tf_failures = 0
            self._last_tf_error = ""
            self._mount_source = "parameter"
            self._prev_body: Optional[tuple] = None   # (stamp_ns, pose) of the last published body, for twist
            self._path_poses: List[Any] = []
            self._map_version = -1
            self._log_handler = _RosLogHandler(self.get_logger())
            core_log = logging.getLogger("easi3r_ros")
            core_log.addHandler(self._log_handler)
            core_log.setLevel(logging.INFO)
            core_log.propagate = False
            self._own_subs: List[Any] = []
            self._own_timers: Dict[str, Any] = {}

            for problem in declare_all(self):
                self._param_error(problem)
            self._values = current_values(self)
            self._make_publishers()
            from .tf import TfBroadcaster, TfListener
            self.tf = TfBroadcaster(self)
            # The robot's odometry is read from TF; the listener exists only when the robot owns odom.
            self.robot_odom = robot_owns_odom(self._values)
            self.tf_listener = TfListener(self) if self.robot_odom else None
            self.stream = StreamProcessor(stream_config(self._values), self._factory(), _NodeSink(self),
                                          odometry=self.odom_T_camera if self.robot_odom else None)
            self._make_services()
            self._send_static_map_to_odom()
            self._subscribe()
            self._make_timers()
            self.add_on_set_parameters_callback(self._on_set_parameters)
            if hasattr(self, "add_post_set_parameters_callback"):
                self.add_post_set_parameters_callback(self._apply_parameters)
            self.stream.start()
            self.get_logger().info(
                f"easi3r node up: window {self._values['window_size']}, stride {self._values['stride']} "
                f"(latency: {self.stream.config.margin} to {self.stream.config.margin + self._values['stride'] - 1}"
                f" frames + queue + compute), queue limit {self._values['queue_limit']} frames, input "
                f"'{self._image_topic()}' ({self._values['input_reliability']}, depth {self._values['input_depth']})")
            self.get_logger().info(f"TF: {self.tf_mode()}; scale: {self._values['scale_source']}")

        # ---------------------------------------------------------------- set-up
        def _factory(self):
            return make_runner_factory(self._values, self._report, self.get_logger())

        def _make_publishers(self):
            from diagnostic_msgs.msg import DiagnosticArray
            from nav_msgs.msg import Odometry, Path
            from sensor_msgs.msg import CameraInfo, Image, PointCloud2

            from easi3r_ros.msg import FrameResult, WindowStats

            out, latched = qos_profile(20), qos_profile(1, latched=True)
            self.pub_mask = self.create_publisher(Image, "~/dynamic_mask", out)
            self.pub_depth = self.create_publisher(Image, "~/depth", out)
            self.pub_depth_info = self.create_publisher(CameraInfo, "~/depth/camera_info", out)
            self.pub_odom = self.create_publisher(Odometry, "~/odometry", out)
            self.pub_cloud = self.create_publisher(PointCloud2, "~/static_cloud", out)
            self.pub_map = self.create_publisher(PointCloud2, "~/static_map", latched)
            self.pub_path = self.create_publisher(Path, "~/path", out)
            self.pub_info = self.create_publisher(CameraInfo, "~/camera_info", out)
            self.pub_result = self.create_publisher(FrameResult, "~/frame_result", out)
            self.pub_stats = self.create_publisher(WindowStats, "~/window_stats", out)
            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def _make_services(self):
            from std_srvs.srv import Trigger
            self.srv_reset = self.create_service(Trigger, "~/reset", self._on_reset_request)
            self.srv_save_map = self.create_service(Trigger, "~/save_map", self._on_save_map_request)

        def _image_topic(self) -> str:
            return "image/compressed" if self._values["input_transport"] == "compressed" else "image"

        def _subscribe(self):
            from sensor_msgs.msg import CameraInfo, CompressedImage, Image
            for sub in self._own_subs:
                self.destroy_subscription(sub)
            qos = qos_profile(self._values["input_depth"], reliable=self._values["input_reliability"] == "reliable")
            if self._values["input_transport"] == "compressed":
                img = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos)
            else:
                img = self.create_subscription(Image, "image", self._on_image, qos)
            info = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data)
            self._own_subs = [img, info]

        def _make_timers(self):
            for t in self._own_timers.values():
                self.destroy_timer(t)
            self._own_timers = {
                "diag": self.create_timer(float(self._values["diagnostics_period"]), self.publish_diagnostics),
                "map": self.create_timer(float(self._values["map_period"]), self._publish_map),
                "idle": self.create_timer(0.1, self._check_idle),
            }

        # ---------------------------------------------------------------- input
        def _on_image(self, msg):
            from .conversions import image_to_rgb
            self._take(msg, image_to_rgb)

        def _on_compressed(self, msg):
            from .conversions import compressed_to_rgb
            self._take(msg, compressed_to_rgb)

        def _take(self, msg, decode):
            from .conversions import stamp_to_ns
            with self._lock:
                self._counters["received"] += 1
                self._last_frame_time = time.monotonic()
                self._flushed = False
            try:
                rgb = decode(msg)
            except Exception as exc:  # ImageCodecError and anything a decoder may raise on garbage
                self._reject(msg, f"{type(exc).__name__}: {exc}")
                return
            self._last_frame_id = msg.header.frame_id
            self.stream.push(rgb, stamp_to_ns(msg.header.stamp), msg.header.frame_id, header=msg.header,
                             camera=self._camera_for(rgb.shape[:2]))

        def _reject(self, msg, why: str):
            stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
            text = f"input frame {stamp} rejected: {why}"
            with self._lock:
                self._counters["rejected"] += 1
                self._last_input_error = text
            if self._limiter.ok("reject:" + why.split(":")[0] + why[:40]):
                self.get_logger().warning(text)

        def _on_camera_info(self, msg):
            from ..io.camera_model import CameraModelError
            from .conversions import camera_model_from_info
            try:
                model = camera_model_from_info(msg)
                status = "received" if model is not None else "uncalibrated (all-zero K): estimating intrinsics"
            except CameraModelError as exc:
                model, status = None, f"unusable ({exc}): estimating intrinsics"
            if model is not None and model == self._camera_model:
                return   # the same calibration: keep the object, which caches its undistortion maps
            self._camera_model = model
            self._camera_info_fx = float(model.fx) if model is not None else float("nan")
            if model is None:
                self._set_camera_status(status, error=status.startswith("unusable"))
            elif not self._camera_status.startswith(("used", "size")):
                self._set_camera_status(status)

        def _set_camera_status(self, status: str, error: bool = False):
            """Logged once per change, so a bad calibration on a 30 Hz topic is reported, not repeated."""
            with self._lock:
                changed, self._camera_status = status != self._camera_status, status
            if changed:
                (self.get_logger().error if error else self.get_logger().info)(f"camera_info: {status}")

        def _camera_for(self, hw):
            """The calibration for an image of size ``hw``, or None (the pipeline then estimates intrinsics)."""
            model = self._camera_model
            if model is None:
                return None
            if not self._values["use_camera_info"]:
                self._set_camera_status("ignored (use_camera_info false): estimating intrinsics")
                return None
            if (int(model.height), int(model.width)) != tuple(hw):
                self._set_camera_status(f"size mismatch: camera_info is for {model.width}x{model.height} images, "
                                        f"the images are {hw[1]}x{hw[0]}: estimating intrinsics", error=True)
                return None
            self._set_camera_status(f"used ({model.distortion_model or 'no distortion'})")
            return model

        # ---------------------------------------------------------------- the robot's TF
        def tf_mode(self) -> str:
            v = self._values
            body = v["base_frame"] or "<camera optical frame>"
            if not v["publish_tf"]:
                return "publishing no TF (publish_tf false)"
            if self.robot_odom:
                if v["publish_map_to_odom_tf"]:
                    return f"robot owns {v['odom_frame']} -> {body}; publishing {v['map_frame']} -> {v['odom_frame']}"
                return (f"robot owns {v['odom_frame']} -> {body}; publishing no pose TF (publish_map_to_odom_tf "
                        "false): the estimate is on ~/odometry")
            extra = f", {v['map_frame']} -> {v['odom_frame']} (identity)" if v["publish_map_to_odom_tf"] else ""
            return f"publishing {v['odom_frame']} -> {body}{extra}"

        def _tf_failed(self, why: str):
            with self._lock:
                self._tf_failures += 1
                self._last_tf_error = why
            if self._limiter.ok("tf:" + why[:30]):
                self.get_logger().warning(f"TF lookup failed: {why}")

        def camera_mounting(self, stamp_ns: Optional[int]) -> np.ndarray:
            """base_frame -> camera optical frame: from TF when the robot publishes it, else base_to_camera."""
            from .conversions import pose7_to_matrix
            v = self._values
            if self.tf_listener is not None:
                m, _ = self.tf_listener.lookup(v["base_frame"], self.camera_frame(self._last_frame_id), stamp_ns)
                if m is not None:
                    self._mount_source = "tf"
                    return m
            self._mount_source = "parameter"
            return pose7_to_matrix(v["base_to_camera"])

        def odom_T_camera(self, stamp_ns: int) -> Optional[np.ndarray]:
            """The camera optical frame in the robot's odom frame at ``stamp_ns`` (odom -> base_frame from TF
            composed with the mounting), or None when TF cannot say. Called from the stream's worker thread:
            the TF buffer is thread-safe."""
            v = self._values
            odom_T_base, why = self.tf_listener.lookup(v["odom_frame"], v["base_frame"], int(stamp_ns))
            if odom_T_base is None:
                self._tf_failed(why)
                return None
            return odom_T_base @ self.camera_mounting(int(stamp_ns))

        def _send_static_map_to_odom(self):
            """Identity map -> odom on /tf_static when the node owns odom and publish_map_to_odom_tf is set."""
            v = self._values
            if self.robot_odom or not v["publish_tf"]:
                return
            if v["publish_map_to_odom_tf"]:
                from .tf import transform_stamped
                self.tf.send_static([transform_stamped(v["map_frame"], v["odom_frame"], np.eye(4),
                                                       self.get_clock().now().to_msg())])
            elif self.tf.remove_static(v["odom_frame"]):
                self.tf.send_static([])

        def _check_idle(self):
            after = float(self._values["flush_after"])
            with self._lock:
                idle = (self._last_frame_time is not None and not self._flushed and after > 0
                        and time.monotonic() - self._last_frame_time >= after)
                if idle:
                    self._flushed = True
            if idle:
                self.stream.flush()

        # ---------------------------------------------------------------- parameters
        def _param_error(self, text: str):
            with self._lock:
                self._counters["param_errors"] += 1
                self._param_errors = (self._param_errors + [text])[-5:]
            self.get_logger().error(f"parameter refused: {text}")

        def _proposed(self, params) -> Dict[str, Any]:
            values = dict(self._values)
            for p in params:
                if p.name in SPECS:
                    values[p.name] = _snapshot_value(p.value)
            return values

        def _on_set_parameters(self, params):
            from rcl_interfaces.msg import SetParametersResult
            proposed = self._proposed(params)
            fixed = [p.name for p in params if p.name in SPECS and SPECS[p.name].group == "startup"
                     and proposed[p.name] != self._values[p.name]]
            why = (f"{', '.join(fixed)} is read at start-up only: restart the node with the new value"
                   if fixed else check_all(proposed))
            if why is None:
                try:
                    stream_config(proposed)
                except (StreamConfigError, ValueError) as exc:
                    why = str(exc)
            if why is not None:
                self._param_error(why)
                return SetParametersResult(successful=False, reason=why)
            if not hasattr(self, "add_post_set_parameters_callback"):
                self._apply_parameters(params)
            return SetParametersResult(successful=True)

        def _apply_parameters(self, params):
            new = self._proposed(params)
            changed = {n for n in new if new[n] != self._values.get(n)}
            if not changed:
                return
            self._values = new
            groups = {SPECS[n].group for n in changed}
            self.get_logger().info(f"parameters changed: {', '.join(sorted(changed))}")
            if "stream" in groups:
                self.stream.reconfigure(stream_config(new))
                self._camera_frame_seen = ""  # re-send the static transform
            if "pipeline" in groups:
                self.stream.reload(self._factory())
            if "input" in groups:
                self._subscribe()
            if changed & {"diagnostics_period", "map_period"}:
                self._make_timers()
            if "base_frame" in changed and not new["base_frame"]:
                self.tf.clear_static()
            if changed & {"publish_map_to_odom_tf", "map_frame", "odom_frame", "publish_tf", "base_frame"}:
                self._send_static_map_to_odom()

        # ---------------------------------------------------------------- outputs
        def camera_frame(self, header_frame: str) -> str:
            return self._values["camera_frame"] or header_frame or DEFAULT_CAMERA_FRAME

        def publish_window(self, out: WindowOutput):
            """Convert one window's published frames into messages (called on the stream's worker)."""
            from geometry_msgs.msg import PoseStamped
            from nav_msgs.msg import Path
            from std_msgs.msg import Header

            from easi3r_ros.msg import FrameResult

            from .conversions import array_to_cloud, depth_to_image, mask_to_image, matrix_to_pose, ns_to_stamp
            v = self._values
            world, base = world_frame(v), v["base_frame"]
            moving = bool(out.result.moving) if out.result is not None else True
            pose_cov = pose_covariance(float(out.link.residual))   # chain units are the world's (metres once known)
            tfs, poses = [], []
            for p in out.published:
                header = p.frame.header if p.frame.header is not None else Header(
                    stamp=ns_to_stamp(p.frame.stamp_ns), frame_id=p.frame.frame_id)
                r = p.result
                cam = self.camera_frame(header.frame_id)
                h, w = r.mask_camera.shape
                world_T_cam = p.world_T_cam
                base_T_cam = self.camera_mounting(p.frame.stamp_ns) if base else np.eye(4)
                world_T_body = rigid(world_T_cam @ np.linalg.inv(base_T_cam))
                mask = mask_to_image(r.mask_camera, header) if v["publish_mask"] or v["publish_results"] else None
                if v["publish_mask"]:
                    self.pub_mask.publish(mask)
                info = self._camera_info_msg(header, r.intrinsics_camera, w, h)
                if v["publish_camera_info"]:
                    self.pub_info.publish(info)
                if v["publish_depth"] and r.depth_camera is not None:
                    self.pub_depth.publish(depth_to_image(r.depth_camera * np.float32(p.depth_scale), header))
                    self.pub_depth_info.publish(info)
                if v["publish_results"]:
                    self.pub_result.publish(FrameResult(
                        header=header, window_id=int(p.window_id), index_in_window=int(p.index_in_window),
                        odom_frame_id=world, pose=matrix_to_pose(world_T_cam), width=int(w), height=int(h),
                        k=[float(x) for x in np.asarray(r.intrinsics_camera).ravel()], mask=mask,
                        dynamic_ratio=float(r.dynamic_ratio), mean_confidence=float(np.mean(r.confidence)),
                        moving_window=moving))
                if v["publish_odometry"]:
                    self.pub_odom.publish(self._odometry_msg(header.stamp, p.frame.stamp_ns, world, base or cam,
                                                             world_T_body, pose_cov))
                tfs += self._pose_transforms(p.frame.stamp_ns, header.stamp, cam, world_T_cam, world_T_body)
                poses.append(PoseStamped(header=Header(stamp=header.stamp, frame_id=world),
                                         pose=matrix_to_pose(world_T_body)))
                self._send_mounting(cam, header.stamp, base_T_cam)
                self._estimated_fx = float(r.intrinsics_camera[0][0])
            if not out.published:
                return self._publish_stats(out)
            stamp = header.stamp   # the last published frame's
            if v["publish_tf"]:
                self.tf.send(tfs)
            with self._lock:
                self._path_poses = (self._path_poses + poses)[-int(v["path_max_poses"]):]
                path_poses = list(self._path_poses)
            if v["publish_path"]:
                self.pub_path.publish(Path(header=Header(stamp=stamp, frame_id=world), poses=path_poses))
            if v["publish_cloud"] and out.result is not None:
                self.pub_cloud.publish(array_to_cloud(out.points, out.colors, Header(stamp=stamp, frame_id=world)))
            self._publish_stats(out)

        def _camera_info_msg(self, header, k, w, h):
            """The intrinsics used for a frame: the calibration (with its distortion: masks and depth are
            aligned with the image as received) when the frame used it, else the estimate."""
            from .conversions import camera_info
            model = self._camera_model
            if (model is not None and self._values["use_camera_info"] and (model.width, model.height) == (w, h)
                    and np.allclose(np.asarray(k, np.float64), model.K, rtol=1e-6, atol=1e-6)):
                return camera_info(header, model.K, w, h, model.distortion_model, model.D)
            return camera_info(header, k, w, h)

        def _odometry_msg(self, stamp, stamp_ns: int, world: str, child: str, world_T_body, pose_cov):
            from std_msgs.msg import Header

            from .conversions import odometry_msg
            with self._lock:
                prev, self._prev_body = self._prev_body, (int(stamp_ns), world_T_body)
            twist = None if prev is None else twist_between(prev[1], world_T_body, (stamp_ns - prev[0]) * 1e-9)
            return odometry_msg(Header(stamp=stamp, frame_id=world), child, world_T_body, pose_cov, twist,
                                unknown_covariance())

        def _pose_transforms(self, stamp_ns: int, stamp, cam: str, world_T_cam, world_T_body) -> List[Any]:
            """The frame's dynamic transforms: odom -> body (the node owns odom), or map -> odom (the robot
            does, with publish_map_to_odom_tf), never both."""
            from .tf import transform_stamped
            v = self._values
            if not self.robot_odom:
                return [transform_stamped(v["odom_frame"], v["base_frame"] or cam, world_T_body, stamp)]
            if not v["publish_map_to_odom_tf"]:
                return []
            odom_T_cam = self.odom_T_camera(stamp_ns)
            if odom_T_cam is None:
                return []   # counted as a TF failure; the previous map -> odom stays in the buffers
            return [transform_stamped(v["map_frame"], v["odom_frame"], rigid(map_T_odom(world_T_cam, odom_T_cam)),
                                      stamp)]

        def _send_mounting(self, cam: str, stamp, base_T_cam):
            """base_frame -> camera on /tf_static: always when the node owns odom; when the robot does, only
            where TF knows no parent of the camera frame (one tree, never two parents)."""
            v = self._values
            if not v["base_frame"] or not v["publish_tf"] or cam == self._camera_frame_seen:
                return
            if self.robot_odom and (self._mount_source == "tf" or self.tf_listener.parent_of(cam) is not None):
                return
            from .tf import transform_stamped
            self._camera_frame_seen = cam
            self.tf.send_static([transform_stamped(v["base_frame"], cam, base_T_cam, stamp)])

        def _publish_stats(self, out: WindowOutput):
            if out.result is None or not self._values["publish_results"]:
                return
            from std_msgs.msg import Header

            from easi3r_ros.msg import WindowStats

            from .conversions import ns_to_stamp
            r = out.result
            t = r.timings
            f0 = r.frames[0]
            scale = out.scale
            self.pub_stats.publish(WindowStats(
                header=Header(stamp=self.get_clock().now().to_msg(), frame_id=world_frame(self._values)),
                window_id=int(out.window_id), n_frames=len(out.frames),
                first_stamp=ns_to_stamp(out.frames[0].stamp_ns), last_stamp=ns_to_stamp(out.frames[-1].stamp_ns),
                latency_s=float(out.latency_s), encode_s=float(t.get("encode_s", 0.0)),
                pass1_s=float(t.get("pass1_s", 0.0)),
                masks_s=float(t.get("masks1_s", 0.0) + t.get("masks2_s", 0.0) + t.get("masks_s", 0.0)),
                pass2_s=float(t.get("pass2_s", 0.0)), align_s=float(t.get("align_s", 0.0)),
                total_s=float(t.get("total_s", 0.0)), focal_px=float(np.asarray(f0.intrinsics_camera)[0, 0]),
                motion_score=float(r.motion_score) if r.motion_score is not None else float("nan"),
                moving=bool(r.moving), otsu_threshold=float("nan") if r.otsu_threshold is None else float(r.otsu_threshold),
                frames_dropped_total=int(out.dropped_total), chain_scale=float(out.link.scale),
                chain_residual=float(out.link.residual), scale=float(scale.value), scale_spread=float(scale.spread),
                scale_source=str(scale.source), scale_state=str(scale.state)))

        def _publish_map(self):
            if not self._values["publish_map"]:
                return
            m = self.stream.map
            if m.version == self._map_version:
                return
            self._map_version = m.version
            from std_msgs.msg import Header

            from .conversions import array_to_cloud
            pts, cols = m.snapshot()
            self.pub_map.publish(array_to_cloud(pts, cols, Header(stamp=self.get_clock().now().to_msg(),
                                                                  frame_id=world_frame(self._values))))

        def on_reset(self, reason: str):
            from nav_msgs.msg import Path
            from std_msgs.msg import Header
            with self._lock:
                self._path_poses = []
                self._prev_body = None
                self._last_reset = reason
            self._map_version = -1
            if self._values["publish_path"]:   # an empty path clears what viewers show
                self.pub_path.publish(Path(header=Header(stamp=self.get_clock().now().to_msg(),
                                                         frame_id=world_frame(self._values))))
            self.get_logger().warning(f"stream reset: {reason}; trajectory, path and map start again")

        # ---------------------------------------------------------------- services
        def _on_reset_request(self, request, response):
            self.stream.reset("reset service")
            response.success = True
            response.message = ("reset requested: frames waiting for context are published first, then the "
                                "trajectory, path, map and caches start again")
            return response

        def _on_save_map_request(self, request, response):
            import datetime
            from pathlib import Path as FsPath

            from ..io.writers import write_ply
            points, colors = self.stream.map.snapshot()
            frame = world_frame(self._values)
            if not len(points):
                response.success, response.message = False, "the static map is empty: nothing written"
                return response
            folder = FsPath(self._values["map_save_dir"]).expanduser()
            name = datetime.datetime.now().strftime("easi3r_map_%Y%m%d-%H%M%S-%f")[:-3] + ".ply"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = write_ply(folder / name, points, colors)
            except OSError as exc:
                response.success, response.message = False, f"cannot write the map into {folder}: {exc}"
                self.get_logger().error(response.message)
                return response
            response.success = True
            response.message = str(path)
            self.get_logger().info(f"static map saved: {len(points)} points in frame '{frame}' -> {path}")
            return response

        def on_dropped(self, frames, reason: str):
            if self._limiter.ok("drop:" + reason):
                self.get_logger().warning(f"dropped {len(frames)} frame(s): {reason} "
                                          f"(total {self.stream.stats.frames_dropped})")

        def on_state(self, state: str, message: str):
            if state == "error":
                self.get_logger().error(f"no network: {message}. The node stays up and reports ERROR on "
                                        "/diagnostics; set the parameter to retry.")
            elif state == "ready":
                self.get_logger().info(f"network ready: {self._report.get('model')} on {self._report.get('device')}")

        # ---------------------------------------------------------------- diagnostics
        def snapshot(self) -> Dict[str, Any]:
            st = self.stream.stats
            with self._lock:
                c = dict(self._counters)
                snap = dict(
                    state=st.state, state_message=st.state_message, model=self._report.get("model", ""),
                    device=self._report.get("device", "") or self._values["device"],
                    checkpoint=self._values["checkpoint"] or "(none)",
                    random_weights=self._values["random_weights"],
                    frames_in=c["received"], frames_published=st.frames_published,
                    frames_dropped=st.frames_dropped, dropped_by_reason=dict(st.dropped_by_reason),
                    frames_rejected=c["rejected"],
                    frames_in_flight=c["received"] - c["rejected"] - st.frames_published - st.frames_dropped,
                    queue_depth=st.queue_depth, queue_limit=self.stream.config.queue_limit, busy=st.busy,
                    windows_ok=st.windows_ok, windows_failed=st.windows_failed,
                    window_latency_last_s=st.last_latency_s, window_latency_mean_s=st.mean_latency_s,
                    window_latency_max_s=st.max_latency_s, window_compute_last_s=st.last_window_s,
                    chain_scale=st.last_chain_scale, chain_residual=st.last_chain_residual,
                    chain_breaks=st.chain_breaks, resets=st.resets, last_reset=self._last_reset or "none",
                    encoded_frames=st.cache.get("encoded", 0), encodings_reused=st.cache.get("encodings_reused", 0),
                    pairs_decoded=st.cache.get("pairs_decoded", 0), pairs_reused=st.cache.get("pairs_reused", 0),
                    camera_info=self._camera_status, camera_info_fx=self._camera_info_fx,
                    estimated_fx=self._estimated_fx, tf_mode=self.tf_mode(), tf_lookup_failures=self._tf_failures,
                    last_tf_error=self._last_tf_error or "none", camera_mounting=self._mount_source,
                    scale=st.scale, scale_spread=st.scale_spread, scale_source=st.scale_source,
                    scale_state=st.scale_state, odometry_missing=st.odometry_missing,
                    last_input_error=self._last_input_error or "none", last_error=st.last_error or "none",
                    parameter_errors=" | ".join(self._param_errors) or "none")
                now = dict(rejected=c["rejected"], dropped=st.frames_dropped, failed=st.windows_failed,
                           param_errors=c["param_errors"], resets=st.resets, tf_failures=self._tf_failures)
                for k in now:
                    snap["new_" + k] = now[k] - self._reported[k]
                self._reported = now
            return snap

        def publish_diagnostics(self):
            from .diagnostics import diagnostic_array
            snap = self.snapshot()
            self.pub_diag.publish(diagnostic_array(snap, self.get_clock().now().to_msg(),
                                                   hardware_id=snap["device"] or "unknown"))

        def shutdown(self, timeout: Optional[float] = None):
            """Publish trailing frames (within ``shutdown_timeout``), stop the worker, report once more."""
            timeout = float(self._values["shutdown_timeout"]) if timeout is None else timeout
            done = self.stream.close(flush=timeout > 0, timeout=timeout)
            if not done:
                self.get_logger().warning("shutdown: the window in progress did not finish in time")
            st = self.stream.stats
            self.get_logger().info(f"stopped: {st.frames_published} frames published, {st.frames_dropped} dropped "
                                   f"({st.dropped_by_reason or 'none'})")
            try:
                self.publish_diagnostics()
            except Exception:  # the context may already be gone
                pass
            logging.getLogger("easi3r_ros").removeHandler(self._log_handler)

    return Easi3rNode


class _NodeSink(StreamSink):
    def __init__(self, node):
        self.node = node

    def on_window(self, out):
        self.node.publish_window(out)

    def on_dropped(self, frames, reason):
        self.node.on_dropped(frames, reason)

    def on_reset(self, reason):
        self.node.on_reset(reason)

    def on_state(self, state, message):
        self.node.on_state(state, message)


_NODE_CLASS = None


def Easi3rNode(*args, **kwargs):
    """The node (rclpy is imported on first use, so ``--help`` works without ROS)."""
    global _NODE_CLASS
    if _NODE_CLASS is None:
        _NODE_CLASS = _build_node_class()
    return _NODE_CLASS(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- main
def _help_epilog() -> str:
    lines = ["topics (relative: remap with --ros-args -r image:=/camera/image_raw):",
             "  in : image (sensor_msgs/Image) | image/compressed (input_transport:=compressed), camera_info,",
             "       /tf /tf_static (when the robot owns odom -> base_frame: publish_odom_to_base_tf:=false)",
             "  out: ~/dynamic_mask ~/depth ~/depth/camera_info ~/odometry ~/static_cloud ~/static_map ~/path",
             "       ~/camera_info ~/frame_result ~/window_stats /tf /tf_static /diagnostics",
             "  services: ~/reset ~/save_map (std_srvs/Trigger)", "",
             "parameters (--ros-args -p name:=value, or --params-file config/easi3r.yaml):"]
    for p in PARAMS:
        lines.append(f"  {p.name} (default {p.default!r}): {p.description}")
    lines += ["", "example:", "  easi3r_node --ros-args --params-file config/easi3r.yaml -p checkpoint:=model.pth "
              "-r image:=/camera/image_raw"]
    return "\n".join(lines)


def split_ros_args(argv: List[str]):
    """(own arguments, ROS arguments) — everything from the first --ros-args on goes to rclpy."""
    if "--ros-args" in argv:
        k = argv.index("--ros-args")
        return argv[:k], argv[k:]
    return argv, []


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, ros_args = split_ros_args(argv)
    parser = argparse.ArgumentParser(
        prog="easi3r_node", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Easi3R dynamic-object masks, camera poses, static point clouds and TF from a monocular "
                    "image stream (ROS 2 node).", epilog=_help_epilog())
    parser.add_argument("--node-name", default=None, help="node name (same as --ros-args -r __node:=NAME)")
    args = parser.parse_args(own)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    try:
        from rclpy.signals import SignalHandlerOptions
        rclpy.init(args=["easi3r_node"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # pragma: no cover - older rclpy
        rclpy.init(args=["easi3r_node"] + ros_args)
    # Own signal handling: at SIGINT/SIGTERM the node still publishes trailing frames before the
    # context goes down.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = None
    try:
        node = Easi3rNode(args.node_name or DEFAULT_NODE_NAME)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("shutting down: publishing trailing frames")
        node.shutdown()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
