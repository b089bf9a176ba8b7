"""Global alignment (spec §9) against the reference fixtures, stage by stage (fixture README §7).

Every stage is fed the fixture's own inputs. Threads: the MST initialisation runs with 2 torch threads,
as the reference did. This matters: the Weiszfeld focal is a float32 mean whose last bit depends on
the thread count, and the reference's 10-iteration PnP-RANSAC turns such a last-bit difference into
pose differences up to 1e-2 (frames placed by PnP). MKL's kernel choice matters the same way: with its Intel
kernels PnP frames move by 4.7e-3, with its generic path (MKL_CBWR=COMPATIBLE, set by test/conftest.py) the
initialisation is reproduced to <= 1.9e-5 on every ISA level (benchmarks/results/tolerance_spread.md).
The optimisation runs with 1 thread without the flow term (its result is within the reference's own
run-to-run spread either way) and with 2 threads, as the reference, with it.
"""
import contextlib
import json
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from easi3r_ros.align.clean import clean_confidence
from easi3r_ros.align.global_alignment import GlobalAligner, frame_confidence, linear_lr
from easi3r_ros.align.init import weiszfeld_focal
from easi3r_ros.eval.trajectory import ate_rmse
from fixtures import load_fixture

NITER = 300


@contextlib.contextmanager
def torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def aligner_inputs(arrays):
    return (arrays["pass2_pred1_pts3d"], arrays["pass2_pred1_conf"], arrays["pass2_pred2_pts3d_in_other_view"],
            arrays["pass2_pred2_conf"], arrays["edges"], arrays["conf"].shape[0])


def run_alignment(inputs, flow=None, opt_threads=1):
    """Init (2 threads) + NITER Adam steps; returns the init snapshot, results and timings."""
    aligner = GlobalAligner(*inputs, flow=flow)
    with torch_threads(2):
        t0 = time.perf_counter()
        aligner.init_mst()
        t_init = time.perf_counter() - t0
    with torch.no_grad():
        init_loss = float(aligner.loss(None, NITER)[0])
    init = aligner.snapshot()
    with torch_threads(opt_threads):
        t0 = time.perf_counter()
        curve, used = aligner.optimize(NITER)
        t_opt = time.perf_counter() - t0
    final = aligner.snapshot()
    print(f"\nGA timing: init {t_init:.2f} s, {NITER} iterations {t_opt:.2f} s (flow={flow is not None})")
    return dict(aligner=aligner, init=init, init_loss=init_loss, curve=curve, used=used, final=final,
                t_init=t_init, t_opt=t_opt)


@pytest.fixture(scope="module")
def ga():
    arrays, meta, _ = load_fixture("ga_synthetic_geometry")
    return arrays, meta


@pytest.fixture(scope="module")
def ga_run(ga):
    return run_alignment(aligner_inputs(ga[0]))


@pytest.fixture(scope="module")
def ga_flow():
    flow_ref, meta, _ = load_fixture("ga_synthetic_geometry_flow")
    inputs_ref, _, _ = load_fixture("ga_synthetic_geometry")  # the flow fixture reuses these inputs bit for bit
    flow = dict(flow_ij=flow_ref["flow_ij"], flow_ji=flow_ref["flow_ji"],
                dynamic_masks=flow_ref["pass2_dynamic_masks"], weight=meta["flow_loss_weight"],
                start_fraction=meta["flow_loss_start_epoch"], gate=meta["flow_loss_thre"])
    # 2 threads throughout, as the reference ran: with the flow term float32 noise is amplified, so the
    # reduction order matters for the strict comparisons below
    return flow_ref, run_alignment(aligner_inputs(inputs_ref), flow=flow, opt_threads=2)


# ------------------------------------------------------------------------------------------- helpers
def centre_errors(poses, ref):
    return np.linalg.norm(poses[:, :3, 3] - ref[:, :3, 3], axis=1)


def rotation_errors_deg(poses, ref):
    rel = np.einsum("nji,njk->nik", poses[:, :3, :3].astype(np.float64), ref[:, :3, :3].astype(np.float64))
    return np.degrees(np.linalg.norm(Rotation.from_matrix(rel).as_rotvec(), axis=1))


