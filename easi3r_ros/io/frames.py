"""Frame sources for the offline CLI and the bag tools: video files, image folders, ROS 2 bags.

Every source yields :class:`Frame` objects — RGB uint8 (H, W, 3), a timestamp in nanoseconds and a
source name — lazily, so a long video never sits in memory. Problems raise :class:`InputError` with a
one-line message naming the file/topic and what is wrong.

* Video (anything OpenCV/FFmpeg reads): stamps from ``CAP_PROP_POS_MSEC`` of each decoded frame;
  where the container gives none (0 or non-increasing after the first frame), index / fps instead.
* Image folder: ``*.jpg``, ``*.jpeg``, ``*.png`` (case-insensitive), sorted by name; stamps
  index / fps (default 30 fps).
* ROS 2 bag (directory with ``metadata.yaml``, or a ``.db3`` / ``.mcap`` file inside one), sqlite3 or
  mcap storage, read with rosbags' ``AnyReader``: a topic of type ``sensor_msgs/msg/Image``
  (rgb8, bgr8, mono8, rgba8, bgra8) or ``sensor_msgs/msg/CompressedImage`` (``cv2.imdecode``);
  stamps from ``header.stamp`` (the recording time when the header stamp is zero).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .image_codec import ImageCodecError, decode_compressed, decode_rgb8
from .stamps import stamp_to_ns

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
BAG_EXTENSIONS = (".db3", ".mcap")


class InputError(Exception):
    """An input (video, folder, bag, topic, frame) that cannot be used; the message says why."""


@dataclass
class Frame:
    """One input image: ``rgb`` (H, W, 3) uint8, ``stamp_ns`` (int), ``source`` (where it came from),
    ``index`` (position in the source, counting every frame, also skipped ones)."""

    rgb: np.ndarray
    stamp_ns: int
    source: str
    index: int

    @property
    def size(self) -> Tuple[int, int]:
        """(H, W)."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def _select(i: int, start: int, stride: int) -> bool:
    return i >= start and (i - start) % stride == 0


def _check_sel(start: int, stride: int, max_frames: Optional[int]) -> None:
    if start < 0:
        raise InputError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 0:
        raise InputError(f"max_frames must be >= 0, got {max_frames}")


# ------------------------------------------------------------------------------------------------ video

def iter_video(path: PathLike, *, start: int = 0, stride: int = 1, max_frames: Optional[int] = None,
               fps: Optional[float] = None) -> Iterator[Frame]:
    """Frames of a video file. ``fps`` overrides the container's rate for index-based stamps."""
    import cv2
    _check_sel(start, stride, max_frames)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video {str(p)!r} does not exist or is not a file")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise InputError(f"cannot open video {str(p)!r} (not a video OpenCV can decode, or corrupt)")
        rate = float(fps) if fps else float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not rate or not np.isfinite(rate) or rate <= 0:
            rate = 30.0
        use_pos = True
        last_ms = None
        produced = 0
        i = 0
        while max_frames is None or produced < max_frames:
            want = _select(i, start, stride)
            ok = cap.grab()
            if not ok:
                if i == 0:
                    raise InputError(f"cannot read any frame from video {str(p)!r}")
                break
            ms = float(cap.get(cv2.CAP_PROP_POS_MSEC))
            if use_pos and i > 0 and (last_ms is None or not np.isfinite(ms) or ms <= last_ms):
                use_pos = False  # container gives no usable timestamps: index / fps from here on
            last_ms = ms
            if want:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise InputError(f"cannot decode frame {i} of video {str(p)!r}")
                if bgr.ndim == 2:
                    bgr = np.repeat(bgr[:, :, None], 3, axis=2)
                stamp = int(round(ms * 1e6)) if use_pos else int(round(i * 1e9 / rate))
                yield Frame(np.ascontiguousarray(bgr[:, :, 2::-1]), stamp, f"{p.name}#{i}", i)
                produced += 1
            i += 1
    finally:
        cap.release()


# ----------------------------------------------------------------------------------------- image folder

def list_images(folder: PathLike) -> List[Path]:
    """Image files (jpg/jpeg/png, any case) of a folder, sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"image folder {str(d)!r} does not exist or is not a directory")
    files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"image folder {str(d)!r} contains no .jpg/.jpeg/.png images")
    return files


def read_image(path: PathLike) -> np.ndarray:
    """One image file → (H, W, 3) uint8 RGB (PNG 16-bit and alpha are reduced to 8-bit RGB)."""
    import cv2
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise InputError(f"cannot read image {str(path)!r}")
    return np.ascontiguousarray(img[:, :, ::-1])


def iter_image_folder(folder: PathLike, *, fps: float = 30.0, start: int = 0, stride: int = 1,
                      max_frames: Optional[int] = None) -> Iterator[Frame]:
    """Frames of an image folder (sorted names), stamps = index / fps."""
    _check_sel(start, stride, max_frames)
    if not fps or fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    files = list_images(folder)
    produced = 0
    for i, f in enumerate(files):
        if max_frames is not None and produced >= max_frames:
            break
        if not _select(i, start, stride):
            continue
        yield Frame(read_image(f), int(round(i * 1e9 / fps)), f.name, i)
        produced += 1


# ------------------------------------------------------------------------------------------------ bags

def default_typestore():
    """rosbags typestore for ROS 2 (Kilted where this rosbags knows it, else Jazzy/Humble)."""
    from rosbags.typesys import Stores, get_typestore
    for name in ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE"):
        if hasattr(Stores, name):
            return get_typestore(getattr(Stores, name))
    return get_typestore(Stores.LATEST)  # pragma: no cover


def bag_dir(path: PathLike) -> Path:
    """The rosbag2 directory of ``path`` (the directory itself, or the parent of a .db3/.mcap file)."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in BAG_EXTENSIONS:
        p = p.parent
    if not p.is_dir():
        raise InputError(f"bag {str(path)!r} does not exist (expected a rosbag2 directory)")
    if not (p / "metadata.yaml").is_file():
        raise InputError(f"{str(p)!r} is not a rosbag2 directory (no metadata.yaml)")
    return p


