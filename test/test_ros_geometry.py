"""Planner-ready outputs across processes (real DDS, the node in its own process, random tiny weights so only
structure and frame algebra are checked, not values): ~/odometry, ~/depth with its camera_info, the ~/reset
and ~/save_map services, the TF tree in both modes (the node owns odom, or the robot does and the node
publishes map -> odom), and run-time refusal of frame combinations that cannot work."""
import itertools

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = pytest.mark.ros

from ros_testing import (TINY, Listener, call_service, image_msg, next_domain, pose_matrix,  # noqa: E402
                         set_params, standard_outputs, start_node, stop, tf_parents, transform_matrix, wait_until)
from stream_fakes import scene  # noqa: E402

from easi3r_ros.ros.conversions import ns_to_stamp, stamp_to_ns  # noqa: E402

H, W = 72, 96
K = np.array([[80.0, 0, 47.5], [0, 82.0, 35.5], [0, 0, 1]])
_clock = itertools.count(1)


def _stamps(n):
    base = 1_750_000_000_000_000_000 + next(_clock) * 100 * 1_000_000_000
    return [base + k * 100_000_000 for k in range(n)]   # 10 Hz


def robot_odom_T_base(k):
    """The robot's wheel odometry at frame k: driving forward along x while turning slowly."""
    from scipy.spatial.transform import Rotation
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("z", 0.02 * k).as_matrix()
    m[:3, 3] = [0.05 * k, 0.002 * k * k, 0.0]
    return m


MOUNT = [0.2, 0.0, 0.4, -0.5, 0.5, -0.5, 0.5]     # base_link -> cam_optical (x y z qx qy qz qw)


class Rig:
    def __init__(self, tmp, params):
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        self.domain = next_domain()
        self.log = tmp / "node.log"
        self.listener = Listener(self.domain)
        standard_outputs(self.listener)
        self.node = start_node(self.domain, dict(TINY, **params), self.log,
                               remaps={"image": "/cam/image_raw", "camera_info": "/cam/camera_info"})
        qos = self.listener.qos(depth=100)
        node = self.listener.node
        self.pub = node.create_publisher(Image, "/cam/image_raw", qos)
        self.info = node.create_publisher(CameraInfo, "/cam/camera_info", qos)
        self.tf = node.create_publisher(TFMessage, "/tf", qos)
        self.tf_static = node.create_publisher(TFMessage, "/tf_static", self.listener.qos(depth=1, latched=True))
        wait_until(lambda: self.pub.get_subscription_count() >= 1, 30, what="node subscription")
        wait_until(lambda: self.listener.diag_values().get("state") == "ready", 60, what="network ready")

    def diag(self):
        return self.listener.diag_values()

    def send(self, stamps, before=None):
        """Publish one frame per stamp (``before(k, stamp)`` first, e.g. its TF); wait until every frame is
        published on every per-frame output or counted as dropped."""
        d0 = self.fresh_diag()
        pub0, drop0 = int(d0["frames_published"]), int(d0["frames_dropped"])
        odo0 = len(self.listener.get("/easi3r/odometry"))
        for k, st in enumerate(stamps):
            if before is not None:
                before(k, st)
            self.pub.publish(image_msg(H, W, "rgb8", scene(k, H, W).tobytes(), st))

        def done():
            d = self.listener.diag_values()
            n = int(d["frames_published"]) - pub0
            return n + int(d["frames_dropped"]) - drop0 == len(stamps) and \
                len(self.listener.get("/easi3r/odometry")) - odo0 == n
        wait_until(done, 90, step=0.2, what="every frame published or dropped")
        d = self.diag()
        n = int(d["frames_published"]) - pub0
        assert n >= len(stamps) // 2, f"too many frames dropped: {d}"
        return n

    def fresh_diag(self):
        n = len(self.listener.get("/diagnostics"))
        wait_until(lambda: len(self.listener.get("/diagnostics")) > n + 1, 30, what="new diagnostics")
        return self.diag()

    def close(self):
        rc = stop(self.node)
        self.listener.close()
        return rc


