"""The node's parameters: one table (name, default, range or choices, what a change restarts), declared
with descriptors and validated when set at run time. The table and the checks import no ROS, so the
config file can be tested against it anywhere.

Groups say what a run-time change does:
  pipeline  rebuild the network/pipeline on the worker (the current stream segment is flushed first)
  stream    re-plan windows (new segment: trajectory and map restart)
  input     re-create the image subscriptions
  output    takes effect at once
  startup   read at start-up only (a run-time change is refused: restart the node)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..model.config import KEEP_FP32

DEVICE_HINT = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    group: str                                   # pipeline | stream | input | output
    range: Optional[Tuple[float, float]] = None  # inclusive bounds for numbers
    choices: Optional[Tuple[str, ...]] = None    # allowed strings
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns why a value is invalid, or None
    read_only: bool = False                      # declared read-only: nobody can set it after start-up


def _check_device(v: str) -> Optional[str]:
    if v in ("auto", "cpu", "cuda"):
        return None
    if v.startswith("cuda:") and v[5:].isdigit():
        return None
    return f"unknown device {v!r} (expected {DEVICE_HINT})"


def _check_model(v: str) -> Optional[str]:
    if not v:
        return None
    from ..model.config import ModelConfigError, resolve_model  # pure Python: no torch import

    try:
        resolve_model(v)
    except ModelConfigError as exc:
        return str(exc)
    return None


def _check_pose7(v: Sequence[float]) -> Optional[str]:
    v = list(v)
    if len(v) != 7 or not all(math.isfinite(x) for x in v):
        return "needs 7 finite numbers: x y z qx qy qz qw"
    if abs(math.sqrt(sum(x * x for x in v[3:])) - 1.0) > 1e-3:
        return "the quaternion (qx qy qz qw) must have unit norm"
    return None


def _check_frame(v: str) -> Optional[str]:
    if v.startswith("/"):
        return "frame ids must not start with '/' (tf2 rejects them)"
    if " " in v:
        return "frame ids must not contain spaces"
    return None


# Camera optical frame relative to a REP 103 body frame at the same place (x forward, y left, z up):
# the usual <camera>_link -> <camera>_optical_frame rotation (rpy = -pi/2, 0, -pi/2).
OPTICAL_IN_BODY = [0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5]

PARAMS: List[ParamSpec] = [
    # --- network and pipeline
    ParamSpec("checkpoint", "", "DUSt3R/MonST3R checkpoint: an official .pth file or a Hugging Face folder "
              "(config.json + model.safetensors); empty: the shipped easi3r-tiny model (synthetic rooms only)",
              "pipeline"),
    ParamSpec("random_weights", "", "smoke runs only: a model preset (e.g. tiny-224-linear) with random weights "
              "instead of a checkpoint; every output is MEANINGLESS", "pipeline", check=_check_model),
    ParamSpec("autostart", True, "configure and activate at start-up (false: wait for lifecycle transitions, "
              "e.g. from a lifecycle manager)", "startup"),
    # read-only: any peer on the DDS domain can call set_parameters, and unpickling runs code
    ParamSpec("trust_checkpoint", False, "allow checkpoints that hold arbitrary Python objects (unpickling can "
              "run code: only for files from a trusted source); a launch-time decision, read-only afterwards",
              "startup", read_only=True),
    ParamSpec("device", "auto", f"torch device: {DEVICE_HINT}", "pipeline", check=_check_device),
    ParamSpec("precision", "fp32", "fp32, or bf16/fp16 autocast on CUDA (bf16 also on the CPU)", "pipeline",
              choices=("fp32", "bf16", "fp16")),
    ParamSpec("keep_fp32", "cross-attention", "under bf16/fp16, what stays fp32 besides the encoder: cross-attention "
              "(Easi3R's motion signal), decoder (only the prediction heads reduced: the masks are fp32's) or nothing",
              "pipeline", choices=KEEP_FP32),
    ParamSpec("pair_batch", 0, "ordered frame pairs per network call (0: 1 on the CPU, 8 on CUDA); a batch that "
              "runs out of GPU memory is retried at half the size, then the window is counted as failed",
              "pipeline", range=(0, 256)),
    ParamSpec("align_coarse", 0, "global alignment on every n-th pixel, then each full-resolution depth in closed "
              "form (0: the preset's, robot 4, reference 1; 1: every pixel; see README Performance)", "pipeline",
              range=(0, 16)),
    ParamSpec("warm_start", False, "robot preset: start each window's alignment from the previous window's "
              "solution, with an early stop (starts no closer, ends at a higher loss: see README Performance)",
              "pipeline"),
    ParamSpec("torch_threads", 0, "CPU threads torch may use (0: torch's default)", "pipeline", range=(0, 256)),
    ParamSpec("image_size", 0, "network input size: 224 or 512 (0: the model's own)", "pipeline",
              check=lambda v: None if v in (0, 224, 512) else "image_size must be 0, 224 or 512"),
    ParamSpec("preset", "robot", "pipeline preset: reference (the original demo) or robot (capped scene graph, "
              "'nothing moves' guard)", "pipeline", choices=("reference", "robot")),
    ParamSpec("scene_graph_width", 5, "scene graph: every frame is paired with the next W frames "
              "(swinstride-W)", "pipeline", range=(1, 64)),
    ParamSpec("ga_iters", 0, "global-alignment iterations per window (0: the preset's, robot 150, reference 300; "
              "fewer: lower latency, rougher poses)", "pipeline", range=(0, 10000)),
    ParamSpec("kmeans", "sklearn", "feature clustering: sklearn (reference) or torch (faster, GPU)", "pipeline",
              choices=("sklearn", "torch")),
    ParamSpec("cloud_conf_threshold", 3.0, "confidence above which static pixels become cloud points",
              "pipeline", range=(1.0, 1e6)),
    # --- streaming
    ParamSpec("window_size", 8, "frames per window", "stream", range=(3, 64)),
    ParamSpec("stride", 4, "new frames per window (at most window_size - 2: windows share >= 2 frames)",
              "stream", range=(1, 62)),
    ParamSpec("queue_limit", 16, "frames waiting for the worker before the oldest are dropped "
              "(>= window_size)", "stream", range=(3, 10000)),
    ParamSpec("max_frame_age", 0.0, "seconds a frame may wait in the queue once newer frames could fill the next "
              "window without it; older ones are dropped so outputs stay fresh (0: only queue_limit bounds "
              "the wait)", "stream", range=(0.0, 3600.0)),
    ParamSpec("cloud_voxel_size", 0.02, "voxel edge for the per-window cloud and the map, in world units "
              "(metres with a metric scale; 0: no downsampling of the per-window cloud)", "stream",
              range=(0.0, 100.0)),
    ParamSpec("map_max_points", 1000000, "voxels kept in the static map (the least recently seen go first)",
              "stream", range=(1, 100000000)),
    # --- frames (REP 105 / REP 103); names as in isaac_ros_visual_slam
    ParamSpec("map_frame", "map", "map frame (REP 105): the fixed frame when the robot owns odom -> base_frame; "
              "map -> odom is published with publish_map_to_odom_tf", "stream", check=_check_frame),
    ParamSpec("odom_frame", "odom", "odometry frame (REP 105): the trajectory's fixed frame when the node owns "
              "odom -> base_frame", "stream", check=_check_frame),
    ParamSpec("camera_frame", "", "camera optical frame for TF (empty: the image header's frame_id)", "output",
              check=_check_frame),
    ParamSpec("base_frame", "", "robot body frame; when set, TF is odom -> base_frame and base_to_camera is "
              "published on /tf_static (empty: TF is odom -> camera optical frame). Required when the robot owns "
              "odom -> base_frame", "stream", check=_check_frame),
    ParamSpec("base_to_camera", list(OPTICAL_IN_BODY), "pose of the camera optical frame in base_frame: "
              "x y z qx qy qz qw (used only with base_frame; when the robot owns odom, only where TF has no "
              "base_frame -> camera chain)", "stream", check=_check_pose7),
    ParamSpec("publish_odom_to_base_tf", True, "true: the node owns odom -> base_frame (its estimate). false: "
              "the robot does (wheel odometry, EKF); the node reads it from TF, never publishes it, and places its "
              "estimate in map_frame", "startup"),
    ParamSpec("publish_map_to_odom_tf", True, "publish map -> odom: the node's correction of the robot's "
              "odometry when the robot owns odom -> base_frame, the identity otherwise", "output"),
    # --- metric scale
    ParamSpec("scale_source", "none", "metric scale: none (unit of the first window), odometry (robot's "
              "odom -> base_frame from TF; needs publish_odom_to_base_tf false) or fixed (fixed_scale)", "stream",
              choices=("none", "odometry", "fixed")),
    ParamSpec("fixed_scale", 1.0, "metres per unit of the first window (scale_source fixed)", "stream",
              range=(1e-6, 1e6)),
    ParamSpec("scale_max_spread", 1.0, "largest relative spread (1.4826·MAD / median) of a window's "
              "odometry / estimated distance ratios for its scale to be used (above it the scale is held)", "stream",
              range=(1e-3, 10.0)),
    ParamSpec("scale_min_motion", 0.05, "metres the camera must travel between two frames for the pair to "
              "count towards the odometry scale (below it the scale is held)", "stream", range=(1e-4, 100.0)),
    ParamSpec("use_camera_info", True, "use the calibration on camera_info (K, plumb_bob / rational_polynomial "
              "distortion) instead of estimating the focal length", "output"),
    # --- input
    ParamSpec("input_transport", "raw", "raw: sensor_msgs/Image on 'image'; compressed: "
              "sensor_msgs/CompressedImage on 'image/compressed'", "input", choices=("raw", "compressed")),
    ParamSpec("input_reliability", "best_effort", "image subscription QoS reliability (best_effort matches "
              "every publisher; reliable delivers every frame of reliable publishers)", "input",
              choices=("best_effort", "reliable")),
    ParamSpec("input_depth", 10, "image subscription QoS history depth", "input", range=(1, 1000)),
    # --- outputs
    ParamSpec("publish_tf", True, "broadcast the trajectory on /tf (and base_to_camera on /tf_static)", "output"),
    ParamSpec("publish_mask", True, "publish ~/dynamic_mask", "output"),
    ParamSpec("publish_cloud", True, "publish ~/static_cloud (new static points per window)", "output"),
    ParamSpec("publish_map", True, "publish ~/static_map (accumulated, voxel-downsampled)", "output"),
    ParamSpec("publish_path", True, "publish ~/path", "output"),
    ParamSpec("publish_camera_info", True, "publish ~/camera_info (estimated intrinsics)", "output"),
    ParamSpec("publish_results", True, "publish ~/frame_result and ~/window_stats", "output"),
    ParamSpec("publish_depth", True, "publish ~/depth (32FC1, metres when the scale is known) and "
              "~/depth/camera_info", "output"),
    ParamSpec("publish_odometry", True, "publish ~/odometry (nav_msgs/Odometry of base_frame, or of the camera "
              "optical frame without one)", "output"),
    ParamSpec("map_save_dir", "~/.ros/easi3r_maps", "folder where the ~/save_map service writes PLY files",
              "output"),
    ParamSpec("map_period", 2.0, "seconds between ~/static_map publications", "output", range=(0.05, 3600.0)),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics publications", "output",
              range=(0.05, 3600.0)),
    ParamSpec("path_max_poses", 10000, "poses kept in ~/path: the newest at full rate, older ones decimated "
              "(the start of the run stays)", "output", range=(4, 10000000)),
    ParamSpec("flush_after", 1.0, "seconds without a new frame after which trailing frames are published "
              "(0: only at shutdown)", "output", range=(0.0, 3600.0)),
    ParamSpec("shutdown_timeout", 10.0, "seconds allowed at shutdown to publish trailing frames", "output",
              range=(0.0, 600.0)),
]

SPECS: Dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def check_value(spec: ParamSpec, value: Any) -> Optional[str]:
    """Why ``value`` is invalid for ``spec`` (None when valid). Types are checked by ROS; this checks
    ranges, choices and formats."""
    if isinstance(spec.default, bool):
        return None if isinstance(value, bool) else f"{spec.name} must be a bool"
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{spec.name} must be a number"
        if not (math.isfinite(value) and lo <= value <= hi):
            return f"{spec.name}={value!r} is outside [{lo:g}, {hi:g}]"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name}={value!r} is not one of {', '.join(spec.choices)}"
    if spec.check is not None:
        why = spec.check(value)
        if why:
            return f"{spec.name}: {why}"
    return None


def cross_check(values: Dict[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """Why a set of values is inconsistent, with the values a node falls back to at start-up; None when
    the combination is fine."""
    from ..pipeline.scheduler import window_rule_problem   # the stream's own rule (numpy only)
    window = [values.get(n) for n in ("window_size", "stride", "queue_limit")]
    why = window_rule_problem(*window) if None not in window else None
    if why:
        return (f"{why}; set window_size, stride and queue_limit together to change them together",
                {n: SPECS[n].default for n in ("window_size", "stride", "queue_limit")})
    if values.get("checkpoint") and values.get("random_weights"):
        return ("checkpoint and random_weights are both set: random weights would replace the checkpoint "
                "unseen; clear random_weights (set it to '') to use the checkpoint", {"random_weights": ""})
    if "publish_odom_to_base_tf" in values:
        from .frames import check_frames
        return check_frames(values)
    return None


def check_all(values: Dict[str, Any]) -> Optional[str]:
    """Why a complete set of values is inconsistent (None when it is fine): per-value checks, then the
    checks that involve several parameters."""
    for name, value in values.items():
        spec = SPECS.get(name)
        if spec is not None:
            why = check_value(spec, value)
            if why:
                return why
    problem = cross_check(values)
    return problem[0] if problem else None


def param_type_name(spec: ParamSpec) -> str:
    d = spec.default
    if isinstance(d, bool):
        return "bool"
    if isinstance(d, int):
        return "integer"
    if isinstance(d, float):
        return "double"
    if isinstance(d, list):
        return "double_array"
    return "string"


# ------------------------------------------------------------------------------------------ rclpy side
def descriptor(spec: ParamSpec):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    types = {"bool": ParameterType.PARAMETER_BOOL, "integer": ParameterType.PARAMETER_INTEGER,
             "double": ParameterType.PARAMETER_DOUBLE, "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
             "string": ParameterType.PARAMETER_STRING}
    text = spec.description
    if spec.choices:
        text += f" [{' | '.join(spec.choices)}]"
    d = ParameterDescriptor(name=spec.name, type=types[param_type_name(spec)], description=text,
                            additional_constraints=f"run-time change: {spec.group}", read_only=spec.read_only)
    if spec.range is not None:
        lo, hi = spec.range
        if param_type_name(spec) == "integer":
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def declare_all(node) -> List[str]:
    """Declare every parameter on ``node``. A start-up value that is invalid (wrong type, out of range,
    inconsistent) is refused: the default is kept and the reason returned (and logged by the caller), so
    a bad params file never crash-loops the node."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.parameter import Parameter

    problems = []
    for spec in PARAMS:
        desc = descriptor(spec)
        try:
            node.declare_parameter(spec.name, spec.default, desc)
        except (InvalidParameterValueException, InvalidParameterTypeException, TypeError, ValueError) as exc:
            problems.append(f"{spec.name}: invalid start-up value refused, using the default {spec.default!r} "
                            f"({str(exc).splitlines()[0]})")
            node.declare_parameter(spec.name, spec.default, desc, ignore_override=True)
        value = node.get_parameter(spec.name).value
        why = check_value(spec, value)
        if why:
            problems.append(f"{why}; using the default {spec.default!r}")
            node.set_parameters([Parameter(spec.name, value=spec.default)])
    for _ in range(4):  # each fallback fixes one inconsistent combination
        problem = cross_check(current_values(node))
        if problem is None:
            break
        why, fallback = problem
        problems.append(f"{why}; using {', '.join(f'{k}={v!r}' for k, v in fallback.items())}")
        node.set_parameters([Parameter(n, value=v) for n, v in fallback.items()])
    return problems


def current_values(node) -> Dict[str, Any]:
    out = {}
    for spec in PARAMS:
        v = node.get_parameter(spec.name).value
        out[spec.name] = list(v) if spec.name == "base_to_camera" and v is not None else v
    return out
