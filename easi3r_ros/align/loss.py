"""Fused pairwise alignment loss with a hand-written gradient.

    L = Σ_e Σ_p w_i[e,p]·‖X_{i(e)}[p] − S_e·P_i[e,p]‖ + Σ_e Σ_p w_j[e,p]·‖X_{j(e)}[p] − S_e·P_j[e,p]‖

with X the world points of every frame and S_e the edge similarity (3×4, scale included).

Layout: channel-first (E, 4, HW) homogeneous points, so S_e·P is a single batched matmul; per side,
edges are sorted by the frame they compare against, so the frame's world points are broadcast to
its block of edges (no gather, and the gradient is a block sum instead of a scatter). The gradients
wrt the world points and the similarities are formed during the forward pass, one block at a time
(the intermediates stay in cache); the backward pass only scales them. This replaces ~20 autograd
nodes over E·HW·3 elements per side.
"""
from __future__ import annotations

from typing import List, Tuple

import torch


def frame_blocks(frame_of_edge: torch.Tensor) -> Tuple[torch.Tensor, List[Tuple[int, int, int]]]:
    """Edges sorted by frame (stable): the permutation, and (frame, start, stop) of each run of one frame."""
    order = torch.argsort(frame_of_edge, stable=True)
    frames = frame_of_edge[order].tolist()
    blocks: List[Tuple[int, int, int]] = []
    start = 0
    for k in range(1, len(frames) + 1):
        if k == len(frames) or frames[k] != frames[start]:
            blocks.append((frames[start], start, k))
            start = k
    return order, blocks


class _Side:
    """Constant data of one side (view i or view j) of every edge, sorted by frame."""

    def __init__(self, pts: torch.Tensor, weight: torch.Tensor, frame_of_edge: torch.Tensor, by_frame: bool = True):
        # pts (E, HW, 3), weight (E, HW), frame_of_edge (E,)
        order, self.blocks = frame_blocks(frame_of_edge)                        # (frame, start, stop)
        self.perm = order
        self.by_frame = by_frame
        self.frames = frame_of_edge[order]                                      # (E,) frame of each sorted edge
        pts = pts[order]
        ones = torch.ones(pts.shape[:2] + (1,), dtype=pts.dtype, device=pts.device)
        self.pts = torch.cat([pts, ones], dim=2).transpose(1, 2).contiguous()   # (E, 4, HW)
        self.weight = weight[order].contiguous()                                 # (E, HW)
        hw = self.pts.shape[-1]
        # CUDA: chunk of the split reduction (see _outer_sum), the largest power of two <= 1024 dividing HW
        self.split = next((c for c in (1024, 512, 256, 128, 64) if hw % c == 0 and hw > c), None) \
            if self.pts.device.type == "cuda" else None

    def value_and_grads(self, world: torch.Tensor, sim: torch.Tensor):
        """Loss sum and its gradients wrt world (N, 3, HW) and the sorted similarities sim (E, 3, 4).

        One block of edges (same frame) at a time, so that the intermediates stay in cache; without
        ``by_frame``, all edges in one batched product (fewer, larger calls: for small pointmaps, where the
        per-call overhead outweighs the cache).
        """
        if not self.by_frame:
            loss, res = self._weighted_residuals(world.index_select(0, self.frames), sim, self.pts, self.weight)
            return loss, torch.zeros_like(world).index_add_(0, self.frames, res), self._outer_sum(res, self.pts).neg_()
        loss = torch.zeros((), dtype=world.dtype, device=world.device)
        d_world = torch.zeros_like(world)
        d_sim = torch.empty_like(sim)
        for n, a, b in self.blocks:
            pts = self.pts[a:b]                                                # (B, 4, HW)
            block_loss, res = self._weighted_residuals(world[n].expand(b - a, -1, -1), sim[a:b], pts,
                                                       self.weight[a:b])
            loss += block_loss
            d_world[n] += res.sum(dim=0)
            d_sim[a:b] = self._outer_sum(res, pts).neg_()
        return loss, d_world, d_sim

    @staticmethod
    def _weighted_residuals(world: torch.Tensor, sim: torch.Tensor, pts: torch.Tensor, w: torch.Tensor):
        """Σ w·‖X − S·P‖ over edges (B, ...) and pixels, and d loss / d residual (B, 3, HW)."""
        res = torch.baddbmm(world, sim, pts, alpha=-1)                         # X − S·P
        norm = res[:, 0].square()                                              # (B, HW); planes are
        norm.addcmul_(res[:, 1], res[:, 1]).addcmul_(res[:, 2], res[:, 2]).sqrt_()  # contiguous
        loss = torch.dot(norm.reshape(-1), w.reshape(-1))
        res.mul_(torch.div(w, norm.clamp_min_(1e-30)).unsqueeze(1))
        return loss, res

    def _outer_sum(self, res: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """(B, 3, 4) Σ_p res[:, :, p]·pts[:, :, p]ᵀ. On CUDA the plain bmm (a 3x4 result over HW ~ 1e5) gets a
        kernel that ran 0.9 ms per call on an H200, 90 % of a step (profile in benchmarks/results/gpu); splitting
        HW into chunks that are summed afterwards gives the GPU B·HW/L independent small products."""
        if self.split is None:
            return torch.bmm(res, pts.transpose(1, 2))
        b, _, hw = res.shape
        k = hw // self.split
        r = res.reshape(b, 3, k, self.split).transpose(1, 2).reshape(b * k, 3, self.split)
        q = pts.reshape(b, 4, k, self.split).transpose(1, 2).reshape(b * k, 4, self.split)
        return torch.bmm(r, q.transpose(1, 2)).reshape(b, k, 3, 4).sum(dim=1)


class _PairwiseLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, world, sim_i, sim_j, side_i, side_j):
        li, dwi, dsi = side_i.value_and_grads(world, sim_i)
        lj, dwj, dsj = side_j.value_and_grads(world, sim_j)
        ctx.save_for_backward(dwi, dwj, dsi, dsj)
        return li, lj

    @staticmethod
    def backward(ctx, go_i, go_j):
        dwi, dwj, dsi, dsj = ctx.saved_tensors
        return dwi * go_i + dwj * go_j, dsi * go_i, dsj * go_j, None, None


class PairwiseLoss:
    """Σ over both sides of the confidence-weighted point distances (not yet divided by the area).

    pts_i, pts_j (E, HW, 3) pairwise points in camera i; w_i, w_j (E, HW) weights; ei, ej (E,) frames;
    by_frame: see :meth:`_Side.value_and_grads`.
    Call with world (N, 3, HW) and edge similarities (E, 3, 4) in edge order; returns (L_i, L_j).
    """

    def __init__(self, pts_i, pts_j, w_i, w_j, ei, ej, by_frame: bool = True):
        self.side_i = _Side(pts_i, w_i, ei, by_frame)
        self.side_j = _Side(pts_j, w_j, ej, by_frame)

    def __call__(self, world: torch.Tensor, sim: torch.Tensor):
        return _PairwiseLoss.apply(world, sim[self.side_i.perm], sim[self.side_j.perm], self.side_i, self.side_j)
