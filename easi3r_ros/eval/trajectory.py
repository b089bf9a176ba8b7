"""Trajectory metrics through the `evo` library (spec §10): ATE after Umeyama alignment, RPE with a frame delta.

Poses are camera-to-world 4x4 (any world frame: the estimate is aligned onto the reference). Monocular
estimates have a free scale, so the default alignment is Sim(3) (``with_scale=True``); SE(3) otherwise.

* ATE = RMSE of the camera positions after aligning the estimate's positions onto the reference's
  (evo ``APE``, pose relation ``translation_part``), in reference units;
* RPE = relative pose error over consecutive pairs ``delta`` frames apart (evo ``RPE``), after the same
  alignment: translation (reference units) and rotation angle (degrees).

Stamps (seconds, or nanoseconds as integers) pair the two trajectories with evo's nearest-time association
(``max_diff_s``); without stamps both must list the same frames in the same order.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..align.sim3 import project_to_so3, umeyama


def _stamps_s(stamps: Optional[Sequence], n: int) -> np.ndarray:
    if stamps is None:
        return np.arange(n, dtype=np.float64)
    s = np.asarray(stamps)
    if s.shape != (n,):
        raise ValueError(f"{s.shape[0] if s.ndim else 0} stamps for {n} poses")
    return s.astype(np.float64) * 1e-9 if np.issubdtype(s.dtype, np.integer) else s.astype(np.float64)


def to_evo(poses_c2w: np.ndarray, stamps: Optional[Sequence] = None, name: str = ""):
    """evo ``PoseTrajectory3D`` of (N, 4, 4) camera-to-world poses; stamps in s (float) or ns (int).

    Rotations are re-orthonormalised first: evo rejects matrices off SO(3) by more than 1e-6, which float32
    estimates can be.
    """
    from evo.core.trajectory import PoseTrajectory3D

    poses = np.array(poses_c2w, dtype=np.float64, copy=True).reshape(-1, 4, 4)
    if len(poses) == 0 or not np.isfinite(poses).all():
        raise ValueError("poses must be a non-empty array of finite 4x4 matrices")
    for p in poses:
        p[:3, :3] = project_to_so3(p[:3, :3])
        p[3] = (0.0, 0.0, 0.0, 1.0)
    return PoseTrajectory3D(poses_se3=list(poses), timestamps=_stamps_s(stamps, len(poses)), name=name)


def associate(est, ref, max_diff_s: float = 1e-3) -> Tuple[object, object]:
    """(est, ref) reduced to the poses matched by timestamp (evo ``associate_trajectories``, nearest time)."""
    from evo.core import sync

    try:
        ref_s, est_s = sync.associate_trajectories(ref, est, max_diff=max_diff_s)
    except sync.SyncException as exc:
        raise ValueError(str(exc)) from None
    return est_s, ref_s


def aligned(est, ref, with_scale: bool = True):
    """A copy of ``est`` aligned onto ``ref`` by Umeyama (Sim(3) with scale, else SE(3)).

    evo refuses a rank-deficient position covariance (e.g. a camera moving on a straight line, where the
    roll about the line is undetermined); the same least-squares alignment then comes from
    :func:`~easi3r_ros.align.sim3.umeyama` (it returns one of the equally good rotations), applied by evo.
    """
    from evo.core import lie_algebra
    from evo.core.geometry import GeometryException

    out = copy.deepcopy(est)
    try:
        out.align(ref, correct_scale=with_scale)
    except GeometryException:
        s, r, t = umeyama(est.positions_xyz, ref.positions_xyz, with_scale=with_scale)
        if with_scale:
            out.scale(s)
        out.transform(lie_algebra.se3(r, t))
    return out


def _stats(metric) -> Dict[str, float]:
    from evo.core.metrics import StatisticsType

    return {k.value: float(metric.get_statistic(k)) for k in
            (StatisticsType.rmse, StatisticsType.mean, StatisticsType.median, StatisticsType.max, StatisticsType.min)}


def ate(est, ref, with_scale: bool = True, align: bool = True) -> Dict[str, float]:
    """ATE statistics (rmse, mean, median, max, min of the position errors) of evo trajectories."""
    from evo.core import metrics

    est_a = aligned(est, ref, with_scale) if align else est
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est_a))
    return _stats(ape)


def rpe(est, ref, delta: int = 1, with_scale: bool = True, align: bool = True) -> Dict[str, Dict[str, float]]:
    """RPE of evo trajectories over pairs ``delta`` frames apart: {"trans": stats, "rot_deg": stats}."""
    from evo.core import metrics

    est_a = aligned(est, ref, with_scale) if align else est
    out = {}
    for key, relation in (("trans", metrics.PoseRelation.translation_part),
                          ("rot_deg", metrics.PoseRelation.rotation_angle_deg)):
        m = metrics.RPE(relation, delta=delta, delta_unit=metrics.Unit.frames, all_pairs=False)
        m.process_data((ref, est_a))
        out[key] = _stats(m)
    return out


def ate_rmse(est_c2w: np.ndarray, ref_c2w: np.ndarray, with_scale: bool = True) -> float:
    """ATE RMSE of two pose arrays (N, 4, 4) listing the same frames (Sim(3) alignment by default)."""
    return ate(to_evo(est_c2w), to_evo(ref_c2w), with_scale=with_scale)["rmse"]


def trajectory_errors(est_c2w: np.ndarray, ref_c2w: np.ndarray, est_stamps: Optional[Sequence] = None,
                      ref_stamps: Optional[Sequence] = None, *, with_scale: bool = True, delta: int = 1,
                      max_diff_s: float = 1e-3) -> Dict[str, float]:
    """ATE RMSE and RPE RMSE (translation, rotation in degrees) of an estimate against a reference.

    With stamps on both sides the poses are paired by time (nearest within ``max_diff_s``); without,
    they must list the same frames. Needs ≥ 3 matched poses (a Sim(3) needs three non-collinear ones to
    be unique; two are still accepted by evo but say little).
    """
    est, ref = to_evo(est_c2w, est_stamps, "estimate"), to_evo(ref_c2w, ref_stamps, "reference")
    if est_stamps is not None and ref_stamps is not None:
        est, ref = associate(est, ref, max_diff_s)
    elif est.num_poses != ref.num_poses:
        raise ValueError(f"{est.num_poses} estimated poses for {ref.num_poses} reference poses and no stamps")
    if est.num_poses < 3:
        raise ValueError(f"only {est.num_poses} poses matched (need 3)")
    rel = rpe(est, ref, delta=delta, with_scale=with_scale)
    return {"matched_poses": int(est.num_poses), "ate_rmse": ate(est, ref, with_scale)["rmse"],
            "rpe_trans_rmse": rel["trans"]["rmse"], "rpe_rot_deg_rmse": rel["rot_deg"]["rmse"]}


def still_camera_errors(ref_c2w: np.ndarray, delta: int = 1) -> Dict[str, float]:
    """The errors of a camera that never moves (the no-motion baseline), at its best similarity.

    Umeyama is undefined for coincident positions (zero variance), so the optimum is placed directly:
    every position at the reference's mean (ATE = RMS spread of the reference positions) and every
    relative motion the identity (RPE, evaluated by evo without alignment).
    """
    ref_poses = np.asarray(ref_c2w, np.float64).reshape(-1, 4, 4)
    still = np.tile(np.eye(4), (len(ref_poses), 1, 1))
    still[:, :3, 3] = ref_poses[:, :3, 3].mean(axis=0)
    est, ref = to_evo(still), to_evo(ref_poses)
    rel = rpe(est, ref, delta=delta, align=False)
    return {"matched_poses": len(ref_poses), "ate_rmse": ate(est, ref, align=False)["rmse"],
            "rpe_trans_rmse": rel["trans"]["rmse"], "rpe_rot_deg_rmse": rel["rot_deg"]["rmse"]}
