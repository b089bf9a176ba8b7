"""The shipped easi3r-tiny model: present, loadable, calibrated, and no worse than its model card states."""
import json
import math

import numpy as np
import pytest

from easi3r_ros.model.checkpoint import CheckpointError
from easi3r_ros.model.default import (CALIBRATION_FILE, DEFAULT_MODEL_DIR, calibrated_overrides, default_model_path,
                                      load_calibration)

# JM of a pass-2 mask moves by one k-means cluster or one Otsu bin when float noise differs between CPUs;
# 0.05 is the regression guard's allowance for that (a real regression costs far more than that).
JM_TOLERANCE = 0.05
# The shipped model must predict depth clearly better than random weights of its architecture.
DEPTH_MARGIN = 0.03


def test_shipped_model_is_complete():
    path = default_model_path()
    assert path == DEFAULT_MODEL_DIR, "easi3r_ros/weights/easi3r_tiny lacks config.json or model.safetensors"
    assert (path / "model.safetensors").stat().st_size <= 30 * 2 ** 20
    card = (path / "MODEL_CARD.md").read_text()
    assert "official DUSt3R / MonST3R checkpoints" in card and "Licence" in card
    level = load_calibration(path)["motion_guard_level"]
    assert math.isfinite(level) and level > 0
    assert calibrated_overrides(path) == {"motion_guard_level": level}
    figures = json.loads((path / "regression.json").read_text())["figures"]
    assert f"{figures['JM']:.3f}" in card  # the card states what the regression guard checks


def test_calibration_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    assert calibrated_overrides(folder) == {}
    (folder / CALIBRATION_FILE).write_text(json.dumps({"motion_guard_level": 0.5, "note": "x"}))
    assert calibrated_overrides(folder) == {"motion_guard_level": 0.5}
    pth = tmp_path / "net.pth"
    (tmp_path / "net.calibration.json").write_text(json.dumps({"motion_guard_level": "high"}))
    with pytest.raises(CheckpointError, match="finite number"):
        calibrated_overrides(pth)
    (tmp_path / "net.calibration.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        calibrated_overrides(pth)


@pytest.mark.slow
def test_default_model_regression_guard():
    """Re-measure the figures the model card states (two short held-out sequences, about a minute)."""
    from easi3r_ros.eval.bench import regression_figures

    path = default_model_path()
    stated = json.loads((path / "regression.json").read_text())["figures"]
    got = regression_figures(path)
    assert got["JM"] >= stated["JM"] - JM_TOLERANCE, (got, stated)
    assert got["abs_rel"] <= got["random_abs_rel"] - DEPTH_MARGIN, got


@pytest.mark.slow
def test_run_uses_the_shipped_model(tmp_path):
    from easi3r_ros.cli import main
    from easi3r_ros.synthetic import make_sequence, write_sequence

    seq = make_sequence(3, n_frames=4, hw=(96, 128), n_moving=1, split="heldout")
    folder = write_sequence(seq, tmp_path / "seq")
    out = tmp_path / "out"
    assert main(["run", str(folder / "rgb"), "--out", str(out), "--niter", "5", "--quiet"]) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["random_weights"] is False and info["model"] == "easi3r-tiny"
    assert info["config"]["motion_guard_level"] == pytest.approx(load_calibration(DEFAULT_MODEL_DIR)["motion_guard_level"])
    assert np.loadtxt(out / "poses_tum.txt").shape == (4, 8)


def test_bf16_keeps_the_masks_of_fp32_with_the_cross_attention_in_fp32():
    """Reduced precision with the shipped model (benchmarks/precision.py): bf16 everywhere after the encoder moves
    the pass-2 masks (IoU 0.970 against fp32 on this window, AVX-512/AMX CPU); with the cross-attention in fp32
    (the default) they stay (0.9976; the issue's aim is 0.99)."""
    import torch

    from easi3r_ros.eval.masks import jaccard
    from easi3r_ros.eval.scenes import make_window
    from easi3r_ros.model.checkpoint import load_checkpoint
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    net = load_checkpoint(default_model_path())[0]
    scene = make_window(8, size=(288, 384), pan_px=6, object_px=12, noise=1.0, seed=3)
    masks = {}
    with torch.no_grad():
        for precision in ("fp32", "bf16"):
            cfg = preset_config("reference", niter=5, keep_arrays=True, device="cpu", precision=precision)
            assert cfg.keep_fp32 == "cross-attention"
            masks[precision] = WindowPipeline(net, cfg).run(scene.frames, frame_ids=range(8)).arrays["pass2_dynamic_masks"]
    assert masks["fp32"].any(axis=(1, 2)).all()          # the object is found in every frame
    assert min(jaccard(a, b) for a, b in zip(masks["bf16"], masks["fp32"])) >= 0.99
