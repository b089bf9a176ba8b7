"""ROS 2 bags without ROS: write image bags from frames, read raw (CDR) messages for replay.

Uses the pure-Python ``rosbags`` library (sqlite3 or mcap storage) and its typestore
(:func:`~easi3r_ros.io.frames.default_typestore`: ROS 2 Kilted where known, else Jazzy/Humble) for the
CDR serialisation. Reading *frames* from a bag lives in :func:`easi3r_ros.io.frames.iter_bag`.

:func:`write_robot_bag` writes what a robot records (camera images, ``CameraInfo``, odometry on ``/tf`` and the
camera mounting on ``/tf_static``); :func:`write_synthetic_bag` does so for a synthetic sequence with
simulated odometry and puts the ground truth beside the bag.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .frames import Frame, InputError, _open_reader, bag_dir, default_typestore
from .image_codec import ImageCodecError, array_to_fields
from .stamps import split_ns

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


def header_message(typestore, stamp_ns: int, frame_id: str):
    T = typestore.types
    sec, nsec = split_ns(stamp_ns)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)


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
    header = header_message(typestore, stamp_ns, frame_id)
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
    sec, nsec = split_ns(stamp_ns)
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


def camera_info_message(typestore, camera, stamp_ns: int, frame_id: str = "camera"):
    """A rosbags ``sensor_msgs/msg/CameraInfo`` of a :class:`~easi3r_ros.io.camera_model.CameraModel`
    (identity rectification, P = [K | 0])."""
    T = typestore.types
    D = np.asarray(camera.D or (0.0,) * 5, np.float64)
    P = np.hstack([camera.K, np.zeros((3, 1))])
    return T["sensor_msgs/msg/CameraInfo"](
        header=header_message(typestore, stamp_ns, frame_id), height=int(camera.height), width=int(camera.width),
        distortion_model=camera.distortion_model or "plumb_bob", d=D, k=camera.K.ravel().astype(np.float64),
        r=np.eye(3).ravel(), p=P.ravel(), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def tf_message(typestore, transforms: Iterable[Tuple[str, str, int, np.ndarray]]):
    """A rosbags ``tf2_msgs/msg/TFMessage`` of (parent, child, stamp_ns, parent_T_child 4x4) transforms."""
    from scipy.spatial.transform import Rotation

    T = typestore.types
    out = []
    for parent, child, stamp_ns, m in transforms:
        m = np.asarray(m, np.float64)
        q = Rotation.from_matrix(m[:3, :3]).as_quat()
        out.append(T["geometry_msgs/msg/TransformStamped"](
            header=header_message(typestore, stamp_ns, parent), child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
                rotation=T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                           w=float(q[3])))))
    return T["tf2_msgs/msg/TFMessage"](transforms=out)


def _latched_qos():
    """/tf_static's QoS (reliable, transient local, keep last 1): players re-offer it to late subscribers."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


@dataclass(frozen=True)
class RobotFrames:
    """The frame ids and topics of a robot bag (REP 105 names)."""

    odom: str = "odom"
    base: str = "base_link"
    camera: str = "camera_optical_frame"
    image_topic: str = "/camera/image_raw"
    info_topic: str = "/camera/camera_info"


