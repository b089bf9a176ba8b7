"""Sim(3) utilities: Umeyama, window chaining (spec §11); ATE / RPE through evo (spec §10)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from easi3r_ros.align.sim3 import (apply_sim3_to_poses, estimate_window_sim3, rotation_angle_deg, sim3_inverse,
                                   sim3_matrix, umeyama)
from easi3r_ros.eval.trajectory import ate_rmse, rpe, to_evo, trajectory_errors


def random_sim(seed, scale=None):
    rng = np.random.default_rng(seed)
    s = float(np.exp(rng.normal(0, 0.7))) if scale is None else scale
    return sim3_matrix(s, Rotation.random(random_state=seed).as_matrix(), rng.normal(0, 2, 3))


def gt_trajectory(n=12, seed=0):
    """A smooth, curving camera path (camera-to-world)."""
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        poses[k, :3, :3] = Rotation.from_rotvec([0.02 * k, 0.05 * k + 0.01 * np.sin(k), 0.01 * k]).as_matrix()
        poses[k, :3, 3] = [0.1 * k, 0.02 * k + 0.03 * np.sin(0.7 * k), 0.05 * np.cos(0.5 * k)]
    return poses + 0 * rng.normal()


def perturb(poses, seed, sigma_t=0.0, sigma_r=0.0):
    rng = np.random.default_rng(seed)
    out = poses.copy()
    for k in range(len(out)):
        out[k, :3, :3] = Rotation.from_rotvec(rng.normal(0, sigma_r, 3)).as_matrix() @ out[k, :3, :3]
        out[k, :3, 3] += rng.normal(0, sigma_t, 3)
    return out


def test_umeyama_recovers_similarity_exactly():
    rng = np.random.default_rng(0)
    sim = random_sim(3)
    src = rng.normal(size=(30, 3))
    dst = src @ sim[:3, :3].T + sim[:3, 3]
    s, r, t = umeyama(src, dst)
    np.testing.assert_allclose(sim3_matrix(s, r, t), sim, atol=1e-10)
    # weights: outliers with zero weight are ignored
    dst_bad = dst.copy()
    dst_bad[:5] += 10
    w = np.ones(30)
    w[:5] = 0
    s, r, t = umeyama(src, dst_bad, w)
    np.testing.assert_allclose(sim3_matrix(s, r, t), sim, atol=1e-10)
    # without scale: rigid part only
    s, r, t = umeyama(src, src @ sim[:3, :3].T / np.cbrt(np.linalg.det(sim[:3, :3])) + 1.0, with_scale=False)
    assert s == 1.0 and abs(np.linalg.det(r) - 1) < 1e-12


@pytest.mark.parametrize("method", ["umeyama", "rotations", "auto"])
def test_window_sim3_recovers_known_similarity(method):
    gt = gt_trajectory()
    sim = random_sim(5)
    window = apply_sim3_to_poses(sim3_inverse(sim), gt[3:9])  # the same frames in another Sim(3) frame
    link = estimate_window_sim3(gt[3:9], window, method=method)
    np.testing.assert_allclose(link.sim, sim, atol=1e-9)
    assert link.residual < 1e-10 and link.rot_residual_deg < 1e-6 and link.overlap == 6
    np.testing.assert_allclose(apply_sim3_to_poses(link.sim, window), gt[3:9], atol=1e-9)


def test_window_sim3_from_two_frames_uses_rotations():
    gt = gt_trajectory()
    sim = random_sim(7)
    window = apply_sim3_to_poses(sim3_inverse(sim), gt[4:6])
    link = estimate_window_sim3(gt[4:6], window, method="auto")  # 2 centres: Umeyama's rotation is undetermined
    assert link.method == "rotations"
    np.testing.assert_allclose(link.sim, sim, atol=1e-9)


def test_known_scale_fixes_the_similarity_when_the_camera_stands_still():
    """A still camera: centres carry no scale, a depth-derived scale still gives the exact similarity."""
    gt = np.tile(np.eye(4), (3, 1, 1))
    sim = random_sim(5)
    window = apply_sim3_to_poses(sim3_inverse(sim), gt)
    s_true = float(np.cbrt(np.linalg.det(sim[:3, :3])))
    link = estimate_window_sim3(gt, window, method="auto", scale=s_true)
    assert link.method == "rotations" and link.scale == s_true
    np.testing.assert_allclose(link.sim, sim, atol=1e-9)


def test_ate_is_similarity_invariant_and_matches_definition():
    gt = gt_trajectory()
    assert ate_rmse(apply_sim3_to_poses(random_sim(1), gt), gt) < 1e-10
    noisy = perturb(gt, 3, sigma_t=0.01)
    s, r, t = umeyama(noisy[:, :3, 3], gt[:, :3, 3])  # our own Umeyama (roma) as the independent check
    expected = np.sqrt(((s * noisy[:, :3, 3] @ r.T + t - gt[:, :3, 3]) ** 2).sum(1).mean())
    assert abs(ate_rmse(noisy, gt) - expected) < 1e-12
    # SE(3) alignment cannot undo a scale change
    assert ate_rmse(apply_sim3_to_poses(sim3_matrix(2.0, np.eye(3), np.zeros(3)), gt), gt, with_scale=False) > 0.1


def test_rpe_delta_one():
    gt = gt_trajectory()
    assert rpe(to_evo(gt), to_evo(gt))["trans"]["rmse"] < 1e-12
    # one relative step altered: exactly one delta-1 pair is wrong by that amount (no alignment)
    est = gt.copy()
    bump = np.eye(4)
    bump[:3, :3] = Rotation.from_rotvec([0, 0, np.radians(2.0)]).as_matrix()
    bump[:3, 3] = [0.01, 0, 0]
    est[6:] = np.einsum("ij,njk->nik", est[5] @ bump @ np.linalg.inv(est[5]), est[6:])
    out = rpe(to_evo(est), to_evo(gt), align=False)
    errs_t = np.linalg.norm((np.linalg.inv(np.linalg.inv(gt[:-1]) @ gt[1:]) @ (np.linalg.inv(est[:-1]) @ est[1:]))[:, :3, 3], axis=1)
    assert np.count_nonzero(errs_t > 1e-9) == 1
    assert abs(out["rot_deg"]["max"] - 2.0) < 1e-9
    assert abs(out["trans"]["rmse"] - np.sqrt((errs_t ** 2).mean())) < 1e-12
    # a global similarity does not change the aligned RPE
    moved = rpe(to_evo(apply_sim3_to_poses(random_sim(4), est)), to_evo(gt))
    aligned = rpe(to_evo(est), to_evo(gt))
    assert abs(moved["trans"]["rmse"] - aligned["trans"]["rmse"]) < 1e-9
    assert abs(moved["rot_deg"]["rmse"] - aligned["rot_deg"]["rmse"]) < 1e-9


def test_trajectory_errors_pair_poses_by_stamp():
    gt = gt_trajectory()
    est = apply_sim3_to_poses(random_sim(2), perturb(gt, 5, sigma_t=0.005))
    stamps = np.arange(12, dtype=np.int64) * 100_000_000  # ns
    full = trajectory_errors(est, gt, stamps, stamps)
    # the estimate lacks two frames and its stamps are off by 0.2 ms: the other ten are matched
    part = trajectory_errors(est[2:], gt, stamps[2:] + 200_000, stamps)
    assert full["matched_poses"] == 12 and part["matched_poses"] == 10
    assert abs(part["ate_rmse"] - ate_rmse(est[2:], gt[2:])) < 1e-12
    with pytest.raises(ValueError):
        trajectory_errors(est, gt, stamps + 10**9 * 100, stamps)  # nothing within 1 ms


def test_rotation_angle():
    for ang in (0.0, 1e-4, 0.5, 90.0, 179.9):
        rot = Rotation.from_rotvec(np.radians(ang) * np.array([0.6, 0.0, 0.8])).as_matrix()
        assert abs(rotation_angle_deg(rot) - ang) < 1e-7
