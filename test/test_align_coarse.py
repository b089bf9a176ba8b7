"""Coarse-to-fine global alignment (robot preset): the coarse problem's rays, the closed-form depths, and the
result against the full-resolution alignment, on problems whose true geometry is known."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from easi3r_ros.align.geometry import rigid_to_params
from easi3r_ros.align.global_alignment import DEPTH_MARGIN, FOCAL_BREAK, GlobalAligner, align_window
from easi3r_ros.eval.trajectory import ate_rmse
from easi3r_ros.pipeline.window import preset_config


def exact_problem(n=4, h=32, w=48, seed=0, noise=0.0, intrinsics=None):
    """Pointmaps of all ordered edges made from known depths, poses and intrinsics: P_i = frame i's points in
    camera i, P_j = frame j's points in camera i, plus Gaussian noise. Returns (inputs, truth)."""
    rng = np.random.default_rng(seed)
    fx, fy, cx, cy = intrinsics or (40.0, 40.0, w / 2, h / 2)
    v, u = np.mgrid[:h, :w].astype(np.float64)
    depths = np.stack([2.0 + 0.5 * np.sin(u / (5 + k) + k) * np.cos(v / 6) + 0.2 * rng.random((h, w))
                       for k in range(n)])
    cams = np.stack([depths * (u - cx) / fx, depths * (v - cy) / fy, depths], axis=-1)           # (n, h, w, 3)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for k in range(1, n):
        poses[k, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.08, 3)).as_matrix()
        poses[k, :3, 3] = rng.normal(0, 0.3, 3)
    world = cams @ poses[:, None, :3, :3].transpose(0, 1, 3, 2) + poses[:, None, None, :3, 3]
    edges = np.array([(i, j) for i in range(n) for j in range(n) if i != j])
    to_cam = lambda pts, i: (pts - poses[i, :3, 3]) @ poses[i, :3, :3]  # noqa: E731
    p1 = np.stack([cams[i] for i, _ in edges])
    p2 = np.stack([to_cam(world[j], i) for i, j in edges])
    p1, p2 = (p + noise * rng.standard_normal(p.shape) for p in (p1, p2))
    c1, c2 = (1.5 + 4 * rng.random(p.shape[:-1]) for p in (p1, p2))
    inputs = tuple(np.asarray(x, np.float32) for x in (p1, c1, p2, c2)) + (edges, n)
    return inputs, dict(poses=poses, depths=depths, focal=fx)


def set_truth(al: GlobalAligner, truth: dict, k: int = 1) -> None:
    """The aligner's variables at the true geometry in its gauge: edge scales have geometric mean 0.5, so the
    world is the true one times 0.5 (every edge similarity is camera i's pose at scale 0.5); ``k``: the
    aligner is the full problem's ``subsampled(k)``."""
    poses = torch.as_tensor(truth["poses"], dtype=torch.float32)
    with torch.no_grad():
        for f, pose in enumerate(poses):
            al.pose_params[f] = rigid_to_params(pose[:3, :3], 0.5 * pose[:3, 3])
        for e, (i, _) in enumerate(al.edges):
            al.edge_params[e] = rigid_to_params(poses[i, :3, :3], poses[i, :3, 3], scale=1.0)
        depths = truth["depths"][:, ::k, ::k]
        al.log_depths.copy_(torch.as_tensor(np.log(0.5 * depths), dtype=torch.float32).reshape(al.n_frames, -1))
        if al.known is None:
            al.focal_param.fill_(FOCAL_BREAK * math.log(truth["focal"] / k))


def loss(al: GlobalAligner) -> float:
    with torch.no_grad():
        return float(al.alignment_loss())


def test_coarse_step_divides_the_image_and_keeps_eight_pixels():
    def step(h, w, requested, flow=False):
        inputs, _ = exact_problem(n=2, h=h, w=w)
        fl = None
        if flow:
            e = len(inputs[4])
            fl = dict(flow_ij=np.zeros((e, 2, h, w), np.float32), flow_ji=np.zeros((e, 2, h, w), np.float32))
        return GlobalAligner(*inputs, flow=fl).coarse_step(requested)

    assert step(32, 48, 4) == 4
    assert step(32, 48, 8) == 4      # 32 / 8 leaves 4 rows
    assert step(30, 48, 4) == 3      # 4 does not divide 30
    assert step(32, 48, 1) == 1 and step(32, 48, 0) == 1
    assert step(32, 48, 4, flow=True) == 1   # the flow term is not resampled


