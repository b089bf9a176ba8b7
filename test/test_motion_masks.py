"""window_masks: the whole motion stage in one call, against a fixture, with and without the guard."""
import numpy as np
import pytest

from easi3r_ros.motion import MotionGuard, window_masks
from easi3r_ros.motion.segmentation import token_mask
from test_motion_aggregation import arrays


@pytest.mark.fixtures
def test_window_masks_reference_and_guard():
    a = arrays("tiny_linear_vtest")
    hw = tuple(int(v) for v in a["input_hw"])
    args = (a["pass1_cross_atten_maps_k_view1"], a["pass1_cross_atten_maps_k_view2"], a["edges"], a["encoder_feat"], hw)
    m = window_masks(*args, prefix="pass1_", kmeans_threads=1)
    assert m.moving and m.decision is None and m.motion_score is None
    out = m.arrays()
    for k in ("pass1_dynamic_map", "pass1_cluster_labels", "pass1_refined_dynamic_map", "pass1_dynamic_masks"):
        np.testing.assert_array_equal(out[k], a[k])
    assert float(out["pass1_otsu_threshold"]) == float(a["pass1_otsu_threshold"])
    np.testing.assert_array_equal(m.token_masks, token_mask(a["pass1_dynamic_masks"]))
    assert 0.8 < m.stats["sigma_src_ratio"] < 1.25
    # pass 2 reusing pass 1's labels
    m2 = window_masks(a["pass2_cross_atten_maps_k_view1"], a["pass2_cross_atten_maps_k_view2"], a["edges"], None, hw,
                      labels=m.seg.labels, prefix="pass2_")
    np.testing.assert_array_equal(m2.masks, a["pass2_dynamic_masks"])
    # a guard that finds this (random-weight) window static empties the masks but keeps the reference ones
    g = window_masks(*args, labels=m.seg.labels, guard=MotionGuard(contrast_threshold=2.0))
    assert not g.moving and g.motion_score == m.stats["evidence_level"]
    assert g.decision.contrast == m.stats["sigma_src_ratio"] < 2.0
    assert not g.masks.any() and not g.token_masks.any() and g.seg.masks.any()
    assert window_masks(*args, labels=m.seg.labels, guard=MotionGuard(contrast_threshold=0.5)).masks.any()
