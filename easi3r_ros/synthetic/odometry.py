"""Simulated robot odometry for a synthetic sequence: the true motion with noise and drift, seeded.

The robot's ``base_link`` carries the camera at a fixed mounting ``base_link → camera_optical_frame``
(:data:`DEFAULT_MOUNTING`: 0.1 m ahead, 0.2 m up, optical axes: z forward, x right, y down). From the true
camera poses the true base poses follow (``world_T_base = world_T_cam · mount⁻¹``); odometry integrates the
true per-step base motions with errors a wheel or visual-inertial odometry has:

* a scale bias (every distance ``1 + scale_bias`` times its true length: a wrong wheel radius);
* a yaw drift proportional to the distance driven (degrees per metre, about the odometry z axis);
* white noise per step: translation ``trans_noise`` × step length (+ ``trans_noise_floor`` m) per axis,
  rotation ``rot_noise_deg`` per axis.

The odometry frame ``odom`` is where the base starts (``odom_T_base`` = identity at the first sample,
REP 105). With every error zero the odometry camera poses are the true ones expressed in ``odom``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# base_link -> camera_optical_frame: x = 0.1 m, z = 0.2 m, rotation (qx qy qz qw) = (-0.5, 0.5, -0.5, 0.5)
MOUNT_TRANSLATION = (0.1, 0.0, 0.2)
MOUNT_QUATERNION = (-0.5, 0.5, -0.5, 0.5)


def pose_from_tq(t: Sequence[float], q_xyzw: Sequence[float]) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(q_xyzw).as_matrix()
    out[:3, 3] = t
    return out


DEFAULT_MOUNTING = pose_from_tq(MOUNT_TRANSLATION, MOUNT_QUATERNION)


@dataclass(frozen=True)
class OdometryNoise:
    """Odometry errors (see the module docstring). ``OdometryNoise.none()`` gives the exact motion."""

    scale_bias: float = 0.02
    yaw_drift_deg_per_m: float = 1.0
    trans_noise: float = 0.02
    trans_noise_floor: float = 0.001
    rot_noise_deg: float = 0.1

    @classmethod
    def none(cls) -> "OdometryNoise":
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class SimulatedOdometry:
    """Odometry samples: ``stamps_ns`` (M,), ``odom_T_base`` and ``odom_T_cam`` (M, 4, 4); ``mounting``
    (base -> camera optical); ``world_T_odom`` places the odometry frame in the renderer's world (where the
    base started), so ``world_T_odom @ odom_T_cam`` is comparable with the true camera poses."""

    stamps_ns: np.ndarray
    odom_T_base: np.ndarray
    odom_T_cam: np.ndarray
    mounting: np.ndarray
    world_T_odom: np.ndarray
    noise: OdometryNoise

    def track(self, **kwargs):
        """The camera poses as an :class:`~easi3r_ros.io.odometry.OdometryTrack` (lookup by stamp)."""
        from ..io.odometry import OdometryTrack

        return OdometryTrack(self.stamps_ns, self.odom_T_cam, source="simulated odometry", **kwargs)

    def truth_in_odom(self, world_T_cam: np.ndarray) -> np.ndarray:
        """True camera poses (N, 4, 4) expressed in the odometry frame."""
        return np.linalg.inv(self.world_T_odom) @ np.asarray(world_T_cam, np.float64)


def _resample(stamps_ns: np.ndarray, world_T_cam: np.ndarray, per_frame: int):
    """The true poses at ``per_frame`` samples per frame interval (interpolated; the frame stamps kept)."""
    if per_frame <= 1 or len(stamps_ns) < 2:
        return stamps_ns, world_T_cam
    from ..io.odometry import OdometryTrack

    track = OdometryTrack(stamps_ns, world_T_cam, max_gap_s=1e9, source="ground truth")
    fine = [int(a + (b - a) * k / per_frame) for a, b in zip(stamps_ns[:-1], stamps_ns[1:]) for k in range(per_frame)]
    fine.append(int(stamps_ns[-1]))
    return np.array(fine, np.int64), np.stack([track.lookup(s) for s in fine])


def simulate_odometry(world_T_cam: np.ndarray, stamps_ns: Sequence[int], noise: Optional[OdometryNoise] = None,
                      seed: int = 0, mounting: np.ndarray = DEFAULT_MOUNTING, per_frame: int = 1) -> SimulatedOdometry:
    """Odometry of a robot whose camera followed ``world_T_cam`` (N, 4, 4) at ``stamps_ns``.

    ``per_frame`` > 1 samples the odometry that many times per frame interval (the true path interpolated
    between frames), as a robot's odometry usually runs faster than its camera; every frame stamp is a sample.
    """
    from scipy.spatial.transform import Rotation

    noise = OdometryNoise() if noise is None else noise
    stamps, cams = _resample(np.asarray(stamps_ns, np.int64), np.asarray(world_T_cam, np.float64), per_frame)
    mount = np.asarray(mounting, np.float64)
    bases = cams @ np.linalg.inv(mount)
    rng = np.random.default_rng(seed)
    odom = [np.eye(4)]
    for prev, cur in zip(bases[:-1], bases[1:]):
        step = np.linalg.inv(prev) @ cur                 # true motion in the previous base frame
        length = float(np.linalg.norm(step[:3, 3]))
        noisy = step.copy()
        noisy[:3, 3] = step[:3, 3] * (1.0 + noise.scale_bias) + rng.normal(
            0.0, noise.trans_noise * length + noise.trans_noise_floor, 3)
        rot_err = Rotation.from_rotvec(np.radians(rng.normal(0.0, noise.rot_noise_deg, 3))).as_matrix()
        noisy[:3, :3] = step[:3, :3] @ rot_err
        pose = odom[-1] @ noisy
        # drift in heading grows with the distance driven, about the odometry frame's vertical
        yaw = Rotation.from_rotvec([0.0, 0.0, np.radians(noise.yaw_drift_deg_per_m * length)]).as_matrix()
        pose[:3, :3] = yaw @ pose[:3, :3]
        odom.append(pose)
    odom_T_base = np.stack(odom)
    return SimulatedOdometry(stamps_ns=stamps, odom_T_base=odom_T_base, odom_T_cam=odom_T_base @ mount,
                             mounting=mount, world_T_odom=bases[0].copy(), noise=noise)
