"""Message <-> numpy conversions for the node: images in and out, PointCloud2, CameraInfo, poses.

Large payloads are handed to message constructors as bytes (assigning ``data`` afterwards is two
orders of magnitude slower). PointCloud2 uses ``sensor_msgs_py`` where it is installed and an
equivalent packed-structured-array adapter otherwise; :func:`cloud_to_array` reads either back.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..io.image_codec import ImageCodecError, array_to_fields, decode_compressed, decode_rgb8
from ..io.stamps import split_ns
from ..io.stamps import stamp_to_ns as stamp_to_ns  # the package's one converter, for the ROS side

try:  # present on a real ROS 2 install, absent in the PyPI-wheel venv
    from sensor_msgs_py import point_cloud2 as _pc2
except ImportError:  # pragma: no cover - depends on the environment
    _pc2 = None

# Smaller frames cannot be resized to a network input meaningfully (and are almost surely corrupt).
MIN_SIDE = 8


# ---------------------------------------------------------------------------------------------- time
def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time
    sec, nsec = split_ns(ns)
    return Time(sec=sec, nanosec=nsec)


# ---------------------------------------------------------------------------------------------- images
def _check_size(h: int, w: int) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageCodecError(f"image {w}x{h} is smaller than {MIN_SIDE}x{MIN_SIDE} px")


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, mono8, rgba8, bgra8) -> (H, W, 3) uint8 RGB; raises
    :class:`ImageCodecError` with the reason for anything it cannot use."""
    rgb = decode_rgb8(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)
    _check_size(*rgb.shape[:2])
    return rgb


