"""The node's /diagnostics status: one ``diagnostic_msgs/DiagnosticStatus`` built from a plain snapshot
(:func:`summarize` imports no ROS, so the levels and keys are testable without rclpy)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

OK, WARN, ERROR, STALE = 0, 1, 2, 3
STATUS_NAME = "easi3r: pipeline"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in sorted(v.items())) or "none"
    return str(v)


def summarize(snap: Dict[str, Any]) -> Tuple[int, str, List[Tuple[str, str]]]:
    """(level, message, key/values) of a node snapshot.

    ERROR: no network (load failed, or none configured). WARN: random weights, an unusable camera_info, or
    new input rejections, drops, window failures, parameter refusals or TF lookup failures since the previous
    report. Otherwise OK. The metric scale's state is named when it is not observed.
    """
    problems, level = [], OK
    state = snap.get("state", "idle")
    if state == "error":
        level = ERROR
        problems.append(f"no network: {snap.get('state_message', '')}")
    elif state in ("loading", "idle"):
        problems.append("loading the network")
    elif state == "unconfigured":
        problems.append(f"lifecycle {snap.get('lifecycle', 'unconfigured')}: no network (configure loads it)")
    if snap.get("random_weights"):
        level = max(level, WARN)
        problems.append(f"RANDOM WEIGHTS ({snap['random_weights']}): outputs are meaningless")
    for key, what in (("new_rejected", "input frames rejected"), ("new_dropped", "frames dropped"),
                      ("new_failed", "windows failed"), ("new_param_errors", "parameter values refused"),
                      ("new_tf_failures", "TF lookups failed"),
                      ("new_input_lost", "images lost before the node (publication sequence gaps)"),
                      ("new_stamp_warnings", "input stamps zero or duplicated")):
        n = int(snap.get(key, 0) or 0)
        if n:
            level = max(level, WARN)
            problems.append(f"{n} {what}")
    if snap.get("tf_conflict", "none") != "none":
        level = ERROR
        problems.append(f"TF: {snap['tf_conflict']}")
    camera = str(snap.get("camera_info", ""))
    if camera.startswith(("unusable", "size mismatch")):
        level = max(level, WARN)
        problems.append(f"camera_info {camera}")
    if snap.get("scale_source", "none") != "none" and snap.get("scale_state") in ("unknown", "held"):
        problems.append(f"metric scale {snap['scale_state']} ({snap['scale_source']})")
    if snap.get("new_resets"):
        problems.append(f"stream reset ({snap.get('last_reset', '')})")
    message = "; ".join(problems) if problems else "running"
    keys = ["state", "lifecycle", "model", "device", "precision", "checkpoint", "frames_in", "frames_published",
            "frames_dropped", "dropped_by_reason", "frames_rejected", "frames_in_flight", "input_lost",
            "input_sequence_numbers", "input_rate_hz", "publisher_rate_hz", "input_publishers", "stamp_warnings",
            "last_stamp_warning", "queue_depth", "queue_limit", "busy",
            "windows_ok", "windows_failed", "window_latency_last_s", "window_latency_mean_s",
            "window_latency_max_s", "frame_age_max_s", "window_compute_last_s", "chain_scale", "chain_residual", "chain_breaks",
            "resets", "last_reset", "encoded_frames", "encodings_reused", "pairs_decoded", "pairs_reused",
            "camera_info", "camera_info_fx", "estimated_fx", "scale", "scale_spread", "scale_source", "scale_state",
            "tf_mode", "tf_conflict", "camera_mounting", "tf_lookup_failures", "odometry_missing", "last_tf_error", "last_input_error", "last_error",
            "parameter_errors"]
    values = [(k, _fmt(snap[k])) for k in keys if k in snap]
    return level, message, values


def diagnostic_array(snap: Dict[str, Any], stamp, hardware_id: str):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from std_msgs.msg import Header
    level, message, values = summarize(snap)
    status = DiagnosticStatus(level=bytes([level]), name=STATUS_NAME, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def values_of(array_msg) -> Dict[str, str]:
    """Key/values of our status in a received DiagnosticArray (empty when absent)."""
    for st in array_msg.status:
        if st.name == STATUS_NAME:
            return {kv.key: kv.value for kv in st.values}
    return {}
