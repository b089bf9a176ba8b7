"""Steady-state streaming: pass-2 reuse, the warm-started alignment with its early stop, bounded state, and
out-of-memory retries (exercised on the CPU with an injected torch.cuda.OutOfMemoryError)."""
import numpy as np
import pytest
import torch

from easi3r_ros.align.global_alignment import GlobalAligner, WarmStart
from easi3r_ros.align.sim3 import estimate_window_sim3
from easi3r_ros.eval.scenes import make_window
from easi3r_ros.model.checkpoint import random_network
from easi3r_ros.pipeline.scheduler import StreamConfig
from easi3r_ros.pipeline.stream import StreamProcessor, StreamSink
from easi3r_ros.pipeline.voxel_map import VoxelMap
from easi3r_ros.pipeline.window import (WindowConfig, WindowOutOfMemory, WindowPipeline, preset_config)
from fixtures import load_fixture

MICRO = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(64, 64), head_type='linear', "
         "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=32, "
         "enc_depth=1, enc_num_heads=1, dec_embed_dim=32, dec_depth=1, dec_num_heads=1)")
PASS2 = ("pass2_cross_atten_maps_k_view1", "pass2_cross_atten_maps_k_view2", "pass2_pred1_pts3d", "pass2_pred1_conf",
         "pass2_pred2_pts3d_in_other_view", "pass2_pred2_conf")


@pytest.fixture(scope="module")
def micro():
    return random_network(MICRO, 0)[0]


@pytest.fixture(scope="module")
def frames():
    return make_window(12, size=(48, 64), pan_px=1.5, object_px=3, object_radius=8, noise=1.0, seed=5).frames


def test_presets():
    ref, robot = preset_config("reference"), preset_config("robot")
    assert not ref.warm_start and not ref.reuse_pass2
    assert not robot.warm_start and robot.reuse_pass2   # warm start is opt-in (ATE above the 2 % aim)


def test_reference_preset_recomputes_pass2_and_runs_every_iteration(micro, frames):
    pipe = WindowPipeline(micro, preset_config("reference", niter=7))
    pipe.run(frames[:6], frame_ids=range(6))
    pipe.run(frames[2:8], frame_ids=range(2, 8))
    st = pipe.stats
    assert st.windows_warm == 0 and st.pass2_reused == 0 and st.align_iterations == 14
    assert st.pairs_reused > 0  # pass-1 reuse is exact and used by both presets


def test_reused_pass2_decodes_equal_recomputed_ones(micro, frames):
    """The same window twice: the second reuses every pass-2 pair (same frames, same token masks), and its
    pass-2 outputs are those of a pipeline that recomputes them."""
    cfg = dict(niter=3, keep_arrays=True, motion_guard=False, warm_start=False)
    reuse = WindowPipeline(micro, preset_config("robot", reuse_pass2=True, **cfg))
    fresh = WindowPipeline(micro, preset_config("robot", reuse_pass2=False, **cfg))
    first = reuse.run(frames[:6], frame_ids=range(6))
    again = reuse.run(frames[:6], frame_ids=range(6))
    n_edges = len(first.edges)
    assert reuse.stats.pass2_reused == n_edges and reuse.stats.pass2_decoded == n_edges
    ref = fresh.run(frames[:6], frame_ids=range(6))
    for key in PASS2 + ("pass2_dynamic_masks",):
        np.testing.assert_array_equal(again.arrays[key], ref.arrays[key], err_msg=key)
    # an overlapping window: pairs whose two frames kept their token masks are reused, the rest decoded
    shifted = reuse.run(frames[2:8], frame_ids=range(2, 8))
    ref = fresh.run(frames[2:8], frame_ids=range(2, 8))
    for key in PASS2:
        np.testing.assert_array_equal(shifted.arrays[key], ref.arrays[key], err_msg=key)


