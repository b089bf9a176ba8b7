"""Initialisation of the global alignment by a minimum spanning tree (spec §9 "Init").

1. Score every ordered edge by mean(C_i)·mean(C_j); minimum spanning tree of the negated scores.
2. The strongest tree edge fixes the world frame (its camera i = identity) and a first focal
   (Weiszfeld on P_i); the remaining tree edges are placed one by one by confidence-weighted
   Umeyama with scale onto the frame already placed.
3. Missing focals from the best edges, missing poses by PnP-RANSAC on confident pixels.
4. Every edge similarity by Umeyama of P_i^e onto the placed points of frame i; the whole scene is
   rescaled so that the edge scales have geometric mean 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import roma
import scipy.sparse as sp
from scipy.sparse.csgraph import minimum_spanning_tree
import torch

from .geometry import geotrf, pixel_grid, rigid_to_params

BASE_SCALE = 0.5


def weiszfeld_focal(pts: torch.Tensor, n_iter: int = 10) -> float:
    """Focal (px) of a camera-frame pointmap (H, W, 3), principal point (W/2, H/2).

    Minimises Σ ‖(u, v) − pp − f·(x, y)/z‖ by iteratively re-weighted least squares from the
    closed-form L2 estimate; clipped at 0.
    """
    h, w, _ = pts.shape
    pixels = (pixel_grid(h, w, device=pts.device, dtype=pts.dtype)
              - torch.tensor([w / 2, h / 2], dtype=pts.dtype, device=pts.device)).reshape(-1, 2)
    pts = pts.reshape(-1, 3)
    xy = (pts[:, :2] / pts[:, 2:3]).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    dot_xy_px = (xy * pixels).sum(-1)
    dot_xy_xy = xy.square().sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(n_iter):
        wgt = (pixels - focal * xy).norm(dim=-1).clip(min=1e-8).reciprocal()
        focal = (wgt * dot_xy_px).mean() / (wgt * dot_xy_xy).mean()
    return float(focal.clip(min=0.0))


def register(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor):
    """Weighted Umeyama with scale: (s, R, T) minimising Σ w‖s·R·src + T − dst‖² (roma)."""
    rot, trans, scale = roma.rigid_points_registration(
        src.reshape(-1, 3), dst.reshape(-1, 3), weights=weights.reshape(-1), compute_scaling=True)
    return scale, rot, trans


def similarity_matrix(scale, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    out = torch.eye(4, dtype=rot.dtype, device=rot.device)
    out[:3, :3] = scale * rot
    out[:3, 3] = trans
    return out


def edge_scores(conf_i: torch.Tensor, conf_j: torch.Tensor) -> np.ndarray:
    """(E,) float64 scores mean(C_i)·mean(C_j) (means in the input precision, as the reference)."""
    mi = conf_i.reshape(conf_i.shape[0], -1).mean(dim=1)
    mj = conf_j.reshape(conf_j.shape[0], -1).mean(dim=1)
    return np.array([float(a * b) for a, b in zip(mi, mj)], dtype=np.float64)


def pnp_pose(pts3d: torch.Tensor, focal: Optional[float], msk: np.ndarray, n_iter: int = 10,
             known: Optional[Tuple[float, float, float, float]] = None):
    """(focal, camera-to-world pose (4,4) tensor) of a world pointmap by RANSAC-PnP (SQPnP), or None.

    Pixels where `msk` holds are used; principal point (W/2, H/2). Without a focal, 21 focals
    geometrically spaced in [S/2, 3S] (S = max(H, W)) are tried and the one with most inliers kept.
    With `known` intrinsics (fx, fy, cx, cy) only those are used.
    """
    if msk.sum() < 4:
        return None
    pts = pts3d.detach().cpu().numpy()
    h, w, _ = pts.shape
    pixels = np.mgrid[:w, :h].T.astype(np.float32)  # (H, W, 2) = (u, v)
    if known is not None:
        candidates = [known[0]]
    else:
        candidates = [focal] if focal is not None else np.geomspace(max(h, w) / 2, max(h, w) * 3, 21)
    best = None
    for f in candidates:
        k = (np.float32([(f, 0, w / 2), (0, f, h / 2), (0, 0, 1)]) if known is None else
             np.float32([(known[0], 0, known[2]), (0, known[1], known[3]), (0, 0, 1)]))
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(pts[msk], pixels[msk], k, None, iterationsCount=n_iter,
                                                     reprojectionError=5, flags=cv2.SOLVEPNP_SQPNP)
        if not ok or inliers is None or len(inliers) == 0:
            continue
        if best is None or len(inliers) > best[0]:
            best = (len(inliers), rvec, tvec, f)
    if best is None:
        return None
    _, rvec, tvec, f = best
    w2c = np.eye(4)
    w2c[:3, :3] = cv2.Rodrigues(rvec)[0]
    w2c[:3, 3] = tvec.ravel()
    return float(f), torch.from_numpy(np.linalg.inv(w2c)).to(pts3d)


@dataclass
class MSTResult:
    pts3d: List[torch.Tensor]          # per frame (H, W, 3) world points (before the 0.5 rescale)
    poses: torch.Tensor                # (N, 4, 4) camera-to-world (before the rescale)
    focals: List[Optional[float]]      # per-frame focal estimates
    tree_edges: List[Tuple[int, int]]  # tree edges in placement order
    pnp_frames: List[int]              # frames posed by PnP
    identity_frames: List[int]         # frames left at identity
    scores: np.ndarray                 # (E,) edge scores mean(C_i)·mean(C_j)


def mst_init(pred_i: torch.Tensor, pred_j: torch.Tensor, conf_i: torch.Tensor, conf_j: torch.Tensor,
             edges: Sequence[Tuple[int, int]], n_frames: int, im_conf: torch.Tensor,
             min_conf_thr: float = 2.5, niter_pnp: int = 10, stale_focal: bool = True,
             known: Optional[Tuple[float, float, float, float]] = None,
             conf_quantile: Optional[float] = None) -> MSTResult:
    """Place every frame along the maximum-confidence spanning tree of the scene graph.

    `stale_focal` reproduces the reference's order of focal estimation: at each tree step the
    still-unknown focal of view i is taken from the *previously placed* edge's pointmap 1.
    `known` calibrated intrinsics (fx, fy, cx, cy): every focal is fx and PnP uses the full K.
    `conf_quantile`: PnP on the pixels above this confidence quantile when < 1 % pass `min_conf_thr`.
    """
    edges = [(int(i), int(j)) for i, j in edges]
    index = {e: k for k, e in enumerate(edges)}
    scores = edge_scores(conf_i, conf_j)
    graph = sp.dok_array((n_frames, n_frames), dtype=np.float64)
    for (i, j), s in zip(edges, scores):
        graph[i, j] = s
    neg_graph = -graph
    tree = minimum_spanning_tree(neg_graph).tocoo()
    todo = sorted(zip((-tree.data).tolist(), tree.row.tolist(), tree.col.tolist()))

    pts3d: List[Optional[torch.Tensor]] = [None] * n_frames
    poses: List[Optional[torch.Tensor]] = [None] * n_frames
    focals: List[Optional[float]] = [None if known is None else float(known[0])] * n_frames
    eye = torch.eye(4, dtype=pred_i.dtype, device=pred_i.device)

    _, i, j = todo.pop()
    e = index[(i, j)]
    pts3d[i] = pred_i[e].clone()
    pts3d[j] = pred_j[e].clone()
    done = {i, j}
    poses[i] = eye.clone()
    if focals[i] is None:
        focals[i] = weiszfeld_focal(pred_i[e])
    tree_edges = [(i, j)]
    while todo:
        score, i, j = todo.pop()
        if focals[i] is None:
            # reference quirk: `e` still names the previously placed edge here
            focals[i] = weiszfeld_focal(pred_i[e if stale_focal else index[(i, j)]])
        if i in done or j in done:
            # Register the placed frame's pointmap onto its world points; both pointmaps of the edge are in
            # camera i's coordinates, so the rigid part of that registration is camera i's pose.
            e = index[(i, j)]
            placed, new, pred_placed, conf_placed, pred_new = (
                (i, j, pred_i[e], conf_i[e], pred_j[e]) if i in done else (j, i, pred_j[e], conf_j[e], pred_i[e]))
            s, rot, trans = register(pred_placed, pts3d[placed], conf_placed)
            pts3d[new] = geotrf(similarity_matrix(s, rot, trans), pred_new.reshape(-1, 3)).reshape(pred_new.shape)
            done.add(new)
            tree_edges.append((i, j))
            if poses[i] is None:
                poses[i] = similarity_matrix(1.0, rot, trans)
        else:
            todo.insert(0, (score, i, j))

    # missing focals: best edges first (the graph stores negated scores: lowest is best)
    keys = list(neg_graph.keys())
    vals = np.array(list(neg_graph.values()))
    for k in np.argsort(vals):
        i, j = (int(x) for x in keys[k])
        if focals[i] is None:
            focals[i] = weiszfeld_focal(pred_i[index[(i, j)]])

    pnp_frames, identity_frames = [], []
    for n in range(n_frames):
        if poses[n] is None:
            msk = (im_conf[n] > min_conf_thr).cpu().numpy()
            if conf_quantile is not None and msk.mean() < 0.01:
                msk = (im_conf[n] > torch.quantile(im_conf[n].float().flatten(), conf_quantile)).cpu().numpy()
            found = pnp_pose(pts3d[n], focals[n], msk, niter_pnp, known=known)
            if found is not None:
                focals[n], poses[n] = found
                pnp_frames.append(n)
        if poses[n] is None:
            poses[n] = eye.clone()
            identity_frames.append(n)
    return MSTResult(pts3d, torch.stack(poses), focals, tree_edges, pnp_frames, identity_frames, scores)


@dataclass
class InitParams:
    """Initial values of the optimisation variables (storage form) and their decoded values."""
    log_depths: torch.Tensor   # (N, H*W)
    pose_params: torch.Tensor  # (N, 7)
    focal: float               # shared focal (px)
    edge_params: torch.Tensor  # (E, 8)
    mst: MSTResult


def init_from_mst(mst: MSTResult, pred_i: torch.Tensor, conf_i: torch.Tensor,
                  edges: Sequence[Tuple[int, int]]) -> InitParams:
    """Edge similarities from the placed points, scale normalisation, per-frame depth and pose."""
    n_edges = len(edges)
    edge_params = torch.zeros((n_edges, 8), dtype=pred_i.dtype, device=pred_i.device)
    for e, (i, _) in enumerate(edges):
        s, rot, trans = register(pred_i[e], mst.pts3d[i], conf_i[e])
        edge_params[e] = rigid_to_params(rot, trans, scale=s)
    s_factor = torch.exp(np.log(BASE_SCALE) - edge_params[:, 7].mean())
    poses = mst.poses.clone()
    poses[:, :3, 3] *= s_factor
    pts3d = [p * s_factor for p in mst.pts3d]
    log_depths, pose_params = [], []
    for n in range(poses.shape[0]):
        depth = geotrf(torch.linalg.inv(poses[n]), pts3d[n].reshape(-1, 3))[:, 2]
        log_depths.append(depth.log().nan_to_num(neginf=0.0))
        pose_params.append(rigid_to_params(poses[n, :3, :3], poses[n, :3, 3]))
    # shared focal = mean of the per-frame estimates (matches the fixtures' init_focals to 1e-7)
    known = [f for f in mst.focals if f is not None]
    focal = float(sum(known) / len(known)) if known else float("nan")
    if not (np.isfinite(focal) and focal > 0):  # degenerate pointmaps: fall back to a 60° field of view
        h, w = mst.pts3d[0].shape[:2]
        focal = max(h, w) / (2 * np.tan(np.deg2rad(30)))
    return InitParams(torch.stack(log_depths), torch.stack(pose_params), focal, edge_params, mst)
