"""Writers (and matching readers, for tests and tools) of the offline outputs.

* masks: 8-bit PNG, 0 = static / 255 = dynamic, at camera resolution (:func:`write_mask_png`);
* overlay video: frames with dynamic pixels tinted red, ``mp4v`` (:class:`OverlayVideoWriter`);
* trajectory: TUM format ``timestamp tx ty tz qx qy qz qw``, stamps in seconds with 9 decimals,
  camera-to-world (:func:`write_tum` / :func:`read_tum`);
* intrinsics: ``.json`` or ``.txt`` (:func:`write_intrinsics` / :func:`read_intrinsics`);
* depth: ``.npy`` float32 (:func:`write_depth`);
* point cloud: binary little-endian PLY, x y z float32 + red green blue uchar (:func:`write_ply` /
  :func:`read_ply`);
* everything array-shaped: ``results.npz`` (:func:`write_results_npz`);
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .stamps import format_stamp, parse_stamp

PathLike = Union[str, os.PathLike]

PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def _parent(path: PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _resize_mask(mask: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if size is None or tuple(m.shape) == tuple(size):
        return m
    import cv2
    h, w = int(size[0]), int(size[1])
    return cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


# ------------------------------------------------------------------------------------------------ masks

def write_mask_png(path: PathLike, mask: np.ndarray, size: Optional[Tuple[int, int]] = None) -> Path:
    """(H, W) bool mask → 8-bit grey PNG with 0/255; ``size`` = (H0, W0) resizes (nearest) first."""
    import cv2
    m = _resize_mask(mask, size)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    p = _parent(path)
    if not cv2.imwrite(str(p), m.astype(np.uint8) * np.uint8(255)):
        raise OSError(f"cannot write mask PNG {str(p)!r}")
    return p


def read_mask_png(path: PathLike) -> np.ndarray:
    """A mask PNG → (H, W) bool (pixel > 127)."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read mask PNG {str(path)!r}")
    if img.ndim == 3:
        img = img[:, :, 0]
    return img > 127


# ---------------------------------------------------------------------------------------------- overlay

def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5, color=(255, 0, 0)) -> np.ndarray:
    """RGB uint8 with the masked pixels blended towards ``color`` (red) by ``alpha``."""
    img = np.asarray(rgb, dtype=np.uint8)
    m = _resize_mask(mask, img.shape[:2])
    out = img.copy()
    c = np.asarray(color, dtype=np.float32)
    out[m] = np.clip(img[m].astype(np.float32) * (1 - alpha) + c * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


class OverlayVideoWriter:
    """mp4v video of RGB frames with red-tinted dynamic pixels; use as a context manager.

    The size is fixed by the first frame (later frames of another size are resized to it).
    """

    def __init__(self, path: PathLike, fps: float = 10.0, alpha: float = 0.5, fourcc: str = "mp4v"):
        self.path = _parent(path)
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self.alpha = alpha
        self.fourcc = fourcc
        self._writer = None
        self._size: Optional[Tuple[int, int]] = None
        self.frames_written = 0

    def write(self, rgb: np.ndarray, mask: Optional[np.ndarray] = None) -> None:
        import cv2
        img = np.asarray(rgb, dtype=np.uint8)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"overlay frames must be (H, W, 3) RGB uint8, got {img.shape}")
        if mask is not None:
            img = overlay(img, mask, self.alpha)
        if self._writer is None:
            self._size = (img.shape[1], img.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(f"cannot open video writer {str(self.path)!r} ({self.fourcc})")
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(img[:, :, ::-1]))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "OverlayVideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- trajectory

def pose_to_tum_fields(c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(4, 4) camera-to-world → (t (3,), q (4,) = qx qy qz qw with qw ≥ 0)."""
    from scipy.spatial.transform import Rotation
    m = np.asarray(c2w, dtype=np.float64)
    q = Rotation.from_matrix(m[:3, :3]).as_quat()  # scalar last
    if q[3] < 0:
        q = -q
    return m[:3, 3].copy(), q


def write_tum(path: PathLike, stamps_ns: Sequence[int], poses_c2w: Sequence[np.ndarray], append: bool = False) -> Path:
    """TUM trajectory: one line ``timestamp tx ty tz qx qy qz qw`` per pose (camera-to-world)."""
    if len(stamps_ns) != len(poses_c2w):
        raise ValueError(f"{len(stamps_ns)} stamps for {len(poses_c2w)} poses")
    p = _parent(path)
    lines = []
    for st, pose in zip(stamps_ns, poses_c2w):
        t, q = pose_to_tum_fields(pose)
        vals = " ".join(f"{v:.9f}" for v in (*t, *q))
        lines.append(f"{format_stamp(st)} {vals}\n")
    with open(p, "a" if append else "w") as fh:
        fh.writelines(lines)
    return p


def read_tum(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """TUM file → (stamps_ns (M,) int64, poses_c2w (M, 4, 4) float64). Lines starting with # are skipped."""
    from scipy.spatial.transform import Rotation
    stamps, poses = [], []
    for ln, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) != 8:
            raise ValueError(f"{path}:{ln}: expected 8 fields, got {len(parts)}")
        stamps.append(parse_stamp(parts[0]))
        v = np.array([float(x) for x in parts[1:]])
        m = np.eye(4)
        m[:3, :3] = Rotation.from_quat(v[3:]).as_matrix()
        m[:3, 3] = v[:3]
        poses.append(m)
    return np.array(stamps, dtype=np.int64), np.array(poses).reshape(-1, 4, 4)


