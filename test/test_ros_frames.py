"""The node's frames, TF buffer and new conversions, without a middleware round trip: the TF buffer is fed
TransformStamped-like objects directly, no rclpy spinning."""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from easi3r_ros.ros.frames import (check_frames, map_T_odom, pose_covariance, rigid, twist_between,
                                   world_frame)
from easi3r_ros.ros.parameters import PARAMS, check_all, cross_check
from easi3r_ros.ros.tf import TfBuffer, interpolate

S = 1_000_000_000


def pose(rotvec=(0, 0, 0), t=(0, 0, 0)):
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    m[:3, 3] = t
    return m


def tf_msg(parent, child, stamp_ns, m):
    """A TransformStamped look-alike (the buffer reads only these attributes)."""
    q = Rotation.from_matrix(m[:3, :3]).as_quat()
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S)),
        child_frame_id=child,
        transform=SimpleNamespace(translation=SimpleNamespace(x=m[0, 3], y=m[1, 3], z=m[2, 3]),
                                  rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])))


def robot_tree(buf, stamps=(10 * S, 11 * S)):
    """odom -> base_link (dynamic: turning while driving along x), base_link -> camera_link -> cam_optical
    (static)."""
    for k, st in enumerate(stamps):
        buf.add_message(SimpleNamespace(transforms=[tf_msg("odom", "base_link", st,
                                                           pose((0, 0, 0.4 * k), (1.0 * k, 0.2 * k, 0)))]))
    mount = pose((0, 0.1, 0), (0.3, 0, 0.5))
    optical = pose(Rotation.from_euler("xyz", [-np.pi / 2, 0, -np.pi / 2]).as_rotvec())
    buf.add_message(SimpleNamespace(transforms=[tf_msg("base_link", "camera_link", 0, mount),
                                                tf_msg("camera_link", "cam_optical", 0, optical)]), static=True)
    return mount @ optical


