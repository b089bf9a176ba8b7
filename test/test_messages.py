"""The msg/ interfaces: generated, importable next to the source tree, and CDR round-trip exact."""
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip(
    "rclpy", reason="rclpy not importable: run the tests with the bootstrapped venv (make test)")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

import easi3r_ros  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _msgs():
    # rclpy present but no generated module means a broken environment, not an optional feature.
    try:
        from easi3r_ros.msg import FrameResult, WindowStats
    except ImportError as exc:
        pytest.fail(f"easi3r_ros.msg is not built into this environment ({exc}); run scripts/bootstrap.sh")
    return FrameResult, WindowStats


def _roundtrip(msg):
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    return deserialize_message(data, type(msg))


def test_package_is_the_source_tree():
    assert Path(easi3r_ros.__file__).resolve().parent == REPO / "easi3r_ros"


def test_frame_result_roundtrip():
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point, Pose, Quaternion
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    FrameResult, _ = _msgs()
    h, w = 36, 48
    mask = np.zeros((h, w), np.uint8)
    mask[10:20, 5:30] = 255
    header = Header(stamp=Time(sec=1_700_000_123, nanosec=456_789_000), frame_id="camera_optical")
    k = [412.5, 0.0, 23.5, 0.0, 410.25, 17.5, 0.0, 0.0, 1.0]
    msg = FrameResult(
        header=header,
        window_id=7,
        index_in_window=3,
        odom_frame_id="easi3r_odom",
        pose=Pose(position=Point(x=0.5, y=-1.25, z=2.0),
                  orientation=Quaternion(x=0.0, y=0.6, z=0.0, w=0.8)),
        width=w,
        height=h,
        k=k,
        # bytes at construction: assigning a large data field afterwards is far slower.
        mask=Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w,
                   data=mask.tobytes()),
        dynamic_ratio=float(np.float32((mask > 0).mean())),
        mean_confidence=3.75,
        moving_window=True,
    )
    out = _roundtrip(msg)

    assert out == msg
    assert out.header.stamp.sec == 1_700_000_123 and out.header.stamp.nanosec == 456_789_000
    assert out.header.frame_id == "camera_optical" and out.odom_frame_id == "easi3r_odom"
    assert (out.window_id, out.index_in_window, out.width, out.height) == (7, 3, w, h)
    assert (out.pose.position.x, out.pose.position.y, out.pose.position.z) == (0.5, -1.25, 2.0)
    assert (out.pose.orientation.y, out.pose.orientation.w) == (0.6, 0.8)
    np.testing.assert_array_equal(np.asarray(out.k), k)
    assert out.mask.encoding == "mono8" and out.mask.step == w
    np.testing.assert_array_equal(np.frombuffer(bytes(out.mask.data), np.uint8).reshape(h, w), mask)
    assert out.dynamic_ratio == pytest.approx((mask > 0).mean(), rel=1e-6)
    assert out.mean_confidence == 3.75 and out.moving_window is True


def test_window_stats_roundtrip():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    _, WindowStats = _msgs()
    # Values exactly representable in float32, so equality after the round trip is exact.
    f32 = dict(latency_s=1.5, encode_s=0.25, pass1_s=0.5, masks_s=0.0625, pass2_s=0.5,
               align_s=0.125, total_s=1.4375, focal_px=412.5, motion_score=0.875,
               otsu_threshold=0.40625, chain_scale=1.03125, chain_residual=0.0078125, align_loss=0.00390625)
    msg = WindowStats(
        header=Header(stamp=Time(sec=1_700_000_200, nanosec=1), frame_id="easi3r_odom"),
        window_id=7,
        n_frames=8,
        first_stamp=Time(sec=1_700_000_100, nanosec=0),
        last_stamp=Time(sec=1_700_000_101, nanosec=750_000_000),
        moving=False,
        frames_dropped_total=4_000_000_000,  # uint32 range
        align_iterations=37,
        align_warm_start=True,
        **f32,
    )
    out = _roundtrip(msg)

    assert out == msg
    assert (out.window_id, out.n_frames, out.frames_dropped_total) == (7, 8, 4_000_000_000)
    assert out.first_stamp == Time(sec=1_700_000_100, nanosec=0)
    assert out.last_stamp == Time(sec=1_700_000_101, nanosec=750_000_000)
    assert out.header.frame_id == "easi3r_odom" and out.moving is False
    assert (out.align_iterations, out.align_warm_start) == (37, True)
    for name, value in f32.items():
        assert getattr(out, name) == value, name


def test_tf_message_roundtrip():
    # tf2_msgs comes from a ROS install or is built locally by the bootstrap; the node needs it.
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    t = TransformStamped()
    t.header.frame_id = "easi3r_odom"
    t.child_frame_id = "camera_optical"
    t.transform.translation.x = 1.5
    t.transform.rotation.w = 1.0
    msg = TFMessage(transforms=[t, t])
    out = _roundtrip(msg)
    assert out == msg and len(out.transforms) == 2
    assert out.transforms[1].child_frame_id == "camera_optical"
