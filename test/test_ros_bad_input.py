"""Bad input and run-time changes against one running node (separate process, real DDS): after each, the
node is alive, the problem is in its log and in /diagnostics, and every good frame is still accounted for."""
import itertools

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = pytest.mark.ros

from ros_testing import (TINY, Listener, image_msg, next_domain, set_params, standard_outputs,  # noqa: E402
                         start_node, stop, wait_log, wait_until)
from stream_fakes import scene  # noqa: E402

from easi3r_ros.ros.conversions import ns_to_stamp, stamp_to_ns  # noqa: E402

_clock = itertools.count(1)


def _stamp():
    """Increasing stamps across tests (10 Hz)."""
    return 1_800_000_000_000_000_000 + next(_clock) * 100_000_000


class Rig:
    def __init__(self, tmp):
        from sensor_msgs.msg import CompressedImage, Image
        self.domain = next_domain()
        self.log = tmp / "node.log"
        self.listener = Listener(self.domain)
        standard_outputs(self.listener)
        self.node = start_node(self.domain, dict(TINY, flush_after=0.5), self.log,
                               remaps={"image": "/cam/image_raw", "image/compressed": "/cam/image_raw/compressed"})
        qos = self.listener.qos(depth=100)
        self.pub = self.listener.node.create_publisher(Image, "/cam/image_raw", qos)
        self.cpub = self.listener.node.create_publisher(CompressedImage, "/cam/image_raw/compressed", qos)
        wait_until(lambda: self.pub.get_subscription_count() >= 1, 30, what="node subscription")
        wait_until(lambda: self.diag().get("state") == "ready", 60, what="network ready")

    def diag(self):
        return self.listener.diag_values()

    def count(self, key):
        return int(self.diag().get(key, 0))

    def alive(self):
        assert self.node.poll() is None, self.log.read_text()

    def fresh_diag(self):
        """Wait for a diagnostics message newer than now."""
        n = len(self.listener.get("/diagnostics"))
        wait_until(lambda: len(self.listener.get("/diagnostics")) > n + 1, 30, what="new diagnostics")
        return self.diag()

    def send_frames(self, frames, stamps=None, publish=None):
        """Publish good frames; wait until each is published (a mask received) or counted as dropped."""
        d0 = self.fresh_diag()
        pub0, drop0 = int(d0["frames_published"]), int(d0["frames_dropped"])
        masks0 = len(self.listener.get("/easi3r/dynamic_mask"))
        results0 = len(self.listener.get("/easi3r/frame_result"))
        stamps = stamps or [_stamp() for _ in frames]
        for img, st in zip(frames, stamps):
            if publish is None:
                h, w = img.shape[:2]
                self.pub.publish(image_msg(h, w, "rgb8", img.tobytes(), st))
            else:
                publish(img, st)

        def done():
            # diagnostics, masks and frame results are different topics: wait for all to account for every frame
            d = self.diag()
            n = int(d["frames_published"]) - pub0
            return n + int(d["frames_dropped"]) - drop0 == len(frames) and \
                len(self.listener.get("/easi3r/dynamic_mask")) - masks0 == n and \
                len(self.listener.get("/easi3r/frame_result")) - results0 == n
        wait_until(done, 90, step=0.1, what="frames published or dropped")
        return self.listener.get("/easi3r/dynamic_mask")[masks0:], stamps

    def reject(self, msg, reason):
        before = self.fresh_diag()
        n = int(before["frames_rejected"])
        since = len(self.listener.get("/diagnostics"))
        self.pub.publish(msg)
        wait_until(lambda: self.count("frames_rejected") == n + 1, 30, what="rejection counted")
        assert reason in self.diag()["last_input_error"]
        wait_log(self.log, reason)

        def warned():   # the rejection is reported once, in the next status after it
            return [st for st in self.listener.node_statuses(since) if "input frames rejected" in st.message]
        wait_until(warned, 30, what="WARN diagnostics")
        assert warned()[0].level in (b"\x01", 1)
        self.alive()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("badinput"))
    try:
        yield r
    finally:
        rc = stop(r.node)
        r.listener.close()
        assert rc == 0, r.log.read_text()[-3000:]


def test_unsupported_encoding(rig):
    rig.reject(image_msg(32, 32, "yuv422", bytes(32 * 64), _stamp(), step=64), "unsupported image encoding")


def test_zero_size_image(rig):
    rig.reject(image_msg(0, 0, "rgb8", b"", _stamp(), step=0), "empty image")


