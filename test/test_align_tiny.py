"""MST initialisation on the degenerate `tiny_*` fixtures (README §8): only `conf` and the tree part of
the initialisation are meaningful there.

These fixtures store no aligner inputs, so the pass-2 pointmaps are regenerated with this project's
network and window pipeline (about a minute for both on 2 cores).
Not compared: the focal (Weiszfeld on pointmaps with z ≈ 0 gives 1e-4 px and amplifies the network's
float noise: ours 3.6e-4 vs 3.5e-4, 2.6e-5 vs 1.0e-5), hence neither the PnP-placed frames nor the
initial loss.
"""
import glob

import numpy as np
import pytest

from fixtures import load_fixture

@pytest.mark.parametrize("name", ["tiny_linear_vtest", "tiny_dpt_synthetic"])
def test_tiny_fixture_conf_and_tree_init(name):
    import torch
    from easi3r_ros.align.global_alignment import GlobalAligner
    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.model.preprocess import load_rgb
    from easi3r_ros.pipeline.window import WindowConfig, WindowPipeline

    ref, meta, path = load_fixture(name)
    net, _ = random_network(meta["weights"]["model_str"], meta["weights"]["seed"])
    frames = [load_rgb(f) for f in sorted(glob.glob(str(path / "frames" / "*.png")))]
    arrays = WindowPipeline(net, WindowConfig(niter=1, keep_arrays=True)).run(frames, frame_ids=range(len(frames))).arrays
    np.testing.assert_array_equal(arrays["edges"], ref["edges"])
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        al = GlobalAligner(arrays["pass2_pred1_pts3d"], arrays["pass2_pred1_conf"],
                           arrays["pass2_pred2_pts3d_in_other_view"], arrays["pass2_pred2_conf"],
                           arrays["edges"], len(frames))
        np.testing.assert_allclose(al.conf.numpy(), ref["conf"], rtol=2e-4)
        al.init_mst()
    finally:
        torch.set_num_threads(old)
    poses = al.poses().numpy()
    ref_poses = ref["init_poses_c2w"]
    tree_placed = [n for n in range(len(frames)) if n not in al.mst.pnp_frames]
    for n in tree_placed:  # identity root, Umeyama-placed frames, and frames left at identity
        err = np.abs(poses[n] - ref_poses[n]) / (np.abs(ref_poses[n]) + 1)
        assert err.max() <= 2e-4, (n, err.max())