def assert_alignment_matches(ours, ref):
    final = ours["final"]
    assert centre_errors(final["poses_c2w"], ref["poses_c2w"]).max() <= 2e-3
    assert rotation_errors_deg(final["poses_c2w"], ref["poses_c2w"]).max() <= 0.2
    assert abs(final["focal"] / float(ref["focals"][0]) - 1) <= 1e-3
    rel = np.abs(final["depths"] / ref["depths"] - 1)
    assert np.median(rel) <= 1e-3 and np.percentile(rel, 99) <= 1e-2
    assert abs(ours["curve"][-1, 0] / float(ref["final_loss"]) - 1) <= 1e-3
    np.testing.assert_allclose(ours["curve"][:, 1], ref["ga_loss_curve"][:, 1], rtol=0, atol=1e-12)
    return np.abs(ours["curve"][:, 0] / ref["ga_loss_curve"][:, 0] - 1)


# ------------------------------------------------------------------------------------------- stages
@pytest.mark.fixtures
def test_frame_confidence_is_max_over_edges(ga):
    arrays, _ = ga
    ei, ej = torch.as_tensor(arrays["edges"][:, 0]), torch.as_tensor(arrays["edges"][:, 1])
    conf = frame_confidence(torch.as_tensor(arrays["pass2_pred1_conf"]), torch.as_tensor(arrays["pass2_pred2_conf"]),
                            ei, ej, arrays["conf"].shape[0])
    np.testing.assert_array_equal(conf.numpy(), arrays["conf"])


def test_weiszfeld_focal_of_exact_pointmap():
    h, w, f = 48, 64, 57.3
    v, u = np.mgrid[:h, :w].astype(np.float64)
    depth = 2.0 + 0.3 * np.sin(u / 9.0) + 0.2 * np.cos(v / 7.0)
    pts = np.stack([(u - w / 2) * depth / f, (v - h / 2) * depth / f, depth], -1)
    assert abs(weiszfeld_focal(torch.as_tensor(pts, dtype=torch.float32)) / f - 1) < 1e-5