def compressed_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> (H, W, 3) uint8 RGB."""
    rgb = decode_compressed(msg.data, msg.format)
    _check_size(*rgb.shape[:2])
    return rgb


def mask_to_image(mask: np.ndarray, header):
    """Boolean mask -> ``sensor_msgs/Image`` mono8, 255 where dynamic."""
    from sensor_msgs.msg import Image
    f = array_to_fields(np.asarray(mask, bool), "mono8")
    return Image(header=header, height=f.height, width=f.width, encoding="mono8", is_bigendian=0, step=f.step,
                 data=f.data)


# ---------------------------------------------------------------------------------------------- clouds
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])


def _pack_rgb(colors: np.ndarray) -> np.ndarray:
    """RGB uint8 -> float32 carrying 0x00RRGGBB in its bits (the PCL / RViz convention)."""
    c = np.asarray(colors, np.uint32).reshape(-1, 3)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32).view(np.float32)


def cloud_array(points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float32).reshape(-1, 3)
    arr = np.empty(len(pts), CLOUD_DTYPE)
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    arr["rgb"] = _pack_rgb(colors) if len(pts) else np.zeros(0, np.float32)
    return arr


def cloud_fields():
    from sensor_msgs.msg import PointField
    return [PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32, count=1)
            for k, n in enumerate(("x", "y", "z", "rgb"))]


def array_to_cloud(points: np.ndarray, colors: np.ndarray, header):
    """(N, 3) float points + (N, 3) uint8 colours -> ``sensor_msgs/PointCloud2`` (x, y, z, rgb float32,
    unorganised, little-endian, dense)."""
    from sensor_msgs.msg import PointCloud2
    arr = cloud_array(points, colors)
    if _pc2 is not None:
        try:
            return _pc2.create_cloud(header, cloud_fields(), arr)
        except Exception:  # older sensor_msgs_py versions want a list of tuples: use the adapter
            pass
    return PointCloud2(header=header, height=1, width=len(arr), fields=cloud_fields(), is_bigendian=False,
                       point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * len(arr),
                       data=arr.tobytes(), is_dense=True)


_PF_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def cloud_to_array(msg) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> structured array of its declared fields (any layout)."""
    end = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": [f.name for f in msg.fields],
                      "formats": [end + _PF_TYPES[f.datatype] if f.count == 1 else (end + _PF_TYPES[f.datatype], f.count)
                                  for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    n = msg.width * msg.height
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    if msg.row_step == msg.width * msg.point_step:
        return buf[:n * msg.point_step].view(dtype)
    rows = [buf[r * msg.row_step: r * msg.row_step + msg.width * msg.point_step] for r in range(msg.height)]
    return np.concatenate(rows).view(dtype)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    v = np.asarray(rgb, np.float32).view(np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- poses
def quat_from_matrix(r: np.ndarray) -> Tuple[float, float, float, float]:
    """3x3 rotation -> unit quaternion (x, y, z, w), w >= 0 (ROS order)."""
    from scipy.spatial.transform import Rotation
    x, y, z, w = Rotation.from_matrix(np.asarray(r, np.float64)).as_quat(canonical=True)
    return float(x), float(y), float(z), float(w)


def matrix_from_quat(q) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here -> 3x3 rotation."""
    from scipy.spatial.transform import Rotation
    return Rotation.from_quat(np.asarray(q, np.float64)).as_matrix()


def pose7_to_matrix(v) -> np.ndarray:
    """x y z qx qy qz qw -> 4x4."""
    t = np.eye(4)
    t[:3, :3] = matrix_from_quat(v[3:7])
    t[:3, 3] = v[:3]
    return t


def matrix_to_pose(t: np.ndarray):
    from geometry_msgs.msg import Point, Pose, Quaternion
    x, y, z, w = quat_from_matrix(t[:3, :3])
    return Pose(position=Point(x=float(t[0, 3]), y=float(t[1, 3]), z=float(t[2, 3])),
                orientation=Quaternion(x=x, y=y, z=z, w=w))


def camera_info(header, k: np.ndarray, width: int, height: int, distortion_model: str = "",
                d: Sequence[float] = ()):
    """``sensor_msgs/CameraInfo`` of a pinhole camera (without distortion unless ``d`` is given)."""
    from sensor_msgs.msg import CameraInfo
    k = np.asarray(k, np.float64).reshape(3, 3)
    p = np.zeros((3, 4))
    p[:, :3] = k
    d = [float(x) for x in d] if any(d) else [0.0] * 5
    return CameraInfo(header=header, width=int(width), height=int(height),
                      distortion_model=distortion_model or "plumb_bob", d=d, k=[float(v) for v in k.ravel()],
                      r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=[float(v) for v in p.ravel()])


def camera_model_from_info(msg):
    """``sensor_msgs/CameraInfo`` -> :class:`~easi3r_ros.io.camera_model.CameraModel`; None for an
    uncalibrated camera (all-zero K or a zero size, the CameraInfo convention). Raises ``CameraModelError``
    for intrinsics or a distortion model that cannot be used. Binning and ROI are not supported (refused)."""
    from ..io.camera_model import CameraModel, CameraModelError
    k = np.asarray(msg.k, np.float64)
    if k.size != 9 or not np.any(k) or int(msg.width) == 0 or int(msg.height) == 0:
        return None
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1 or int(msg.roi.width) or int(msg.roi.height):
        raise CameraModelError("camera_info with binning or a region of interest is not supported")
    return CameraModel.from_matrix(k.reshape(3, 3), int(msg.width), int(msg.height), str(msg.distortion_model),
                                   tuple(float(x) for x in msg.d))


def depth_to_image(depth: np.ndarray, header):
    """(H, W) depth -> ``sensor_msgs/Image`` 32FC1 (NaN where unknown, REP 118)."""
    from sensor_msgs.msg import Image
    d = np.ascontiguousarray(depth, dtype="<f4")
    return Image(header=header, height=d.shape[0], width=d.shape[1], encoding="32FC1", is_bigendian=0,
                 step=4 * d.shape[1], data=d.tobytes())


def image_to_depth(msg) -> np.ndarray:
    """``sensor_msgs/Image`` 32FC1 -> (H, W) float32."""
    if msg.encoding != "32FC1":
        raise ImageCodecError(f"expected 32FC1, got {msg.encoding!r}")
    dt = np.dtype(">f4" if msg.is_bigendian else "<f4")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :4 * msg.width]
    return rows.copy().view(dt).reshape(msg.height, msg.width).astype(np.float32)


def odometry_msg(header, child_frame: str, pose: np.ndarray, pose_cov: np.ndarray,
                 twist: Optional[Tuple[np.ndarray, np.ndarray]], twist_cov: np.ndarray):
    """``nav_msgs/Odometry``: pose of ``child_frame`` in ``header.frame_id``; twist in ``child_frame``
    (zero when ``twist`` is None: its covariance then says unknown)."""
    from geometry_msgs.msg import PoseWithCovariance, Twist, TwistWithCovariance, Vector3
    from nav_msgs.msg import Odometry
    lin, ang = twist if twist is not None else (np.zeros(3), np.zeros(3))
    return Odometry(header=header, child_frame_id=child_frame,
                    pose=PoseWithCovariance(pose=matrix_to_pose(pose),
                                            covariance=[float(x) for x in np.asarray(pose_cov).ravel()]),
                    twist=TwistWithCovariance(
                        twist=Twist(linear=Vector3(x=float(lin[0]), y=float(lin[1]), z=float(lin[2])),
                                    angular=Vector3(x=float(ang[0]), y=float(ang[1]), z=float(ang[2]))),
                        covariance=[float(x) for x in np.asarray(twist_cov).ravel()]))
