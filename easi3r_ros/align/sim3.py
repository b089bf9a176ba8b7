"""Sim(3) tools: chaining windows into one trajectory (spec §11).

Monocular reconstructions fix their scale freely, so every window lives in its own similarity frame.
Consecutive windows share frames; the similarity that maps the new window's world onto the running
trajectory is estimated from those overlapping cameras, and applied to all of the new window's poses
(rotation and position; the camera frames stay rigid, depths scale with s).

Trajectory metrics (ATE, RPE) are computed by the `evo` library: :mod:`easi3r_ros.eval.trajectory`.

All computations in float64 numpy; weighted Umeyama through `roma`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


# ------------------------------------------------------------------------------------ basics
def sim3_matrix(scale: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """4x4 similarity x ↦ s·R·x + t."""
    out = np.eye(4)
    out[:3, :3] = float(scale) * np.asarray(rot, np.float64)
    out[:3, 3] = np.asarray(trans, np.float64).reshape(3)
    return out


def sim3_decompose(sim: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) of a 4x4 similarity with positive scale."""
    sim = np.asarray(sim, np.float64)
    scale = float(np.cbrt(np.linalg.det(sim[:3, :3])))
    return scale, sim[:3, :3] / scale, sim[:3, 3].copy()


def sim3_inverse(sim: np.ndarray) -> np.ndarray:
    s, r, t = sim3_decompose(sim)
    return sim3_matrix(1.0 / s, r.T, -(r.T @ t) / s)


def apply_sim3_to_poses(sim: np.ndarray, poses_c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (..., 4, 4) re-expressed in the frame `sim` maps into.

    R' = R_s·R, c' = s·R_s·c + t: the result stays rigid (camera frames are not scaled).
    """
    s, r, t = sim3_decompose(sim)
    poses = np.asarray(poses_c2w, np.float64)
    out = np.array(poses, copy=True)
    out[..., :3, :3] = r @ poses[..., :3, :3]
    out[..., :3, 3] = s * poses[..., :3, 3] @ r.T + t
    return out


def umeyama(src: np.ndarray, dst: np.ndarray, weights: Optional[np.ndarray] = None,
            with_scale: bool = True) -> Tuple[float, np.ndarray, np.ndarray]:
    """Weighted Umeyama: (s, R, t) minimising Σ w‖s·R·src + t − dst‖² (s = 1 without scale).

    src, dst (M, 3); weights (M,) non-negative or None (uniform). Needs ≥ 3 non-collinear points
    for a unique rotation.
    """
    import roma  # torch-based: imported only when Umeyama is needed
    import torch

    x = torch.as_tensor(np.asarray(src, np.float64).reshape(-1, 3))
    y = torch.as_tensor(np.asarray(dst, np.float64).reshape(-1, 3))
    w = None if weights is None else torch.as_tensor(np.asarray(weights, np.float64).reshape(-1))
    if with_scale:
        rot, trans, scale = roma.rigid_points_registration(x, y, weights=w, compute_scaling=True)
        return float(scale), rot.numpy(), trans.numpy()
    rot, trans = roma.rigid_points_registration(x, y, weights=w, compute_scaling=False)
    return 1.0, rot.numpy(), trans.numpy()


def project_to_so3(m: np.ndarray) -> np.ndarray:
    """Closest rotation (Frobenius) to a 3x3 matrix."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rotation_angle_deg(rot: np.ndarray) -> np.ndarray:
    """Rotation angle(s) in degrees of (..., 3, 3) rotation matrices (robust near 0 and 180°)."""
    rot = np.asarray(rot, np.float64)
    cos = (np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0
    skew = np.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                     rot[..., 1, 0] - rot[..., 0, 1]], axis=-1)
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