@pytest.mark.fixtures
def test_mst_init_matches_reference(ga_run, ga):
    arrays, _ = ga
    init = ga_run["init"]
    assert ga_run["aligner"].mst.tree_edges == [(2, 3), (2, 5), (4, 5), (2, 1), (0, 5)]
    assert ga_run["aligner"].mst.pnp_frames == [1, 3, 5]
    np.testing.assert_allclose(init["poses_c2w"], arrays["init_poses_c2w"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(init["focal"], arrays["init_focals"][0], rtol=1e-4)
    np.testing.assert_allclose(init["depths"], arrays["init_depths"], rtol=1e-4)
    np.testing.assert_allclose(ga_run["init_loss"], float(arrays["init_loss"]), rtol=1e-4)


@pytest.mark.fixtures
def test_stale_focal_quirk(ga):
    """The reference estimates a still-unknown focal of view i from the previously placed edge's
    pointmap (a stale loop variable); reproducing it matches init_focals to 1e-7 instead of 1e-5."""
    arrays, _ = ga
    inputs = aligner_inputs(arrays)
    with torch_threads(2):
        exact = GlobalAligner(*inputs)
        exact.init_mst()
        quirk_off = GlobalAligner(*inputs)
        quirk_off.init_mst(stale_focal=False)
    # without the reference's stale-variable quirk the shared focal moves by ~1e-5 (still within rtol 1e-4)
    assert abs(float(quirk_off.focal()) / float(arrays["init_focals"][0]) - 1) > 5e-6
    assert abs(float(exact.focal()) / float(arrays["init_focals"][0]) - 1) < 1e-6
    # tree-placed frames never depend on it
    for n in (0, 2, 4):
        np.testing.assert_allclose(exact.poses()[n].numpy(), arrays["init_poses_c2w"][n], atol=1e-6)


@pytest.mark.fixtures
def test_lr_schedule_matches_reference(ga):
    arrays, meta = ga
    lrs = [linear_lr(k / meta["niter"], meta["lr"], meta["lr_min"]) for k in range(meta["niter"])]
    np.testing.assert_allclose(lrs, arrays["ga_loss_curve"][:, 1], rtol=0, atol=1e-15)


@pytest.mark.fixtures
def test_alignment_matches_reference(ga_run, ga):
    arrays, _ = ga
    rel = assert_alignment_matches(ga_run, arrays)
    assert rel.max() <= 1e-2, (rel.max(), rel.argmax())
    assert not ga_run["used"].any()


@pytest.mark.fixtures
def test_alignment_quality_vs_ground_truth(ga_run, ga):
    arrays, _ = ga
    ref_metrics = json.loads(str(arrays["synthetic_metrics_json"]))
    # evo's ATE reproduces the fixture's own metric from the reference poses
    assert abs(ate_rmse(arrays["poses_c2w"], arrays["synthetic_gt_poses_c2w"]) - ref_metrics["synthetic_ate_rmse"]) < 1e-12
    ate = ate_rmse(ga_run["final"]["poses_c2w"], arrays["synthetic_gt_poses_c2w"])
    print(f"\nATE (no flow): ours {ate:.4g}, reference {ref_metrics['synthetic_ate_rmse']:.4g}")
    assert ate <= 2e-3
    # Within the run-to-run spread: the reference's two runs 9.76e-4 / 9.98e-4, ours 9.78e-4 to 9.93e-4 across
    # ISA levels and thread counts (benchmarks/results/tolerance_spread.md); bound = worst + that range.
    assert ate <= 1.02e-3
    assert abs(ga_run["final"]["focal"] / float(arrays["synthetic_gt_focal"]) - 1) <= 1e-2


@pytest.mark.fixtures
def test_conf_clean_matches_reference(ga_run, ga):
    arrays, _ = ga
    final = ga_run["final"]
    # on the reference's own geometry the cleaning is reproduced almost exactly
    ref_geo = clean_confidence(arrays["conf"], arrays["poses_c2w"], arrays["depths"], arrays["focals"][0])
    assert ((ref_geo == 0) == (arrays["conf_clean"] == 0)).mean() >= 0.999
    ours = clean_confidence(arrays["conf"], final["poses_c2w"], final["depths"], final["focal"])
    assert ((ours == 0) == (arrays["conf_clean"] == 0)).mean() >= 0.95
    kept = ours != 0
    np.testing.assert_array_equal(ours[kept], arrays["conf"][kept])


@pytest.mark.fixtures
@pytest.mark.slow  # the first of these two runs the 300-iteration flow alignment (~30 s on one core)
def test_flow_alignment_matches_reference(ga_flow):
    ref, ours = ga_flow
    np.testing.assert_allclose(ours["init_loss"], float(ref["init_loss"]), rtol=1e-4)  # includes the flow term
    start = int(0.1 * NITER)
    assert not ours["used"][:start].any() and ours["used"][start:].all()  # never gated off here
    rel = assert_alignment_matches(ours, ref)
    assert rel[:start].max() <= 1e-4  # before the flow term: deterministic, float noise only
    # With the flow term the curve oscillates and float32 noise is amplified: the reference's own repeat
    # differs by up to 2.9e-2 per iteration, ours by 4.9e-2 to 5.5e-2 across ISA levels and thread counts
    # (benchmarks/results/tolerance_spread.md; the README's 5e-2 came from one machine); bound = worst + range.
    print(f"\nflow curve rel. err: median {np.median(rel):.2e}, 99th pct {np.percentile(rel, 99):.2e}, "
          f"max {rel.max():.2e} (iteration {rel.argmax()})")
    assert np.median(rel) <= 5e-3
    assert rel.max() <= 6.5e-2


@pytest.mark.fixtures
@pytest.mark.slow
def test_flow_alignment_quality_vs_ground_truth(ga_flow):
    ref, ours = ga_flow
    ref_ate = json.loads(str(ref["synthetic_metrics_json"]))["synthetic_ate_rmse"]
    ate = ate_rmse(ours["final"]["poses_c2w"], ref["synthetic_gt_poses_c2w"])
    print(f"\nATE (flow): ours {ate:.4g}, reference {ref_ate:.4g}")
    assert ate <= 2e-3
    # Within the run-to-run spread: the reference's two runs 2.00e-4 / 2.04e-4, ours 1.96e-4 to 2.17e-4 across
    # ISA levels and thread counts (benchmarks/results/tolerance_spread.md); bound = worst + that range.
    assert ate <= 2.4e-4
    assert abs(ours["final"]["focal"] / float(ref["synthetic_gt_focal"]) - 1) <= 1e-2


# ------------------------------------------------------------------------------------------- fused losses
def small_problem(seed=0, flow=False):
    """A 4-frame, 16x20 random problem with all ordered edges; random (non-init) variables."""
    g = torch.Generator().manual_seed(seed)
    n, h, w = 4, 16, 20
    edges = np.array([(i, j) for i in range(n) for j in range(n) if i != j])
    e = len(edges)
    p1 = torch.randn(e, h, w, 3, generator=g) + torch.tensor([0, 0, 4.0])
    p2 = torch.randn(e, h, w, 3, generator=g) + torch.tensor([0, 0, 4.0])
    c1 = 1 + torch.rand(e, h, w, generator=g) * 5
    c2 = 1 + torch.rand(e, h, w, generator=g) * 5
    fl = None
    if flow:
        fl = dict(flow_ij=torch.randn(e, 2, h, w, generator=g), flow_ji=torch.randn(e, 2, h, w, generator=g),
                  static_masks=torch.rand(n, h, w, generator=g) > 0.3)
    al = GlobalAligner(p1, c1, p2, c2, edges, n, flow=fl)
    with torch.no_grad():
        al.log_depths.copy_(1.3 + 0.1 * torch.randn(al.log_depths.shape, generator=g))
        al.pose_params.copy_(torch.randn(n, 7, generator=g) * 0.1 + torch.tensor([0, 0, 0, 1.0, 0, 0, 0]))
        al.edge_params.copy_(torch.randn(e, 8, generator=g) * 0.1 + torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0]))
        al.focal_param.fill_(20 * np.log(25.0))
    return al