def _check_odometry_and_depth(rig, frame_id, child, n):
    odos = rig.listener.get("/easi3r/odometry")
    masks = rig.listener.get("/easi3r/dynamic_mask")
    assert len(odos) == len(masks) == n
    assert [stamp_to_ns(o.header.stamp) for o in odos] == [stamp_to_ns(m.header.stamp) for m in masks]
    for k, o in enumerate(odos):
        assert (o.header.frame_id, o.child_frame_id) == (frame_id, child)
        q = o.pose.pose.orientation
        assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-6
        cov = np.reshape(o.pose.covariance, (6, 6))
        assert (np.diag(cov)[3:] == -1).all() and all(c == -1 or c >= 0 for c in np.diag(cov)[:3])
        assert (np.diag(np.reshape(o.twist.covariance, (6, 6))) == -1).all()
    # depth: one 32FC1 image per frame, stamped and framed like the source image, with its camera_info
    from easi3r_ros.ros.conversions import image_to_depth
    depths = rig.listener.get("/easi3r/depth")
    infos = rig.listener.get("/easi3r/depth/camera_info")
    assert len(depths) == len(infos) == n
    for dm, mm, info in zip(depths, masks, infos):
        assert dm.header == mm.header and info.header == mm.header
        assert (dm.encoding, dm.height, dm.width) == ("32FC1", H, W) and (info.width, info.height) == (W, H)
        d = image_to_depth(dm)
        assert np.isfinite(d).any() and (d[np.isfinite(d)] > 0).all()


def test_node_owned_odom_outputs_and_services(tmp_path):
    maps = tmp_path / "maps"
    rig = Rig(tmp_path, dict(base_frame="base_link", base_to_camera=MOUNT, publish_map_to_odom_tf=True,
                             map_save_dir=str(maps), cloud_conf_threshold=1.0))
    try:
        stamps = _stamps(10)
        n = rig.send(stamps)
        _check_odometry_and_depth(rig, "odom", "base_link", n)
        # the path and the Odometry carry the same poses; TF odom -> base_link too
        path = rig.listener.get("/easi3r/path")[-1]
        odos = rig.listener.get("/easi3r/odometry")
        assert path.header.frame_id == "odom" and len(path.poses) == n
        for ps, o in zip(path.poses, odos):
            np.testing.assert_allclose(pose_matrix(ps.pose), pose_matrix(o.pose.pose), atol=1e-6)
        # one tree: map -> odom (identity, static) -> base_link -> cam_optical (static)
        assert tf_parents(rig.listener) == {"odom": {"map"}, "base_link": {"odom"}, "cam_optical": {"base_link"}}
        wait_until(lambda: rig.listener.get("/tf_static"), 10, what="/tf_static")
        static = {t.child_frame_id: t for m in rig.listener.get("/tf_static") for t in m.transforms}
        np.testing.assert_allclose(transform_matrix(static["odom"]), np.eye(4), atol=1e-12)

        # run-time changes that would break the tree are refused, with the reason
        (ok, why), = set_params(rig.listener, "easi3r", scale_source="odometry")
        assert not ok and "publish_odom_to_base_tf=false" in why
        (ok, why), = set_params(rig.listener, "easi3r", publish_odom_to_base_tf=False)
        assert not ok and "start-up only" in why
        (ok, why), = set_params(rig.listener, "easi3r", map_frame="odom")
        assert not ok and "both 'odom'" in why

        # save_map: a readable PLY of the static map
        from std_srvs.srv import Trigger

        from easi3r_ros.io.writers import read_ply
        wait_until(lambda: rig.listener.get("/easi3r/static_map") and
                   rig.listener.get("/easi3r/static_map")[-1].width > 0, 30, what="a non-empty static map")
        res = call_service(rig.listener, Trigger, "/easi3r/save_map", Trigger.Request())
        assert res.success, res.message
        assert res.message.startswith(str(maps)) and res.message.endswith(".ply")
        pts, cols = read_ply(res.message)
        assert len(pts) > 0 and np.isfinite(pts).all() and len(cols) == len(pts)

        # reset: the path is cleared at once, the next frames start a new trajectory
        resets = int(rig.diag()["resets"])
        paths0 = len(rig.listener.get("/easi3r/path"))
        res = call_service(rig.listener, Trigger, "/easi3r/reset", Trigger.Request())
        assert res.success and "reset" in res.message
        wait_until(lambda: any(len(p.poses) == 0 for p in rig.listener.get("/easi3r/path")[paths0:]), 30,
                   what="an empty path after the reset")
        wait_until(lambda: int(rig.diag()["resets"]) == resets + 1, 30, what="the reset in /diagnostics")
        n2 = rig.send(_stamps(6))
        assert len(rig.listener.get("/easi3r/path")[-1].poses) == n2
        empty = call_service(rig.listener, Trigger, "/easi3r/save_map", Trigger.Request())
        assert empty.success or "empty" in empty.message
        assert rig.node.poll() is None
    finally:
        assert rig.close() == 0, rig.log.read_text()


