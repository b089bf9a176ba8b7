"""Camera intrinsics, single poses, pair motions and smooth paths inside a :class:`~.scene.Room`.

Poses are camera-to-world 4×4 (float64) with the camera in the REP 103 optical frame (x right, y down,
z forward); the world is z-up. Every sampler takes a numpy Generator and is deterministic in it; a
pose is accepted only where the camera keeps a clearance from walls, floor, ceiling and solids.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from .scene import Room

WALL_CLEARANCE = 0.35   # m between the camera centre and any surface
MAX_TRIES = 200


def intrinsics(hw: Tuple[int, int], hfov_deg: float) -> np.ndarray:
    """Pinhole K (square pixels) with horizontal field of view ``hfov_deg`` and principal point (W/2, H/2)
    (spec §9: pixel centres at integer coordinates)."""
    H, W = hw
    f = (W / 2) / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=np.float64)


def look_rotation(forward: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation of an optical-frame camera looking along ``forward`` with the image's
    "down" towards world −z, then rolled by ``roll`` (rad) about the optical axis."""
    f = forward / np.linalg.norm(forward)
    right = np.cross(f, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:  # looking straight up/down: any right vector
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    R = np.stack([right, down, f], axis=1)
    return R @ Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix()


def yaw_pitch_rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Optical-frame rotation looking along heading ``yaw`` (rad, about world z from +x), tilted up by
    ``pitch`` (rad), rolled by ``roll``."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    return look_rotation(f, roll)


def pose(R: np.ndarray, c: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, c
    return T


def is_free(room: Room, points: np.ndarray, clearance: float = WALL_CLEARANCE) -> bool:
    return bool(np.all(room.clearance(np.atleast_2d(points)) >= clearance))


def random_free_point(rng: np.random.Generator, room: Room, z_range: Tuple[float, float],
                      clearance: float = WALL_CLEARANCE) -> np.ndarray:
    lo = np.array([clearance, clearance, max(clearance, z_range[0])])
    hi = np.array([room.size[0] - clearance, room.size[1] - clearance, min(room.size[2] - clearance, z_range[1])])
    for _ in range(MAX_TRIES):
        c = rng.uniform(lo, hi)
        if is_free(room, c, clearance):
            return c
    raise RuntimeError("no free camera position in this room")  # rooms are sparse; never seen


def random_look_target(rng: np.random.Generator, room: Room, c: np.ndarray, min_dist: float = 1.2) -> np.ndarray:
    """A point to look at: half the time a solid, else a random point of the room, ≥ min_dist away and
    at most 40° above or below the horizon."""
    for _ in range(MAX_TRIES):
        if room.solids and rng.random() < 0.5:
            target = room.solids[int(rng.integers(len(room.solids)))].centre.copy()
        else:
            target = rng.uniform([0.3, 0.3, 0.2], room.size - 0.3)
        v = target - c
        dist = np.linalg.norm(v)
        if dist >= min_dist and abs(np.degrees(np.arcsin(v[2] / dist))) <= 40:
            return target
    centre = np.array([room.size[0] / 2, room.size[1] / 2, c[2]])  # never seen: look at the room's middle
    return centre if np.linalg.norm(centre - c) > 0.5 else c + np.array([1.0, 0.0, 0.0])


def random_view(rng: np.random.Generator, room: Room, hand_held: bool) -> Tuple[np.ndarray, np.ndarray]:
    """A first camera pose (4×4) and the point it looks at. Hand-held: 1.0–1.9 m high with a little roll;
    robot: 0.3–1.3 m high, level."""
    z = (1.0, 1.9) if hand_held else (0.3, 1.3)
    c = random_free_point(rng, room, z)
    target = random_look_target(rng, room, c)
    if hand_held:
        R = look_rotation(target - c, rng.normal(0, np.radians(4)))
    else:
        v = target - c
        R = yaw_pitch_rotation(np.arctan2(v[1], v[0]), rng.uniform(np.radians(-8), np.radians(8)))
    return pose(R, c), target


def relative_angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(R1.T @ R2).magnitude()))


