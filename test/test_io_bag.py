"""ROS 2 bags via rosbags: write image bags, read frames and raw messages back; bag errors."""
import numpy as np
import pytest

from easi3r_ros.io.bag import (bag_topics, deserialize, image_message, read_raw_messages, write_image_bag)
from easi3r_ros.io.frames import InputError, default_typestore, iter_bag, list_image_topics, open_frames

T0 = 1_700_000_000_123_456_789


def _frames(n=4, h=24, w=32):
    rng = np.random.default_rng(1)
    return [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), T0 + i * 33_333_333) for i in range(n)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_image_bag_round_trip(tmp_path, storage):
    frames = _frames()
    bag = tmp_path / "bag"
    assert write_image_bag(bag, frames, topic="/cam/image", storage=storage) == 4
    assert list_image_topics(bag) == [("/cam/image", "sensor_msgs/msg/Image", 4)]
    got = list(iter_bag(bag))  # the only image topic is picked
    assert len(got) == 4
    for g, (rgb, st) in zip(got, frames):
        np.testing.assert_array_equal(g.rgb, rgb)
        assert g.stamp_ns == st
    assert got[1].source == "/cam/image#1"
    assert [g.index for g in open_frames(bag, topic="/cam/image", start=1, stride=2)] == [1, 3]
    # a .db3/.mcap file inside the bag also works
    inner = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    assert len(list(iter_bag(inner, "/cam/image"))) == 4
    raws = list(read_raw_messages(bag))
    assert [r.timestamp_ns for r in raws] == [st for _, st in frames]
    msg = deserialize(raws[2])
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(frames[2][1], 1_000_000_000)
    assert msg.encoding == "rgb8" and msg.step == 32 * 3 and msg.header.frame_id == "camera"


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8"])
def test_encodings(tmp_path, encoding):
    frames = _frames(2)
    write_image_bag(tmp_path / "b", frames, encoding=encoding)
    got = list(iter_bag(tmp_path / "b"))
    for g, (rgb, _) in zip(got, frames):
        if encoding == "mono8":
            assert (g.rgb[:, :, 0] == g.rgb[:, :, 2]).all()
            grey = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
            np.testing.assert_array_equal(g.rgb[:, :, 0], grey)
        else:
            np.testing.assert_array_equal(g.rgb, rgb)
    assert deserialize(next(read_raw_messages(tmp_path / "b"))).encoding == encoding


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_bag(tmp_path, fmt):
    frames = _frames(2)
    write_image_bag(tmp_path / "c", frames, topic="/cam/compressed", compressed=fmt, storage="mcap")
    assert list_image_topics(tmp_path / "c") == [("/cam/compressed", "sensor_msgs/msg/CompressedImage", 2)]
    got = list(iter_bag(tmp_path / "c", "/cam/compressed"))
    for g, (rgb, st) in zip(got, frames):
        assert g.stamp_ns == st and g.rgb.shape == rgb.shape
        if fmt == "png":
            np.testing.assert_array_equal(g.rgb, rgb)


def _two_topic_bag(path, extra_encoding="16UC1"):
    from rosbags.rosbag2 import Writer
    ts = default_typestore()
    with Writer(path, version=8) as w:
        c1 = w.add_connection("/a/image", "sensor_msgs/msg/Image", typestore=ts)
        c2 = w.add_connection("/b/depth", "sensor_msgs/msg/Image", typestore=ts)
        c3 = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        m = image_message(ts, np.zeros((4, 4, 3), np.uint8), T0)
        w.write(c1, T0, bytes(ts.serialize_cdr(m, "sensor_msgs/msg/Image")))
        d = image_message(ts, np.zeros((4, 4, 3), np.uint8), 0)  # zero header stamp → recording time
        d.encoding, d.step, d.data = extra_encoding, 8, np.zeros(32, np.uint8)
        w.write(c2, T0 + 5, bytes(ts.serialize_cdr(d, "sensor_msgs/msg/Image")))
        s = ts.types["std_msgs/msg/String"](data="hi")
        w.write(c3, T0 + 6, bytes(ts.serialize_cdr(s, "std_msgs/msg/String")))


