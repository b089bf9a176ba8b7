"""``easi3r_node``: Easi3R on a monocular camera stream, as a managed (lifecycle) node.

Subscribes   image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage, with
             input_transport:=compressed), camera_info (optional: the calibration used instead of an
             estimated focal), /tf and /tf_static when the robot owns odom -> base_frame
Publishes    the topics of :data:`easi3r_ros.ros.outputs.OUTPUTS`, /tf and /tf_static
Services     ~/reset, ~/save_map (std_srvs/Trigger), and the lifecycle services

Lifecycle. ``configure`` creates the publishers and services and starts the stream, whose worker loads the
network; ``activate`` subscribes to the camera (frames flow); ``deactivate`` unsubscribes and publishes what
was received; ``cleanup`` stops the stream. With ``autostart`` (the default) the node configures and
activates itself, so a plain ``ros2 run`` works; ``autostart:=false`` leaves it to a lifecycle manager.
/diagnostics is published in every state.

TF (REP 105, see :mod:`easi3r_ros.ros.frames`): odom -> base_frame (or camera optical frame) from the
node's estimate; or, when the robot owns odom -> base_frame, map -> odom so that map -> base_frame
equals the estimate.

The node is thin: frames are decoded and handed to :class:`~easi3r_ros.pipeline.stream.StreamProcessor`,
whose worker thread runs windows and calls back here to publish (rclpy publishers are thread-safe). The
executor only decodes images and runs timers, so it never blocks on the network.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data

from ..pipeline.scheduler import StreamConfigError
from ..pipeline.path import DecimatedPath
from ..pipeline.stream import StreamProcessor, StreamSink, WindowOutput
from ..io.stamps import stamp_to_ns
from .conversions import (camera_model_from_info, compressed_to_rgb, image_to_rgb, matrix_to_pose, ns_to_stamp,
                          pose7_to_matrix)
from .diagnostics import diagnostic_array
from .frames import (map_T_odom, pose_covariance, rigid, robot_owns_odom, tf_frame_name, twist_between,
                     world_frame)
from .input_monitor import InputMonitor
from .outputs import (OUTPUTS, PER_FRAME, PER_WINDOW, FrameContext, WindowContext, body_pose, enabled,
                      help_lines, message_class)
from .parameters import PARAMS, SPECS, check_all, current_values, declare_all
from .qos import qos_profile
from .settings import make_runner_factory, snapshot_value, stream_config
from .tf import TfBroadcaster, TfListener, transform_stamped

DEFAULT_NODE_NAME = "easi3r"
DEFAULT_CAMERA_FRAME = "camera_optical_frame"
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class RosLogHandler(logging.Handler):
    """The core's ``logging`` records (``easi3r_ros.*``) into the node's ROS log."""

    def __init__(self, logger):
        super().__init__()
        self.logger = logger

    def emit(self, record):
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self.logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.logger.warning(text)
        else:
            self.logger.info(text)


class LogLimiter:
    """At most one message per kind every ``period`` s (a bad 30 Hz topic must not flood the log)."""

    def __init__(self, period: float = 5.0):
        self.period = period
        self._last: Dict[str, float] = {}

    def ok(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.period:
            self._last[kind] = now
            return True
        return False


def _unaccounted(counters: Dict[str, int], stats) -> int:
    """Frames received but neither rejected, published nor dropped (yet): 0 once the stream has stopped."""
    return counters["received"] - counters["rejected"] - stats.frames_published - stats.frames_dropped


class NodeSink(StreamSink):
    """The stream's callbacks, on its worker thread, into the node."""

    def __init__(self, node: "Easi3rNode"):
        self.node = node

    def on_window(self, out):
        self.node.publish_window(out)

    def on_dropped(self, frames, reason):
        self.node.on_dropped(frames, reason)

    def on_reset(self, reason):
        self.node.on_reset(reason)

    def on_state(self, state, message):
        self.node.on_state(state, message)