# ------------------------------------------------------------------------------------------- intrinsics

def write_intrinsics(path: PathLike, K: np.ndarray, width: int, height: int, extra: Optional[Mapping] = None) -> Path:
    """3×3 intrinsics as ``.json`` ({width, height, fx, fy, cx, cy, K}) or ``.txt`` (comment + 3 rows)."""
    k = np.asarray(K, dtype=np.float64).reshape(3, 3)
    p = _parent(path)
    if p.suffix.lower() == ".json":
        d = {"width": int(width), "height": int(height), "fx": float(k[0, 0]), "fy": float(k[1, 1]),
             "cx": float(k[0, 2]), "cy": float(k[1, 2]), "K": k.tolist()}
        if extra:
            d.update(extra)
        p.write_text(json.dumps(d, indent=2) + "\n")
    else:
        header = f"# 3x3 intrinsics K, image {int(width)}x{int(height)} (width x height)\n"
        p.write_text(header + "".join(" ".join(f"{v:.9f}" for v in row) + "\n" for row in k))
    return p


def read_intrinsics(path: PathLike) -> np.ndarray:
    p = Path(path)
    if p.suffix.lower() == ".json":
        return np.array(json.loads(p.read_text())["K"], dtype=np.float64)
    return np.loadtxt(p, comments="#").reshape(3, 3)


# ----------------------------------------------------------------------------------------- depth / ply

def write_depth(path: PathLike, depth: np.ndarray) -> Path:
    """Depth (H, W) as float32 ``.npy``."""
    p = _parent(path)
    np.save(p, np.asarray(depth, dtype=np.float32))
    return p


def write_ply(path: PathLike, points: np.ndarray, colors: Optional[np.ndarray] = None) -> Path:
    """Binary little-endian PLY: vertex x, y, z float32 + red, green, blue uchar (grey 200 without colours)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is None:
        cols = np.full((len(pts), 3), 200, dtype=np.uint8)
    else:
        c = np.asarray(colors)
        if np.issubdtype(c.dtype, np.floating):  # floats in [0, 1] (as the aligner's images) or [0, 255]
            scale = 255.0 if (c.size == 0 or float(np.nanmax(c)) <= 1.0) else 1.0
            c = np.clip(np.round(c * scale), 0, 255)
        cols = np.asarray(c).astype(np.uint8).reshape(-1, 3)
    if len(cols) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(cols)} colours")
    v = np.empty(len(pts), dtype=PLY_DTYPE)
    v["x"], v["y"], v["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    v["red"], v["green"], v["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(pts)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    p = _parent(path)
    with open(p, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
    return p


def read_ply(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """A PLY written by :func:`write_ply` → (points (M, 3) float32, colours (M, 3) uint8)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    n = next(int(l.split()[2]) for l in header if l.startswith("element vertex"))
    v = np.frombuffer(data, dtype=PLY_DTYPE, count=n, offset=end + len(b"end_header\n"))
    pts = np.stack([v["x"], v["y"], v["z"]], axis=1)
    cols = np.stack([v["red"], v["green"], v["blue"]], axis=1)
    return pts, cols


# ------------------------------------------------------------------------------------------------- npz

def write_results_npz(path: PathLike, arrays: Mapping[str, np.ndarray], meta: Optional[Mapping] = None,
                      compressed: bool = True) -> Path:
    """``results.npz`` of named arrays (fixture names where they exist); ``meta`` → string ``meta_json``."""
    p = _parent(path)
    out = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    if meta is not None:
        out["meta_json"] = np.array(json.dumps(meta, default=json_default))
    (np.savez_compressed if compressed else np.savez)(p, **out)
    return p


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