def grads(aligner, fn):
    params = aligner.parameters()
    for p in params:
        p.requires_grad_(True)
    value = fn()
    out = torch.autograd.grad(value, params, allow_unused=True)
    for p in params:
        p.requires_grad_(False)
    return float(value.detach()), out


def test_fused_pairwise_loss_equals_autograd():
    al = small_problem(1)
    v1, g1 = grads(al, al.alignment_loss)
    v2, g2 = grads(al, al.alignment_loss_autograd)
    assert abs(v1 / v2 - 1) < 1e-5
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_rigid_params_conversion_equals_roma_and_its_gradient_is_exact():
    """The closed-form [R | T] of the storage vectors (one matmul, hand-written backward) against roma's
    conversion through autograd, on unnormalised quaternions and extra trailing entries (edge log-scale)."""
    import roma

    from easi3r_ros.align.geometry import pose_params_to_matrix, pose_params_to_rt

    gen = torch.Generator().manual_seed(3)
    params = torch.randn(11, 8, generator=gen, dtype=torch.float64)
    params[:, :4] *= torch.rand(11, 1, generator=gen, dtype=torch.float64) * 3 + 0.2
    params[2, 4:7] = 0     # the MST root: a zero translation has a zero gradient (sign(x)² factor)

    def by_roma(x):
        quat = x[:, :4] / x[:, :4].norm(dim=1, keepdim=True)
        trans = torch.sign(x[:, 4:7]) * torch.expm1(torch.abs(x[:, 4:7]))
        return torch.cat([roma.unitquat_to_rotmat(quat), trans[:, :, None]], dim=2)

    torch.testing.assert_close(pose_params_to_rt(params), by_roma(params), rtol=0, atol=1e-14)
    mat = pose_params_to_matrix(params)
    torch.testing.assert_close(mat[:, 3], params.new_tensor([0.0, 0, 0, 1]).expand(11, 4), rtol=0, atol=0)
    rot = mat[:, :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(11, 3, 3))
    assert torch.autograd.gradcheck(pose_params_to_rt, (params[[0, 1, 3]].clone().requires_grad_(True),))
    weights = torch.randn(11, 3, 4, generator=gen, dtype=torch.float64)
    x1, x2 = params.clone().requires_grad_(True), params.clone().requires_grad_(True)
    (pose_params_to_rt(x1) * weights).sum().backward()
    (by_roma(x2) * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    assert (x1.grad[2, 4:7] == 0).all()


def test_pairwise_loss_over_all_edges_at_once_equals_the_per_frame_blocks():
    """The coarse problems' path (one batched product over every edge) against the per-frame blocks."""
    from easi3r_ros.align.loss import PairwiseLoss
    al = small_problem(2)
    v1, g1 = grads(al, al.alignment_loss)
    al.pairwise = PairwiseLoss(al.flat_i, al.flat_j, al.weight_i, al.weight_j, al.ei, al.ej, by_frame=False)
    v2, g2 = grads(al, al.alignment_loss)
    assert abs(v1 / v2 - 1) < 1e-6
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_split_reduction_of_the_similarity_gradient_equals_the_plain_one():
    """The CUDA path of the fused loss (HW split into chunks for the 3x4 similarity gradient), forced on the CPU."""
    al = small_problem(1)
    v1, g1 = grads(al, al.alignment_loss)
    hw = al.pairwise.side_i.pts.shape[-1]
    for side in (al.pairwise.side_i, al.pairwise.side_j):
        assert side.split is None            # the CPU keeps the plain bmm
        side.split = next(c for c in (64, 32, 16, 8) if hw % c == 0 and hw > c)
    v2, g2 = grads(al, al.alignment_loss)
    assert abs(v1 / v2 - 1) < 1e-6
    for a, b in zip(g1, g2):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_graph_steps_are_eager_off_cuda():
    """cuda_graph is a no-op on the CPU: the same steps, the path says eager."""
    a, b = small_problem(1), small_problem(1)
    a.init_mst()
    b.init_mst()
    ca, _ = a.optimize(niter=12, cuda_graph=True)
    cb, _ = b.optimize(niter=12, cuda_graph=False)
    assert a.optimizer_path == b.optimizer_path == "eager"
    np.testing.assert_array_equal(ca, cb)


def test_an_alignment_step_moves_no_data_between_host_and_tensors(monkeypatch):
    """What a CUDA-graph capture of the step (adam_steps) forbids, checked on the CPU: after the first step, the
    loss and its backward create no tensor from host data (a host-to-device copy on CUDA) and read no value back
    (a sync). Either one makes the capture fail, and the GPU falls back to eager steps."""
    import functools

    def forbidden(name, *args, **kwargs):
        raise AssertionError(f"{name} called inside an alignment step")

    for al in (small_problem(1), small_problem(1).subsampled(2)):     # per-frame blocks, and the coarse path
        _, first = grads(al, al.alignment_loss)                       # first step: constants are made here
        with monkeypatch.context() as m:
            for name in ("tensor", "as_tensor", "from_numpy"):
                m.setattr(torch, name, functools.partial(forbidden, f"torch.{name}"))
            for name in ("new_tensor", "item", "tolist", "numpy", "cpu", "__float__", "__bool__"):
                m.setattr(torch.Tensor, name, functools.partial(forbidden, f"Tensor.{name}"))
            params = al.parameters()
            for p in params:
                p.requires_grad_(True)
            loss, _ = al.loss(5, 300)
            again = torch.autograd.grad(loss, params, allow_unused=True)
            for p in params:
                p.requires_grad_(False)
        for a, b in zip(first, again):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b))