class Easi3rNode(LifecycleNode):
    def __init__(self, node_name: str = DEFAULT_NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.Lock()
        self._limiter = LogLimiter()
        self._report: Dict[str, str] = {"model": "", "device": ""}
        self._counters = dict(received=0, rejected=0, param_errors=0, stamp_warnings=0)
        self._reported = dict(rejected=0, dropped=0, failed=0, param_errors=0, resets=0, tf_failures=0,
                              input_lost=0, stamp_warnings=0)
        self._input = InputMonitor()
        self._last_stamp_ns: Optional[int] = None
        self._last_stamp_warning = ""
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
        self._frame_names: Dict[str, str] = {}   # header frame_id -> TF frame name, when they differ
        self._tf_failures = 0
        self._last_tf_error = ""
        self._mount_source = "parameter"
        self._prev_body: Optional[tuple] = None  # (stamp_ns, pose) of the last published body, for the twist
        self._path: Optional[DecimatedPath] = None   # ~/path: recent poses at full rate, older ones decimated
        self._map_version = -1
        self._closing = False
        self._tf_conflict = ""
        self._lifecycle = "unconfigured"
        self.stream: Optional[StreamProcessor] = None
        self.tf: Optional[TfBroadcaster] = None
        self.tf_listener: Optional[TfListener] = None
        self._out_pubs: Dict[str, Any] = {}
        self._own_subs: List[Any] = []
        self._own_timers: Dict[str, Any] = {}
        self._own_services: List[Any] = []
        self._log_handler = RosLogHandler(self.get_logger())
        core_log = logging.getLogger("easi3r_ros")
        core_log.addHandler(self._log_handler)
        core_log.setLevel(logging.INFO)
        core_log.propagate = False

        for problem in declare_all(self):
            self._param_error(problem)
        self._values = current_values(self)
        self._path = DecimatedPath(int(self._values["path_max_poses"]))
        self.robot_odom = robot_owns_odom(self._values)   # read at start-up only (publish_odom_to_base_tf)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.pub_diag = self.create_publisher(message_class("diagnostic_msgs/DiagnosticArray"), "/diagnostics", 10)
        self._diag_timer = self._steady_timer(self._values["diagnostics_period"], self.publish_diagnostics)
        if self._values["autostart"]:
            self.trigger_configure()
            if self._lifecycle == "inactive":
                self.trigger_activate()

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self._values
        for o in OUTPUTS:
            if o.key != "diagnostics":
                qos = qos_profile(1, latched=True) if o.latched else qos_profile(20)
                self._out_pubs[o.key] = self.create_lifecycle_publisher(message_class(o.msg_type), o.topic, qos)
        self.tf = TfBroadcaster(self)
        # The robot's odometry is read from TF; in either mode the listener also shows whether another
        # publisher already gives one of our child frames a parent (one tree, never two parents).
        self.tf_listener = TfListener(self)
        from std_srvs.srv import Trigger
        self._own_services = [self.create_service(Trigger, "~/reset", self._on_reset_request),
                          self.create_service(Trigger, "~/save_map", self._on_save_map_request)]
        self.stream = StreamProcessor(stream_config(v), self._factory(), NodeSink(self),
                                      odometry=self.odom_T_camera if self.robot_odom else None)
        self._closing = False
        self.stream.start()   # the worker loads the network: the executor is never blocked by it
        self._lifecycle = "inactive"
        m = self.stream.config.margin
        age = f"{v['max_frame_age']:g} s" if v["max_frame_age"] > 0 else "unlimited"
        self.get_logger().info(
            f"configured: window {v['window_size']}, stride {v['stride']}; latency {m} to {m + v['stride'] - 1} "
            f"frame periods + 1-2 windows of compute, plus, when frames come faster than windows, a queue wait of "
            f"at most min({v['queue_limit']} frame periods, {-(-v['queue_limit'] // v['stride'])} windows) "
            f"(max_frame_age: {age}); TF: {self.tf_mode()}; scale: {v['scale_source']}")
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        super().on_activate(state)   # lifecycle publishers publish from now on
        self._send_static_map_to_odom()
        self._subscribe()
        self._make_timers()
        self._lifecycle = "active"
        v = self._values
        self.get_logger().info(f"active: input '{self._image_topic()}' ({v['input_reliability']}, depth "
                               f"{v['input_depth']})")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        # what was received is still published (within shutdown_timeout) before the publishers go quiet
        self.stream.flush()
        self.stream.wait_idle(float(self._values["shutdown_timeout"]))
        super().on_deactivate(state)
        self._lifecycle = "inactive"
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_stream(timeout=0.0)
        self._release()
        self._lifecycle = "unconfigured"
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown()
        return SUCCESS

    def _release(self):
        for pub in self._out_pubs.values():
            self.destroy_lifecycle_publisher(pub)
        for srv in self._own_services:
            self.destroy_service(srv)
        if self.tf_listener is not None:
            self.tf_listener.close()
        self._out_pubs, self._own_services, self.tf_listener, self.stream = {}, [], None, None

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Stop taking frames, publish what was received and stop the worker, within ``shutdown_timeout`` in
        all; every frame not published by then is counted as dropped. True when the worker ended in time."""
        self._unsubscribe()
        ended = self._stop_stream(float(self._values["shutdown_timeout"]) if timeout is None else timeout)
        self._lifecycle = "finalized"
        try:
            self.publish_diagnostics()
        except Exception:  # the context may already be gone
            pass
        logging.getLogger("easi3r_ros").removeHandler(self._log_handler)
        return ended

    def _stop_stream(self, timeout: float) -> bool:
        if self.stream is None:
            return True
        ended = self.stream.close(flush=timeout > 0, timeout=timeout)
        self._closing = True
        if not ended:
            self.get_logger().warning("shutdown: the work in progress (a window or a model load) did not stop "
                                      f"within {timeout:g} s; its frames are counted as dropped")
        st = self.stream.stats
        with self._lock:
            c = dict(self._counters)
        in_flight = _unaccounted(c, st)
        self.get_logger().info(
            f"stopped: {c['received']} frames received, {st.frames_published} published, {st.frames_dropped} "
            f"dropped ({st.dropped_by_reason or 'none'}), {c['rejected']} rejected, {in_flight} unaccounted; "
            f"{self._input.lost} lost before the node")
        return ended

    # ---------------------------------------------------------------- set-up
    def _factory(self):
        return make_runner_factory(self._values, self._report, self.get_logger())

    def _image_topic(self) -> str:
        return "image/compressed" if self._values["input_transport"] == "compressed" else "image"

    def _subscribe(self):
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        self._unsubscribe()
        v = self._values
        qos = qos_profile(v["input_depth"], reliable=v["input_reliability"] == "reliable")
        if v["input_transport"] == "compressed":
            img = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos)
        else:
            img = self.create_subscription(Image, "image", self._on_image, qos)
        info = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data)
        self._own_subs = [img, info]

    def _unsubscribe(self):
        for sub in self._own_subs:
            self.destroy_subscription(sub)
        self._own_subs = []

    def _make_timers(self):
        for t in self._own_timers.values():
            self.destroy_timer(t)
        self._own_timers = {"map": self._steady_timer(self._values["map_period"], self._publish_map),
                            "idle": self._steady_timer(0.1, self._check_idle)}

    def _steady_timer(self, period, callback):
        # Steady time: under use_sim_time a bag that ends or pauses stops /clock, and ROS-time timers with it
        # (no diagnostics, no idle flush); stamps still use the node's (ROS) clock.
        return self.create_timer(float(period), callback, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ---------------------------------------------------------------- input
    # rclpy passes the MessageInfo (publication sequence numbers) to two-argument callbacks
    def _on_image(self, msg, info):
        self._take(msg, image_to_rgb, info)

    def _on_compressed(self, msg, info):
        self._take(msg, compressed_to_rgb, info)

    def _take(self, msg, decode, info=None):
        stamp_ns = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._counters["received"] += 1
            self._last_frame_time = time.monotonic()
            self._flushed = False
            lost = self._input.observe(info, stamp_ns, self._last_frame_time)
            last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if lost and self._limiter.ok("input lost"):
            self.get_logger().warning(
                f"{lost} image(s) published but never delivered to the node (total {self._input.lost}); "
                "a reliable input, a deeper input_depth or a lower camera rate keeps them")
        if msg.header.stamp.nanosec >= 1_000_000_000:
            self._reject(msg, f"malformed stamp: nanosec {msg.header.stamp.nanosec} >= 1e9")
            return
        if stamp_ns == 0:
            self._stamp_warning("zero stamp: the publisher did not set header.stamp; outputs carry it too")
        elif stamp_ns == last:
            self._stamp_warning(f"duplicated stamp {stamp_ns / 1e9:.9f}: two images with one time; TF keeps "
                                "only the first transform at it")
        try:
            rgb = decode(msg)
        except Exception as exc:  # ImageCodecError and anything a decoder may raise on garbage
            self._reject(msg, f"{type(exc).__name__}: {exc}")
            return
        self._last_frame_id = msg.header.frame_id
        self.stream.push(rgb, stamp_ns, msg.header.frame_id, header=msg.header, camera=self._camera_for(rgb.shape[:2]))

    def _stamp_warning(self, text: str):
        with self._lock:
            self._counters["stamp_warnings"] += 1
            self._last_stamp_warning = text
        if self._limiter.ok("stamp:" + text[:12]):
            self.get_logger().warning(f"input stamp: {text}")

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

    def _check_idle(self):
        after = float(self._values["flush_after"])
        with self._lock:
            idle = (self._last_frame_time is not None and not self._flushed and after > 0
                    and time.monotonic() - self._last_frame_time >= after)
            if idle:
                self._flushed = True
        if idle and self.stream is not None:
            self.stream.flush()

    # ---------------------------------------------------------------- TF
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

    def camera_frame(self, header_frame: str) -> str:
        """The TF name of the camera: the parameter, else the header's frame_id made valid (and not one of
        the node's own frames, which would put a self-transform or a loop on /tf)."""
        v = self._values
        if v["camera_frame"]:
            return v["camera_frame"]
        name = tf_frame_name(header_frame) or DEFAULT_CAMERA_FRAME
        own = {v["odom_frame"], v["base_frame"], v["map_frame"]} - {""}
        if name in own:
            name = DEFAULT_CAMERA_FRAME
        if name != header_frame and header_frame not in self._frame_names:
            if len(self._frame_names) >= 64:   # a publisher inventing frame ids must not grow this without end
                self._frame_names.pop(next(iter(self._frame_names)))
            self._frame_names[header_frame] = name
            why = ("one of the node's own frames" if tf_frame_name(header_frame) in own else
                   "tf2 refuses a leading '/', frame parameters refuse spaces" if header_frame else "empty")
            self.get_logger().warning(f"image header frame_id {header_frame!r} cannot be a TF camera frame ({why}): "
                                      f"TF uses {name!r}; set camera_frame to choose")
        return name

    def camera_mounting(self, stamp_ns: Optional[int]) -> np.ndarray:
        """base_frame -> camera optical frame: from TF when the robot publishes it, else base_to_camera."""
        v = self._values
        if self.robot_odom:
            m, _ = self.tf_listener.lookup(v["base_frame"], self.camera_frame(self._last_frame_id), stamp_ns)
            if m is not None:
                self._mount_source = "tf"
                return m
        self._mount_source = "parameter"
        return pose7_to_matrix(v["base_to_camera"])

    def odom_T_camera(self, stamp_ns: int) -> Optional[np.ndarray]:
        """The camera optical frame in the robot's odom frame at ``stamp_ns`` (odom -> base_frame from TF
        composed with the mounting), or None when TF cannot say. Called from the stream's worker thread: the
        TF buffer is thread-safe."""
        v = self._values
        odom_T_base, why = self.tf_listener.lookup(v["odom_frame"], v["base_frame"], int(stamp_ns))
        if odom_T_base is None:
            self._tf_failed(why)
            return None
        return odom_T_base @ self.camera_mounting(int(stamp_ns))

    def _send_static_map_to_odom(self):
        """Identity map -> odom on /tf_static when the node owns odom and publish_map_to_odom_tf is set."""
        v = self._values
        if self.robot_odom or not v["publish_tf"] or self.tf is None:
            return
        if v["publish_map_to_odom_tf"]:
            self.tf.send_static([transform_stamped(v["map_frame"], v["odom_frame"], np.eye(4),
                                                   self.get_clock().now().to_msg())])
        elif self.tf.remove_static(v["odom_frame"]):
            self.tf.send_static([])

    def _pose_transforms(self, stamp_ns: int, stamp, cam: str, world_T_cam, world_T_body) -> List[Any]:
        """The frame's dynamic transforms: odom -> body (the node owns odom), or map -> odom (the robot does,
        with publish_map_to_odom_tf), never both."""
        v = self._values
        if not self.robot_odom:
            child = v["base_frame"] or cam
            if self._foreign_parent(child, v["odom_frame"]):
                return []
            return [transform_stamped(v["odom_frame"], child, world_T_body, stamp)]
        if not v["publish_map_to_odom_tf"]:
            return []
        odom_T_cam = self.odom_T_camera(stamp_ns)
        if odom_T_cam is None:
            return []   # counted as a TF failure; the previous map -> odom stays in the buffers
        return [transform_stamped(v["map_frame"], v["odom_frame"], rigid(map_T_odom(world_T_cam, odom_T_cam)), stamp)]

    def _send_mounting(self, cam: str, stamp, base_T_cam):
        """base_frame -> camera on /tf_static: always when the node owns odom; when the robot does, only where
        TF knows no parent of the camera frame (one tree, never two parents)."""
        v = self._values
        if not v["base_frame"] or not v["publish_tf"] or cam == self._camera_frame_seen:
            return
        if self.robot_odom and (self._mount_source == "tf" or self.tf_listener.parent_of(cam) is not None):
            return
        if self._foreign_parent(cam, v["base_frame"]):
            return
        self._camera_frame_seen = cam
        self.tf.send_static([transform_stamped(v["base_frame"], cam, base_T_cam, stamp)])

    def _foreign_parent(self, child: str, ours: str) -> bool:
        """True (reported once per frame, ERROR on /diagnostics) when TF gives ``child`` a parent other than
        the one the node would publish: e.g. a bag's base_link -> camera while the node owns odom ->
        camera. Publishing would give the frame two parents."""
        parent = self.tf_listener.parent_of(child) if self.tf_listener is not None else None
        if parent is None or parent == ours:
            return False
        text = (f"{child!r} already has the parent {parent!r} on TF from another publisher: the node does not "
                f"publish {ours} -> {child} (two parents). If the robot publishes its odometry, set "
                f"publish_odom_to_base_tf:=false and base_frame:=<its body frame>")
        with self._lock:
            new = text != self._tf_conflict
            self._tf_conflict = text
        if new:
            self.get_logger().error(text)
        return True

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
                values[p.name] = snapshot_value(p.value)
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
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params):
        new = self._proposed(params)
        changed = {n for n in new if new[n] != self._values.get(n)}
        if not changed:
            return
        self._values = new
        groups = {SPECS[n].group for n in changed}
        self.get_logger().info(f"parameters changed: {', '.join(sorted(changed))}")
        if "path_max_poses" in changed:
            with self._lock:
                kept, self._path = self._path.items(), DecimatedPath(int(new["path_max_poses"]))
                self._path.extend(kept)
        if "diagnostics_period" in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self._steady_timer(new["diagnostics_period"], self.publish_diagnostics)
        if self.stream is None:   # unconfigured: configure reads the new values
            return
        if "stream" in groups:
            self.stream.reconfigure(stream_config(new))
            self._camera_frame_seen = ""  # re-send the static transform
        if "pipeline" in groups:
            self.stream.reload(self._factory())
        if "input" in groups and self._own_subs:
            self._subscribe()
        if "map_period" in changed and self._own_timers:
            self._make_timers()
        if "base_frame" in changed and not new["base_frame"]:
            self.tf.clear_static()
        if changed & {"publish_map_to_odom_tf", "map_frame", "odom_frame", "publish_tf", "base_frame"}:
            self._send_static_map_to_odom()

    # ---------------------------------------------------------------- outputs
    def publish_window(self, out: WindowOutput):
        """One window's published frames as messages, built by the output table (on the stream's worker)."""
        if self._closing:   # the stream has counted these frames; the publishers are going away
            return
        from geometry_msgs.msg import PoseStamped
        from std_msgs.msg import Header
        v = self._values
        world, base = world_frame(v), v["base_frame"]
        moving = bool(out.result.moving) if out.result is not None else True
        pose_cov = pose_covariance(float(out.link.residual))   # chain units are the world's (metres once known)
        frame_outputs = [o for o in OUTPUTS if o.when == PER_FRAME and enabled(o, v)]
        contexts, tfs, poses = [], [], []
        for p in out.published:
            header = p.frame.header if p.frame.header is not None else Header(
                stamp=ns_to_stamp(p.frame.stamp_ns), frame_id=p.frame.frame_id)
            cam = self.camera_frame(header.frame_id)
            base_T_cam = self.camera_mounting(p.frame.stamp_ns) if base else np.eye(4)
            world_T_body = body_pose(p.world_T_cam, base_T_cam)
            ctx = FrameContext(header=header, result=p.result, world=world, child=base or cam,
                               world_T_cam=p.world_T_cam, world_T_body=world_T_body, depth_scale=p.depth_scale,
                               window_id=p.window_id, index_in_window=p.index_in_window, moving=moving,
                               pose_covariance=pose_cov, twist=self._twist(p.frame.stamp_ns, world_T_body),
                               calibration=p.frame.camera)
            for o in frame_outputs:
                msg = o.build(ctx)
                if msg is not None:
                    self._out_pubs[o.key].publish(msg)
            contexts.append(ctx)
            tfs += self._pose_transforms(p.frame.stamp_ns, header.stamp, cam, p.world_T_cam, world_T_body)
            poses.append(PoseStamped(header=Header(stamp=header.stamp, frame_id=world),
                                     pose=matrix_to_pose(world_T_body)))
            self._send_mounting(cam, header.stamp, base_T_cam)
            self._estimated_fx = float(p.result.intrinsics_camera[0][0])
        if out.published and v["publish_tf"]:
            self.tf.send(tfs)
        with self._lock:
            self._path.extend(poses)
            path = self._path.items()
        window = WindowContext(out=out, frames=contexts, world=world,
                               stamp=contexts[-1].header.stamp if contexts else None, path_poses=path,
                               stats_stamp=ns_to_stamp(max(f.stamp_ns for f in out.frames)))
        for o in OUTPUTS:
            # path and cloud follow published frames; the stats describe every window
            if o.when == PER_WINDOW and enabled(o, v) and (contexts or o.key == "window_stats"):
                msg = o.build(window)
                if msg is not None:
                    self._out_pubs[o.key].publish(msg)

    def _twist(self, stamp_ns: int, world_T_body):
        with self._lock:
            prev, self._prev_body = self._prev_body, (int(stamp_ns), world_T_body)
        return None if prev is None else twist_between(prev[1], world_T_body, (stamp_ns - prev[0]) * 1e-9)

    def _publish_map(self):
        if not self._values["publish_map"] or self.stream is None:
            return
        m = self.stream.map
        if m.version == self._map_version:
            return
        self._map_version = m.version
        from std_msgs.msg import Header

        from .conversions import array_to_cloud
        pts, cols = m.snapshot()
        self._out_pubs["static_map"].publish(array_to_cloud(pts, cols, Header(stamp=self.get_clock().now().to_msg(),
                                                                          frame_id=world_frame(self._values))))

    # ---------------------------------------------------------------- stream events
    def on_reset(self, reason: str):
        from nav_msgs.msg import Path as PathMsg
        from std_msgs.msg import Header
        with self._lock:
            self._path.clear()
            self._prev_body = None
            self._last_reset = reason
        self._map_version = -1
        if self._values["publish_path"] and "path" in self._out_pubs:   # an empty path clears what viewers show
            self._out_pubs["path"].publish(PathMsg(header=Header(stamp=self.get_clock().now().to_msg(),
                                                             frame_id=world_frame(self._values))))
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

    # ---------------------------------------------------------------- services
    def _on_reset_request(self, request, response):
        self.stream.reset("reset service")
        response.success = True
        response.message = ("reset requested: frames waiting for context are published first, then the "
                            "trajectory, path, map and caches start again")
        return response

    def _on_save_map_request(self, request, response):
        from ..io.writers import write_ply
        points, colors = self.stream.map.snapshot()
        frame = world_frame(self._values)
        if not len(points):
            response.success, response.message = False, "the static map is empty: nothing written"
            return response
        folder = Path(self._values["map_save_dir"]).expanduser()
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

    # ---------------------------------------------------------------- diagnostics
    def snapshot(self) -> Dict[str, Any]:
        st = self.stream.stats if self.stream is not None else None
        with self._lock:
            c = dict(self._counters)
            snap = dict(
                lifecycle=self._lifecycle, model=self._report.get("model", ""),
                device=self._report.get("device", "") or self._values["device"],
                precision=self._report.get("precision", ""), checkpoint=self._values["checkpoint"] or "(none)",
                random_weights=self._values["random_weights"], frames_in=c["received"],
                frames_rejected=c["rejected"], stamp_warnings=c["stamp_warnings"],
                last_stamp_warning=self._last_stamp_warning or "none",
                camera_info=self._camera_status, camera_info_fx=self._camera_info_fx,
                estimated_fx=self._estimated_fx, tf_mode=self.tf_mode(), tf_lookup_failures=self._tf_failures,
                last_tf_error=self._last_tf_error or "none", camera_mounting=self._mount_source,
                tf_conflict=self._tf_conflict or "none",
                last_input_error=self._last_input_error or "none", last_reset=self._last_reset or "none",
                parameter_errors=" | ".join(self._param_errors) or "none", **self._input.snapshot())
            if st is None:
                snap.update(state="unconfigured", state_message=f"lifecycle state {self._lifecycle}")
            else:
                snap.update(
                    state=st.state, state_message=st.state_message, frames_published=st.frames_published,
                    frames_dropped=st.frames_dropped, dropped_by_reason=dict(st.dropped_by_reason),
                    frames_in_flight=_unaccounted(c, st),
                    queue_depth=st.queue_depth, queue_limit=self.stream.config.queue_limit, busy=st.busy,
                    windows_ok=st.windows_ok, windows_failed=st.windows_failed,
                    window_latency_last_s=st.last_latency_s, window_latency_mean_s=st.mean_latency_s,
                    window_latency_max_s=st.max_latency_s, frame_age_max_s=st.max_frame_age_s,
                    window_compute_last_s=st.last_window_s, chain_scale=st.last_chain_scale,
                    chain_residual=st.last_chain_residual, chain_breaks=st.chain_breaks, resets=st.resets,
                    encoded_frames=st.cache.get("encoded", 0), encodings_reused=st.cache.get("encodings_reused", 0),
                    pairs_decoded=st.cache.get("pairs_decoded", 0), pairs_reused=st.cache.get("pairs_reused", 0),
                    scale=st.scale, scale_spread=st.scale_spread, scale_source=st.scale_source,
                    scale_state=st.scale_state, odometry_missing=st.odometry_missing,
                    last_error=st.last_error or "none")
            now = dict(rejected=c["rejected"], dropped=st.frames_dropped if st else 0,
                       failed=st.windows_failed if st else 0, param_errors=c["param_errors"],
                       resets=st.resets if st else 0, tf_failures=self._tf_failures, input_lost=self._input.lost,
                       stamp_warnings=c["stamp_warnings"])
            for k in now:
                snap["new_" + k] = now[k] - self._reported[k]
            self._reported = now
        return snap

    def publish_diagnostics(self):
        snap = self.snapshot()
        self.pub_diag.publish(diagnostic_array(snap, self.get_clock().now().to_msg(),
                                               hardware_id=snap["device"] or "unknown"))


