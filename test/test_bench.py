"""The ground-truth benchmark (easi3r eval bench) and its metrics: trajectories (evo), depth, masks, guard threshold."""
import json

import numpy as np
import pytest
import torch

from easi3r_ros.align.sim3 import apply_sim3_to_poses, sim3_matrix
from easi3r_ros.eval.bench import ROWS, BenchConfig, calibrate_threshold, mask_metrics, resolve_model, run_bench
from easi3r_ros.eval.depth import depth_errors, median_scaled_errors, to_network_resolution
from easi3r_ros.eval.trajectory import still_camera_errors, trajectory_errors
from easi3r_ros.model.checkpoint import random_network, save_checkpoint
from easi3r_ros.model.preprocess import preprocess_image
from easi3r_ros.synthetic import make_sequence


@pytest.fixture(scope="module")
def sequence():
    return make_sequence(0, n_frames=6, hw=(96, 128), n_moving=2, split="heldout")


def test_ate_of_a_similarity_moved_ground_truth_is_zero(sequence):
    from scipy.spatial.transform import Rotation

    gt = sequence.cam_to_world
    sim = sim3_matrix(2.7, Rotation.from_rotvec([0.4, -1.1, 0.3]).as_matrix(), [3.0, -1.0, 0.5])
    out = trajectory_errors(apply_sim3_to_poses(sim, gt), gt, sequence.stamps_ns, sequence.stamps_ns)
    assert out["matched_poses"] == len(gt)
    assert out["ate_rmse"] < 1e-9 and out["rpe_trans_rmse"] < 1e-9 and out["rpe_rot_deg_rmse"] < 1e-6
    # a straight camera path (rank-deficient for evo's Umeyama) still aligns exactly
    line = np.tile(np.eye(4), (5, 1, 1))
    line[:, 0, 3] = np.arange(5) * 0.1
    assert trajectory_errors(apply_sim3_to_poses(sim, line), line)["ate_rmse"] < 1e-9
    # the still camera: ATE = spread of the true positions about their mean
    still = still_camera_errors(gt)
    spread = np.sqrt(((gt[:, :3, 3] - gt[:, :3, 3].mean(0)) ** 2).sum(1).mean())
    assert abs(still["ate_rmse"] - spread) < 1e-12


def test_all_dynamic_masks_score_the_moving_share(sequence):
    gt = list(sequence.dynamic)
    out = mask_metrics([np.ones_like(g) for g in gt], gt)
    np.testing.assert_allclose(out["J"], [g.mean() for g in gt], rtol=1e-12)
    assert mask_metrics(gt, gt)["JM"] == 1.0 and mask_metrics(gt, gt)["FM"] == 1.0
    assert mask_metrics([np.zeros_like(g) for g in gt], gt)["empty"]


def test_depth_metrics_of_ground_truth_against_itself(sequence):
    depth = list(sequence.depth)
    out = depth_errors(depth, depth)
    assert out["abs_rel"] == 0.0 and out["delta_1_25"] == 1.0 and out["frames"] == len(depth)
    scaled = median_scaled_errors(3.7 * depth[0], depth[0])  # monocular scale is free: median scaling undoes it
    assert scaled["abs_rel"] < 1e-6 and scaled["delta_1_25"] == 1.0 and abs(scaled["scale"] * 3.7 - 1) < 1e-6
    flat = median_scaled_errors(np.ones_like(depth[0]), depth[0])
    assert 0 < flat["abs_rel"] < 1 and flat["delta_1_25"] < 1
    assert np.isnan(median_scaled_errors(depth[0], np.zeros_like(depth[0]))["abs_rel"])  # no valid pixel


def test_ground_truth_follows_the_network_crop():
    h0, w0 = 240, 320
    xs = np.tile(np.arange(w0, dtype=np.float32), (h0, 1))
    _, crop = preprocess_image(np.zeros((h0, w0, 3), np.uint8), 224)
    out = to_network_resolution(xs, crop)
    assert out.shape == crop.network_hw == (224, 224)
    # the centre crop keeps the middle columns: 224 of 299 resized columns, i.e. x ≈ 30..290 of 320
    assert abs(out[:, 0].mean() - 37 * w0 / 299) < 2 and abs(out[:, -1].mean() - 260 * w0 / 299) < 2
    mask = to_network_resolution(xs > 160, crop)
    assert mask.dtype == bool and abs(mask.mean() - 0.5) < 0.02


