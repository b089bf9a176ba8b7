"""Optional optical-flow term of the global alignment (spec §9, reference demo preset).

For each edge (i, j) the ego-motion flow induced by the current depth of frame i, the poses of
frames i and j and the shared intrinsics is compared with a given optical flow i→j (and the reverse
with flow j→i) on the static pixels of the source frame only.

Form (checked against the `ga_synthetic_geometry_flow` fixture, whose initial flow term it reproduces
to 7.5e-5 relative, where L1, L2 or end-point-error variants are off by factors 2–7):
    loss = mean over the kept elements of smooth-L1(ego − given, β = 1), per flow channel,
           kept = static pixel of the source frame and element value < 50 (the threshold is not
           exercised by the fixture: every element there is far below it);
    total = loss(i→j) + loss(j→i), weighted 0.01, used from iteration ≥ 0.1·niter, and dropped for
    an iteration when the unweighted total exceeds the gate (25).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .geometry import pixel_grid
from .loss import frame_blocks


@dataclass
class FlowConfig:
    """Flow term settings; `static_masks[n]` is True where frame n is static (mask false)."""
    flow_ij: torch.Tensor            # (E, 2, H, W): pixel (u, v) of frame i -> its displacement in frame j
    flow_ji: torch.Tensor            # (E, 2, H, W): the reverse
    static_masks: torch.Tensor       # (N, H, W) bool
    weight: float = 0.01
    start_fraction: float = 0.1      # active from iteration >= start_fraction * niter
    gate: float = 25.0               # term dropped for an iteration when its (unweighted) value exceeds this
    per_pixel_threshold: float = 50.0  # elements whose smooth-L1 value reaches this are ignored
    beta: float = 1.0                # smooth-L1 transition


def ego_flow(depth_src: torch.Tensor, c2w_src: torch.Tensor, c2w_dst: torch.Tensor,
             focal: torch.Tensor, pp: torch.Tensor, grid: torch.Tensor, min_depth: float = 1e-4) -> torch.Tensor:
    """Flow (E, 2, H, W) of the source pixels induced by camera motion src -> dst.

    depth_src (E, H, W); c2w_* (E, 4, 4); shared focal (scalar tensor); pp (2,); grid (H, W, 2).
    The projective division uses z clamped at `min_depth` (points behind the camera get huge flows,
    which the per-element threshold of the loss then discards). Matching the flow fixture's
    initial loss rules out an additive eps (z + 1e-4 is 0.3 % off; z or clamped z: 7e-5).
    """
    d = depth_src.unsqueeze(-1)
    cam = torch.cat([d * (grid - pp) / focal, d], dim=-1)                       # (E, H, W, 3)
    rel = c2w_dst[:, :3, :3].transpose(1, 2) @ c2w_src[:, :3, :3]              # R_dst^T R_src
    t = (c2w_dst[:, :3, :3].transpose(1, 2) @ (c2w_src[:, :3, 3:] - c2w_dst[:, :3, 3:]))[..., 0]
    pts = torch.einsum("eab,ehwb->ehwa", rel, cam) + t[:, None, None, :]
    z = pts[..., 2:3].clamp(min=min_depth)
    uv = focal * pts[..., :2] / z + pp
    return (uv - grid).permute(0, 3, 1, 2)


def masked_smooth_l1(estimate: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     beta: float = 1.0, per_pixel_threshold: float = 50.0) -> torch.Tensor:
    """Mean smooth-L1 over the masked elements (both flow channels), ignoring elements >= threshold.

    estimate/target (E, 2, H, W), mask (E, 1, H, W) bool.
    """
    m = mask.to(estimate.dtype)
    raw = F.smooth_l1_loss(estimate * m, target * m, beta=beta, reduction="none")
    keep = mask & (raw < per_pixel_threshold) if per_pixel_threshold > 0 else mask.expand_as(raw)
    keep = keep.to(raw.dtype)
    return (raw * keep).sum() / keep.sum()


def flow_loss(depths: torch.Tensor, c2w: torch.Tensor, focal: torch.Tensor, pp: torch.Tensor,
              ei: torch.Tensor, ej: torch.Tensor, cfg: FlowConfig, grid: Optional[torch.Tensor] = None):
    """Unweighted flow loss (scalar): forward term on frame i's static pixels + backward on frame j's."""
    h, w = depths.shape[-2:]
    if grid is None:
        grid = pixel_grid(h, w, device=depths.device, dtype=depths.dtype)
    # the reference goes through disparity 1/(d + 1e-6) and back
    dep = 1.0 / (1.0 / (depths + 1e-6))
    f_ij = ego_flow(dep[ei], c2w[ei], c2w[ej], focal, pp, grid)
    f_ji = ego_flow(dep[ej], c2w[ej], c2w[ei], focal, pp, grid)
    loss_i = masked_smooth_l1(f_ij, cfg.flow_ij, cfg.static_masks[ei].unsqueeze(1), cfg.beta,
                              cfg.per_pixel_threshold)
    loss_j = masked_smooth_l1(f_ji, cfg.flow_ji, cfg.static_masks[ej].unsqueeze(1), cfg.beta,
                              cfg.per_pixel_threshold)
    return loss_i + loss_j


class _FlowDirection:
    """Constant data of one flow direction (src -> dst for every edge), edges sorted by source frame."""

    def __init__(self, flow: torch.Tensor, static_src: torch.Tensor, src: torch.Tensor, dst: torch.Tensor):
        # flow (E, 2, H, W), static_src (E, H, W) bool, src/dst (E,) frame indices
        order, self.blocks = frame_blocks(src)
        self.perm = order
        self.src = src[order]
        self.dst = dst[order]
        e = flow.shape[0]
        self.flow = flow[order].reshape(e, 2, -1).contiguous()
        self.static = static_src[order].reshape(e, 1, -1).contiguous()

    def value_and_grads(self, depths, rot, trans, focal, offsets, cfg, min_depth=1e-4):
        """Loss and its gradients wrt depths (N, HW), rot (E, 3, 3), trans (E, 3), focal (scalar).

        Works through the edges in blocks of a common source frame so that the intermediates of a
        block stay in cache; the gradients are accumulated unnormalised and divided by the number
        of kept elements at the end.
        """
        f = focal
        a = offsets / f                                                        # (2, HW)
        a_h = torch.cat([a, torch.ones_like(a[:1])], dim=0)                   # (3, HW)
        num = torch.zeros((), dtype=a.dtype, device=a.device)
        count = torch.zeros((), dtype=a.dtype, device=a.device)
        g_f_direct = torch.zeros((), dtype=a.dtype, device=a.device)
        g_f_a = torch.zeros((), dtype=a.dtype, device=a.device)
        g_depths = torch.zeros_like(depths)
        g_rot = torch.empty_like(rot)
        g_trans = torch.empty_like(trans)
        beta = cfg.beta
        for n, s, e in self.blocks:
            d = depths[n] + 1e-6                                               # reference: 1/(1/(d + 1e-6))
            nb = e - s
            ra = torch.mm(rot[s:e].reshape(nb * 3, 3), a_h).view(nb, 3, -1)     # (B, 3, HW) = R·ã
            pts = torch.addcmul(trans[s:e].unsqueeze(-1), ra, d)               # (B, 3, HW) in camera dst
            z = pts[:, 2:3]
            valid = z > min_depth
            inv_z = z.clamp(min=min_depth).reciprocal_()
            proj = pts[:, :2].mul_(inv_z)                                      # (B, 2, HW) = (X/Z, Y/Z)
            res = torch.addcmul(-offsets - self.flow[s:e], proj, f)            # ego flow − given flow
            absr = res.abs()
            clip = absr.clamp(max=beta)
            elem = absr.sub_(clip, alpha=0.5).mul_(clip)                       # smooth-L1 · beta
            if beta != 1.0:
                elem /= beta
            if cfg.per_pixel_threshold > 0:
                keep = (elem < cfg.per_pixel_threshold).logical_and_(self.static[s:e])
            else:
                keep = self.static[s:e].expand_as(elem)
            keep_f = keep.to(elem.dtype)
            count += keep_f.sum()
            num += torch.dot(elem.reshape(-1), keep_f.reshape(-1))
            g_res = res.div_(beta).clamp_(-1.0, 1.0).mul_(keep_f)              # × count: d loss / d flow
            g_f_direct += torch.dot(g_res.reshape(-1), proj.reshape(-1))       # direct f·X/Z term
            g_xy = g_res.mul_(f * inv_z)                                       # (B, 2, HW)
            g_z = torch.addcmul(g_xy[:, 0] * proj[:, 0], g_xy[:, 1], proj[:, 1]).neg_().mul_(valid[:, 0])
            g_pts = torch.cat([g_xy, g_z.unsqueeze(1)], dim=1)                 # (B, 3, HW)
            g_trans[s:e] = g_pts.sum(dim=2)
            g_d = g_xy[:, 0] * ra[:, 0]                                        # (B, HW) = g_pts · R·ã
            g_d.addcmul_(g_xy[:, 1], ra[:, 1]).addcmul_(g_z, ra[:, 2])
            g_d = g_d.sum(dim=0)
            g_depths[n] += g_d
            g_rot[s:e] = torch.mm((g_pts * d).view(nb * 3, -1), a_h.t()).view(nb, 3, 3)
            # ã depends on f through a = offsets / f (d a / d f = −a / f), and R·[a; 0] = R·ã − R[:, :, 2]
            g_f_a += torch.dot(d, g_d) - (rot[s:e, :, 2] * g_rot[s:e, :, 2]).sum()
        g_f = (g_f_direct - g_f_a / f) / count
        return num / count, g_depths / count, g_rot / count, g_trans / count, g_f


class _FusedFlow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, depths, rot_ij, trans_ij, rot_ji, trans_ji, focal, fwd, bwd, offsets, cfg):
        l1, gd1, gr1, gt1, gf1 = fwd.value_and_grads(depths, rot_ij, trans_ij, focal, offsets, cfg)
        l2, gd2, gr2, gt2, gf2 = bwd.value_and_grads(depths, rot_ji, trans_ji, focal, offsets, cfg)
        ctx.save_for_backward(gd1 + gd2, gr1, gt1, gr2, gt2, gf1 + gf2)
        return l1 + l2

    @staticmethod
    def backward(ctx, go):
        gd, gr1, gt1, gr2, gt2, gf = ctx.saved_tensors
        return gd * go, gr1 * go, gt1 * go, gr2 * go, gt2 * go, gf * go, None, None, None, None


class FusedFlowLoss:
    """Same value as :func:`flow_loss`, with the gradient formed in the forward pass (much faster)."""

    def __init__(self, cfg: FlowConfig, ei: torch.Tensor, ej: torch.Tensor, offsets: torch.Tensor):
        """``offsets`` (2, HW): pixel coordinates minus the principal point."""
        self.cfg = cfg
        self.fwd = _FlowDirection(cfg.flow_ij, cfg.static_masks[ei], ei, ej)
        self.bwd = _FlowDirection(cfg.flow_ji, cfg.static_masks[ej], ej, ei)
        self.offsets = offsets

    @staticmethod
    def _relative(c2w: torch.Tensor, src: torch.Tensor, dst: torch.Tensor):
        r_dst_t = c2w[dst, :3, :3].transpose(1, 2)
        rot = r_dst_t @ c2w[src, :3, :3]
        trans = (r_dst_t @ (c2w[src, :3, 3:] - c2w[dst, :3, 3:]))[..., 0]
        return rot, trans

    def __call__(self, log_depths_exp: torch.Tensor, c2w: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
        """log_depths_exp (N, HW) depths, c2w (N, 4, 4), focal scalar tensor -> unweighted loss."""
        r1, t1 = self._relative(c2w, self.fwd.src, self.fwd.dst)
        r2, t2 = self._relative(c2w, self.bwd.src, self.bwd.dst)
        return _FusedFlow.apply(log_depths_exp, r1, t1, r2, t2, focal, self.fwd, self.bwd, self.offsets, self.cfg)