@pytest.mark.parametrize("intrinsics", [None, (41.0, 37.5, 22.5, 17.25)])
def test_coarse_problem_sees_the_full_problem_rays(intrinsics):
    """Same variables on both grids: the coarse problem's world points are the full ones at every 4th pixel."""
    inputs, truth = exact_problem(intrinsics=intrinsics)
    full = GlobalAligner(*inputs, intrinsics=intrinsics)
    set_truth(full, truth)
    with torch.no_grad():
        full.log_depths.add_(0.1 * torch.randn(full.log_depths.shape, generator=torch.Generator().manual_seed(1)))
    coarse = full.subsampled(4)
    n, h, w = full.n_frames, full.height, full.width
    with torch.no_grad():
        coarse.pose_params.copy_(full.pose_params)
        coarse.focal_param.copy_(full.focal_param - FOCAL_BREAK * math.log(4))
        coarse.log_depths.copy_(full.log_depths.reshape(n, h, w)[:, ::4, ::4].reshape(n, -1))
        ours = coarse.world_points().reshape(n, h // 4, w // 4, 3)
        ref = full.world_points().reshape(n, h, w, 3)[:, ::4, ::4]
    assert (coarse.height, coarse.width) == (h // 4, w // 4)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=0, atol=1e-5)


def test_refit_recovers_the_depths_of_an_exact_problem():
    inputs, truth = exact_problem()
    al = GlobalAligner(*inputs)
    set_truth(al, truth)
    assert loss(al) < 1e-5   # the construction is the truth
    with torch.no_grad():
        al.log_depths.add_(0.3 * torch.randn(al.log_depths.shape, generator=torch.Generator().manual_seed(2)))
    assert loss(al) > 1e-2
    al.refit_depths(rounds=10)
    assert loss(al) < 1e-5
    np.testing.assert_allclose(al.depths().reshape(truth["depths"].shape).numpy(), 0.5 * truth["depths"], rtol=1e-4)


def test_refit_never_raises_the_loss_and_ends_at_each_pixels_minimum():
    """Noisy pointmaps: re-weighted least squares only lowers the loss, and converged, the loss's gradient with
    respect to every depth vanishes (each pixel at the minimum of its own convex problem)."""
    inputs, truth = exact_problem(noise=0.05, seed=3)
    al = GlobalAligner(*inputs)
    set_truth(al, truth)
    with torch.no_grad():
        al.log_depths.add_(0.2 * torch.randn(al.log_depths.shape, generator=torch.Generator().manual_seed(4)))

    def depth_gradient():
        al.log_depths.requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(al.alignment_loss_autograd(), [al.log_depths])
        al.log_depths.requires_grad_(False)
        return float(g.abs().max())

    before, grad_before = loss(al), depth_gradient()
    history = [before]
    for _ in range(10):
        al.refit_depths(rounds=1)
        history.append(loss(al))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(history, history[1:])), history
    assert history[-1] < 0.8 * before
    al.refit_depths(rounds=40)
    assert depth_gradient() < 1e-2 * grad_before


def test_refit_after_adopt_keeps_depths_near_their_coarse_neighbourhood():
    """A pixel whose pointmaps all put it 1000x too far (between coarse samples) stays within DEPTH_MARGIN of the
    coarse depths around it; the rest of the frame is solved exactly."""
    inputs, truth = exact_problem()
    p1, c1, p2, c2, edges, n = inputs
    p1, p2 = p1.copy(), p2.copy()
    y, x = 10, 13                      # not on the 4-pixel grid
    for e, (i, j) in enumerate(edges):
        if i == 0:
            p1[e, y, x] *= 1000
        if j == 0:                     # frame 0's point seen from camera i: pushed 1000x along camera 0's ray
            cam0 = p2[e, y, x] - (truth["poses"][0, :3, 3] - truth["poses"][i, :3, 3]) @ truth["poses"][i, :3, :3]
            p2[e, y, x] += 999 * cam0
    full = GlobalAligner(p1, c1, p2, c2, edges, n)
    coarse = full.subsampled(4)
    set_truth(coarse, truth, k=4)
    full.adopt(coarse, 4)
    full.refit_depths(rounds=10)
    depth = full.depths().reshape(truth["depths"].shape).numpy()
    # its coarse sample is (y // 4, x // 4) = (2, 3): the 3x3 neighbourhood is coarse rows 1-3, columns 2-4
    around = 0.5 * truth["depths"][0, 4:13:4, 8:17:4]
    assert around.min() / DEPTH_MARGIN <= depth[0, y, x] <= around.max() * DEPTH_MARGIN * (1 + 1e-5)
    assert depth[0, y, x] > around.max()                    # pushed to the bound, not left alone
    others = np.ones(depth.shape, bool)
    others[0, y, x] = False
    np.testing.assert_allclose(depth[others], 0.5 * truth["depths"][others], rtol=1e-3)
    # without the bounds the same refit follows the pointmaps out
    full.depth_bounds = None
    full.refit_depths(rounds=10)
    assert full.depths().reshape(truth["depths"].shape)[0, y, x] > 100 * around.max()


@pytest.mark.parametrize("intrinsics", [None, (44.0, 40.0, 31.0, 25.0)])
def test_coarse_to_fine_matches_the_full_resolution_alignment(intrinsics):
    """Noisy pointmaps of a known scene: the coarse-to-fine solution ends at the full-resolution loss (measured
    +0.4 %, +0.5 % on two scenes). Its poses rest on a sixteenth of the pixels: with this independent per-pixel
    noise their error is about 4x the full-resolution one (measured 3.8x, 5.0x; bound 6x); full-resolution
    steps after it bring them back (10 steps: 2.2x, 4.2x)."""
    inputs, truth = exact_problem(n=5, h=48, w=64, noise=0.02, seed=5, intrinsics=intrinsics)
    full = align_window(*inputs, niter=300, intrinsics=intrinsics, clean=False)
    c2f = align_window(*inputs, niter=300, intrinsics=intrinsics, clean=False, coarse=4)
    assert (full.coarse, c2f.coarse) == (1, 4)
    assert c2f.iterations == 300 and c2f.depths.shape == full.depths.shape
    assert c2f.final_loss <= 1.01 * full.final_loss
    ate_full, ate_c2f = ate_rmse(full.poses_c2w, truth["poses"]), ate_rmse(c2f.poses_c2w, truth["poses"])
    print(f"\nloss {c2f.final_loss / full.final_loss - 1:+.2e}, ATE full {ate_full:.3g}, coarse to fine {ate_c2f:.3g}")
    assert ate_c2f <= 6 * ate_full
    assert abs(c2f.focal / truth["focal"] - 1) < 0.02
    # a few full-resolution steps after it keep the loss where it was
    polished = align_window(*inputs, niter=300, intrinsics=intrinsics, clean=False, coarse=4, polish=10)
    assert polished.iterations == 310 and polished.final_loss <= 1.01 * full.final_loss
    assert ate_rmse(polished.poses_c2w, truth["poses"]) < ate_c2f


def test_coarse_to_fine_warm_start_from_the_solution():
    inputs, truth = exact_problem(n=5, h=48, w=64, noise=0.02, seed=6)
    from easi3r_ros.align.global_alignment import WarmStart
    first = align_window(*inputs, niter=100, clean=False)
    warm = WarmStart(frames=[1, 2, 3], poses_c2w=first.poses_c2w[1:4], pts3d=first.pts3d[1:4], focal=first.focal)
    res = align_window(*inputs, niter=100, clean=False, coarse=4, warm=warm, patience=10, rel_tol=0.01)
    assert res.coarse == 4 and res.warm_frames == [1, 2, 3]
    assert np.isfinite(res.poses_c2w).all() and res.final_loss <= 1.05 * first.final_loss


def test_presets_choose_the_alignment_grid():
    assert preset_config("reference").align_coarse == 1
    assert preset_config("robot").align_coarse == 4 and preset_config("robot").align_polish == 0
