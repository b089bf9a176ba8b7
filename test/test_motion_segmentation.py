"""Segmentation (spec §7, §8) against the reference fixtures, fed with their own tokens and dynamic maps."""
import numpy as np
import pytest
import torch

from easi3r_ros.motion.segmentation import (SegmentationError, adaptive_multiotsu, cluster_tokens,
                                            refine_by_clusters, segment_dynamic, threshold_masks, token_mask,
                                            upsample)
from test_motion_aggregation import CASES, PIPELINE_FIXTURES, arrays

# fixture README §7: labels exact, refined atol 1e-6, tau atol 1e-6, masks exact.
# Measured: everything bit-identical (labels, refined map, tau, masks) on all fixtures and passes.


@pytest.mark.fixtures
@pytest.mark.parametrize("name,p", CASES)
def test_segmentation_matches_fixture(name, p):
    a = arrays(name)
    h, w = (int(v) for v in a["input_hw"])
    r = segment_dynamic(a[p + "dynamic_map"], a["encoder_feat"], (h, w), kmeans_threads=1)
    np.testing.assert_array_equal(r.labels, a[p + "cluster_labels"])
    assert np.abs(r.refined - a[p + "refined_dynamic_map"]).max() <= 1e-6
    assert abs(r.threshold - float(a[p + "otsu_threshold"])) <= 1e-6
    np.testing.assert_array_equal(r.masks, a[p + "dynamic_masks"])
    assert r.masks.dtype == bool and r.masks.shape == a[p + "dynamic_masks"].shape
    # stage by stage, each fed with the fixture's own input
    assert np.abs(refine_by_clusters(a[p + "dynamic_map"], a[p + "cluster_labels"])
                  - a[p + "refined_dynamic_map"]).max() <= 1e-6
    up = upsample(a[p + "refined_dynamic_map"], (h, w))
    tau, k = adaptive_multiotsu(up)
    assert k in (2, 3, 4) and abs(tau - float(a[p + "otsu_threshold"])) <= 1e-6
    np.testing.assert_array_equal(threshold_masks(up, tau), a[p + "dynamic_masks"])
    out = r.as_numpy(p)
    assert set(out) == {p + "cluster_labels", p + "refined_dynamic_map", p + "otsu_threshold", p + "dynamic_masks"}


@pytest.mark.fixtures
@pytest.mark.parametrize("name", PIPELINE_FIXTURES[:3])
def test_torch_kmeans_agrees_with_reference(name):
    """The torch k-means (sklearn's k-means++ draw + torch Lloyd) — measured: identical labels on every fixture."""
    a = arrays(name)
    labels = cluster_tokens(torch.from_numpy(a["encoder_feat"]), method="torch")
    np.testing.assert_array_equal(labels, a["pass1_cluster_labels"])
    h, w = (int(v) for v in a["input_hw"])
    r = segment_dynamic(a["pass2_dynamic_map"], None, (h, w), labels=labels)
    np.testing.assert_array_equal(r.masks, a["pass2_dynamic_masks"])


@pytest.mark.fixtures
def test_labels_reuse_between_passes():
    a = arrays("ga_synthetic_geometry")
    h, w = (int(v) for v in a["input_hw"])
    # the encoder tokens are the same in both passes: pass 2 may reuse pass 1's clustering
    np.testing.assert_array_equal(a["pass1_cluster_labels"], a["pass2_cluster_labels"])
    r = segment_dynamic(a["pass2_dynamic_map"], None, (h, w), labels=a["pass1_cluster_labels"])
    np.testing.assert_array_equal(r.masks, a["pass2_dynamic_masks"])


def test_otsu_tie_and_degenerate_inputs():
    # constant map: no threshold exists → empty masks, no exception
    tau, k = adaptive_multiotsu(np.full((2, 8, 8), 0.5, np.float32))
    assert k == 0
    assert not threshold_masks(np.full((2, 8, 8), 0.5, np.float32), tau).any()
    # two values only: classes=3/4 impossible, k=2 is chosen
    v = np.r_[np.zeros(50), np.ones(50)].astype(np.float32)
    tau, k = adaptive_multiotsu(v)
    assert k == 2 and 0 <= tau < 1 and threshold_masks(v, tau).sum() == 50
    with pytest.raises(SegmentationError):
        adaptive_multiotsu(np.zeros(0))


def test_small_window_fewer_tokens_than_clusters():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(2, 4, 4, 8)).astype(np.float32)  # 32 tokens < 64 clusters
    d = rng.random((2, 4, 4)).astype(np.float32)
    r = segment_dynamic(d, feat, (64, 64), kmeans_threads=1)
    assert r.labels.max() < 32 and r.masks.shape == (2, 64, 64)


def test_shape_errors():
    with pytest.raises(SegmentationError, match="encoder"):
        segment_dynamic(np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 4, 8), np.float32), (48, 48))
    with pytest.raises(SegmentationError):
        refine_by_clusters(np.zeros((2, 3, 3)), np.zeros((2, 3, 4), np.int64))
    with pytest.raises(SegmentationError, match="k-means"):
        cluster_tokens(np.zeros((1, 2, 2, 3), np.float32), method="faiss")


@pytest.mark.fixtures
def test_token_mask_maxpool():
    m = np.zeros((2, 32, 48), bool)
    m[0, 17, 40] = True  # token (1, 2)
    m[1, 0:16, 0:16] = True  # token (0, 0)
    t = token_mask(m)
    assert t.shape == (2, 2, 3)
    assert t[0].nonzero() == (np.array([1]), np.array([2]))
    assert t[1].sum() == 1 and t[1, 0, 0]
    assert token_mask(m[0]).shape == (1, 2, 3)
    # the pass-2 re-weighting masks of the fixtures pool to tokens consistently
    a = arrays("tiny_dpt_synthetic")
    tm = token_mask(a["pass1_dynamic_masks"])
    assert tm.shape == a["pass1_cluster_labels"].shape
    assert tm.mean() >= a["pass1_dynamic_masks"].mean()
    with pytest.raises(SegmentationError, match="multiple"):
        token_mask(np.zeros((1, 20, 32), bool))


@pytest.mark.fixtures
def test_torch_kmeanspp_init_on_the_device():
    """The device-side k-means++ (used on CUDA): another draw of the same algorithm — deterministic for a seed,
    distinct data points as centres, and Lloyd from it reaches the inertia of scikit-learn's start (±3 %)."""
    from easi3r_ros.motion.segmentation import torch_kmeans, torch_kmeanspp_init

    feat = torch.from_numpy(arrays(PIPELINE_FIXTURES[0])["encoder_feat"]).float()
    x = feat.reshape(-1, feat.shape[-1])
    xc = x - x.mean(0)
    c1, c2 = torch_kmeanspp_init(xc, 64, seed=0), torch_kmeanspp_init(xc, 64, seed=0)
    assert torch.equal(c1, c2) and len(torch.unique(c1, dim=0)) == 64
    assert (c1[:, None, :] == xc[None]).all(-1).any(1).all()   # each centre is a data point

    def inertia(labels):
        labels = torch.as_tensor(labels)
        centres = torch.zeros(64, x.shape[1]).index_add_(0, labels, x) / torch.bincount(labels, minlength=64).clamp_min(1)[:, None]
        return float(((x - centres[labels]) ** 2).sum())

    ref = inertia(torch_kmeans(x, 64, init="sklearn"))
    for seed in (0, 1, 2):
        assert inertia(torch_kmeans(x, 64, seed=seed, init="torch")) <= 1.03 * ref
    with pytest.raises(SegmentationError):
        torch_kmeans(x, 64, init="random")