def test_robot_owned_odom_node_publishes_map_to_odom_only(tmp_path):
    """The robot publishes odom -> base_link (wheel odometry) and base_link -> cam_optical, and a calibrated
    camera_info; the node reads them, never publishes odom -> base_link, and its map -> odom composed with the
    robot's odometry gives its own estimate of map -> base_link (the ~/odometry pose)."""
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from easi3r_ros.ros.conversions import camera_info, pose7_to_matrix
    from easi3r_ros.ros.tf import transform_stamped
    rig = Rig(tmp_path, dict(publish_odom_to_base_tf=False, publish_map_to_odom_tf=True, base_frame="base_link",
                             scale_source="odometry", scale_min_motion=0.01))
    try:
        rig.tf_static.publish(TFMessage(transforms=[transform_stamped("base_link", "cam_optical",
                                                                      pose7_to_matrix(MOUNT), ns_to_stamp(0))]))
        stamps = _stamps(10)
        odom_T_base = {st: robot_odom_T_base(k) for k, st in enumerate(stamps)}

        def before(k, st):
            rig.info.publish(camera_info(Header(stamp=ns_to_stamp(st), frame_id="cam_optical"), K, W, H))
            rig.tf.publish(TFMessage(transforms=[transform_stamped("odom", "base_link", odom_T_base[st],
                                                                   ns_to_stamp(st))]))
        n = rig.send(stamps, before)
        _check_odometry_and_depth(rig, "map", "base_link", n)

        # one tree; the node's only dynamic transform is map -> odom, one per published frame
        assert tf_parents(rig.listener) == {"odom": {"map"}, "base_link": {"odom"}, "cam_optical": {"base_link"}}
        dyn = [t for m in rig.listener.get("/tf") for t in m.transforms]
        ours = [t for t in dyn if t.child_frame_id == "odom"]
        assert len([t for t in dyn if t.child_frame_id == "base_link"]) == len(stamps)   # the robot's only
        assert len(ours) == n
        # map -> odom -> base_link (the robot's odometry) is the node's estimate of map -> base_link
        odos = {stamp_to_ns(o.header.stamp): o for o in rig.listener.get("/easi3r/odometry")}
        for t in ours:
            st = stamp_to_ns(t.header.stamp)
            np.testing.assert_allclose(transform_matrix(t) @ odom_T_base[st], pose_matrix(odos[st].pose.pose),
                                       atol=1e-4)
        # the first frame's estimate sits at the robot's odometry pose: map -> odom starts at the identity
        if stamp_to_ns(ours[0].header.stamp) == stamps[0]:
            np.testing.assert_allclose(transform_matrix(ours[0]), np.eye(4), atol=1e-4)
        # the node published nothing on /tf_static (the robot owns the mounting)
        assert all(t.child_frame_id == "cam_optical" for m in rig.listener.get("/tf_static") for t in m.transforms)

        # the calibration was used: the published intrinsics are camera_info's K
        d = rig.diag()
        assert d["camera_info"].startswith("used") and d["camera_mounting"] == "tf"
        assert int(d["tf_lookup_failures"]) == 0, d["last_tf_error"]
        for info in rig.listener.get("/easi3r/camera_info"):
            np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K, rtol=1e-6)
        stats = rig.listener.get("/easi3r/window_stats")
        assert stats and all(s.header.frame_id == "map" and s.scale_source == "odometry" for s in stats)
        assert {s.scale_state for s in stats} <= {"unknown", "observed", "held", "fixed"}
    finally:
        assert rig.close() == 0, rig.log.read_text()