def test_data_shorter_than_height_times_step(rig):
    rig.reject(image_msg(32, 32, "rgb8", bytes(100), _stamp(), step=96), "too short")


def test_odd_sizes(rig):
    rig.reject(image_msg(3, 5, "rgb8", bytes(45), _stamp()), "smaller than")
    rig.reject(image_msg(16, 16, "rgb8", bytes(16 * 40), _stamp(), step=40), "step 40 is smaller")
    # odd but valid sizes are processed: masks at the source resolution
    masks, stamps = rig.send_frames([scene(k, 67, 93) for k in range(5)])
    assert masks and all((m.height, m.width) == (67, 93) for m in masks)
    assert {stamp_to_ns(m.header.stamp) for m in masks} <= set(stamps)
    rig.alive()


def test_time_going_backwards_resets_cleanly(rig):
    resets = rig.count("resets")
    first = [_stamp() for _ in range(6)]
    rig.send_frames([scene(k, 64, 80) for k in range(6)], first)
    n_results = len(rig.listener.get("/easi3r/frame_result"))
    # a bag loop: the same stamps again
    masks2, _ = rig.send_frames([scene(k, 64, 80) for k in range(6)], first)
    wait_log(rig.log, "time went backwards")
    assert rig.count("resets") >= resets + 1
    assert "backwards" in rig.diag()["last_reset"]
    assert all(stamp_to_ns(m.header.stamp) in first for m in masks2)
    # the new segment's trajectory restarts at the odometry origin (send_frames waited for the results)
    res = rig.listener.get("/easi3r/frame_result")[n_results:]
    assert len(res) == len(masks2) > 0
    if stamp_to_ns(res[0].header.stamp) == first[0]:
        p = res[0].pose.position
        assert abs(p.x) + abs(p.y) + abs(p.z) < 1e-6
    rig.alive()


def test_resolution_change_midstream(rig):
    resets = rig.count("resets")
    masks1, _ = rig.send_frames([scene(k, 64, 80) for k in range(5)])
    masks2, _ = rig.send_frames([scene(k, 72, 96) for k in range(5)])
    wait_log(rig.log, "resolution changed")
    assert rig.count("resets") >= resets + 1
    assert masks1 and all((m.height, m.width) == (64, 80) for m in masks1)
    assert masks2 and all((m.height, m.width) == (72, 96) for m in masks2)
    rig.alive()


def test_invalid_parameters_are_refused(rig):
    bad = [dict(window_size=2), dict(stride=3), dict(queue_limit=2), dict(preset="bogus"), dict(device="tpu"),
           dict(input_reliability="sometimes"), dict(base_to_camera=[0.0, 1.0]), dict(odom_frame="/odom"),
           dict(random_weights="no-such-model")]
    for values in bad:
        (ok, reason), = set_params(rig.listener, "easi3r", **values)
        assert not ok and reason, (values, reason)
    wait_log(rig.log, "parameter refused")
    # the most recent refusals are listed in diagnostics
    wait_until(lambda: "random_weights" in rig.diag().get("parameter_errors", ""), 30,
               what=f"refusals in diagnostics (have {rig.diag().get('parameter_errors')!r})")
    # a valid change is accepted
    (ok, reason), = set_params(rig.listener, "easi3r", ga_iters=15)
    assert ok, reason
    rig.alive()


def test_compressed_input_at_run_time(rig):
    import cv2
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header
    (ok, reason), = set_params(rig.listener, "easi3r", input_transport="compressed")
    assert ok, reason
    wait_until(lambda: rig.cpub.get_subscription_count() >= 1, 30, what="compressed subscription")
    rej0 = rig.count("frames_rejected")

    def publish_png(img, stamp):
        ok_, buf = cv2.imencode(".png", img[:, :, ::-1])
        rig.cpub.publish(CompressedImage(header=Header(stamp=ns_to_stamp(stamp), frame_id="cam_optical"),
                                         format="png", data=buf.tobytes()))
    masks, stamps = rig.send_frames([scene(k, 48, 64) for k in range(5)], publish=publish_png)
    assert masks and all((m.height, m.width) == (48, 64) for m in masks)
    assert {stamp_to_ns(m.header.stamp) for m in masks} <= set(stamps)
    rig.cpub.publish(CompressedImage(header=Header(frame_id="cam_optical"), format="jpeg", data=b"garbage"))
    wait_until(lambda: rig.count("frames_rejected") == rej0 + 1, 30, what="corrupt JPEG rejected")
    (ok, reason), = set_params(rig.listener, "easi3r", input_transport="raw")
    assert ok, reason
    rig.alive()


