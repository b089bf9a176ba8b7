"""The node under use_sim_time with a /clock that stops (a bag that ended), and another publisher's TF for the
camera frame: timers keep running, stamps are data time, and no frame gets two parents."""
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = pytest.mark.ros

from ros_testing import (TINY, Listener, image_msg, next_domain, standard_outputs, start_node, stop,  # noqa: E402
                         wait_log, wait_until)
from stream_fakes import scene  # noqa: E402

STAMP0 = 1_720_000_000_000_000_000


def test_no_clock_no_second_parent_and_data_time_stamps(tmp_path):
    import numpy as np
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    from easi3r_ros.ros.conversions import stamp_to_ns
    domain, log = next_domain(), tmp_path / "node.log"
    listener = Listener(domain)
    standard_outputs(listener)
    # use_sim_time and no /clock at all: ROS time stands still (at 0), as after a bag played with --clock ends
    node = start_node(domain, dict(TINY, flush_after=0.5), log, extra=["-p", "use_sim_time:=true"])
    try:
        # the bag's own TF: base_link -> cam_b, while the node (owning odom, no base_frame) would publish
        # odom -> cam_b
        static = TransformStamped()
        static.header.frame_id, static.child_frame_id = "base_link", "cam_b"
        static.transform.rotation.w = 1.0
        tf_pub = listener.node.create_publisher(TFMessage, "/tf_static", listener.qos(depth=1, latched=True))
        tf_pub.publish(TFMessage(transforms=[static]))
        pub = listener.node.create_publisher(Image, "/image", listener.qos(depth=100))
        wait_until(lambda: pub.get_subscription_count() >= 1, 60, what="node subscription")
        # diagnostics come although /clock never ticks (steady-time timers)
        wait_until(lambda: listener.diag_values().get("state") == "ready", 60, what="diagnostics without /clock")
        wait_until(lambda: tf_pub.get_subscription_count() >= 2, 30, what="the node listening to /tf_static")
        stamps = [STAMP0 + k * 100_000_000 for k in range(6)]
        for k, st in enumerate(stamps):
            pub.publish(image_msg(48, 64, "rgb8", scene(k, 48, 64).tobytes(), st, frame_id="cam_b"))
        # all six published: the idle flush (flush_after) runs without /clock too
        wait_until(lambda: listener.diag_values().get("frames_published") == "6", 90, what="six frames published")
        wait_until(lambda: "cam_b" in listener.diag_values().get("tf_conflict", ""), 30, what="TF conflict reported")
        wait_log(log, "already has the parent 'base_link'")
        assert any(st.level in (b"\x02", 2) for st in listener.node_statuses())
        parents = {(t.header.frame_id, t.child_frame_id) for m in listener.get("/tf") for t in m.transforms}
        assert ("odom", "cam_b") not in parents
        stats = listener.get("/easi3r/window_stats")
        assert stats and all(stamp_to_ns(s.header.stamp) in stamps for s in stats)   # data time, not ROS time 0
        masks = listener.get("/easi3r/dynamic_mask")
        assert sorted(stamp_to_ns(m.header.stamp) for m in masks) == stamps
        assert np.all([m.header.frame_id == "cam_b" for m in masks])
    finally:
        rc = stop(node)
        listener.close()
    assert rc == 0, log.read_text()[-3000:]