def test_pass2_reuse_with_the_guard_reuses_the_overlap(micro):
    """A still camera on a static scene: the guard empties the masks, nothing is re-weighted, and every pair
    among the shared frames is reused."""
    still = make_window(8, size=(48, 64), noise=1.0, seed=2).frames
    pipe = WindowPipeline(micro, preset_config("robot", niter=2, warm_start=False, scene_graph="swinstride-2"))
    a = pipe.run(still[:6], frame_ids=range(6))
    assert not a.moving
    pipe.run(still[2:8], frame_ids=range(2, 8))
    # every pair of the second window among frames 2..5 was decoded by the first (as for pass 1)
    assert pipe.stats.pass2_reused == pipe.stats.pairs_reused > 0


@pytest.fixture(scope="module")
def ga():
    arrays, _, _ = load_fixture("ga_synthetic_geometry")
    inputs = (arrays["pass2_pred1_pts3d"], arrays["pass2_pred1_conf"], arrays["pass2_pred2_pts3d_in_other_view"],
              arrays["pass2_pred2_conf"], arrays["edges"], arrays["conf"].shape[0])
    cold = GlobalAligner(*inputs).run(niter=100)
    return inputs, cold


def _centre_error(a, b):
    link = estimate_window_sim3(b, a, method="umeyama")
    moved = link.sim[None] @ a
    return float(np.abs(moved[:, :3, 3] - b[:, :3, 3]).max() / np.abs(b[:, :3, 3]).max())


def test_early_stop_ends_the_curve_at_the_best_state(ga):
    inputs, cold = ga
    assert cold.iterations == 100 and not cold.stopped_early
    stopped = GlobalAligner(*inputs).run(niter=100, patience=5, rel_tol=0.5)
    assert stopped.stopped_early and 5 <= stopped.iterations < 100
    c = stopped.loss_curve[:, 0]
    assert stopped.final_loss == c.min()
    best = int(np.argmin(c))
    assert len(c) - 1 - best >= 5  # no improvement (of any size here) for `patience` steps
    # the variables are left at the best state: evaluating them again gives its loss
    al = GlobalAligner(*inputs)
    al.init_mst()
    curve, _ = al.optimize(100, patience=5, rel_tol=0.5)
    np.testing.assert_array_equal(curve, stopped.loss_curve)
    with torch.no_grad():
        np.testing.assert_allclose(float(al.loss(None, 100)[0]), c[best], rtol=1e-5)


def _warm_from(cold, frames, gauge_scale=2.0):
    """The cold solution of ``frames``, seen in another gauge (rotated, moved, scaled)."""
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    poses = cold.poses_c2w[frames].astype(np.float64)
    moved = poses.copy()
    moved[:, :3, :3] = rot @ poses[:, :3, :3]
    moved[:, :3, 3] = gauge_scale * poses[:, :3, 3] @ rot.T + np.array([1.0, -2.0, 0.5])
    pts = gauge_scale * cold.pts3d[frames].astype(np.float64) @ rot.T + np.array([1.0, -2.0, 0.5])
    return WarmStart(frames=list(frames), poses_c2w=moved, pts3d=pts, focal=cold.focal)


def test_warm_start_from_the_solution_stays_there(ga):
    """Warm-started from the converged solution of every frame (in another gauge), the alignment starts at
    the converged loss, stops early and keeps the solution."""
    inputs, cold = ga
    n = inputs[-1]
    res = GlobalAligner(*inputs).run(niter=100, warm=_warm_from(cold, range(n)), patience=10, rel_tol=0.01, warmup=10)
    assert res.warm_frames == list(range(n))
    assert abs(res.init_loss / cold.final_loss - 1) < 1e-3
    assert res.stopped_early and res.iterations <= 30
    assert res.final_loss <= res.init_loss
    assert _centre_error(res.poses_c2w, cold.poses_c2w) < 1e-3
    assert abs(res.focal / cold.focal - 1) < 1e-3