def test_fused_flow_loss_equals_autograd():
    al = small_problem(2, flow=True)
    v1, g1 = grads(al, al.flow_term)
    v2, g2 = grads(al, al.flow_term_autograd)
    assert abs(v1 / v2 - 1) < 1e-5
    for a, b in zip(g1, g2):
        if b is None:
            assert a is None or float(a.abs().max()) == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_degenerate_pointmaps_keep_the_alignment_finite():
    """Pointmaps whose directions ignore the pixel grid (an untrained network): the focal estimate is <= 0,
    where a log would give -inf; the initialisation falls back to a 60 degree field of view and stays finite."""
    import torch

    from easi3r_ros.align.global_alignment import align_window
    from easi3r_ros.pipeline.scene_graph import make_edges

    edges = make_edges("swinstride-5", 3)
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(len(edges), 8, 8, 3, generator=g)
    pts[..., 0] += 3 * torch.linspace(1, -1, 8)[None, None, :]  # x decreases left to right: anti-correlated
    pts[..., 1] += 3 * torch.linspace(1, -1, 8)[None, :, None]
    pts[..., 2] = pts[..., 2].abs() + 0.5
    conf = torch.full((len(edges), 8, 8), 2.0)
    from easi3r_ros.align.init import weiszfeld_focal
    assert weiszfeld_focal(pts[0]) <= 0
    out = align_window(pts, conf, pts.flip(1), conf.clone(), edges, 3, niter=5)
    assert np.isfinite(out.poses_c2w).all() and np.isfinite(out.depths).all() and out.focal > 0


def test_alignment_runs_under_no_grad():
    """Inference code runs under torch.no_grad(); the optimiser must still get its gradients."""
    from easi3r_ros.align.global_alignment import align_window
    from easi3r_ros.pipeline.scene_graph import make_edges

    edges = make_edges("swinstride-5", 3)
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(len(edges), 8, 8, 3, generator=g)
    pts[..., 2] = pts[..., 2].abs() + 1
    conf = torch.full((len(edges), 8, 8), 2.0)
    with torch.no_grad():
        out = align_window(pts, conf, pts.flip(1), conf, edges, 3, niter=3)
    assert out.loss_curve[-1, 0] != out.loss_curve[0, 0]  # the parameters moved