def is_bag(path: PathLike) -> bool:
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() in BAG_EXTENSIONS
    return p.is_dir() and (p / "metadata.yaml").is_file()


def _open_reader(path: PathLike):
    from rosbags.highlevel import AnyReader
    d = bag_dir(path)
    try:
        reader = AnyReader([d], default_typestore=default_typestore())
        reader.open()
    except Exception as exc:  # rosbags raises several types (AnyReaderError, ReaderError, ...)
        raise InputError(f"cannot open bag {str(d)!r}: {exc}") from exc
    return reader


def list_image_topics(path: PathLike) -> List[Tuple[str, str, int]]:
    """(topic, message type, message count) of every image topic of a bag."""
    reader = _open_reader(path)
    try:
        out = {}
        for c in reader.connections:
            if c.msgtype in IMAGE_MSGTYPES:
                t, n = out.get(c.topic, (c.msgtype, 0))
                out[c.topic] = (t, n + int(c.msgcount or 0))
        return [(k, v[0], v[1]) for k, v in sorted(out.items())]
    finally:
        reader.close()


def _msg_to_rgb(msg, msgtype: str) -> np.ndarray:
    if msgtype == "sensor_msgs/msg/CompressedImage":
        return decode_compressed(msg.data, getattr(msg, "format", ""))
    return decode_rgb8(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)


def _stamp_ns(msg, fallback: int) -> int:
    st = getattr(getattr(msg, "header", None), "stamp", None)
    if st is None:
        return int(fallback)
    ns = stamp_to_ns(st)
    return ns if ns > 0 else int(fallback)


def iter_bag(path: PathLike, topic: Optional[str] = None, *, start: int = 0, stride: int = 1,
             max_frames: Optional[int] = None) -> Iterator[Frame]:
    """Frames of an image topic of a ROS 2 bag, in recording order.

    ``topic=None`` picks the bag's only image topic (an error lists them when there are several).
    """
    _check_sel(start, stride, max_frames)
    reader = _open_reader(path)
    try:
        image_conns = [c for c in reader.connections if c.msgtype in IMAGE_MSGTYPES]
        topics = sorted({c.topic for c in image_conns})
        if topic is None:
            if len(topics) != 1:
                raise InputError(
                    f"bag {str(bag_dir(path))!r} has {len(topics)} image topics, choose one: "
                    f"{', '.join(topics) if topics else '(none)'}")
            topic = topics[0]
        conns = [c for c in image_conns if c.topic == topic]
        if not conns:
            other = [c for c in reader.connections if c.topic == topic]
            why = f"has type {other[0].msgtype}, not an image" if other else "does not exist"
            raise InputError(
                f"topic {topic!r} {why} in bag {str(bag_dir(path))!r}; image topics: "
                f"{', '.join(topics) if topics else '(none)'}")
        produced = 0
        for i, (conn, t_ns, raw) in enumerate(reader.messages(connections=conns)):
            if max_frames is not None and produced >= max_frames:
                break
            if not _select(i, start, stride):
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            try:
                rgb = _msg_to_rgb(msg, conn.msgtype)
            except ImageCodecError as exc:
                raise InputError(f"bag {str(bag_dir(path))!r} topic {topic!r} message {i}: {exc}") from exc
            yield Frame(rgb, _stamp_ns(msg, t_ns), f"{topic}#{i}", i)
            produced += 1
    finally:
        reader.close()


# -------------------------------------------------------------------------------------------- dispatch

def open_frames(source: PathLike, *, topic: Optional[str] = None, fps: Optional[float] = None,
                start: int = 0, stride: int = 1, max_frames: Optional[int] = None) -> Iterator[Frame]:
    """Frames of a video file, an image folder or a ROS 2 bag, chosen from what ``source`` is."""
    p = Path(source)
    if not p.exists():
        raise InputError(f"input {str(p)!r} does not exist")
    if is_bag(p):
        return iter_bag(p, topic, start=start, stride=stride, max_frames=max_frames)
    if topic is not None:
        raise InputError(f"a topic ({topic!r}) was given but {str(p)!r} is not a rosbag2 directory")
    if p.is_dir():
        return iter_image_folder(p, fps=fps or 30.0, start=start, stride=stride, max_frames=max_frames)
    return iter_video(p, start=start, stride=stride, max_frames=max_frames, fps=fps)


def check_same_size(frames: Sequence[Frame]) -> Tuple[int, int]:
    """(H, W) shared by all frames of a window; :class:`InputError` naming the first odd one out."""
    if not frames:
        raise InputError("empty window: no frames")
    h, w = frames[0].size
    for f in frames[1:]:
        if f.size != (h, w):
            raise InputError(
                f"frames of mixed sizes in one window: {frames[0].source} is {w}x{h} but {f.source} is "
                f"{f.size[1]}x{f.size[0]}")
    return h, w