def test_warm_start_from_half_the_frames_improves_on_the_mst(ga):
    """Half the frames from the converged solution, the rest from the MST: a better start than the cold
    one, never worse at the end than at the start, and closer to the truth than the MST placement."""
    from easi3r_ros.eval.trajectory import ate_rmse

    inputs, cold = ga
    n = inputs[-1]
    gt = load_fixture("ga_synthetic_geometry")[0]["synthetic_gt_poses_c2w"]
    res = GlobalAligner(*inputs).run(niter=100, warm=_warm_from(cold, range(n // 2, n)), patience=10,
                                     rel_tol=0.01, warmup=10)
    assert res.init_loss < cold.init_loss and res.final_loss < res.init_loss
    assert res.iterations < 100
    assert ate_rmse(res.poses_c2w, gt) < 0.8 * ate_rmse(cold.init_poses_c2w, gt)


def test_pipeline_warm_starts_overlapping_windows(micro, frames):
    pipe = WindowPipeline(micro, preset_config("robot", warm_start=True, niter=30, warm_niter=30, motion_guard=False))
    first = pipe.run(frames[:6], frame_ids=range(6))
    assert pipe.stats.align_iterations == 30 and pipe.stats.windows_warm == 0
    assert (first.align_iterations, first.align_warm) == (30, False) and np.isfinite(first.align_loss)
    second = pipe.run(frames[2:8], frame_ids=range(2, 8))
    assert pipe.stats.windows_warm == 1
    assert second.align_warm and pipe.stats.align_iterations == 30 + second.align_iterations
    assert 0 < second.align_loss < np.inf
    assert all(np.isfinite(f.cam_to_world).all() for f in second.frames)
    # anonymous frames cannot be matched: cold
    pipe.run(frames[4:10])
    assert pipe.stats.windows_warm == 1
    pipe.reset()
    pipe.run(frames[4:10], frame_ids=range(4, 10))
    assert pipe.stats.windows_warm == 1


def test_pipeline_state_stays_bounded(micro, frames):
    pipe = WindowPipeline(micro, preset_config("robot", warm_start=True, niter=2, warm_niter=2, motion_guard=False), cache_frames=8)
    loop = frames + frames[-2:0:-1]
    w, s = 5, 2
    for k in range(30):
        ids = list(range(k * s, k * s + w))
        pipe.run([loop[i % len(loop)] for i in ids], frame_ids=ids)
        assert len(pipe._encodings) <= 8
        assert len(pipe._solution) <= w
        assert len(pipe._pass2) <= w * (w - 1)
        alive = set(pipe._encodings)
        assert all(a in alive and b in alive for a, b in pipe._pass1)


def test_voxel_map_keeps_a_bounded_voxel_set():
    vm = VoxelMap(0.1, max_points=500)
    rng = np.random.default_rng(0)
    for k in range(20):
        vm.add(rng.uniform(0, 10, (300, 3)) + k, np.full((300, 3), 100))
        assert len(vm) <= 500
    pts, _ = vm.snapshot()
    assert len(pts) == 500 and pts.min() > 10  # the most recently seen voxels are kept


class _OOMOnBatches:
    """Wraps network.decode: raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, net, limit):
        self.decode, self.limit, self.calls = net.decode, limit, []

    def __call__(self, enc1, enc2, *args, **kwargs):
        self.calls.append(len(enc1))
        if len(enc1) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.decode(enc1, enc2, *args, **kwargs)


def test_out_of_memory_retries_with_smaller_batches(micro, frames, monkeypatch):
    ref = WindowPipeline(micro, WindowConfig(niter=2, keep_arrays=True, pair_batch=1)).run(frames[:5])
    pipe = WindowPipeline(micro, WindowConfig(niter=2, keep_arrays=True, pair_batch=8))
    fake = _OOMOnBatches(micro, limit=2)
    monkeypatch.setattr(pipe.network, "decode", fake)
    out = pipe.run(frames[:5])
    assert pipe.stats.oom_retries >= 2 and pipe._pair_batch() == 2
    assert 8 in fake.calls and max(c for c in fake.calls[fake.calls.index(2):]) <= 2
    for key in PASS2:
        np.testing.assert_allclose(out.arrays[key], ref.arrays[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_out_of_memory_at_one_pair_fails_the_window_not_the_stream(micro, frames, monkeypatch):
    pipe = WindowPipeline(micro, preset_config("robot", niter=2, pair_batch=4))
    monkeypatch.setattr(pipe.network, "decode", _OOMOnBatches(micro, limit=0))
    with pytest.raises(WindowOutOfMemory):
        pipe.run(frames[:5], frame_ids=range(5))

    class Sink(StreamSink):
        windows = []

        def on_window(self, out):
            self.windows.append(out)

    proc = StreamProcessor(StreamConfig(window_size=5, stride=3, queue_limit=20), lambda: pipe, Sink()).start()
    try:
        for k in range(8):
            proc.push(frames[k], 10 ** 9 + k * 10 ** 8)
        assert proc.wait_idle(60)
        assert proc.stats.windows_failed >= 1 and proc.stats.frames_dropped > 0
        assert "out of" in proc.stats.last_error
    finally:
        proc.close(flush=False, timeout=30)


def test_bf16_autocast_runs_on_the_cpu(micro, frames):
    """The reduced-precision code path (autocast) on the CPU: finite outputs, masks of the right shape."""
    out = WindowPipeline(micro, WindowConfig(niter=2, precision="bf16")).run(frames[:4])
    assert all(np.isfinite(f.cam_to_world).all() and f.mask.shape == (48, 64) for f in out.frames)


def test_decimated_path_is_bounded_and_keeps_the_start():
    from easi3r_ros.pipeline.path import DecimatedPath

    path = DecimatedPath(100)
    for k in range(0, 100_000, 7):
        path.extend(range(k, min(k + 7, 100_000)))
        assert len(path) <= 100
    items = path.items()
    assert items[0] == 0 and items[-1] == 99_999 and items == sorted(items)
    assert items[-10:] == list(range(99_990, 100_000))  # the newest poses at full rate
    gaps = np.diff(items)
    assert gaps[0] >= gaps[-1]  # older poses are sparser
    path.clear()
    assert len(path) == 0


def test_warm_start_with_known_intrinsics_keeps_them(ga):
    inputs, _ = ga
    n = inputs[-1]
    k = (201.6, 201.6, 112.0, 112.0)
    cold = GlobalAligner(*inputs, intrinsics=k).run(niter=60)
    res = GlobalAligner(*inputs, intrinsics=k).run(niter=60, warm=_warm_from(cold, range(n)), patience=10,
                                                   rel_tol=0.01, warmup=10)
    assert abs(res.focal - 201.6) < 1e-3 and abs(cold.focal - 201.6) < 1e-3
    assert abs(res.init_loss / cold.final_loss - 1) < 1e-3
    assert _centre_error(res.poses_c2w, cold.poses_c2w) < 1e-3


def test_flow_loss_feeds_dis_flow_into_the_alignment(micro, frames, monkeypatch):
    """flow_loss: the reference's optional flow term gets DIS flow of each edge (network resolution), with the
    window's dynamic masks (the term's own form is checked against its fixture in test_align.py)."""
    import easi3r_ros.pipeline.window as window
    seen = []
    real = window.align_window

    def spy(*args, **kwargs):
        seen.append(kwargs.get("flow"))
        return real(*args, **kwargs)
    monkeypatch.setattr(window, "align_window", spy)
    cfg = dict(niter=3, motion_guard=False)
    WindowPipeline(micro, preset_config("reference", **cfg)).run(frames[:4])
    res = WindowPipeline(micro, preset_config("reference", flow_loss=True, **cfg)).run(frames[:4])
    assert seen[0] is None and seen[1] is not None
    e, (h, w) = len(res.edges), res.frames[0].mask.shape
    assert seen[1]["flow_ij"].shape == seen[1]["flow_ji"].shape == (e, 2, h, w)
    assert seen[1]["dynamic_masks"].shape == (4, h, w)
    # the flow is the images' motion: a texture shifted by 3 pixels to the right is found
    import cv2
    tex = cv2.GaussianBlur(np.random.default_rng(0).uniform(-1, 1, (64, 96)).astype(np.float32), (0, 0), 1.5)
    images = torch.from_numpy(np.stack([tex, np.roll(tex, 3, axis=1)]))[:, None].repeat(1, 3, 1, 1) * 2
    fl = window.edge_flows(images.clamp(-1, 1), np.array([[0, 1]]), np.zeros((2, 64, 96), bool))
    assert abs(float(np.median(fl["flow_ij"][0, 0, 16:48, 16:80])) - 3.0) < 0.5
    assert abs(float(np.median(fl["flow_ji"][0, 0, 16:48, 16:80])) + 3.0) < 0.5
