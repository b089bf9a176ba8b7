"""The node's building blocks with real messages but no middleware round trip (except the bag player)."""
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")

from easi3r_ros.io.image_codec import ImageCodecError  # noqa: E402
from easi3r_ros.pipeline.world import optical_to_body  # noqa: E402
from easi3r_ros.ros import conversions as conv  # noqa: E402
from easi3r_ros.ros.diagnostics import ERROR, OK, WARN, summarize  # noqa: E402
from easi3r_ros.ros.parameters import OPTICAL_IN_BODY, PARAMS, check_all  # noqa: E402
from ros_testing import Listener, image_msg, next_domain, wait_until  # noqa: E402
from stream_fakes import rot, scene  # noqa: E402


def test_quaternion_roundtrip_and_optical_frame():
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = rot(rng.normal(size=3), rng.uniform(-np.pi, np.pi))
        q = conv.quat_from_matrix(r)
        assert abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(conv.matrix_from_quat(q), r, atol=1e-9)
    np.testing.assert_allclose(conv.quat_from_matrix(np.diag([1.0, -1, -1])), [1, 0, 0, 0], atol=1e-12)
    # the default base_to_camera is exactly the optical -> REP 103 body rotation
    np.testing.assert_allclose(conv.pose7_to_matrix(OPTICAL_IN_BODY), optical_to_body(), atol=1e-12)


def test_odom_frames_rep103():
    from easi3r_ros.ros.settings import odom_T_world
    t = odom_T_world({"base_frame": ""})
    # the camera looks along +x of odom; image right is -y, image down is -z
    np.testing.assert_allclose(t[:3, :3] @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_allclose(t[:3, :3] @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_allclose(t[:3, :3] @ [0, 1, 0], [0, 0, -1])
    # with a base frame, base_link starts at the odometry origin: odom_T_base = odom_T_cam0 @ cam_T_base = I
    b2c = [0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]
    t = odom_T_world({"base_frame": "base_link", "base_to_camera": b2c})
    np.testing.assert_allclose(t @ np.linalg.inv(conv.pose7_to_matrix(b2c)), np.eye(4), atol=1e-12)


def test_pointcloud_roundtrip():
    from std_msgs.msg import Header
    pts = np.random.default_rng(1).normal(size=(37, 3)).astype(np.float32)
    cols = np.random.default_rng(2).integers(0, 255, (37, 3), dtype=np.uint8)
    msg = conv.array_to_cloud(pts, cols, Header(frame_id="odom"))
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert all(f.datatype == 7 and f.count == 1 for f in msg.fields)
    assert msg.point_step == 16 and msg.width == 37 and msg.height == 1 and len(msg.data) == 37 * 16
    arr = conv.cloud_to_array(msg)
    np.testing.assert_array_equal(np.stack([arr["x"], arr["y"], arr["z"]], 1), pts)
    np.testing.assert_array_equal(conv.unpack_rgb(arr["rgb"]), cols)
    empty = conv.array_to_cloud(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), Header(frame_id="odom"))
    assert empty.width == 0 and len(conv.cloud_to_array(empty)) == 0


def test_images_in_and_out():
    rgb = scene(3, 21, 33)
    msg = image_msg(21, 33, "rgb8", rgb.tobytes(), 7)
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)
    bgr = image_msg(21, 33, "bgr8", rgb[:, :, ::-1].copy().tobytes(), 7)
    np.testing.assert_array_equal(conv.image_to_rgb(bgr), rgb)
    padded = np.zeros((21, 33 * 3 + 5), np.uint8)
    padded[:, :99] = rgb.reshape(21, 99)
    np.testing.assert_array_equal(conv.image_to_rgb(image_msg(21, 33, "rgb8", padded.tobytes(), 7, step=104)), rgb)
    for bad, why in [(image_msg(8, 8, "yuv422", bytes(128), 0, step=16), "unsupported"),
                     (image_msg(0, 0, "rgb8", b"", 0, step=0), "empty"),
                     (image_msg(20, 20, "rgb8", bytes(30), 0), "too short"),
                     (image_msg(4, 4, "rgb8", bytes(48), 0), "smaller than")]:
        with pytest.raises(ImageCodecError, match=why):
            conv.image_to_rgb(bad)
    mask = np.zeros((21, 33), bool)
    mask[3:7, 4:9] = True
    out = conv.mask_to_image(mask, msg.header)
    assert (out.encoding, out.height, out.width, out.step) == ("mono8", 21, 33, 33)
    data = np.frombuffer(bytes(out.data), np.uint8).reshape(21, 33)
    np.testing.assert_array_equal(data, mask.astype(np.uint8) * 255)
    assert out.header == msg.header
    info = conv.camera_info(msg.header, np.array([[30.0, 0, 16], [0, 31, 10], [0, 0, 1]]), 33, 21)
    assert info.k[0] == 30 and info.p[5] == 31 and info.p[3] == 0 and len(info.d) == 5


