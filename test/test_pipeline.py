"""The window pipeline end to end: reference fixtures through the public API, the guard, work reuse."""
import glob

import numpy as np
import pytest

from easi3r_ros.eval.scenes import make_window
from easi3r_ros.model.checkpoint import random_network
from easi3r_ros.model.preprocess import load_rgb, preprocess_image
from easi3r_ros.motion.segmentation import upsample
from easi3r_ros.pipeline.window import WindowConfig, WindowError, WindowPipeline, preset_config
from fixtures import load_fixture

RAW = ("attn_k_i_mean_raw", "attn_k_i_std_raw", "attn_k_j_mean_raw", "attn_k_j_std_raw")
FUSED = ("attn_k_i_mean_fused", "attn_k_i_std_fused", "attn_k_j_mean_fused", "attn_k_j_std_fused")


def iou(a, b):
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def run_fixture(name, niter=5):
    ref, meta, path = load_fixture(name)
    net, _ = random_network(meta["weights"]["model_str"], meta["weights"]["seed"])
    frames = [load_rgb(f) for f in sorted(glob.glob(str(path / "frames" / "*.png")))]
    result = WindowPipeline(net, WindowConfig(niter=niter, keep_arrays=True)).run(frames, frame_ids=range(len(frames)))
    return ref, result


def assert_matches_reference(ref, ours):
    """Issue acceptance: raw/fused/dynamic maps rel err <= 1e-4, tau within 1e-4, labels equal, masks IoU >= 0.99."""
    np.testing.assert_array_equal(ours["edges"], ref["edges"])
    np.testing.assert_array_equal(ours["input_imgs"], ref["input_imgs"])
    for p in ("pass1", "pass2"):
        for key in RAW + FUSED + ("dynamic_map",):
            a, b = ours[f"{p}_{key}"], ref[f"{p}_{key}"]
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), (p, key)
        np.testing.assert_array_equal(ours[f"{p}_cluster_labels"], ref[f"{p}_cluster_labels"])
        assert abs(float(ours[f"{p}_otsu_threshold"]) - float(ref[f"{p}_otsu_threshold"])) <= 1e-4
        for n, (a, b) in enumerate(zip(ours[f"{p}_dynamic_masks"], ref[f"{p}_dynamic_masks"])):
            assert iou(a, b) >= 0.99, (p, n, iou(a, b))
    np.testing.assert_allclose(ours["conf"], ref["conf"], rtol=2e-4)


@pytest.mark.fixtures
def test_tiny_linear_window_matches_reference():
    ref, result = run_fixture("tiny_linear_vtest")
    assert_matches_reference(ref, result.arrays)
    assert result.moving and all(f.mask_camera.shape == (288, 384) for f in result.frames)
    # Exact except pixels whose map value is within float noise of the threshold: with ATen/oneDNN AVX2 kernels
    # (or MKL's Intel kernels) 3 pass-2 pixels at <= 1.1e-6 from tau flip; the refined map's own error is
    # <= 8.5e-6 (benchmarks/results/tolerance_spread.md). Bound 1e-5: above both.
    masks = np.stack([f.mask for f in result.frames])
    differ = masks != ref["pass2_dynamic_masks"]
    margin = np.abs(upsample(result.arrays["pass2_refined_dynamic_map"], masks.shape[1:])
                    - float(result.arrays["pass2_otsu_threshold"]))
    assert (margin[differ] <= 1e-5).all(), (differ.sum(), margin[differ].max())


@pytest.mark.fixtures
@pytest.mark.slow
def test_tiny_dpt_window_matches_reference():
    ref, result = run_fixture("tiny_dpt_synthetic", niter=2)
    assert_matches_reference(ref, result.arrays)
    assert all(f.mask_camera.shape == (360, 640) for f in result.frames)


@pytest.fixture(scope="module")
def tiny():
    return random_network("tiny-224-linear", 0)[0]


def test_nothing_moves_guard(tiny):
    """Robot preset: a still camera on a static scene (sensor noise only) gives empty masks, where the
    reference preset, like the original, always splits off a foreground; a moving object is kept by both."""
    still = make_window(6, pan_px=0, object_px=0, noise=2.0, seed=0).frames
    moving = make_window(6, pan_px=0, object_px=12, noise=2.0, seed=0).frames
    for preset in ("reference", "robot"):
        pipe = WindowPipeline(tiny, preset_config(preset, niter=2))
        r_still, r_moving = pipe.run(still), pipe.run(moving)
        assert r_moving.moving and any(f.mask.any() for f in r_moving.frames)
        if preset == "reference":
            assert r_still.moving and any(f.mask.any() for f in r_still.frames)
        else:
            assert not r_still.moving and not any(f.mask.any() or f.mask_camera.any() for f in r_still.frames)
        assert r_still.motion_score < r_moving.motion_score


