"""ROS 2 bags without ROS: write image bags from frames, read raw (CDR) messages for replay.

Uses the pure-Python ``rosbags`` library (sqlite3 or mcap storage) and its typestore
(:func:`~easi3r_ros.io.frames.default_typestore`: ROS 2 Kilted where known, else Jazzy/Humble) for the
CDR serialisation. Reading *frames* from a bag lives in :func:`easi3r_ros.io.frames.iter_bag`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .frames import Frame, InputError, _open_reader, bag_dir, default_typestore
from .image_codec import ImageCodecError, array_to_fields

PathLike = Union[str, os.PathLike]

STORAGES = ("sqlite3", "mcap")


@dataclass
class RawMessage:
    """One serialized message: topic, type, recording time (ns) and the CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin
    s = storage.lower()
    if s not in STORAGES:
        raise ValueError(f"unsupported bag storage {storage!r}; use one of {', '.join(STORAGES)}")
    return StoragePlugin.SQLITE3 if s == "sqlite3" else StoragePlugin.MCAP


def image_message(typestore, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding: str = "rgb8"):
    """A rosbags ``sensor_msgs/msg/Image`` from RGB uint8 (converted to ``encoding``: rgb8, bgr8, mono8,
    rgba8, bgra8)."""
    img = np.asarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ImageCodecError(f"frames must be (H, W, 3) RGB uint8, got {img.shape}")
    if encoding == "bgr8":
        img = img[:, :, ::-1]
    elif encoding == "mono8":
        img = np.round(img @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
    elif encoding == "rgba8":
        img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    elif encoding == "bgra8":
        img = np.dstack([img[:, :, ::-1], np.full(img.shape[:2], 255, np.uint8)])
    elif encoding != "rgb8":
        raise ImageCodecError(f"unsupported encoding {encoding!r} for writing frames (rgb8, bgr8, mono8, rgba8, bgra8)")
    f = array_to_fields(img, encoding)
    T = typestore.types
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)
    return T["sensor_msgs/msg/Image"](header=header, height=f.height, width=f.width, encoding=f.encoding,
                                      is_bigendian=f.is_bigendian, step=f.step,
                                      data=np.frombuffer(f.data, dtype=np.uint8))


def compressed_message(typestore, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", fmt: str = "jpeg",
                       quality: int = 95):
    """A rosbags ``sensor_msgs/msg/CompressedImage`` (jpeg or png) from RGB uint8."""
    import cv2
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if ext is None:
        raise ImageCodecError(f"unsupported compressed format {fmt!r} (jpeg or png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, ::-1]), params)
    if not ok:
        raise ImageCodecError("image encoding failed")
    T = typestore.types
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)
    return T["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg" if ext == ".jpg" else "png",
                                                data=np.asarray(buf, dtype=np.uint8).reshape(-1))


def write_image_bag(path: PathLike, frames: Iterable[Union[Frame, Tuple[np.ndarray, int]]],
                    topic: str = "/camera/image_raw", storage: str = "sqlite3", encoding: str = "rgb8",
                    frame_id: str = "camera", compressed: Optional[str] = None, version: int = 8) -> int:
    """Write frames (``Frame`` or ``(rgb, stamp_ns)``) as ``sensor_msgs/msg/Image`` (or CompressedImage
    with ``compressed="jpeg"|"png"``) on ``topic`` into a new rosbag2 directory ``path``.

    The recording time of each message is its stamp, so replay keeps the source timing. Returns the
    number of messages. ``path`` must not exist (rosbags never overwrites a bag).
    """
    from rosbags.rosbag2 import Writer
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"bag {str(p)!r} exists already; rosbags writes new bags only")
    plugin = _storage_plugin(storage)
    ts = default_typestore()
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    n = 0
    with Writer(p, version=version, storage_plugin=plugin) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=ts)
        for item in frames:
            rgb, stamp = (item.rgb, item.stamp_ns) if isinstance(item, Frame) else (item[0], item[1])
            if compressed:
                msg = compressed_message(ts, rgb, stamp, frame_id, compressed)
            else:
                msg = image_message(ts, rgb, stamp, frame_id, encoding)
            writer.write(conn, int(stamp), bytes(ts.serialize_cdr(msg, msgtype)))
            n += 1
    return n


def read_raw_messages(path: PathLike, topics: Optional[Union[str, Sequence[str]]] = None) -> Iterator[RawMessage]:
    """Serialized messages of a bag in recording order (all topics, or the given topic(s)), for replay:
    the CDR bytes can be published as they are (``rclpy`` ``publish`` of serialized data)."""
    reader = _open_reader(path)
    try:
        wanted = [topics] if isinstance(topics, str) else (list(topics) if topics is not None else None)
        conns = reader.connections
        if wanted is not None:
            have = {c.topic for c in conns}
            missing = [t for t in wanted if t not in have]
            if missing:
                raise InputError(f"topic(s) {', '.join(missing)} not in bag {str(bag_dir(path))!r}; "
                                 f"topics: {', '.join(sorted(have)) or '(none)'}")
            conns = [c for c in conns if c.topic in wanted]
        for conn, t_ns, raw in reader.messages(connections=conns):
            yield RawMessage(conn.topic, conn.msgtype, int(t_ns), bytes(raw))
    finally:
        reader.close()


def bag_topics(path: PathLike) -> List[Tuple[str, str, int]]:
    """(topic, message type, count) of every topic of a bag."""
    reader = _open_reader(path)
    try:
        out = {}
        for c in reader.connections:
            t, n = out.get(c.topic, (c.msgtype, 0))
            out[c.topic] = (t, n + int(c.msgcount or 0))
        return [(k, v[0], v[1]) for k, v in sorted(out.items())]
    finally:
        reader.close()


def deserialize(raw: RawMessage, typestore=None):
    """A :class:`RawMessage` → rosbags message object."""
    ts = typestore or default_typestore()
    return ts.deserialize_cdr(raw.data, raw.msgtype)
