"""Global alignment with calibrated intrinsics: fx ≠ fy and an off-centre principal point held fixed,
on exact pairwise pointmaps of a known scene; and the camera model's map to network pixels."""
import numpy as np
import pytest

from easi3r_ros.align.global_alignment import align_window
from easi3r_ros.eval.trajectory import ate_rmse
from easi3r_ros.io.camera_model import CameraModel, CameraModelError
from easi3r_ros.model.preprocess import preprocess_image
from easi3r_ros.pipeline.scene_graph import make_edges

H, W = 24, 32
FX, FY, CX, CY = 30.0, 36.0, 13.0, 10.5


def backproject(depth, fx, fy, cx, cy):
    v, u = np.mgrid[:H, :W].astype(np.float64)
    return np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)


def scene(n=5):
    """Frames looking at a bumpy wall from a sideways-moving, slightly turning camera."""
    poses, depths = [], []
    for k in range(n):
        a = 0.04 * k
        pose = np.eye(4)
        pose[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        pose[:3, 3] = [0.15 * k, 0.02 * k, 0.0]
        poses.append(pose)
    # depth by ray casting the wall z = 3 + 0.3 sin(x) cos(y) (a few fixed-point iterations)
    for pose in poses:
        rays = backproject(np.ones((H, W)), FX, FY, CX, CY)
        d = np.full((H, W), 3.0)
        for _ in range(30):
            p = d[..., None] * rays @ pose[:3, :3].T + pose[:3, 3]
            wall = 3 + 0.3 * np.sin(2 * p[..., 0]) * np.cos(2 * p[..., 1])
            dirz = (rays @ pose[:3, :3].T)[..., 2]
            d = (wall - pose[2, 3]) / dirz
        depths.append(d)
    return np.array(poses), np.array(depths)


def pairwise(poses, depths, edges):
    p1, p2 = [], []
    for i, j in edges:
        pi = backproject(depths[i], FX, FY, CX, CY)
        pj = backproject(depths[j], FX, FY, CX, CY)
        rel = np.linalg.inv(poses[i]) @ poses[j]
        p1.append(pi)
        p2.append(pj @ rel[:3, :3].T + rel[:3, 3])
    conf = np.full((len(edges), H, W), 3.0, np.float32)
    return np.array(p1, np.float32), conf, np.array(p2, np.float32), conf


def test_known_intrinsics_are_held_and_give_the_true_trajectory():
    poses, depths = scene()
    edges = make_edges("swinstride-3", len(poses))
    p1, c1, p2, c2 = pairwise(poses, depths, edges)
    known = align_window(p1, c1, p2, c2, edges, len(poses), niter=150, intrinsics=(FX, FY, CX, CY))
    np.testing.assert_allclose(known.intrinsics[0], [[FX, 0, CX], [0, FY, CY], [0, 0, 1]], rtol=1e-6)
    assert known.focal == pytest.approx(FX)
    estimated = align_window(p1, c1, p2, c2, edges, len(poses), niter=150)
    ate_known = ate_rmse(known.poses_c2w, poses)
    ate_est = ate_rmse(estimated.poses_c2w, poses)
    path = np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3])
    # exact pointmaps with the true K: poses to a fraction of a percent of the path; the estimated
    # single centred focal cannot describe this camera and does clearly worse
    assert ate_known < 0.01 * path, (ate_known, path)
    assert ate_est > 2 * ate_known, (ate_est, ate_known)
    # depth of frame 0 is the true one up to the window's scale
    ratio = known.depths[0] / depths[0]
    assert np.std(ratio) / np.mean(ratio) < 0.01


def test_camera_model_round_trips_through_the_network_crop():
    rgb = np.zeros((240, 320, 3), np.uint8)
    _, crop = preprocess_image(rgb, 224)
    cam = CameraModel(250.0, 260.0, 161.2, 118.4, 320, 240)
    net = cam.network_intrinsics(crop)
    k = np.array([[net[0], 0, net[2]], [0, net[1], net[3]], [0, 0, 1]])
    np.testing.assert_allclose(crop.intrinsics_to_camera(k), cam.K, atol=1e-9)
    with pytest.raises(CameraModelError, match="320x240"):
        CameraModel(250.0, 260.0, 160, 120, 640, 480).network_intrinsics(crop)


def test_camera_model_errors_and_distortion():
    with pytest.raises(CameraModelError, match="not supported"):
        CameraModel(100, 100, 50, 40, 100, 80, "equidistant", (0.1, 0.0, 0.0, 0.0))
    with pytest.raises(CameraModelError, match="positive"):
        CameraModel(0, 100, 50, 40, 100, 80)
    with pytest.raises(CameraModelError, match="four numbers"):
        CameraModel.parse("100,100,50", 100, 80)
    flat = CameraModel(100, 100, 50, 40, 100, 80, "plumb_bob", (0.0,) * 5)
    assert not flat.distorted
    cam = CameraModel(90, 95, 50.5, 39.0, 100, 80, "plumb_bob", (-0.2, 0.05, 0.001, -0.001, 0.0))
    rgb = (np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8)
    import cv2
    smooth = cv2.GaussianBlur(rgb, (0, 0), 4)
    # undistorting and mapping back is the identity away from the border
    back = cam.to_raw(cam.undistort(smooth))
    assert np.abs(back[15:65, 20:80].astype(float) - smooth[15:65, 20:80]).mean() < 1.0
    # a mask keeps its area to within the lens's local magnification
    mask = np.zeros((80, 100), bool)
    mask[30:50, 40:60] = True
    assert abs(int(cam.to_raw(mask).sum()) - 400) < 80
