"""Robot odometry as a track of camera poses, looked up at frame stamps.

The file is a TUM trajectory (``stamp_s tx ty tz qx qy qz qw``, one pose per line, ``#`` comments) of the
camera's *optical* frame in the robot's odometry frame, in metres: e.g. wheel odometry ``odom → base_link``
composed with the camera mounting ``base_link → camera_optical_frame``. :meth:`OdometryTrack.lookup`
interpolates between the two samples around a stamp (translation linearly, rotation by spherical linear
interpolation) and returns None where the track says nothing: before the first or after the last sample
(beyond a small tolerance) or inside a gap longer than ``max_gap_s`` (a dropout is not bridged).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]


class OdometryError(ValueError):
    """An odometry file or track that cannot be used; the message says why."""


class OdometryTrack:
    """Camera poses (4x4, camera-to-odom) at increasing stamps (ns); callable as ``track(stamp_ns)``."""

    def __init__(self, stamps_ns: Sequence[int], poses: np.ndarray, max_gap_s: float = 0.5,
                 tolerance_s: float = 0.01, source: str = "odometry"):
        from scipy.spatial.transform import Rotation

        self.stamps_ns = np.asarray(stamps_ns, np.int64).ravel()
        poses = np.asarray(poses, np.float64)
        if poses.shape != (len(self.stamps_ns), 4, 4):
            raise OdometryError(f"{source}: {len(self.stamps_ns)} stamps for poses of shape {poses.shape}")
        if len(self.stamps_ns) == 0:
            raise OdometryError(f"{source}: no poses")
        if not np.isfinite(poses).all():
            raise OdometryError(f"{source}: non-finite pose values")
        steps = np.diff(self.stamps_ns)
        if (steps <= 0).any():
            k = int(np.argmax(steps <= 0)) + 1
            raise OdometryError(f"{source}: stamps must increase (pose {k + 1} at {self.stamps_ns[k] / 1e9:.9f} s "
                                f"follows {self.stamps_ns[k - 1] / 1e9:.9f} s)")
        self.translations = poses[:, :3, 3].copy()
        self.rotations = Rotation.from_matrix(poses[:, :3, :3])
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.source = source

    @classmethod
    def from_tum(cls, path: PathLike, **kwargs) -> "OdometryTrack":
        """A TUM file -> track. Raises OdometryError (unreadable file, malformed line, no poses)."""
        from .writers import read_tum

        p = Path(path)
        try:
            stamps, poses = read_tum(p)
        except OSError as exc:
            raise OdometryError(f"cannot read odometry {str(p)!r}: {exc.strerror or exc}") from None
        except ValueError as exc:  # field count (with the line), numbers, zero quaternions
            text = str(exc)
            raise OdometryError(text if text.startswith(str(p)) else f"{p}: malformed TUM line ({text})") from None
        return cls(stamps, poses, source=str(p), **kwargs)

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def span_ns(self) -> tuple:
        return int(self.stamps_ns[0]), int(self.stamps_ns[-1])

    def _pose(self, t, R) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = R.as_matrix()
        out[:3, 3] = t
        return out

    def lookup(self, stamp_ns: int) -> Optional[np.ndarray]:
        """The camera's pose (4x4, camera-to-odom) at ``stamp_ns``, or None where the track has no data."""
        from scipy.spatial.transform import Slerp

        s = int(stamp_ns)
        first, last = self.span_ns
        if s < first - self.tolerance_ns or s > last + self.tolerance_ns:
            return None
        if s <= first or s >= last:
            k = 0 if s <= first else len(self) - 1
            return self._pose(self.translations[k], self.rotations[k])
        k = int(np.searchsorted(self.stamps_ns, s, side="right")) - 1   # stamps[k] <= s < stamps[k + 1]
        t0, t1 = int(self.stamps_ns[k]), int(self.stamps_ns[k + 1])
        if t1 - t0 > self.max_gap_ns:  # a dropout: only its edges are known
            near = k if s - t0 <= t1 - s else k + 1
            if abs(s - int(self.stamps_ns[near])) > self.tolerance_ns:
                return None
            return self._pose(self.translations[near], self.rotations[near])
        a = (s - t0) / (t1 - t0)
        R = Slerp([0.0, 1.0], self.rotations[k:k + 2])([a])[0]
        return self._pose((1 - a) * self.translations[k] + a * self.translations[k + 1], R)

    __call__ = lookup


def read_odometry(path: PathLike, max_gap_s: float = 0.5, tolerance_s: float = 0.01) -> OdometryTrack:
    """:meth:`OdometryTrack.from_tum` with the lookup limits."""
    return OdometryTrack.from_tum(path, max_gap_s=max_gap_s, tolerance_s=tolerance_s)