def test_bag_errors(tmp_path):
    bag = tmp_path / "multi"
    _two_topic_bag(bag)
    with pytest.raises(InputError, match="has 2 image topics, choose one: /a/image, /b/depth"):
        list(iter_bag(bag))
    with pytest.raises(InputError, match=r"topic '/nope' does not exist in bag .*; image topics: /a/image, /b/depth"):
        list(iter_bag(bag, "/nope"))
    with pytest.raises(InputError, match="'/chatter' has type std_msgs/msg/String, not an image"):
        list(iter_bag(bag, "/chatter"))
    with pytest.raises(InputError, match="message 0: unsupported image encoding '16UC1'"):
        list(iter_bag(bag, "/b/depth"))
    assert [t for t, _, _ in bag_topics(bag)] == ["/a/image", "/b/depth", "/chatter"]
    assert len(list(read_raw_messages(bag, ["/chatter", "/a/image"]))) == 2
    with pytest.raises(InputError, match="not in bag"):
        list(read_raw_messages(bag, "/missing"))
    with pytest.raises(InputError, match="not a rosbag2 directory"):
        list(iter_bag(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        list(iter_bag(tmp_path / "none"))
    with pytest.raises(FileExistsError):
        write_image_bag(bag, _frames(1))
    with pytest.raises(ValueError, match="storage"):
        write_image_bag(tmp_path / "x", _frames(1), storage="rosbag1")


def test_zero_header_stamp_uses_recording_time(tmp_path):
    bag = tmp_path / "z"
    _two_topic_bag(bag, extra_encoding="mono8")
    (f,) = list(iter_bag(bag, "/b/depth"))
    assert f.stamp_ns == T0 + 5 and f.rgb.shape == (4, 4, 3)


def _transform(tf):
    from scipy.spatial.transform import Rotation
    m = np.eye(4)
    r, t = tf.transform.rotation, tf.transform.translation
    m[:3, :3] = Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix()
    m[:3, 3] = [t.x, t.y, t.z]
    return m


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_synthetic_robot_bag_reads_back(tmp_path, storage):
    """Image, true CameraInfo, odom -> base_link on /tf, the mounting on /tf_static: their composition is the
    odometry's camera pose at every frame; the ground truth lies beside the bag."""
    from easi3r_ros.io.bag import write_synthetic_bag
    from easi3r_ros.io.calibration import read_camera_yaml
    from easi3r_ros.io.writers import read_tum
    from easi3r_ros.synthetic import make_sequence
    from easi3r_ros.synthetic.odometry import OdometryNoise, simulate_odometry

    seq = make_sequence(3, n_frames=4, hw=(48, 64), n_moving=1)
    odo = simulate_odometry(seq.cam_to_world, seq.stamps_ns, OdometryNoise(), seed=1, per_frame=2)
    paths = write_synthetic_bag(tmp_path / "run", seq, odo, storage=storage)
    assert bag_topics(paths["bag"]) == [("/camera/camera_info", "sensor_msgs/msg/CameraInfo", 4),
                                        ("/camera/image_raw", "sensor_msgs/msg/Image", 4),
                                        ("/tf", "tf2_msgs/msg/TFMessage", 7), ("/tf_static", "tf2_msgs/msg/TFMessage", 1)]
    raws = list(read_raw_messages(paths["bag"]))
    assert raws[0].topic == "/tf_static" and [r.timestamp_ns for r in raws] == sorted(r.timestamp_ns for r in raws)
    (static,) = deserialize(raws[0]).transforms
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera_optical_frame")
    odom_base = {}
    for r in raws:
        if r.topic == "/tf":
            (tf,) = deserialize(r).transforms
            assert (tf.header.frame_id, tf.child_frame_id) == ("odom", "base_link")
            odom_base[tf.header.stamp.sec * 10**9 + tf.header.stamp.nanosec] = _transform(tf)
    infos = [deserialize(r) for r in raws if r.topic == "/camera/camera_info"]
    np.testing.assert_allclose(infos[0].k.reshape(3, 3), seq.K)
    assert infos[0].header.frame_id == "camera_optical_frame" and (infos[0].width, infos[0].height) == (64, 48)
    frames = list(iter_bag(paths["bag"], "/camera/image_raw"))
    odom_stamps, odom_cams = read_tum(paths["odometry_tum"])
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f.rgb, seq.frames[k])
        cam = odom_base[f.stamp_ns] @ _transform(static)
        np.testing.assert_allclose(cam, odo.odom_T_cam[2 * k], atol=1e-6)
        np.testing.assert_allclose(cam, odom_cams[list(odom_stamps).index(f.stamp_ns)], atol=1e-6)
    gt_stamps, gt = read_tum(paths["gt_odom_tum"])
    np.testing.assert_allclose(odo.world_T_odom @ gt, seq.cam_to_world, atol=1e-6)
    np.testing.assert_allclose(read_camera_yaml(paths["camera_yaml"]).K, seq.K)
    assert len(list((paths["gt"] / "masks").glob("*.png"))) == 4
