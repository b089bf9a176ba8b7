"""``easi3r_node``: Easi3R on a monocular camera stream.

Subscribes   image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage, with
             input_transport:=compressed), camera_info (sensor_msgs/CameraInfo, optional: compared
             with the estimated focal in diagnostics)
Publishes    ~/dynamic_mask (mono8, 0/255, source stamp and size), ~/static_cloud, ~/static_map
             (transient local), ~/path, ~/camera_info (estimated), ~/frame_result, ~/window_stats,
             /tf (odom -> camera optical frame, or odom -> base_frame), /tf_static, /diagnostics

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
                        odom_T_world=tuple(map(tuple, odom_T_world(values)))).validate()


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
            self._reported = dict(rejected=0, dropped=0, failed=0, param_errors=0, resets=0)
            self._last_input_error = ""
            self._param_errors: List[str] = []
            self._last_reset = ""
            self._last_frame_time: Optional[float] = None
            self._flushed = True
            self._camera_info_fx = float("nan")
            self._estimated_fx = float("nan")
            self._camera_frame_seen = ""
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
            from .tf import TfBroadcaster
            self.tf = TfBroadcaster(self)
            self.stream = StreamProcessor(stream_config(self._values), self._factory(), _NodeSink(self))
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

        # ---------------------------------------------------------------- set-up
        def _factory(self):
            return make_runner_factory(self._values, self._report, self.get_logger())

        def _make_publishers(self):
            from diagnostic_msgs.msg import DiagnosticArray
            from nav_msgs.msg import Path
            from sensor_msgs.msg import CameraInfo, Image, PointCloud2

            from easi3r_ros.msg import FrameResult, WindowStats

            out, latched = qos_profile(20), qos_profile(1, latched=True)
            self.pub_mask = self.create_publisher(Image, "~/dynamic_mask", out)
            self.pub_cloud = self.create_publisher(PointCloud2, "~/static_cloud", out)
            self.pub_map = self.create_publisher(PointCloud2, "~/static_map", latched)
            self.pub_path = self.create_publisher(Path, "~/path", out)
            self.pub_info = self.create_publisher(CameraInfo, "~/camera_info", out)
            self.pub_result = self.create_publisher(FrameResult, "~/frame_result", out)
            self.pub_stats = self.create_publisher(WindowStats, "~/window_stats", out)
            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

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
            self.stream.push(rgb, stamp_to_ns(msg.header.stamp), msg.header.frame_id, header=msg.header)

        def _reject(self, msg, why: str):
            stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
            text = f"input frame {stamp} rejected: {why}"
            with self._lock:
                self._counters["rejected"] += 1
                self._last_input_error = text
            if self._limiter.ok("reject:" + why.split(":")[0] + why[:40]):
                self.get_logger().warning(text)

        def _on_camera_info(self, msg):
            if len(msg.k) == 9 and msg.k[0] > 0:
                self._camera_info_fx = float(msg.k[0])

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
            why = check_all(proposed)
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

        # ---------------------------------------------------------------- outputs
        def camera_frame(self, header_frame: str) -> str:
            return self._values["camera_frame"] or header_frame or DEFAULT_CAMERA_FRAME

        def publish_window(self, out: WindowOutput):
            from geometry_msgs.msg import PoseStamped
            from nav_msgs.msg import Path
            from std_msgs.msg import Header

            from easi3r_ros.msg import FrameResult

            from .conversions import (array_to_cloud, camera_info, mask_to_image, matrix_to_pose, ns_to_stamp,
                                      pose7_to_matrix)
            from .tf import transform_stamped
            v = self._values
            odom = v["odom_frame"]
            base = v["base_frame"]
            cam_T_base = np.linalg.inv(pose7_to_matrix(v["base_to_camera"])) if base else None
            moving = bool(out.result.moving) if out.result is not None else True
            tfs, poses = [], []
            for p in out.published:
                header = p.frame.header if p.frame.header is not None else Header(
                    stamp=ns_to_stamp(p.frame.stamp_ns), frame_id=p.frame.frame_id)
                r = p.result
                cam = self.camera_frame(header.frame_id)
                h, w = r.mask_camera.shape
                mask = mask_to_image(r.mask_camera, header) if v["publish_mask"] or v["publish_results"] else None
                if v["publish_mask"]:
                    self.pub_mask.publish(mask)
                if v["publish_camera_info"]:
                    self.pub_info.publish(camera_info(header, r.intrinsics_camera, w, h))
                if v["publish_results"]:
                    self.pub_result.publish(FrameResult(
                        header=header, window_id=int(p.window_id), index_in_window=int(p.index_in_window),
                        odom_frame_id=odom, pose=matrix_to_pose(p.odom_T_cam), width=int(w), height=int(h),
                        k=[float(x) for x in np.asarray(r.intrinsics_camera).ravel()], mask=mask,
                        dynamic_ratio=float(r.dynamic_ratio), mean_confidence=float(np.mean(r.confidence)),
                        moving_window=moving))
                body = p.odom_T_cam @ cam_T_base if base else p.odom_T_cam
                tfs.append(transform_stamped(odom, base or cam, body, header.stamp))
                poses.append(PoseStamped(header=Header(stamp=header.stamp, frame_id=odom),
                                         pose=matrix_to_pose(body)))
                if base and cam != self._camera_frame_seen:
                    self._camera_frame_seen = cam
                    if v["publish_tf"]:
                        self.tf.send_static([transform_stamped(base, cam, pose7_to_matrix(v["base_to_camera"]),
                                                               header.stamp)])
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
                self.pub_path.publish(Path(header=Header(stamp=stamp, frame_id=odom), poses=path_poses))
            if v["publish_cloud"] and out.result is not None:
                self.pub_cloud.publish(array_to_cloud(out.points, out.colors, Header(stamp=stamp, frame_id=odom)))
            self._publish_stats(out)

        def _publish_stats(self, out: WindowOutput):
            if out.result is None or not self._values["publish_results"]:
                return
            from std_msgs.msg import Header

            from easi3r_ros.msg import WindowStats

            from .conversions import ns_to_stamp
            r = out.result
            t = r.timings
            f0 = r.frames[0]
            self.pub_stats.publish(WindowStats(
                header=Header(stamp=self.get_clock().now().to_msg(), frame_id=self._values["odom_frame"]),
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
                chain_residual=float(out.link.residual)))

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
                                                                  frame_id=self._values["odom_frame"])))

        def on_reset(self, reason: str):
            with self._lock:
                self._path_poses = []
                self._last_reset = reason
            self._map_version = -1
            self.get_logger().warning(f"stream reset: {reason}; trajectory, path and map start again")

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
                    camera_info_fx=self._camera_info_fx, estimated_fx=self._estimated_fx,
                    last_input_error=self._last_input_error or "none", last_error=st.last_error or "none",
                    parameter_errors=" | ".join(self._param_errors) or "none")
                now = dict(rejected=c["rejected"], dropped=st.frames_dropped, failed=st.windows_failed,
                           param_errors=c["param_errors"], resets=st.resets)
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
             "  in : image (sensor_msgs/Image) | image/compressed (input_transport:=compressed), camera_info",
             "  out: ~/dynamic_mask ~/static_cloud ~/static_map ~/path ~/camera_info ~/frame_result",
             "       ~/window_stats /tf /tf_static /diagnostics", "", "parameters (--ros-args -p name:=value, or "
             "--params-file config/easi3r.yaml):"]
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