def test_default_tf_tree_is_map_odom_camera(rig):
    parents = {}
    for msg in rig.listener.get("/tf"):
        for t in msg.transforms:
            assert parents.setdefault(t.child_frame_id, t.header.frame_id) == t.header.frame_id
    assert parents == {"cam_optical": "odom"}
    # /tf_static: only the identity map -> odom (publish_map_to_odom_tf, the default, as in isaac_ros_visual_slam)
    static = [(t.header.frame_id, t.child_frame_id) for m in rig.listener.get("/tf_static") for t in m.transforms]
    assert set(static) == {("map", "odom")}
    # every published frame's mask is mono8 0/255 at the source size
    for m in rig.listener.get("/easi3r/dynamic_mask"):
        assert m.encoding == "mono8" and len(m.data) == m.height * m.step
        assert set(np.unique(np.frombuffer(bytes(m.data), np.uint8))) <= {0, 255}


# ---- run after the TF tree check above: these add camera frames of their own
def test_stamp_problems_are_rejected_or_warned(rig):
    msg = image_msg(48, 64, "rgb8", scene(0, 48, 64).tobytes(), _stamp())
    msg.header.stamp.nanosec = 1_500_000_000
    rig.reject(msg, "malformed stamp: nanosec 1500000000 >= 1e9")
    n = rig.count("stamp_warnings")
    st = _stamp()
    rig.send_frames([scene(k, 48, 64) for k in range(6)], [st, st] + [_stamp() for _ in range(4)])
    wait_log(rig.log, "duplicated stamp")
    wait_until(lambda: rig.count("stamp_warnings") == n + 1, 30, what="stamp warning counted")
    assert "duplicated stamp" in rig.diag()["last_stamp_warning"]
    rig.send_frames([scene(0, 48, 64)], [0])       # one frame of a new segment: published or dropped, counted
    wait_log(rig.log, "zero stamp")
    rig.send_frames([scene(k, 48, 64) for k in range(5)])
    rig.alive()


@pytest.mark.parametrize("header,child", [("/cam", "cam"), ("my cam", "my_cam"), ("odom", "camera_optical_frame")])
def test_header_frame_ids_tf_refuses_are_mapped_to_valid_names(rig, header, child):
    n_tf = len(rig.listener.get("/tf"))

    def publish(img, stamp):
        rig.pub.publish(image_msg(48, 64, "rgb8", img.tobytes(), stamp, frame_id=header))
    masks, _ = rig.send_frames([scene(k, 48, 64) for k in range(5)], publish=publish)
    assert masks and all(m.header.frame_id == header for m in masks)   # outputs keep the source header
    wait_until(lambda: child in {t.child_frame_id for m in rig.listener.get("/tf")[n_tf:] for t in m.transforms},
               30, what=f"TF child {child!r}")
    children = {t.child_frame_id for m in rig.listener.get("/tf")[n_tf:] for t in m.transforms}
    assert header not in children and all(t.header.frame_id != t.child_frame_id
                                          for m in rig.listener.get("/tf") for t in m.transforms)
    wait_log(rig.log, f"frame_id {header!r} cannot be a TF camera frame")
    rig.alive()


def test_frame_and_model_settings_that_cannot_work_are_refused(rig, tmp_path):
    (ok, reason), = set_params(rig.listener, "easi3r", odom_frame="")
    assert not ok and "odom_frame must not be empty" in reason
    (ok, reason), = set_params(rig.listener, "easi3r", checkpoint=str(tmp_path / "model.pth"))
    assert not ok and "both set" in reason     # random_weights would have replaced it unseen
    rig.alive()


def test_a_parameter_change_does_not_wait_behind_the_backlog(rig):
    """The backlog of frames no window has taken is dropped (counted) when the pipeline settings change,
    instead of being worked off with the old settings first."""
    frames = [scene(k, 48, 64) for k in range(30)]
    results = []

    def publish(img, stamp):
        h, w = img.shape[:2]
        rig.pub.publish(image_msg(h, w, "rgb8", img.tobytes(), stamp))
        if len(results) == 0 and img is frames[-1]:
            results.append(set_params(rig.listener, "easi3r", ga_iters=10))
    rig.send_frames(frames, publish=publish)
    assert results and results[0][0][0], results
    assert "settings changed" in rig.diag()["dropped_by_reason"]
    wait_log(rig.log, "settings changed")
    wait_log(rig.log, "stream reset: model reload")
    rig.alive()
