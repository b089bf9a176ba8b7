"""The "nothing moves" guard: mechanics on synthetic attention, behaviour on the fixtures.

Synthetic windows only check that the statistic responds to what it is designed to measure (a local
excess of edge-to-edge attention variability); they say nothing about real networks. The threshold
must be measured on real windows with real weights (see easi3r_ros.motion.guard).
"""
import numpy as np
import pytest

from easi3r_ros.motion.aggregation import aggregate_attention
from easi3r_ros.motion.guard import MotionGuard, motion_score, motion_statistics
from easi3r_ros.motion.segmentation import segment_dynamic, token_mask
from easi3r_ros.pipeline.scene_graph import swinstride_edges
from test_motion_aggregation import PIPELINE_FIXTURES, arrays

RAW = ("attn_k_i_mean_raw", "attn_k_i_std_raw", "attn_k_j_mean_raw", "attn_k_j_std_raw")


def _smooth_field(rng, h, w, c):
    f = rng.normal(size=(h + 4, w + 4, c))
    k = np.ones(5) / 5
    f = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), 0, f)
    f = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), 1, f)
    return f


def synthetic_window(moving: bool, identical: bool = False, n=8, h=12, w=16, c=4, seed=0):
    """Per-edge maps of a toy window: shared spatial pattern + smooth view-dependent change + noise;
    with ``moving``, a blob that travels across frames gets partner-dependent, lowered attention as a
    key (branch 1) and steadier, higher attention in branch 2 (the pattern D looks for)."""
    rng = np.random.default_rng(seed)
    edges = swinstride_edges(n, 5)
    base1, base2 = _smooth_field(rng, h, w, c), _smooth_field(rng, h, w, c)
    view1, view2 = _smooth_field(rng, h, w, c), _smooth_field(rng, h, w, c)
    feat = np.repeat(_smooth_field(rng, h, w, 16)[None], n, 0).astype(np.float32)
    blob = np.zeros((n, h, w), bool)
    if moving:
        for f in range(n):
            x0 = 2 + f
            blob[f, 4:8, x0:x0 + 4] = True
            feat[f, blob[f]] += 3.0  # the object's tokens look alike (as an encoder would make them)
    m1 = np.empty((len(edges), h, w, c), np.float32)
    m2 = np.empty_like(m1)
    for e, (i, j) in enumerate(edges):
        if identical:
            m1[e], m2[e] = base1, base2
            continue
        dv = (j - i) / n
        m1[e] = base1 + 0.3 * dv * view1 + 0.02 * rng.normal(size=(h, w, c))  # map on frame j
        m2[e] = base2 + 0.3 * dv * view2 + 0.02 * rng.normal(size=(h, w, c))  # map on frame i
        if moving:
            m1[e][blob[j]] -= 0.5 + 0.8 * rng.random()
            m2[e][blob[i]] += 0.6
    return m1, m2, edges, feat, blob


def window_stats(moving, identical=False, seed=0):
    m1, m2, edges, feat, blob = synthetic_window(moving, identical, seed=seed)
    agg = aggregate_attention(m1, m2, edges)
    n, h, w = agg.dynamic_map.shape
    seg = segment_dynamic(agg.dynamic_map, feat, (16 * h, 16 * w), n_clusters=16, kmeans_threads=1)
    fg = token_mask(seg.masks)
    return motion_statistics(agg.raw, fg, labels=seg.labels), seg, blob


def test_guard_separates_synthetic_static_and_moving():
    static = [window_stats(False, seed=s)[0] for s in range(3)]
    moving = [window_stats(True, seed=s)[0] for s in range(3)]
    s_static = [s["sigma_src_ratio"] for s in static]
    s_moving = [s["sigma_src_ratio"] for s in moving]
    # the reference masks are never empty, even for the static windows ...
    assert all(s["fg_fraction"] > 0 for s in static)
    # ... but the raw σ contrast is: static ≈ 1 (selection bias only), moving ≫ 1
    assert max(s_static) < 1.5 < 3 < min(s_moving), (s_static, s_moving)
    assert min(s["sigma_src_cluster_outlier"] for s in moving) > max(s["sigma_src_cluster_outlier"] for s in static)
    guard = MotionGuard(contrast_threshold=2.0)
    m1, m2, edges, feat, blob = synthetic_window(False)
    agg = aggregate_attention(m1, m2, edges)
    seg = segment_dynamic(agg.dynamic_map, feat, (192, 256), n_clusters=16, kmeans_threads=1)
    dec = guard.decide(agg.raw, token_mask(seg.masks))
    assert not dec.moving and dec.contrast < 2.0
    assert seg.masks.any() and not guard.apply(seg.masks, dec).any()


def test_moving_blob_found():
    stats, seg, blob = window_stats(True)
    tm = token_mask(seg.masks)
    assert (tm & blob).sum() / blob.sum() > 0.9  # the toy blob is recovered by the reference pipeline
    assert stats["sigma_src_ratio"] > 3


def test_identical_frames_are_static():
    stats, seg, _ = window_stats(False, identical=True)
    assert stats["sigma_src_median"] == 0
    assert stats["sigma_src_ratio"] < 1e-3
    assert stats["evidence_level"] == 0
    assert not MotionGuard(level_threshold=1e-3).decide(
        {k: np.zeros((2, 2, 2, 1)) for k in RAW}, np.ones((2, 2, 2), bool)).moving


def test_disabled_guard_and_errors():
    raw = {k: np.random.default_rng(0).random((2, 3, 3, 2)) for k in RAW}
    fg = np.zeros((2, 3, 3), bool)
    d = MotionGuard().decide(raw, fg)
    assert d.moving and d.level_threshold is None and not MotionGuard().enabled
    assert motion_score(raw, fg) == 0.0  # empty candidate mask
    with pytest.raises(ValueError, match="unknown guard statistic"):
        motion_score(raw, fg, statistic="nope")
    with pytest.raises(ValueError, match="token grid"):
        motion_statistics(raw, np.zeros((2, 4, 4), bool))
    with pytest.raises(KeyError):
        motion_statistics({}, fg)


@pytest.mark.fixtures
@pytest.mark.parametrize("name", PIPELINE_FIXTURES[:3])
def test_random_weight_fixtures_carry_no_motion_signal(name):
    """Measured on the fixtures' stored statistics (random weights): σ contrast ≈ 1 in every pass
    (0.997–1.044), i.e. the reference masks there are noise — the guard cannot be calibrated on them."""
    a = arrays(name)
    for p in ("pass1_", "pass2_"):
        raw = {p + k: a[p + k] for k in RAW}
        fg = a[p + "refined_dynamic_map"] > a[p + "otsu_threshold"]
        s = motion_statistics(raw, fg, labels=a[p + "cluster_labels"])
        assert 0.8 < s["sigma_src_ratio"] < 1.25, s
        assert np.isfinite([v for v in s.values() if not isinstance(v, np.ndarray)]).all()