def write_robot_bag(path: PathLike, frames: Iterable[Tuple[np.ndarray, int]], camera, odom_stamps_ns: Sequence[int],
                    odom_T_base: np.ndarray, base_T_camera: np.ndarray, names: RobotFrames = RobotFrames(),
                    storage: str = "sqlite3", version: int = 8) -> Dict[str, int]:
    """A new rosbag2 at ``path`` as a robot records it: ``sensor_msgs/Image`` (rgb8) and ``CameraInfo``
    (``camera``) per frame in the camera's optical frame, ``/tf`` with ``odom → base_link`` at every odometry
    stamp, ``/tf_static`` with the mounting ``base_link → camera`` (latched), recording time = stamp.
    Returns the message count per topic."""
    from rosbags.rosbag2 import Writer
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"bag {str(p)!r} exists already; rosbags writes new bags only")
    ts = default_typestore()
    frames = [(np.asarray(rgb), int(st)) for rgb, st in frames]
    odom_stamps = [int(s) for s in odom_stamps_ns]
    if len(odom_stamps) != len(odom_T_base):
        raise ValueError(f"{len(odom_stamps)} odometry stamps for {len(odom_T_base)} poses")
    first = min([st for _, st in frames] + odom_stamps)
    topics = {names.image_topic: "sensor_msgs/msg/Image", names.info_topic: "sensor_msgs/msg/CameraInfo",
              "/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage"}
    # (recording time, topic, message), written in time order
    records = [(first, "/tf_static", tf_message(ts, [(names.base, names.camera, first, base_T_camera)]))]
    for rgb, st in frames:
        records.append((st, names.image_topic, image_message(ts, rgb, st, names.camera)))
        records.append((st, names.info_topic, camera_info_message(ts, camera, st, names.camera)))
    records += [(st, "/tf", tf_message(ts, [(names.odom, names.base, st, m)]))
                for st, m in zip(odom_stamps, odom_T_base)]
    records.sort(key=lambda r: r[0])
    counts = {t: 0 for t in topics}
    with Writer(p, version=version, storage_plugin=_storage_plugin(storage)) as writer:
        conns = {t: writer.add_connection(t, m, typestore=ts, offered_qos_profiles=[_latched_qos()] if t == "/tf_static"
                                          else ()) for t, m in topics.items()}
        for stamp, topic, msg in records:
            writer.write(conns[topic], int(stamp), bytes(ts.serialize_cdr(msg, topics[topic])))
            counts[topic] += 1
    return counts


def write_synthetic_bag(out_dir: PathLike, seq, odometry, storage: str = "sqlite3",
                        names: RobotFrames = RobotFrames()) -> Dict[str, Path]:
    """A synthetic sequence driven by a robot with simulated odometry, as ``out_dir``:

    * ``bag/`` — :func:`write_robot_bag` (image, true ``CameraInfo``, odometry ``/tf``, mounting ``/tf_static``);
    * ``gt/`` — the sequence's ground truth (:func:`~easi3r_ros.synthetic.write_sequence`: frames, masks, depth,
      camera poses in the renderer's world, intrinsics);
    * ``gt_odom_tum.txt`` — the true camera poses in the ``odom`` frame (metres): the reference for ATE;
    * ``odometry_tum.txt`` — the odometry's camera poses (``odom → base_link · mounting``), for
      ``easi3r run --odometry``; ``camera.yaml`` — the true calibration, for ``--camera-info``;
    * ``meta.json`` — seed, frames, mounting, odometry noise.

    ``seq``: a :class:`~easi3r_ros.synthetic.SyntheticSequence`; ``odometry``: its
    :class:`~easi3r_ros.synthetic.odometry.SimulatedOdometry`.
    """
    import json
    from dataclasses import asdict

    from ..synthetic import write_sequence
    from .calibration import write_camera_yaml
    from .camera_model import CameraModel
    from .writers import write_tum

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{str(out)!r} exists and is not empty")
    H, W = seq.frames[0].shape[:2]
    camera = CameraModel.from_matrix(seq.K, W, H)
    stamps = [int(s) for s in seq.stamps_ns]
    counts = write_robot_bag(out / "bag", zip(seq.frames, stamps), camera, odometry.stamps_ns, odometry.odom_T_base,
                             odometry.mounting, names, storage)
    write_sequence(seq, out / "gt")
    write_tum(out / "gt_odom_tum.txt", stamps, list(odometry.truth_in_odom(seq.cam_to_world)))
    write_tum(out / "odometry_tum.txt", [int(s) for s in odometry.stamps_ns], list(odometry.odom_T_cam))
    write_camera_yaml(out / "camera.yaml", camera, camera_name=names.camera)
    meta = {"seed": int(seq.seed), "split": seq.split, "frames": len(seq), "fps": seq.fps, "n_moving": seq.n_moving,
            "camera_style": seq.camera_style, "storage": storage, "messages": counts, "frame_ids": asdict(names),
            "base_T_camera": np.asarray(odometry.mounting).tolist(), "odometry_noise": asdict(odometry.noise),
            "world_T_odom": np.asarray(odometry.world_T_odom).tolist()}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return {"bag": out / "bag", "gt": out / "gt", "gt_odom_tum": out / "gt_odom_tum.txt",
            "odometry_tum": out / "odometry_tum.txt", "camera_yaml": out / "camera.yaml", "meta": out / "meta.json"}


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