def second_view(rng: np.random.Generator, room: Room, T1: np.ndarray, target: np.ndarray, hand_held: bool,
                shrink: float = 1.0, max_rotation_deg: float = 22.0) -> Optional[np.ndarray]:
    """A second pose 0.05–0.6 m (× ``shrink``) from the first with a relative rotation ≤ max_rotation_deg,
    as a hand-held camera (any direction; looks back near the same target or turns freely) or a robot
    (moves in the horizontal plane, turns about the vertical). None when the pose is not free."""
    R1, c1 = T1[:3, :3], T1[:3, 3]
    baseline = rng.uniform(0.05, 0.6) * shrink
    if hand_held:
        direction = rng.normal(size=3)
        direction[2] *= 0.5
    else:  # mostly forward/backward along the heading, some sideways
        fwd = R1[:, 2] * np.array([1, 1, 0])
        fwd /= np.linalg.norm(fwd)
        side = np.cross([0.0, 0.0, 1.0], fwd)
        direction = rng.normal() * fwd * 1.5 + rng.normal() * side
    c2 = c1 + baseline * direction / np.linalg.norm(direction)
    if not is_free(room, c2):
        return None
    if hand_held and rng.random() < 0.5:  # converge on (near) the same target
        jitter = rng.normal(0, 0.15 * shrink, 3)
        R2 = look_rotation(target + jitter - c2, rng.normal(0, np.radians(4)))
    elif hand_held:
        axis = rng.normal(size=3)
        R2 = R1 @ Rotation.from_rotvec(axis / np.linalg.norm(axis)
                                       * np.radians(rng.uniform(0, 20) * shrink)).as_matrix()
    else:
        yaw = np.radians(rng.uniform(-20, 20) * shrink)
        R2 = Rotation.from_rotvec([0.0, 0.0, yaw]).as_matrix() @ R1
    if relative_angle_deg(R1, R2) > max_rotation_deg:
        return None
    return pose(R2, c2)


def smooth_path(rng: np.random.Generator, room: Room, times: np.ndarray) -> Tuple[np.ndarray, str]:
    """A smooth camera path (T, 4, 4) sampled at ``times`` (s) and its style ("robot" or "hand-held").

    Robot: drives forward at 0.2–0.7 m/s along a heading that turns gently (constant rate ≤ 15°/s plus a
    slow ≤ 5° sway), level camera 0.3–1.3 m high. Hand-held: 1.0–1.9 m high, drifts ≤ 0.3 m/s, sways
    with low-frequency sinusoids (2–12 cm, 0.2–0.7 Hz) and keeps looking near one target with a few
    degrees of rotation jitter. Every pose keeps :data:`WALL_CLEARANCE`."""
    for _ in range(MAX_TRIES):
        hand_held = rng.random() < 0.5
        T0, target = random_view(rng, room, hand_held)
        c0 = T0[:3, 3]
        poses = []
        if hand_held:
            drift = rng.normal(size=3) * np.array([1, 1, 0.3])
            drift *= rng.uniform(0, 0.3) / max(np.linalg.norm(drift), 1e-9)
            amp, hz = rng.uniform(0.02, 0.12, (2, 3)), rng.uniform(0.2, 0.7, (2, 3))
            ph = rng.uniform(0, 2 * np.pi, (2, 3))
            rot_amp, rot_hz = np.radians(rng.uniform(0.5, 3, 3)), rng.uniform(0.2, 0.8, 3)
            rot_ph = rng.uniform(0, 2 * np.pi, 3)
            target = target + rng.normal(0, 0.2, 3)
            for t in times:
                c = c0 + drift * t + (amp * np.sin(2 * np.pi * hz * t + ph)).sum(0)
                jitter = Rotation.from_rotvec(rot_amp * np.sin(2 * np.pi * rot_hz * t + rot_ph)).as_matrix()
                poses.append(pose(look_rotation(target - c) @ jitter, c))
        else:
            f0 = T0[:3, 2]
            yaw0, pitch = np.arctan2(f0[1], f0[0]), np.arcsin(np.clip(f0[2], -1, 1))
            speed = rng.uniform(0.2, 0.7)
            rate = np.radians(rng.uniform(-15, 15))
            sway, sway_hz, sway_ph = np.radians(rng.uniform(0, 5)), rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
            # Integrate the heading finely (trapezoid), then read position and heading at the frame times.
            fine = np.linspace(times[0], times[-1], max(2, 20 * len(times)))
            yaw_f = yaw0 + rate * fine + sway * np.sin(2 * np.pi * sway_hz * fine + sway_ph)
            vel = speed * np.stack([np.cos(yaw_f), np.sin(yaw_f), 0 * fine], -1)
            steps = (vel[1:] + vel[:-1]) / 2 * np.diff(fine)[:, None]
            pos_f = c0 + np.concatenate([np.zeros((1, 3)), np.cumsum(steps, 0)])
            for t in times:
                c = np.array([np.interp(t, fine, pos_f[:, k]) for k in range(3)])
                poses.append(pose(yaw_pitch_rotation(float(np.interp(t, fine, yaw_f)), pitch), c))
        poses = np.stack(poses)
        if is_free(room, poses[:, :3, 3]):
            return poses, "hand-held" if hand_held else "robot"
    raise RuntimeError("no free camera path in this room")