def test_tf_buffer_composes_chains_and_interpolates():
    buf = TfBuffer()
    base_T_cam = robot_tree(buf)
    # exact stamps
    m, why = buf.lookup("odom", "cam_optical", 11 * S)
    assert why == ""
    np.testing.assert_allclose(m, pose((0, 0, 0.4), (1.0, 0.2, 0)) @ base_T_cam, atol=1e-9)
    # between two stamps: linear translation, slerp rotation
    m, _ = buf.lookup("odom", "base_link", 10 * S + S // 4)
    np.testing.assert_allclose(m[:3, 3], [0.25, 0.05, 0], atol=1e-9)
    np.testing.assert_allclose(Rotation.from_matrix(m[:3, :3]).as_rotvec(), [0, 0, 0.1], atol=1e-9)
    # the inverse direction and a lookup between siblings of a common ancestor
    inv, _ = buf.lookup("cam_optical", "odom", 11 * S)
    np.testing.assert_allclose(inv, np.linalg.inv(buf.lookup("odom", "cam_optical", 11 * S)[0]), atol=1e-9)
    static_only, _ = buf.lookup("base_link", "cam_optical", 123)
    np.testing.assert_allclose(static_only, base_T_cam, atol=1e-9)
    # latest common time when no stamp is given
    np.testing.assert_allclose(buf.lookup("odom", "base_link")[0], pose((0, 0, 0.4), (1.0, 0.2, 0)), atol=1e-9)


def test_tf_buffer_says_why_a_lookup_fails():
    buf = TfBuffer()
    robot_tree(buf)
    m, why = buf.lookup("odom", "cam_optical", 12 * S)
    assert m is None and "extrapolation into the future" in why
    m, why = buf.lookup("odom", "cam_optical", 9 * S)
    assert m is None and "past" in why
    m, why = buf.lookup("odom", "nowhere", 10 * S)
    assert m is None and "'nowhere' is unknown" in why
    buf.set_transform("map", "elsewhere", 10 * S, np.eye(4))
    m, why = buf.lookup("odom", "elsewhere", 10 * S)
    assert m is None and "not connected" in why


def test_tf_buffer_history_is_bounded_and_one_parent_per_child():
    buf = TfBuffer(cache_s=1.0, max_per_edge=50)
    for k in range(200):
        buf.set_transform("odom", "base_link", k * S // 100, pose(t=(k, 0, 0)))
    assert buf.lookup("odom", "base_link", 0)[0] is None                 # older than the cache
    assert len(buf._stamps["base_link"]) == 50
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 199 * S // 100)[0][0, 3], 199)
    # out-of-order arrival is sorted in
    buf.set_transform("odom", "base_link", 1995 * S // 1000, pose(t=(500, 0, 0)))
    assert buf.lookup("odom", "base_link", 1995 * S // 1000)[0][0, 3] == 500
    # a second parent replaces the first (as tf2 does) and is counted
    buf.set_transform("base_link", "cam", 0, np.eye(4), static=True)
    assert buf.parent_of("cam") == "base_link"
    buf.set_transform("other", "cam", 0, np.eye(4), static=True)
    assert buf.parent_of("cam") == "other" and buf.parent_changes == 1


def test_tf_buffer_is_thread_safe():
    buf = TfBuffer(cache_s=100.0)
    robot_tree(buf, stamps=(0, 1))
    errors = []

    def write():
        for k in range(2, 600):
            buf.set_transform("odom", "base_link", k, pose((0, 0, 1e-3 * k), (k, 0, 0)))

    def read():
        try:
            for k in range(600):
                m, why = buf.lookup("odom", "cam_optical", None)
                assert m is not None, why
                assert abs(np.linalg.det(m[:3, :3]) - 1) < 1e-9
        except Exception as exc:   # collected: assertions in threads do not fail the test by themselves
            errors.append(exc)
    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_interpolate_endpoints_and_rigidity():
    a, b = pose((0.1, 0.2, 0.3), (1, 2, 3)), pose((-0.3, 0.1, 1.0), (0, 0, 1))
    np.testing.assert_allclose(interpolate(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(interpolate(a, b, 1.0), b, atol=1e-12)
    m = interpolate(a, b, 0.3)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)


# ---------------------------------------------------------------------------------------------- frames
DEFAULTS = {p.name: p.default for p in PARAMS}
ROBOT = dict(DEFAULTS, publish_odom_to_base_tf=False, publish_map_to_odom_tf=True, base_frame="base_link",
             scale_source="odometry")


def test_frame_combinations():
    assert check_frames(DEFAULTS) is None and check_frames(ROBOT) is None and check_all(ROBOT) is None
    assert world_frame(DEFAULTS) == "odom" and world_frame(ROBOT) == "map"
    why, fallback = check_frames(dict(ROBOT, base_frame=""))
    assert "needs base_frame" in why and fallback == {"publish_tf": False, "publish_odom_to_base_tf": True}
    why, fallback = check_frames(dict(DEFAULTS, scale_source="odometry"))
    assert "publish_odom_to_base_tf=false" in why and fallback == {"scale_source": "none"}
    # never two names for one frame (the tree would loop or a frame get a second parent)
    assert "both 'odom'" in check_all(dict(ROBOT, map_frame="odom"))
    assert "both 'base_link'" in check_all(dict(DEFAULTS, base_frame="base_link", camera_frame="base_link"))
    # map_frame only matters where map -> odom exists
    assert check_all(dict(DEFAULTS, map_frame="odom", publish_map_to_odom_tf=False)) is None
    assert check_all(dict(DEFAULTS, map_frame="odom", publish_map_to_odom_tf=True)) is not None
    assert check_all(dict(ROBOT, map_frame="odom", publish_tf=False)) is None
    # per-value checks of the new parameters
    assert "scale_source" in check_all(dict(DEFAULTS, scale_source="imu"))
    assert "fixed_scale" in check_all(dict(DEFAULTS, fixed_scale=0.0))
    assert cross_check(dict(DEFAULTS, window_size=5, stride=4))[1]["stride"] == 4
    # odom hangs every published pose: never empty (an empty name made a self-transform on /tf)
    why, fallback = cross_check(dict(DEFAULTS, odom_frame=""))
    assert "odom_frame must not be empty" in why and fallback == {"odom_frame": "odom"}
    assert "both 'odom'" in check_all(dict(DEFAULTS, camera_frame="odom"))
    # a checkpoint is never silently replaced by random weights
    why, fallback = cross_check(dict(DEFAULTS, checkpoint="m.pth", random_weights="tiny-224-linear"))
    assert "both set" in why and fallback == {"random_weights": ""}


def test_header_frame_ids_become_tf_names():
    from easi3r_ros.ros.frames import tf_frame_name
    from easi3r_ros.ros.parameters import SPECS, check_value
    for header, name in (("/cam", "cam"), ("my cam", "my_cam"), (" /a\tb ", "a_b"), ("cam_optical", "cam_optical"),
                         ("", "")):
        assert tf_frame_name(header) == name
        assert name == "" or check_value(SPECS["camera_frame"], name) is None   # what a parameter accepts


def test_map_to_odom_makes_map_to_base_the_estimate():
    rng = np.random.default_rng(3)
    base_T_cam = pose((0, 0.1, 0), (0.3, 0, 0.5))
    for _ in range(10):
        odom_T_base = pose(rng.normal(size=3) * 0.5, rng.normal(size=3))        # the robot's (drifting) odometry
        map_T_base_est = pose(rng.normal(size=3) * 0.5, rng.normal(size=3))     # the node's estimate
        m = map_T_odom(map_T_base_est @ base_T_cam, odom_T_base @ base_T_cam)
        # map -> odom -> base_link through the robot's tree is the estimate
        np.testing.assert_allclose(m @ odom_T_base, map_T_base_est, atol=1e-9)
    # the first frame: estimate placed at the odometry pose -> identity
    np.testing.assert_allclose(map_T_odom(odom_T_base @ base_T_cam, odom_T_base @ base_T_cam), np.eye(4),
                               atol=1e-9)


def test_twist_and_covariance():
    prev = pose((0, 0, np.pi / 2), (1, 1, 0))               # facing +y
    cur = prev @ pose((0, 0, 0.2), (0.5, 0, 0))              # 0.5 forward (body x), turning left
    lin, ang = twist_between(prev, cur, 0.5)
    np.testing.assert_allclose(lin, [1.0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(ang, [0, 0, 0.4], atol=1e-12)
    assert twist_between(prev, cur, 0.0) is None
    cov = pose_covariance(0.1)
    np.testing.assert_allclose(np.diag(cov), [0.01, 0.01, 0.01, -1, -1, -1])
    assert (np.diag(pose_covariance(float("nan"))) == -1).all() and (np.diag(pose_covariance(0.0)) == -1).all()
    sim = pose((0.1, 0, 0), (1, 2, 3))
    sim[:3, :3] *= 2.5
    np.testing.assert_allclose(rigid(sim), pose((0.1, 0, 0), (1, 2, 3)), atol=1e-12)


# ---------------------------------------------------------------------------------------------- messages
def test_camera_info_to_camera_model():
    pytest.importorskip("rclpy", reason="needs the ROS message packages")
    from sensor_msgs.msg import CameraInfo

    from easi3r_ros.io.camera_model import CameraModelError
    from easi3r_ros.ros.conversions import camera_info, camera_model_from_info
    from std_msgs.msg import Header
    k = np.array([[300.0, 0, 160], [0, 310, 118], [0, 0, 1]])
    info = camera_info(Header(frame_id="cam"), k, 320, 240, "plumb_bob", [0.1, -0.05, 0.001, 0.0, 0.01])
    m = camera_model_from_info(info)
    assert (m.fx, m.fy, m.cx, m.cy, m.width, m.height) == (300, 310, 160, 118, 320, 240)
    assert m.distortion_model == "plumb_bob" and m.D == (0.1, -0.05, 0.001, 0.0, 0.01)
    assert camera_model_from_info(CameraInfo()) is None                         # uncalibrated
    assert camera_model_from_info(camera_info(Header(), k, 0, 0)) is None        # no size
    with pytest.raises(CameraModelError, match="not supported"):
        camera_model_from_info(camera_info(Header(), k, 320, 240, "equidistant", [0.1, 0.0, 0.0, 0.0]))
    binned = camera_info(Header(), k, 320, 240)
    binned.binning_x = 2
    with pytest.raises(CameraModelError, match="binning"):
        camera_model_from_info(binned)


def test_depth_image_and_odometry_messages():
    pytest.importorskip("rclpy", reason="needs the ROS message packages")
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from easi3r_ros.ros.conversions import depth_to_image, image_to_depth, odometry_msg
    d = np.random.default_rng(0).uniform(0.5, 4, (7, 9)).astype(np.float32)
    d[0, 0] = np.nan
    msg = depth_to_image(d, Header(frame_id="cam"))
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.header.frame_id) == ("32FC1", 7, 9, 36, "cam")
    np.testing.assert_array_equal(image_to_depth(msg), d)
    odo = odometry_msg(Header(frame_id="map"), "base_link", pose((0, 0, 0.3), (1, 2, 0)), pose_covariance(0.2),
                       (np.array([0.5, 0, 0]), np.array([0, 0, 0.1])), -np.eye(6))
    odo = deserialize_message(serialize_message(odo), type(odo))
    assert odo.header.frame_id == "map" and odo.child_frame_id == "base_link"
    assert (odo.pose.pose.position.x, odo.pose.pose.position.y) == (1, 2)
    assert odo.pose.covariance[0] == pytest.approx(0.04) and odo.pose.covariance[35] == -1
    assert odo.twist.twist.linear.x == 0.5 and odo.twist.twist.angular.z == 0.1 and odo.twist.covariance[0] == -1


def test_window_stats_carries_the_scale():
    pytest.importorskip("rclpy", reason="needs the ROS message packages")
    from rclpy.serialization import deserialize_message, serialize_message

    from easi3r_ros.msg import WindowStats
    msg = WindowStats(scale=0.75, scale_spread=0.03125, scale_source="odometry", scale_state="held")
    out = deserialize_message(serialize_message(msg), WindowStats)
    assert (out.scale, out.scale_spread, out.scale_source, out.scale_state) == (0.75, 0.03125, "odometry", "held")


def test_diagnostics_report_tf_failures_camera_info_and_scale():
    from easi3r_ros.ros.diagnostics import OK, WARN, summarize
    level, msg, values = summarize({"state": "ready", "new_tf_failures": 3, "tf_lookup_failures": 7})
    assert level == WARN and "3 TF lookups failed" in msg and ("tf_lookup_failures", "7") in values
    level, msg, _ = summarize({"state": "ready", "camera_info": "unusable (distortion model 'fisheye' ...)"})
    assert level == WARN and "camera_info unusable" in msg
    level, msg, values = summarize({"state": "ready", "scale_source": "odometry", "scale_state": "held",
                                    "scale": 0.5})
    assert level == OK and "metric scale held" in msg and ("scale", "0.5") in values


def test_invalid_start_up_combinations_fall_back_safely():
    """A params file that would make two parents (the robot owns odom, but no base_frame) is refused at start-up:
    the node then publishes no TF at all, and a scale it cannot measure falls back to none."""
    rclpy = pytest.importorskip("rclpy", reason="needs rclpy")
    from rclpy.parameter import Parameter

    from easi3r_ros.ros.parameters import current_values, declare_all
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=77)
    try:
        node = rclpy.create_node("easi3r_params_probe", context=ctx, parameter_overrides=[
            Parameter("publish_odom_to_base_tf", value=False), Parameter("scale_source", value="odometry")])
        problems = declare_all(node)
        values = current_values(node)
        assert any("needs base_frame" in p for p in problems) and any("scale_source" in p for p in problems)
        assert values["publish_tf"] is False and values["publish_odom_to_base_tf"] is True
        assert values["scale_source"] == "none" and check_all(values) is None
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_tf_buffer_ignores_transforms_with_invalid_rotations():
    from geometry_msgs.msg import Quaternion, TransformStamped
    from tf2_msgs.msg import TFMessage
    good = TransformStamped()
    good.header.frame_id, good.child_frame_id = "odom", "base_link"
    good.transform.rotation = Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)
    zero, nan = TransformStamped(), TransformStamped()
    for t, q in ((zero, (0.0, 0.0, 0.0, 0.0)), (nan, (float("nan"), 0.0, 0.0, 1.0))):
        t.header.frame_id, t.child_frame_id = "odom", "other"
        t.transform.rotation = Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
    buf = TfBuffer()
    buf.add_message(TFMessage(transforms=[zero, nan, good]))
    assert buf.invalid == 2 and buf.parent_of("base_link") == "odom" and buf.parent_of("other") is None


def test_tf2_ros_parents_are_parsed_at_most_once_per_cache_period(monkeypatch):
    """With tf2_ros the parent comes from the whole tree as YAML: asked for every published frame, it is parsed
    at most once per PARENT_CACHE_S (a fake tf2 buffer counts the calls)."""
    from easi3r_ros.ros import tf as tf_mod

    class FakeTf2Buffer:
        calls = 0
        tree = "cam: {parent: 'base_link'}\nbase_link: {parent: 'odom'}\n"

        def all_frames_as_yaml(self):
            FakeTf2Buffer.calls += 1
            return self.tree

    listener = tf_mod.TfListener.__new__(tf_mod.TfListener)
    listener.backend, listener.buffer = "tf2_ros", FakeTf2Buffer()
    listener._frames, listener._frames_at = {}, None
    now = [100.0]
    monkeypatch.setattr(tf_mod.time, "monotonic", lambda: now[0])
    assert [listener.parent_of(f) for f in ("cam", "/base_link", "odom")] == ["base_link", "odom", None]
    assert FakeTf2Buffer.calls == 1
    FakeTf2Buffer.tree = "cam: {parent: 'mount'}\n"
    now[0] += tf_mod.PARENT_CACHE_S / 2
    assert listener.parent_of("cam") == "base_link" and FakeTf2Buffer.calls == 1
    now[0] += tf_mod.PARENT_CACHE_S
    assert listener.parent_of("cam") == "mount" and FakeTf2Buffer.calls == 2
    FakeTf2Buffer.tree = "- a\n- b\n"
    now[0] += 2 * tf_mod.PARENT_CACHE_S
    assert listener.parent_of("cam") is None