def test_guard_threshold_calibration():
    sep = calibrate_threshold([0.02, 0.03, 0.05], [0.12, 0.2, 0.3], default=0.07)
    assert sep["separable"] and abs(sep["threshold"] - np.sqrt(0.05 * 0.12)) < 1e-12
    assert sep["static_called_moving"] == 0 and sep["moving_called_static"] == 0
    assert sep["at_default"] == {"threshold": 0.07, "static_called_moving": 0.0, "moving_called_static": 0.0}
    # overlapping scores: the least balanced error (0 static called moving, 1 of 4 moving called static)
    mixed = calibrate_threshold([0.02, 0.1], [0.05, 0.2, 0.3, 0.4])
    assert not mixed["separable"] and abs(mixed["threshold"] - np.sqrt(0.1 * 0.2)) < 1e-12
    assert mixed["static_called_moving"] == 0.0 and mixed["moving_called_static"] == 0.25


def test_without_a_default_model_the_bench_says_what_to_pass(monkeypatch, tmp_path):
    import easi3r_ros.model.default as default
    from easi3r_ros.eval.cli import main

    monkeypatch.setattr(default, "default_model_path", lambda: None)
    with pytest.raises(SystemExit, match="easi3r eval bench: error: .*--checkpoint.*--random-weights"):
        main(["bench", "--quick", "--quiet", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_quick_bench_produces_every_row(tmp_path):
    torch.set_num_threads(1)
    net, _ = random_network("tiny-224-linear", 3)
    ckpt = save_checkpoint(net, tmp_path / "model", fmt="huggingface")
    model = resolve_model(ckpt, None)
    cfg = BenchConfig(sequences=1, static=1, frames=4, hw=(96, 128), niter=3, real_clip=None, montage_sequences=1)
    out = run_bench(model, cfg, tmp_path / "report")
    assert set(out["summary"]) == set(ROWS)
    kinds = [s["kind"] for s in out["sequences"]]
    assert kinds == ["dynamic", "static"]
    for row, r in out["summary"].items():
        assert all(np.isfinite(v) for v in r.values()), (row, r)
    expected = {"easi3r": ("JM", "ate_rmse", "abs_rel"), "easi3r_pass1": ("JM",),
                "no_reweight": ("ate_rmse", "abs_rel"), "random": ("JM", "ate_rmse", "abs_rel"),
                "flow": ("JM", "static_empty"),
                "no_network": ("ate_rmse", "rpe_rot_deg_rmse", "abs_rel", "delta_1_25")}
    for row, keys in expected.items():
        assert set(keys) <= set(out["summary"][row]), row
    assert out["summary"]["all_static"]["static_empty"] == 1.0 and out["summary"]["all_dynamic"]["static_empty"] == 0.0
    assert len(out["guard"]["static_scores"]) == 1 and len(out["guard"]["moving_scores"]) == 1
    report = tmp_path / "report"
    assert (report / "montage.png").stat().st_size > 1000
    text = (report / "quality.md").read_text()
    assert "Machine:" in text and model.sha256 in text and ROWS["flow"] in text
    data = json.loads((report / "quality.json").read_text())
    assert data["model"]["sha256"] == model.sha256 and len(data["sequences"]) == 2
    calibration = json.loads((report / "calibration.json").read_text())
    assert calibration["motion_guard_level"] == out["guard"]["threshold"]


def test_without_reweighting_pass_two_sees_pass_one_attention():
    """WindowConfig(reweight=False): pass 2 decodes exactly as pass 1 (plain DUSt3R); True re-weights it."""
    from easi3r_ros.eval.scenes import make_window
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    torch.set_num_threads(1)
    net, _ = random_network("tiny-224-linear", 0)
    frames = make_window(4, size=(96, 128), pan_px=2, object_px=5, object_radius=20, seed=3).frames
    maps = {}
    for reweight in (False, True):
        res = WindowPipeline(net, preset_config("reference", niter=0, keep_arrays=True, reweight=reweight)).run(frames)
        assert res.arrays["pass1_dynamic_masks"].any()  # something to re-weight
        maps[reweight] = (res.arrays["pass1_cross_atten_maps_k_view1"], res.arrays["pass2_cross_atten_maps_k_view1"])
    np.testing.assert_allclose(maps[False][1], maps[False][0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(maps[True][1], maps[True][0], rtol=1e-3, atol=1e-4)
