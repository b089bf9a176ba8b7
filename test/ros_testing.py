"""Helpers for the multi-process ROS tests: isolated DDS domains, node/player processes, a listener."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Discovery stays on this machine (the default sends multicast out of the network interface).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

_BASE = 20 + os.getpid() % 50
_next = [0]


def next_domain() -> int:
    """A distinct ROS_DOMAIN_ID per test (and per concurrent pytest run, by pid)."""
    _next[0] += 1
    return 1 + (_BASE + 7 * _next[0]) % 100


def child_env(domain: int) -> dict:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


TINY = {"random_weights": "tiny-224-linear", "window_size": 4, "stride": 2, "ga_iters": 20,
        "scene_graph_width": 2, "kmeans": "torch", "torch_threads": 1, "input_reliability": "reliable",
        "input_depth": 100, "queue_limit": 40, "flush_after": 0.8, "diagnostics_period": 0.25,
        "map_period": 0.5, "cloud_voxel_size": 0.05}


def _p(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


def start_node(domain: int, params: dict, log_path, remaps=None, extra=None):
    cmd = [sys.executable, "-m", "easi3r_ros.ros.node", "--ros-args"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={_p(v)}"]
    for a, b in (remaps or {}).items():
        cmd += ["-r", f"{a}:={b}"]
    cmd += list(extra or [])
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=REPO, env=child_env(domain), stdout=log, stderr=subprocess.STDOUT)


def start_player(domain: int, bag, log_path, *args):
    cmd = [sys.executable, "-m", "easi3r_ros.ros.bag_player", str(bag), *args]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=REPO, env=child_env(domain), stdout=log, stderr=subprocess.STDOUT)


def stop(proc, timeout=20.0):
    """SIGTERM, then SIGKILL; returns the exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def wait_until(pred, timeout, step=0.05, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Listener:
    """An in-process rclpy node in its own context and domain that records messages per topic."""

    def __init__(self, domain: int, name: str = "easi3r_test_listener"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.msgs = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop.is_set():
                    return
                raise

    def qos(self, reliable=True, depth=200, latched=False):
        from easi3r_ros.ros.qos import qos_profile
        return qos_profile(depth, reliable, latched)

    def listen(self, topic, msg_type, latched=False, depth=200):
        self.msgs.setdefault(topic, [])

        def cb(msg, topic=topic):
            with self.lock:
                self.msgs[topic].append(msg)
        self.node.create_subscription(msg_type, topic, cb, self.qos(latched=latched, depth=depth))

    def get(self, topic):
        with self.lock:
            return list(self.msgs.get(topic, []))

    def node_statuses(self, since: int = 0):
        """The node's DiagnosticStatus entries of /diagnostics messages ``since`` onwards, oldest first."""
        from easi3r_ros.ros.diagnostics import STATUS_NAME
        return [st for arr in self.get("/diagnostics")[since:] for st in arr.status if st.name == STATUS_NAME]

    def last_diag(self):
        from easi3r_ros.ros.diagnostics import STATUS_NAME
        for arr in reversed(self.get("/diagnostics")):
            for st in arr.status:
                if st.name == STATUS_NAME:
                    return st
        return None

    def diag_values(self):
        st = self.last_diag()
        return {} if st is None else {kv.key: kv.value for kv in st.values}

    def close(self):
        self._stop.set()
        self._thread.join(2)
        try:
            self.executor.shutdown()
            self.node.destroy_node()
        finally:
            self.rclpy.try_shutdown(context=self.context)


def standard_outputs(listener, ns="/easi3r"):
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Path
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from easi3r_ros.msg import FrameResult, WindowStats
    from nav_msgs.msg import Odometry
    listener.listen(f"{ns}/dynamic_mask", Image)
    listener.listen(f"{ns}/depth", Image)
    listener.listen(f"{ns}/depth/camera_info", CameraInfo)
    listener.listen(f"{ns}/odometry", Odometry)
    listener.listen(f"{ns}/static_cloud", PointCloud2)
    listener.listen(f"{ns}/static_map", PointCloud2, latched=True, depth=1)
    listener.listen(f"{ns}/path", Path)
    listener.listen(f"{ns}/camera_info", CameraInfo)
    listener.listen(f"{ns}/frame_result", FrameResult)
    listener.listen(f"{ns}/window_stats", WindowStats)
    listener.listen("/diagnostics", DiagnosticArray, depth=50)
    listener.listen("/tf", TFMessage)
    listener.listen("/tf_static", TFMessage, latched=True, depth=1)


def call_service(listener, srv_type, name, request, timeout=30.0):
    client = listener.node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {name} not available")
        future = client.call_async(request)
        wait_until(future.done, timeout, what=f"reply of {name}")
        return future.result()
    finally:
        listener.node.destroy_client(client)


def set_params(listener, node_name, **values):
    """Set parameters one by one through the node's service; returns [(successful, reason)]."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    res = call_service(listener, SetParameters, f"/{node_name}/set_parameters", req)
    return [(r.successful, r.reason) for r in res.results]


def get_params(listener, node_name, names):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    res = call_service(listener, GetParameters, f"/{node_name}/get_parameters", GetParameters.Request(names=names))
    return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}


def image_msg(h, w, encoding="rgb8", data=None, stamp_ns=0, step=None, frame_id="cam_optical"):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from easi3r_ros.ros.conversions import ns_to_stamp
    return Image(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), height=h, width=w,
                 encoding=encoding, is_bigendian=0, step=step if step is not None else w * 3,
                 data=bytes(data) if data is not None else bytes(h * (step or w * 3)))


def wait_log(path, text, timeout=30.0):
    wait_until(lambda: text in Path(path).read_text(errors="replace"), timeout, what=f"{text!r} in {path}")


def set_params_atomically(listener, node_name, **values):
    """Set several parameters in one atomic request; returns (successful, reason)."""
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter
    req = SetParametersAtomically.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    res = call_service(listener, SetParametersAtomically, f"/{node_name}/set_parameters_atomically", req)
    return res.result.successful, res.result.reason


def tf_parents(listener):
    """child -> set of parents over every transform received on /tf and /tf_static (one tree: one each)."""
    parents = {}
    for topic in ("/tf", "/tf_static"):
        for msg in listener.get(topic):
            for t in msg.transforms:
                parents.setdefault(t.child_frame_id, set()).add(t.header.frame_id)
    return parents


def transform_matrix(t):
    """geometry_msgs/TransformStamped -> 4x4."""
    from easi3r_ros.ros.tf import transform_to_matrix
    return transform_to_matrix(t.transform)


def pose_matrix(p):
    """geometry_msgs/Pose -> 4x4."""
    from easi3r_ros.ros.conversions import pose7_to_matrix
    o, q = p.position, p.orientation
    return pose7_to_matrix([o.x, o.y, o.z, q.x, q.y, q.z, q.w])
