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