# ------------------------------------------------------------------------------------ chaining
@dataclass
class ChainLink:
    """How a window was attached: `sim` maps the window's world onto the trajectory's world."""
    sim: np.ndarray                        # (4, 4) s·R | t
    scale: float
    residual: float                        # RMS camera-centre error on the overlap after alignment (trajectory units)
    overlap: int
    rot_residual_deg: float = float("nan")  # RMS rotation error on the overlap after alignment
    method: str = ""
    broken: bool = False                   # attached without a shared frame (the previous window failed)


def estimate_window_sim3(anchor_poses: np.ndarray, new_poses: np.ndarray, weights: Optional[np.ndarray] = None,
                         method: str = "rotations", scale: Optional[float] = None) -> ChainLink:
    """Similarity S with S ∘ new_pose_k ≈ anchor_pose_k over the overlapping frames k.

    anchor_poses, new_poses (M, 4, 4) camera-to-world, the same frames in the trajectory's and in
    the new window's world. Methods:
      - "rotations" (default): rotation = weighted chordal mean of R_anchor·R_newᵀ, then scale and
        translation by weighted least squares on the centres (works from 2 overlapping frames; with
        1 frame s = 1). Camera orientations pin the rotation far better than a few nearly collinear
        centres (a short overlap of a forward-moving camera);
      - "umeyama": weighted Umeyama with scale on the camera centres only (needs ≥ 3 non-collinear
        centres; ill-conditioned for short, straight overlaps);
      - "auto": "umeyama" when ≥ 4 centres span a plane well (second covariance eigenvalue ≥ 5 % of
        the first), else "rotations".
    A known ``scale`` (e.g. the overlap frames' depth ratio, which stays defined when the camera stands
    still and the centres carry no scale) fixes s; rotation then comes from the orientations.
    """
    a = np.asarray(anchor_poses, np.float64).reshape(-1, 4, 4)
    b = np.asarray(new_poses, np.float64).reshape(-1, 4, 4)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("need the same, non-zero number of overlapping poses in both windows")
    m = len(a)
    w = np.ones(m) if weights is None else np.asarray(weights, np.float64).reshape(m)
    if not (np.all(w >= 0) and w.sum() > 0):
        raise ValueError("weights must be non-negative and not all zero")
    ca, cb = a[:, :3, 3], b[:, :3, 3]
    if scale is not None:
        method = "rotations"
    elif method == "auto":
        method = "umeyama" if _well_spread(cb, w) else "rotations"
    if method == "umeyama":
        s, r, t = umeyama(cb, ca, w, with_scale=True)
    elif method == "rotations":
        r = project_to_so3(np.einsum("k,kij,klj->il", w, a[:, :3, :3], b[:, :3, :3]))
        wn = w / w.sum()
        ma, mb = wn @ ca, wn @ cb
        da, db = ca - ma, (cb - mb) @ r.T
        if scale is not None:
            s = float(scale)
        else:
            denom = float(wn @ (db * db).sum(1))
            s = float(wn @ (da * db).sum(1)) / denom if denom > 1e-18 else 1.0
            if not np.isfinite(s) or s <= 0:
                s = 1.0
        t = ma - s * r @ mb
    else:
        raise ValueError(f"unknown method {method!r}")
    sim = sim3_matrix(s, r, t)
    moved = apply_sim3_to_poses(sim, b)
    wn = w / w.sum()
    res = float(np.sqrt(wn @ ((moved[:, :3, 3] - ca) ** 2).sum(1)))
    rres = float(np.sqrt(wn @ rotation_angle_deg(np.einsum("kji,kjl->kil", moved[:, :3, :3], a[:, :3, :3])) ** 2))
    return ChainLink(sim, float(s), res, m, rres, method)


def _well_spread(pts: np.ndarray, w: np.ndarray, ratio: float = 0.05) -> bool:
    """True when ≥ 4 points whose weighted covariance has a second eigenvalue ≥ ratio·the first."""
    if len(pts) < 4:
        return False
    wn = w / w.sum()
    d = pts - wn @ pts
    ev = np.linalg.eigvalsh((d * wn[:, None]).T @ d)
    return bool(ev[-1] > 0 and ev[-2] >= ratio * ev[-1])
