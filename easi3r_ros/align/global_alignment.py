"""Global alignment of the pairwise pointmaps of one window (spec §9).

Variables: per frame a log-depth map and a camera-to-world pose [quat XYZW, signed_log1p(T)], one
shared focal f = exp(φ/20) (principal point fixed at (W/2, H/2)), per edge a similarity
[quat, signed_log1p(T/s), log s] whose scales are renormalised to geometric mean 0.5.

Loss = Σ_e Σ_pix log C_i^e·‖X_i − S_e(P_i^e)‖ / Σ_e HW + the same for view j
(+ optional weighted flow term, see :mod:`.flow`). Adam(betas 0.9, 0.9), lr linear from `lr` to
`lr_min`, full batch. Everything is vectorised over edges and pixels.

Warm start (streaming, not the reference). Consecutive windows of a stream share frames. With a
:class:`WarmStart` (the previous window's converged poses and world points of the shared frames), the MST
initialisation still places every frame, then the shared frames take the previous solution mapped into the
new window's frame by the similarity that fits it onto their MST placement (rotation from orientations,
scale from the median depth ratio, translation from the centres), the focal is the previous one, and the
edge similarities and the scale normalisation are recomputed from those points as after the MST. With
``patience`` > 0 the optimisation stops once its best loss has not improved by more than ``rel_tol``
(relative) for ``patience`` iterations and keeps the best state (``niter`` is then a cap); ``warmup`` ramps
the learning rate up over the first iterations, so that Adam's first steps do not kick the frames that start
converged.

Coarse to fine (robot preset, not the reference). With ``coarse`` = k > 1 the whole optimisation runs on
every k-th pixel of every pointmap (k divides H and W: network images are multiples of the 16-pixel patch,
so the rays are exact with focal/k and principal point/k), from its own MST initialisation; its poses,
focal and edge similarities are kept, and each full-resolution pixel's depth is then solved in closed form
(:meth:`GlobalAligner.refit_depths`: given the poses and edges the loss separates into one convex 1-D problem
per pixel, solved by iteratively re-weighted least squares), and ``polish`` optional full-resolution steps
follow. On the synthetic benchmark k = 4 ends at the full-resolution run's loss for a fraction of its time
(benchmarks/results/streaming). The poses rest on 1/k² of the pixels: with independent per-pixel noise their
error grows about k-fold (test_align_coarse), less with the spatially correlated errors of a network. The
warm start above starts barely closer: its loss curve meets the cold one within about ten iterations (same
report), as the pairwise predictions change from window to window.

Known intrinsics (fx, fy, cx, cy): the focal is not a variable and the principal point is (cx, cy). The
pixel offsets are expressed in fx units, v' = (v − cy)·fx/fy, so one isotropic focal fx describes the
camera exactly and every loss keeps its form; the flow's v component is rescaled the same way.

The core imports no ROS.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .clean import clean_confidence
from .flow import FlowConfig, FusedFlowLoss, flow_loss
from .geometry import (as_tensor, depth_to_cam_points, geotrf, intrinsics_matrix, pixel_grid,
                       pose_params_to_matrix, pose_params_to_rt, with_last_row)
from .adam_steps import AdamSteps
from .init import BASE_SCALE, InitParams, MSTResult, init_from_mst, mst_init
from .loss import PairwiseLoss
from .sim3 import apply_sim3_to_poses, estimate_window_sim3

ArrayLike = Union[np.ndarray, torch.Tensor]
FOCAL_BREAK = 20.0
DEPTH_MARGIN = 2.0   # coarse to fine: a refitted depth stays within this factor of its coarse neighbourhood


@dataclass
class AlignmentResult:
    """Result of aligning one window (numpy, float32 unless noted)."""
    poses_c2w: np.ndarray          # (N, 4, 4) camera-to-world
    focal: float                   # shared focal (px)
    focals: np.ndarray             # (N,) the shared focal repeated
    intrinsics: np.ndarray         # (N, 3, 3)
    depths: np.ndarray             # (N, H, W) z-depth
    conf: np.ndarray               # (N, H, W) max over the frame's edges of the pairwise confidences
    pts3d: np.ndarray              # (N, H, W, 3) world points
    edge_poses: np.ndarray         # (E, 4, 4) edge similarities (scale included) camera-i -> world
    init_poses_c2w: np.ndarray     # (N, 4, 4) after the MST initialisation
    init_focal: float
    init_depths: np.ndarray        # (N, H, W)
    init_loss: float
    loss_curve: np.ndarray         # (niter, 2) float64: [loss before the step, lr]
    final_loss: float              # loss_curve[-1, 0] (its minimum with an early stop; init_loss when niter == 0)
    flow_active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (niter,) flow term used
    conf_clean: Optional[np.ndarray] = None  # (N, H, W) conf with occluding low-confidence pixels zeroed
    mst_tree_edges: List[Tuple[int, int]] = field(default_factory=list)
    mst_pnp_frames: List[int] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    warm_frames: List[int] = field(default_factory=list)  # frames initialised from a previous solution
    stopped_early: bool = False                            # the loss stopped improving before niter
    optimizer: str = "eager"                               # "cuda-graph" when the steps were replayed
    coarse: int = 1                                        # pixel step of the optimisation (coarse to fine)

    @property
    def iterations(self) -> int:
        return len(self.loss_curve)


@dataclass
class WarmStart:
    """A previous solution of some of this window's frames, in the previous window's world and unit.

    ``frames``: their indices in this window; ``poses_c2w`` (K, 4, 4) camera-to-world; ``pts3d``
    (K, H, W, 3) their world points; ``focal``: the previous shared focal (px; ignored with known
    intrinsics)."""

    frames: Sequence[int]
    poses_c2w: np.ndarray
    pts3d: np.ndarray
    focal: Optional[float] = None


def _cam_depths(poses_c2w: np.ndarray, pts3d: np.ndarray) -> np.ndarray:
    """(K, H*W) z-depth of world points in their own cameras (float64)."""
    pts = np.asarray(pts3d, np.float64).reshape(len(poses_c2w), -1, 3)
    poses = np.asarray(poses_c2w, np.float64)
    rel = pts - poses[:, None, :3, 3]
    return np.einsum("kpi,ki->kp", rel, poses[:, :3, 2])


def warm_similarity(anchor_poses: np.ndarray, anchor_pts: np.ndarray, prev_poses: np.ndarray,
                    prev_pts: np.ndarray) -> np.ndarray:
    """4x4 similarity S with S ∘ prev_pose_k ≈ anchor_pose_k: rotation from the orientations, scale from the
    median ratio of the frames' depths (defined even when the camera stands still), translation from the
    centres."""
    a = _cam_depths(anchor_poses, anchor_pts)[:, ::3]
    b = _cam_depths(prev_poses, prev_pts)[:, ::3]
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    scale = float(np.median(a[ok] / b[ok])) if ok.sum() >= 16 else None
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        scale = None
    return estimate_window_sim3(anchor_poses, prev_poses, method="rotations", scale=scale).sim


def frame_confidence(conf_i: torch.Tensor, conf_j: torch.Tensor, ei: torch.Tensor, ej: torch.Tensor,
                     n_frames: int) -> torch.Tensor:
    """(N, H, W) per-frame confidence: max over edges of C_i where the frame is view i, C_j where j."""
    out = torch.zeros((n_frames,) + tuple(conf_i.shape[1:]), dtype=conf_i.dtype, device=conf_i.device)
    idx = torch.cat([ei, ej])
    vals = torch.cat([conf_i, conf_j])
    # confidences are >= 1 (1 + exp), so a zero start is neutral for max
    for n in range(n_frames):
        sel = vals[idx == n]
        if len(sel):
            out[n] = sel.amax(dim=0)
    return out


def linear_lr(t: float, lr: float, lr_min: float) -> float:
    return (1.0 - t) * lr + t * lr_min


def _flow_config(flow, n_frames: int, device) -> Optional[FlowConfig]:
    if flow is None:
        return None
    if isinstance(flow, FlowConfig):
        cfg = flow
    else:
        flow = dict(flow)
        if "static_masks" in flow:
            static = as_tensor(flow.pop("static_masks"), device, torch.bool)
        elif "dynamic_masks" in flow:
            static = ~as_tensor(flow.pop("dynamic_masks"), device, torch.bool)
        else:  # no masks: every pixel counts as static
            shape = np.shape(flow["flow_ij"])
            static = torch.ones((n_frames, shape[-2], shape[-1]), dtype=torch.bool, device=device)
        cfg = FlowConfig(flow_ij=flow.pop("flow_ij"), flow_ji=flow.pop("flow_ji"), static_masks=static, **flow)
    cfg.flow_ij = as_tensor(cfg.flow_ij, device)
    cfg.flow_ji = as_tensor(cfg.flow_ji, device)
    cfg.static_masks = as_tensor(cfg.static_masks, device, torch.bool)
    return cfg


class GlobalAligner:
    """Holds the pairwise predictions of one window and the optimisation variables.

    pred*_pts (E, H, W, 3), pred*_conf (E, H, W), edges (E, 2) ordered (i, j): P_i = head-1 points
    of frame i, P_j = head-2 points of frame j, both in camera i.
    """

    def __init__(self, pred1_pts: ArrayLike, pred1_conf: ArrayLike, pred2_pts: ArrayLike,
                 pred2_conf: ArrayLike, edges, n_frames: int, flow=None, device="cpu",
                 min_conf_thr: float = 2.5, niter_pnp: int = 10,
                 intrinsics: Optional[Tuple[float, float, float, float]] = None,
                 pnp_conf_quantile: Optional[float] = None, loss_by_frame: bool = True):
        # loss_by_frame: the pairwise loss one frame's block of edges at a time (cache-friendly at full
        # resolution); False for the small coarse problems, where one batched call over all edges is faster
        self.device = torch.device(device)
        self.pred_i = as_tensor(pred1_pts, self.device)
        self.pred_j = as_tensor(pred2_pts, self.device)
        self.conf_i = as_tensor(pred1_conf, self.device)
        self.conf_j = as_tensor(pred2_conf, self.device)
        self.edges = [(int(i), int(j)) for i, j in np.asarray(edges).reshape(-1, 2)]
        self.n_frames = int(n_frames)
        self.n_edges, self.height, self.width = self.conf_i.shape
        self.ei = torch.tensor([i for i, _ in self.edges], device=self.device)
        self.ej = torch.tensor([j for _, j in self.edges], device=self.device)
        self.min_conf_thr = min_conf_thr
        self.pnp_conf_quantile = pnp_conf_quantile
        self.niter_pnp = niter_pnp
        self.flow = _flow_config(flow, self.n_frames, self.device)
        self.known = None if intrinsics is None else tuple(float(x) for x in intrinsics)
        if self.known is not None:
            fx, fy, cx, cy = self.known
            if not (np.isfinite(self.known).all() and fx > 0 and fy > 0):
                raise ValueError(f"intrinsics must be finite with positive focals (got {self.known})")
            if self.flow is not None and fx != fy:
                self.flow.flow_ij = self.flow.flow_ij * torch.tensor([1.0, fx / fy], device=self.device)[:, None, None]
                self.flow.flow_ji = self.flow.flow_ji * torch.tensor([1.0, fx / fy], device=self.device)[:, None, None]

        hw = self.height * self.width
        self.conf = frame_confidence(self.conf_i, self.conf_j, self.ei, self.ej, self.n_frames)
        self.weight_i = self.conf_i.log().reshape(self.n_edges, hw)
        self.weight_j = self.conf_j.log().reshape(self.n_edges, hw)
        self.flat_i = self.pred_i.reshape(self.n_edges, hw, 3)
        self.flat_j = self.pred_j.reshape(self.n_edges, hw, 3)
        self.total_area = float(self.n_edges * hw)
        if self.known is None:
            self.pp = torch.tensor([self.width / 2, self.height / 2], device=self.device)
            self.grid = pixel_grid(self.height, self.width, device=self.device)
        else:  # pixels in fx units about (cx, cy) (see the module doc)
            fx, fy, cx, cy = self.known
            self.pp = torch.tensor([cx, cy], device=self.device)
            self.grid = (pixel_grid(self.height, self.width, device=self.device) - self.pp) \
                * torch.tensor([1.0, fx / fy], device=self.device) + self.pp
        self.flat_grid = self.grid.reshape(-1, 2)
        self.pairwise = PairwiseLoss(self.flat_i, self.flat_j, self.weight_i, self.weight_j, self.ei, self.ej,
                                     by_frame=loss_by_frame)
        self.cf_offsets = (self.flat_grid - self.pp).t().contiguous()                # (2, HW)
        self.cf_ones = torch.ones((1, hw), device=self.device)
        self.fused_flow = (FusedFlowLoss(self.flow, self.ei, self.ej, self.cf_offsets)
                           if self.flow is not None else None)

        # optimisation variables (storage form)
        self.log_depths = torch.zeros((self.n_frames, hw), device=self.device)
        self.pose_params = torch.zeros((self.n_frames, 7), device=self.device)
        self.pose_params[:, 3] = 1
        focal0 = self.known[0] if self.known is not None else max(self.height, self.width)
        self.focal_param = torch.full((1,), FOCAL_BREAK * math.log(focal0), device=self.device)
        self.edge_params = torch.zeros((self.n_edges, 8), device=self.device)
        self.edge_params[:, 3] = 1
        self.mst: Optional[MSTResult] = None
        self.optimizer_path = "eager"   # or "cuda-graph" (see optimize)
        self.depth_bounds: Optional[Tuple[torch.Tensor, torch.Tensor]] = None   # (lo, hi) log-depths, see adopt

    # ---------------------------------------------------------------- variables
    def parameters(self) -> List[torch.Tensor]:
        if self.known is not None:  # a calibrated focal is not optimised
            return [self.log_depths, self.pose_params, self.edge_params]
        return [self.log_depths, self.pose_params, self.focal_param, self.edge_params]

    def intrinsics(self) -> np.ndarray:
        """(N, 3, 3) float32 K of every frame (network pixels)."""
        if self.known is None:
            return intrinsics_matrix(float(self.focal()), self.height, self.width, self.n_frames)
        fx, fy, cx, cy = self.known
        k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
        return np.repeat(k[None], self.n_frames, axis=0)

    def focal(self) -> torch.Tensor:
        return (self.focal_param / FOCAL_BREAK).exp()[0]

    def poses(self) -> torch.Tensor:
        return pose_params_to_matrix(self.pose_params)

    def depths(self) -> torch.Tensor:
        return self.log_depths.exp()

    def edge_scales(self) -> torch.Tensor:
        log_s = self.edge_params[:, 7]
        return log_s.exp() * torch.exp(math.log(BASE_SCALE) - log_s.mean())

    def edge_rt(self) -> torch.Tensor:
        """(E, 3, 4) similarities camera-i -> world, top rows; the scale multiplies rotation and translation."""
        return pose_params_to_rt(self.edge_params) * self.edge_scales()[:, None, None]

    def edge_poses(self) -> torch.Tensor:
        """(E, 4, 4) similarities camera-i -> world (:meth:`edge_rt` with the last row)."""
        return with_last_row(self.edge_rt())

    def world_points(self) -> torch.Tensor:
        """(N, H*W, 3) world points of every frame."""
        cam = depth_to_cam_points(self.depths(), self.focal(), self.pp, self.flat_grid)
        return geotrf(self.poses(), cam)

    # ---------------------------------------------------------------- init
    def _mst(self, stale_focal: bool):
        return mst_init(self.pred_i, self.pred_j, self.conf_i, self.conf_j, self.edges, self.n_frames,
                        self.conf, self.min_conf_thr, self.niter_pnp, stale_focal=stale_focal, known=self.known,
                        conf_quantile=self.pnp_conf_quantile)

    def _start_from(self, mst) -> InitParams:
        """Set the optimised parameters from an initialisation."""
        params = init_from_mst(mst, self.pred_i, self.conf_i, self.edges)
        self.log_depths.copy_(params.log_depths)
        self.pose_params.copy_(params.pose_params)
        self.edge_params.copy_(params.edge_params)
        if self.known is None:
            self.focal_param.fill_(FOCAL_BREAK * math.log(params.focal))
        self.mst = mst
        return params

    @torch.no_grad()
    def init_mst(self, stale_focal: bool = True) -> InitParams:
        return self._start_from(self._mst(stale_focal))

    @torch.no_grad()
    def init_warm(self, warm: WarmStart, stale_focal: bool = True) -> InitParams:
        """MST initialisation, then the frames of ``warm`` replaced by the previous solution (module doc)."""
        mst = self._mst(stale_focal)
        idx = [int(k) for k in warm.frames]
        prev_poses = np.asarray(warm.poses_c2w, np.float64).reshape(len(idx), 4, 4)
        prev_pts = np.asarray(warm.pts3d, np.float64).reshape(len(idx), -1, 3)
        anchor_poses = mst.poses[idx].double().cpu().numpy()
        anchor_pts = torch.stack([mst.pts3d[k].reshape(-1, 3) for k in idx]).double().cpu().numpy()
        sim = warm_similarity(anchor_poses, anchor_pts, prev_poses, prev_pts)
        moved_poses = apply_sim3_to_poses(sim, prev_poses)
        moved_pts = prev_pts @ sim[:3, :3].T + sim[:3, 3]
        pts3d = list(mst.pts3d)
        poses = mst.poses.clone()
        dtype, dev = mst.poses.dtype, mst.poses.device
        for n, k in enumerate(idx):
            pts3d[k] = torch.as_tensor(moved_pts[n], dtype=dtype, device=dev).reshape(mst.pts3d[k].shape)
            poses[k] = torch.as_tensor(moved_poses[n], dtype=dtype, device=dev)
        focals = list(mst.focals)
        if self.known is None and warm.focal is not None and math.isfinite(warm.focal) and warm.focal > 0:
            focals = [float(warm.focal)] * self.n_frames
        return self._start_from(replace(mst, pts3d=pts3d, poses=poses, focals=focals))

    # ---------------------------------------------------------------- coarse to fine
    def coarse_step(self, requested: int) -> int:
        """The largest pixel step <= ``requested`` that divides H and W and keeps >= 8 pixels a side; 1 (full
        resolution) with the flow term, whose flows would need resampling."""
        if self.flow is not None:
            return 1
        k = max(1, int(requested))
        while k > 1 and (self.height % k or self.width % k or min(self.height, self.width) // k < 8):
            k -= 1
        return k

    def subsampled(self, k: int) -> "GlobalAligner":
        """The same problem on every k-th pixel of every row and column: the ray of coarse pixel (x, y) is that
        of full pixel (k·x, k·y) with the focal and principal point divided by k."""
        def cut(x):
            return x[:, ::k, ::k]
        known = None if self.known is None else tuple(v / k for v in self.known)
        return GlobalAligner(cut(self.pred_i), cut(self.conf_i), cut(self.pred_j), cut(self.conf_j), self.edges,
                             self.n_frames, device=self.device, min_conf_thr=self.min_conf_thr,
                             niter_pnp=self.niter_pnp, intrinsics=known, pnp_conf_quantile=self.pnp_conf_quantile,
                             loss_by_frame=False)

    @torch.no_grad()
    def adopt(self, coarse: "GlobalAligner", k: int) -> None:
        """Poses, focal, edge similarities and MST of a solved :meth:`subsampled` problem; depths repeated k×k."""
        self.pose_params.copy_(coarse.pose_params)
        self.edge_params.copy_(coarse.edge_params)
        if self.known is None:
            self.focal_param.copy_(coarse.focal_param + FOCAL_BREAK * math.log(k))
        log_d = coarse.log_depths.reshape(self.n_frames, 1, coarse.height, coarse.width)

        def full_grid(x):
            return x.reshape(self.n_frames, coarse.height, 1, coarse.width, 1).expand(-1, -1, k, -1, k).reshape(
                self.n_frames, -1)
        self.log_depths.copy_(full_grid(log_d))
        # the range refit_depths keeps to: a factor DEPTH_MARGIN around the coarse depths of the 3x3 neighbourhood
        hi = torch.nn.functional.max_pool2d(log_d, 3, stride=1, padding=1)
        lo = -torch.nn.functional.max_pool2d(-log_d, 3, stride=1, padding=1)
        self.depth_bounds = (full_grid(lo) - math.log(DEPTH_MARGIN), full_grid(hi) + math.log(DEPTH_MARGIN))
        self.mst = coarse.mst

    @torch.no_grad()
    def refit_depths(self, rounds: int = 3) -> None:
        """Every pixel's depth given the poses, focal and edges. A pixel's world point is C + d·R·r (camera
        centre C, rotation R, ray r); with q = Rᵀ(S_e·P − C) the edge's point in the camera's axes, the loss is
        Σ w·‖d·r − q‖ over the frame's edges: convex in d alone, solved by iteratively re-weighted least squares
        (weights w/‖residual‖) from the current depths; a pixel keeps its depth where the solution is not
        positive. Each q is split once into its depth along the ray, t = r·q/|r|², and its squared distance off
        the ray, |r × q|²/|r|² (no cancellation when q lies near the ray), so that ‖d·r − q‖² =
        |r|²(d − t)² + that distance², and a round costs a few passes over E·HW numbers.
        After :meth:`adopt`, each depth is then held within a factor DEPTH_MARGIN of the coarse depths around it
        (the minimum of a 1-D convex problem over an interval is the clamped free minimum): a pixel whose
        pointmaps disagree wildly (low confidence, or random weights) cannot jump to 1000x its neighbours' depth,
        which the full-resolution optimiser's bounded steps never reach either."""
        edge = self.edge_rt()
        pose = self.poses()
        ray = self.camera_rays()
        rr = ray.square().sum(0)                                                               # (HW,)
        sides = []
        for pts, w, frame in ((self.flat_i, self.weight_i, self.ei), (self.flat_j, self.weight_j, self.ej)):
            rot_t = pose[frame, :3, :3].transpose(1, 2)
            q = torch.baddbmm(rot_t @ (edge[:, :, 3:] - pose[frame, :3, 3:]), rot_t @ edge[:, :, :3],
                              pts.transpose(1, 2))                                             # (E, 3, HW)
            along = (ray * q).sum(1).div_(rr)
            # |r × q|² by hand: torch.linalg.cross on the broadcast ray runs 3x slower here
            off = (ray[1] * q[:, 2] - ray[2] * q[:, 1]).square_()
            off.add_((ray[2] * q[:, 0] - ray[0] * q[:, 2]).square_()).add_((ray[0] * q[:, 1] - ray[1] * q[:, 0]).square_())
            sides.append((along, off.div_(rr), w, frame))
        d = self.depths()
        for _ in range(rounds):
            num, wsum = torch.zeros_like(d), torch.zeros_like(d)
            for along, off, w, frame in sides:
                res = (d[frame] - along).square_().mul_(rr).add_(off).sqrt_().clamp_min_(1e-12)
                wr = torch.div(w, res)
                num.index_add_(0, frame, wr * along)
                wsum.index_add_(0, frame, wr)
            sol = num / wsum
            d = torch.where((wsum > 0) & (sol > 0), sol, d)
        log_d = d.log()
        if self.depth_bounds is not None:
            lo, hi = self.depth_bounds
            log_d = torch.minimum(torch.maximum(log_d, lo), hi)
        self.log_depths.copy_(log_d)

    # ---------------------------------------------------------------- loss
    def flow_active(self, iteration: Optional[int], niter: int) -> bool:
        if self.flow is None or self.flow.weight <= 0:
            return False
        return iteration is None or iteration >= self.flow.start_fraction * niter

    def camera_rays(self) -> torch.Tensor:
        """(3, HW) every pixel's camera point at depth 1, channel-first."""
        return torch.cat([self.cf_offsets / self.focal(), self.cf_ones])

    def world_points_cf(self) -> torch.Tensor:
        """(N, 3, H*W) world points, channel-first."""
        cam = self.depths().unsqueeze(1) * self.camera_rays()                 # (N, 3, HW)
        pose = pose_params_to_rt(self.pose_params)
        return torch.baddbmm(pose[:, :, 3:], pose[:, :, :3], cam)

    def alignment_loss(self) -> torch.Tensor:
        """Confidence-weighted pairwise loss (fused forward/backward, see :mod:`.loss`)."""
        li, lj = self.pairwise(self.world_points_cf(), self.edge_rt())
        return (li + lj) / self.total_area

    def alignment_loss_autograd(self) -> torch.Tensor:
        """Plain-autograd version of :meth:`alignment_loss` (slower; kept as a check)."""
        proj = self.world_points()
        pw = self.edge_poses()
        aligned_i = geotrf(pw, self.flat_i)
        aligned_j = geotrf(pw, self.flat_j)
        li = ((proj[self.ei] - aligned_i).norm(dim=-1) * self.weight_i).sum() / self.total_area
        lj = ((proj[self.ej] - aligned_j).norm(dim=-1) * self.weight_j).sum() / self.total_area
        return li + lj

    def flow_term(self) -> torch.Tensor:
        """Unweighted flow loss (fused forward/backward)."""
        return self.fused_flow(self.depths(), self.poses(), self.focal())

    def flow_term_autograd(self) -> torch.Tensor:
        """Plain-autograd version of :meth:`flow_term` (slower; kept as a check)."""
        depths = self.depths().reshape(self.n_frames, self.height, self.width)
        return flow_loss(depths, self.poses(), self.focal(), self.pp, self.ei, self.ej, self.flow, self.grid)

    def loss(self, iteration: Optional[int] = None, niter: int = 300) -> Tuple[torch.Tensor, bool]:
        """Objective at `iteration` (None: as after init, flow term included when configured).

        Returns (loss, whether the flow term was used).
        """
        loss = self.alignment_loss()
        used = False
        if self.flow_active(iteration, niter):
            fl = self.flow_term()
            if not (self.flow.gate > 0 and fl.item() > self.flow.gate):
                loss = loss + self.flow.weight * fl
                used = True
        return loss, used

    # ---------------------------------------------------------------- optimise
    def optimize(self, niter: int = 300, lr: float = 0.01, lr_min: float = 1e-3,
                 callback=None, patience: int = 0,
                 rel_tol: float = 0.0, warmup: int = 0, cuda_graph: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """``niter`` Adam steps. With ``patience`` > 0 it stops once the best loss has not improved by more
        than ``rel_tol`` (relative) for ``patience`` steps, and the variables are left at the best state seen
        (the curve ends where it stopped). Adam's first steps move every variable by about the learning rate,
        so a warm start's loss can rise before it falls: the best state, not the last, is kept, and ``warmup``
        > 0 ramps the learning rate up linearly over that many first steps (the early stop counts from there).
        ``cuda_graph``: on CUDA without the flow term (whose gate reads the loss), steps are replayed from a
        CUDA graph (:mod:`.adam_steps`); the path taken is left in :attr:`optimizer_path`."""
        # gradients are needed here even when the caller runs under torch.no_grad() (inference code does)
        with torch.enable_grad():
            params = self.parameters()
            for p in params:
                p.requires_grad_(True)
            steps = AdamSteps(params, lambda: self.loss(it, niter), lr, keep_before=patience > 0,
                              graph=cuda_graph and self.flow is None)
            curve = np.zeros((niter, 2), np.float64)
            used = np.zeros(niter, bool)
            best, best_loss, since = None, math.inf, 0
            for it in range(niter):
                cur_lr = linear_lr(it / niter, lr, lr_min)
                if it < warmup:
                    cur_lr *= (it + 1) / warmup
                steps.set_lr(cur_lr)
                curve[it, 0], used[it] = steps.step()
                curve[it, 1] = cur_lr
                if callback is not None:
                    callback(it, curve[it, 0])
                if patience > 0:
                    if curve[it, 0] < best_loss:   # the loss of the variables before this step
                        if curve[it, 0] < best_loss - rel_tol * abs(best_loss):
                            since = it
                        best, best_loss = steps.state_before(), curve[it, 0]
                    if it - max(since, warmup) >= patience:
                        curve, used = curve[:it + 1], used[:it + 1]
                        break
            if best is not None:
                with torch.no_grad():
                    for p, b in zip(params, best):
                        p.copy_(b)
            self.optimizer_path = steps.path
        for p in params:
            p.requires_grad_(False)
        return curve, used

    # ---------------------------------------------------------------- outputs
    @torch.no_grad()
    def snapshot(self, points: bool = True) -> Dict[str, np.ndarray]:
        """Current poses, focal and depths; with ``points`` also world points and edge poses."""
        n, h, w = self.n_frames, self.height, self.width
        out = dict(poses_c2w=self.poses().cpu().numpy(), focal=float(self.focal()),
                   depths=self.depths().reshape(n, h, w).cpu().numpy())
        if points:
            out.update(pts3d=self.world_points().reshape(n, h, w, 3).cpu().numpy(),
                       edge_poses=self.edge_poses().cpu().numpy())
        return out

    def run(self, niter: int = 300, lr: float = 0.01, lr_min: float = 1e-3,
            stale_focal: bool = True, clean: bool = True, callback=None, warm: Optional[WarmStart] = None,
            patience: int = 0, rel_tol: float = 0.0, warmup: int = 0, cuda_graph: bool = True) -> AlignmentResult:
        """MST initialisation (warm-started from ``warm`` when given), up to `niter` Adam steps (early stop
        and CUDA graphs: see :meth:`optimize`), outputs (and the cleaned confidence when `clean`)."""
        t0 = time.perf_counter()
        if warm is not None and len(warm.frames):
            self.init_warm(warm, stale_focal=stale_focal)
        else:
            self.init_mst(stale_focal=stale_focal)
        with torch.no_grad():
            init_loss = float(self.loss(None, niter)[0])
        init = self.snapshot(points=False)
        t1 = time.perf_counter()
        curve, used = self.optimize(niter, lr, lr_min, callback=callback, patience=patience,
                                    rel_tol=rel_tol, warmup=warmup, cuda_graph=cuda_graph)
        final_loss = (float(curve[:, 0].min() if patience > 0 else curve[-1, 0])) if len(curve) else init_loss
        return self._result(init, init_loss, curve, used, final_loss, clean, warm, len(curve) < niter,
                            {"init_s": t1 - t0, "optimize_s": time.perf_counter() - t1})

    def run_coarse_to_fine(self, k: int, niter: int = 300, lr: float = 0.01, lr_min: float = 1e-3,
                           stale_focal: bool = True, clean: bool = True, callback=None,
                           warm: Optional[WarmStart] = None, patience: int = 0, rel_tol: float = 0.0,
                           warmup: int = 0, cuda_graph: bool = True, refit_rounds: int = 3,
                           polish: int = 0) -> AlignmentResult:
        """:meth:`run` on every k-th pixel (:meth:`subsampled`), then the full-resolution depths in closed form
        (:meth:`refit_depths`; module doc), then ``polish`` full-resolution Adam steps at ``lr_min`` (ramped up
        over the first 5). The initial values are the coarse run's; the curve is the coarse one followed by the
        polish steps (the loss is a per-pixel mean on either grid); the final loss is the full-resolution one."""
        coarse = self.subsampled(k)
        if warm is not None:
            pts = np.asarray(warm.pts3d).reshape(len(warm.frames), self.height, self.width, 3)[:, ::k, ::k]
            warm = replace(warm, pts3d=pts, focal=None if warm.focal is None else warm.focal / k)
        res = coarse.run(niter, lr, lr_min, stale_focal=stale_focal, clean=False, callback=callback, warm=warm,
                         patience=patience, rel_tol=rel_tol, warmup=warmup, cuda_graph=cuda_graph)
        t0 = time.perf_counter()
        self.adopt(coarse, k)
        self.refit_depths(refit_rounds)
        curve, used = res.loss_curve, res.flow_active
        if polish > 0:
            more, more_used = self.optimize(polish, lr_min, lr_min, warmup=min(5, polish), cuda_graph=cuda_graph)
            curve, used = np.concatenate([curve, more]), np.concatenate([used, more_used])
        else:
            self.optimizer_path = coarse.optimizer_path
        with torch.no_grad():
            final_loss = float(self.loss(None, niter)[0])
        init = {"poses_c2w": res.init_poses_c2w, "focal": res.init_focal * k,
                "depths": res.init_depths.repeat(k, axis=1).repeat(k, axis=2)}
        return self._result(init, res.init_loss, curve, used, final_loss, clean, warm,
                            res.stopped_early, {**res.timings, "refine_s": time.perf_counter() - t0}, coarse=k)

    def _result(self, init: dict, init_loss: float, curve: np.ndarray, used: np.ndarray, final_loss: float,
                clean: bool, warm: Optional[WarmStart], stopped_early: bool, timings: Dict[str, float],
                coarse: int = 1) -> AlignmentResult:
        """The outputs at the current variables (and the cleaned confidence when ``clean``)."""
        t0 = time.perf_counter()
        out = self.snapshot()
        n = self.n_frames
        conf = self.conf.cpu().numpy()
        conf_clean = clean_confidence(conf, out["poses_c2w"], out["depths"], out["focal"],
                                      intrinsics=self.known) if clean else None
        return AlignmentResult(
            poses_c2w=out["poses_c2w"], focal=out["focal"], focals=np.full(n, out["focal"], np.float32),
            intrinsics=self.intrinsics(), depths=out["depths"],
            conf=conf, pts3d=out["pts3d"], edge_poses=out["edge_poses"],
            init_poses_c2w=init["poses_c2w"], init_focal=init["focal"], init_depths=init["depths"],
            init_loss=init_loss, loss_curve=curve, final_loss=final_loss,
            flow_active=used, conf_clean=conf_clean, mst_tree_edges=list(self.mst.tree_edges),
            mst_pnp_frames=list(self.mst.pnp_frames),
            warm_frames=[] if warm is None else [int(k) for k in warm.frames], stopped_early=stopped_early,
            timings={**timings, "clean_s": time.perf_counter() - t0}, optimizer=self.optimizer_path, coarse=coarse)


def align_window(pred1_pts: ArrayLike, pred1_conf: ArrayLike, pred2_pts: ArrayLike, pred2_conf: ArrayLike,
                 edges, n_frames: int, niter: int = 300, lr: float = 0.01, lr_min: float = 1e-3,
                 flow: Optional[dict] = None, device="cpu",
                 min_conf_thr: float = 2.5, niter_pnp: int = 10, clean: bool = True,
                 callback=None, intrinsics: Optional[Tuple[float, float, float, float]] = None,
                 pnp_conf_quantile: Optional[float] = None, warm: Optional[WarmStart] = None,
                 patience: int = 0, rel_tol: float = 0.0, warmup: int = 0,
                 cuda_graph: bool = True, coarse: int = 1, polish: int = 0) -> AlignmentResult:
    """MST initialisation + Adam optimisation of one window's pairwise pointmaps (spec §9).

    flow: None or a dict with `flow_ij`, `flow_ji` (E, 2, H, W), `static_masks` (N, H, W) bool (or
    `dynamic_masks`, negated), optional `weight` (0.01), `start_fraction` (0.1), `gate` (25).
    intrinsics: None (one shared focal is estimated, principal point at the centre) or the calibrated
    (fx, fy, cx, cy) in network pixels, held fixed. pnp_conf_quantile: see WindowConfig. warm, patience,
    rel_tol, warmup: warm start, early stop and learning-rate warm-up (see the module doc; not part of the reference, off by default).
    cuda_graph: on CUDA, replay the steps from a CUDA graph (same steps, less launch overhead; :mod:`.adam_steps`).
    coarse: > 1 optimises on every coarse-th pixel, then solves the full-resolution depths (coarse to fine, see
    the module doc; the step actually used, AlignmentResult.coarse, may be smaller: :meth:`GlobalAligner.coarse_step`),
    and ``polish`` full-resolution steps after that (:meth:`GlobalAligner.run_coarse_to_fine`).
    """
    aligner = GlobalAligner(pred1_pts, pred1_conf, pred2_pts, pred2_conf, edges, n_frames, flow=flow,
                            device=device, min_conf_thr=min_conf_thr, niter_pnp=niter_pnp, intrinsics=intrinsics,
                            pnp_conf_quantile=pnp_conf_quantile)
    options = dict(niter=niter, lr=lr, lr_min=lr_min, clean=clean, callback=callback, warm=warm, patience=patience,
                   rel_tol=rel_tol, warmup=warmup, cuda_graph=cuda_graph)
    k = aligner.coarse_step(coarse)
    return aligner.run_coarse_to_fine(k, polish=polish, **options) if k > 1 else aligner.run(**options)