def test_overlapping_windows_reuse_encodings_and_pass1_pairs(tiny):
    frames = make_window(8, pan_px=4, object_px=10, noise=1.0, seed=3).frames
    pipe = WindowPipeline(tiny, WindowConfig(niter=2, keep_arrays=True))
    pipe.run(frames[:6], frame_ids=range(6))
    before = pipe.stats.encoded, pipe.stats.pairs_decoded
    second = pipe.run(frames[2:], frame_ids=range(2, 8))
    assert pipe.stats.encoded - before[0] == 2  # only frames 6 and 7 are new
    # pairs among frames 2..5 were decoded by the first window: (2,3),(3,4),(4,5),(2,5) both ways
    assert pipe.stats.pairs_reused == 8 and pipe.stats.pairs_decoded - before[1] == 10
    fresh = WindowPipeline(tiny, WindowConfig(niter=2, keep_arrays=True)).run(frames[2:])
    for key in ("pass1_cross_atten_maps_k_view1", "pass1_dynamic_map", "pass2_dynamic_masks", "encoder_feat"):
        np.testing.assert_allclose(second.arrays[key], fresh.arrays[key], atol=1e-6)


def test_window_outputs_are_consistent(tiny):
    frames = make_window(5, size=(240, 320), pan_px=5, object_px=10, seed=1).frames
    result = WindowPipeline(tiny, WindowConfig(niter=20)).run(frames, stamps_ns=[10 * k for k in range(5)])
    assert [f.stamp_ns for f in result.frames] == [0, 10, 20, 30, 40]
    for f in result.frames:
        assert f.mask.shape == f.depth.shape == f.confidence.shape == (224, 224)
        assert f.mask_camera.shape == (240, 320)
        assert np.allclose(f.cam_to_world[3], [0, 0, 0, 1]) and np.isfinite(f.cam_to_world).all()
        np.testing.assert_allclose(f.cam_to_world[:3, :3] @ f.cam_to_world[:3, :3].T, np.eye(3), atol=1e-5)
        # 320x240 -> resized 299x224 (short side 224), centre crop 224x224
        assert f.intrinsics_camera[1, 1] == pytest.approx(f.intrinsics[1, 1] * 240 / 224)
        assert f.intrinsics_camera[0, 0] == pytest.approx(f.intrinsics[0, 0] * 320 / 299)
        assert len(f.static_points) == len(f.static_colors) and np.isfinite(f.static_points).all()
        assert len(f.static_points) == int((~f.mask & (f.confidence > 3.0)).sum())


def test_window_errors(tiny):
    pipe = WindowPipeline(tiny)
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(WindowError, match="at least 3 frames"):
        pipe.run([frame, frame])
    with pytest.raises(WindowError, match="mixed sizes"):
        pipe.run([frame, frame, np.zeros((64, 80, 3), np.uint8)])
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("fast")


def test_window_with_a_calibrated_distorted_camera():
    from easi3r_ros.io.camera_model import CameraModel
    net, _ = random_network("tiny-224-linear", 0)
    rng = np.random.default_rng(0)
    frames = [(rng.random((120, 160, 3)) * 255).astype(np.uint8) for _ in range(4)]
    cam = CameraModel(140.0, 150.0, 82.0, 57.5, 160, 120, "plumb_bob", (-0.1, 0.02, 0.0, 0.0, 0.0))
    result = WindowPipeline(net, WindowConfig(niter=5)).run(frames, camera=cam)
    for f in result.frames:
        np.testing.assert_allclose(f.intrinsics_camera, cam.K)
        assert f.mask_camera.shape == (120, 160) and f.depth_camera.shape == (120, 160)
        # the alignment held the calibration, mapped to network pixels
        fx, fy, cx, cy = cam.network_intrinsics(preprocess_image(frames[0], 224)[1])
        np.testing.assert_allclose(f.intrinsics, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], rtol=1e-6)
        inside = np.isfinite(f.depth_camera)
        assert inside.mean() > 0.5 and (f.depth_camera[inside] > 0).all()
    with pytest.raises(Exception, match="640x480"):
        WindowPipeline(net, WindowConfig(niter=5)).run(frames, camera=CameraModel(1, 1, 1, 1, 640, 480))