# ---------------------------------------------------------------------------------------------- main
def _help_epilog() -> str:
    lines = ["topics (relative: remap with --ros-args -r image:=/camera/image_raw):",
             "  in : image (sensor_msgs/Image) | image/compressed (input_transport:=compressed), camera_info,",
             "       /tf /tf_static (when the robot owns odom -> base_frame: publish_odom_to_base_tf:=false)",
             "  out:"] + help_lines() + [
             "  services: ~/reset ~/save_map (std_srvs/Trigger); lifecycle services (autostart:=false to drive them)",
             "", "parameters (--ros-args -p name:=value, or --params-file config/easi3r.yaml):"]
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
                    "image stream (ROS 2 lifecycle node).", epilog=_help_epilog())
    parser.add_argument("--node-name", default=None, help="node name (same as --ros-args -r __node:=NAME)")
    args = parser.parse_args(own)

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    try:
        rclpy.init(args=["easi3r_node"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # rcl refuses the command line (e.g. `-p name:=` with no value)
        text = str(exc).split(", at /")[0]
        print(f"easi3r_node: invalid ROS arguments: {text}. An empty string value is written "
              "-p \"name:=''\"", file=sys.stderr)
        return 2
    # Own signal handling: at SIGINT/SIGTERM the node still publishes trailing frames (within
    # shutdown_timeout) before the context goes down; a second signal changes nothing.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node, ended = None, True
    try:
        node = Easi3rNode(args.node_name or DEFAULT_NODE_NAME)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("shutting down: publishing trailing frames")
        ended = node.shutdown()
        # teardown must not outlive the shutdown: whatever hangs after the last report, the process exits
        watchdog = threading.Timer(5.0, _exit_now)
        watchdog.daemon = True
        watchdog.start()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if not ended:
        # A torch kernel or a checkpoint read cannot be interrupted, and interpreter teardown under a running
        # worker thread aborts the process; every frame is accounted for already, so leave at once.
        _exit_now()
    return 0


def _exit_now():
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