def test_diagnostics_levels():
    level, msg, values = summarize({"state": "error", "state_message": "checkpoint not found: x"})
    assert level == ERROR and "checkpoint not found" in msg
    level, msg, _ = summarize({"state": "ready", "random_weights": "tiny-224-linear"})
    assert level == WARN and "RANDOM WEIGHTS" in msg
    level, msg, _ = summarize({"state": "ready", "new_rejected": 2})
    assert level == WARN and "2 input frames rejected" in msg
    level, msg, values = summarize({"state": "ready", "frames_in": 3, "window_latency_mean_s": 0.25})
    assert level == OK and ("frames_in", "3") in values and ("window_latency_mean_s", "0.25") in values


def test_parameter_cross_checks():
    defaults = {p.name: p.default for p in PARAMS}
    assert check_all(defaults) is None
    assert "stride" in check_all(dict(defaults, window_size=5, stride=4))
    assert "queue_limit" in check_all(dict(defaults, queue_limit=4))
    assert "device" in check_all(dict(defaults, device="gpu"))
    assert "image_size" in check_all(dict(defaults, image_size=300))
    assert "unit norm" in check_all(dict(defaults, base_to_camera=[0, 0, 0, 0, 0, 0, 2.0]))
    assert check_all(dict(defaults, device="cuda:1", random_weights="tiny-224-linear")) is None


def test_split_ros_args():
    from easi3r_ros.ros.node import split_ros_args
    assert split_ros_args(["--help"]) == (["--help"], [])
    assert split_ros_args(["a", "--ros-args", "-p", "x:=1"]) == (["a"], ["--ros-args", "-p", "x:=1"])


@pytest.mark.ros
def test_play_bag_publishes_raw_messages_at_the_recorded_rate(tmp_path):
    import rclpy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from easi3r_ros.io.bag import write_image_bag
    from easi3r_ros.ros.bag_player import play_bag
    stamps = [5_000_000_000 + k * 50_000_000 for k in range(6)]          # 20 Hz, 0.25 s of bag
    write_image_bag(tmp_path / "b", [(scene(k, 24, 32), s) for k, s in enumerate(stamps)], topic="/cam/img",
                    storage="sqlite3")
    domain = next_domain()
    listener = Listener(domain)
    ctx = rclpy.Context()
    try:
        listener.listen("/cam/img", Image)
        listener.listen("/clock", Clock, depth=100)
        rclpy.init(context=ctx, domain_id=domain)
        t0 = time.monotonic()
        stats = play_bag(tmp_path / "b", rate=0.5, loop=True, max_loops=2, publish_clock=True,
                         wait_for_subscribers=1, context=ctx)
        elapsed = time.monotonic() - t0
        assert stats.messages == 12 and stats.loops == 2 and stats.per_topic == {"/cam/img": 12}
        assert elapsed >= 2 * 0.25 / 0.5 - 0.05                         # half speed
        wait_until(lambda: len(listener.get("/cam/img")) == 12, 30, what="all frames")
        got = listener.get("/cam/img")
        assert [conv.stamp_to_ns(m.header.stamp) for m in got] == stamps * 2
        np.testing.assert_array_equal(conv.image_to_rgb(got[3]), scene(3, 24, 32))
        wait_until(lambda: len(listener.get("/clock")) >= 12, 30, what="/clock")
        with pytest.raises(ValueError, match="not in the bag"):
            play_bag(tmp_path / "b", topics=["/nope"], context=ctx)
    finally:
        rclpy.try_shutdown(context=ctx)
        listener.close()


def test_pipeline_parameters_reach_the_window_config():
    from easi3r_ros.ros.settings import make_runner_factory
    values = {p.name: p.default for p in PARAMS}
    values.update(random_weights="tiny-224-linear", torch_threads=0, align_coarse=2, warm_start=True, ga_iters=7)
    cfg = make_runner_factory(values)().config
    assert (cfg.align_coarse, cfg.warm_start, cfg.niter) == (2, True, 7)
    values.update(align_coarse=0, warm_start=False, ga_iters=0, keep_fp32="decoder")   # 0: the preset's own
    cfg = make_runner_factory(values)().config
    assert (cfg.align_coarse, cfg.niter, cfg.keep_fp32) == (4, 150, "decoder")
    values.update(preset="reference")
    cfg = make_runner_factory(values)().config
    assert (cfg.align_coarse, cfg.niter) == (1, 300)
