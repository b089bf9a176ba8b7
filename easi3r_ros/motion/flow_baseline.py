"""A learning-free motion-mask baseline: dense optical flow + the epipolar residual of a RANSAC model.

For every frame and each of its neighbours (previous and next frame):

1. dense optical flow with OpenCV's DIS (grey images, both directions);
2. correspondences sampled on a grid where forward and backward flow agree (occlusions and flow
   failures left out) fit a fundamental matrix F and a homography H with OpenCV's USAC (MAGSAC++,
   deterministic);
3. every pixel's residual: the Sampson distance of (x, x + flow(x)) to F — a first-order distance in
   pixels to the epipolar constraint that a static point must meet whatever its depth — or, when the
   two-view geometry is degenerate for F, the transfer error ‖H·x − (x + flow)‖. Degenerate means:
   too few correspondences for F, a camera that barely moves (median flow below ``still_px``: any F
   fits noise), or H explaining ≥ 65 % of F's inliers (pure rotation, a plane, little parallax: F is
   ill-conditioned there and absorbs movers, H is the better model; the ratio is GRIC's break-even, see
   :func:`pair_residual`);
4. a pixel is moving where its residual exceeds ``threshold_px`` for *every* neighbour it has — a
   disoccluded pixel (flow wrong towards one neighbour only) is not flagged — and the mask is cleaned
   with a small morphological opening then closing.

Known blind spots (why this is a baseline, not a method): objects moving along their epipolar lines
(e.g. straight towards or away from a forward-moving camera) keep a zero residual; large moving objects
(over ~half the view) can capture the RANSAC model; textureless regions inherit the flow's smoothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

DEFAULT_THRESHOLD_PX = 2.5  # best mean JM on training-split synthetic sequences (1.5–4 px tried)


@dataclass(frozen=True)
class FlowBaselineConfig:
    """Settings of :func:`flow_motion_masks` (pixels refer to the processed resolution, see ``max_side``)."""

    max_side: int = 480               # frames larger than this (long side) are processed downscaled
    grid_step: int = 6                # correspondence sampling step (px)
    max_points: int = 4000            # at most this many correspondences per frame pair (evenly subsampled)
    consistency_px: float = 0.5       # forward-backward flow disagreement allowed for a sampled point
    ransac_px: float = 1.0            # USAC inlier threshold for F and H (px)
    homography_ratio: float = 0.65    # H is used when its inliers reach this fraction of F's (see pair_residual)
    still_px: float = 0.3             # median flow below this: the camera is treated as still (H ≈ I)
    morph_frac: float = 0.015         # opening/closing kernel diameter as a fraction of the short side


@dataclass
class PairGeometry:
    """Which model explained a frame pair, for diagnostics."""

    model: str                        # "F" or "H"
    inliers_f: int
    inliers_h: int
    points: int
    median_flow_px: float


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def dense_flow(src_grey: np.ndarray, dst_grey: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow (dx, dy) in pixels from ``src`` to ``dst`` (OpenCV DIS, medium preset)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(src_grey, dst_grey, None)


def _sample(flow_fw: np.ndarray, flow_bw: np.ndarray, cfg: FlowBaselineConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Grid correspondences (x, x + flow) whose forward-backward round trip closes within tolerance."""
    h, w = flow_fw.shape[:2]
    ys, xs = np.mgrid[cfg.grid_step // 2:h:cfg.grid_step, cfg.grid_step // 2:w:cfg.grid_step]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    dst = src + flow_fw[ys.ravel(), xs.ravel()]
    inside = (dst[:, 0] >= 0) & (dst[:, 0] <= w - 1) & (dst[:, 1] >= 0) & (dst[:, 1] <= h - 1)
    src, dst = src[inside], dst[inside]
    back = cv2.remap(flow_bw, dst[:, 0].reshape(-1, 1), dst[:, 1].reshape(-1, 1), cv2.INTER_LINEAR).reshape(-1, 2)
    ok = np.linalg.norm(dst + back - src, axis=1) < cfg.consistency_px
    src, dst = src[ok], dst[ok]
    if len(src) > cfg.max_points:  # even subsampling keeps the result deterministic
        keep = np.linspace(0, len(src) - 1, cfg.max_points).round().astype(int)
        src, dst = src[keep], dst[keep]
    return src, dst


def sampson_distance(F: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Sampson distance (px) of correspondences ``src`` → ``dst`` ((..., 2) pixel coordinates) to F."""
    x1 = np.concatenate([src, np.ones(src.shape[:-1] + (1,), src.dtype)], axis=-1)
    x2 = np.concatenate([dst, np.ones(dst.shape[:-1] + (1,), dst.dtype)], axis=-1)
    fx1 = x1 @ F.T      # epipolar lines in the second image
    ftx2 = x2 @ F       # epipolar lines in the first image
    num = np.einsum("...i,...i->...", x2, fx1)
    den = fx1[..., 0] ** 2 + fx1[..., 1] ** 2 + ftx2[..., 0] ** 2 + ftx2[..., 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-12))


def transfer_error(H: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """‖H·src − dst‖ (px) of correspondences ((..., 2) pixel coordinates)."""
    x1 = np.concatenate([src, np.ones(src.shape[:-1] + (1,), src.dtype)], axis=-1)
    proj = x1 @ H.T
    proj = proj[..., :2] / np.where(np.abs(proj[..., 2:]) < 1e-12, 1e-12, proj[..., 2:])
    return np.linalg.norm(proj - dst, axis=-1)


def pair_residual(flow_fw: np.ndarray, flow_bw: np.ndarray,
                  cfg: FlowBaselineConfig = FlowBaselineConfig()) -> Tuple[np.ndarray, PairGeometry]:
    """(H, W) float32 per-pixel residual (px) of the forward flow against the pair's static-scene model."""
    h, w = flow_fw.shape[:2]
    src, dst = _sample(flow_fw, flow_bw, cfg)
    median_flow = float(np.median(np.linalg.norm(dst - src, axis=1))) if len(src) else 0.0
    F = H = None
    inl_f = inl_h = 0
    if len(src) >= 8:
        H, mask_h = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, cfg.ransac_px, maxIters=2000, confidence=0.999)
        inl_h = int(mask_h.sum()) if mask_h is not None else 0
        if median_flow >= cfg.still_px:
            F, mask_f = cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, cfg.ransac_px, 0.999, 2000)
            if F is not None and F.shape != (3, 3):  # several solutions stacked: keep the first
                F = F[:3]
            inl_f = int(mask_f.sum()) if mask_f is not None and F is not None else 0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([xs, ys], axis=-1)
    target = grid + flow_fw
    # Model choice: two translating image layers always admit some F (F = [e']ₓH with e' along their
    # relative motion), so F "explains" a mover in a pure-rotation or planar scene. Torr's GRIC, with its
    # robust cost capped at 4 per outlier, prefers H until H leaves ≈ ln4/4 = 35 % of F's inliers out
    # (the extra cost of F's third dimension, n·ln 4): the count rule below is that break-even.
    use_f = F is not None and inl_f > 0 and inl_h < cfg.homography_ratio * inl_f
    if use_f:
        res = sampson_distance(F.astype(np.float64), grid.astype(np.float64), target.astype(np.float64))
    elif H is not None:
        res = transfer_error(H.astype(np.float64), grid.astype(np.float64), target.astype(np.float64))
    else:  # too few reliable correspondences: no model, nothing can be called moving
        res = np.zeros((h, w))
    return res.astype(np.float32), PairGeometry("F" if use_f else "H", inl_f, inl_h, len(src), median_flow)


def _clean(mask: np.ndarray, diameter: int) -> np.ndarray:
    if diameter < 2:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel).astype(bool)


def flow_residuals(frames: Sequence[np.ndarray], cfg: FlowBaselineConfig = FlowBaselineConfig()
                   ) -> Tuple[List[np.ndarray], List[List[PairGeometry]], float]:
    """Per frame, the residual (px, processed resolution) combined over its neighbours by the minimum.

    Returns (residuals, per-frame pair diagnostics, scale) where ``scale`` = processed / original size.
    """
    if len(frames) < 2:
        raise ValueError(f"the flow baseline needs at least 2 frames, got {len(frames)}")
    h0, w0 = frames[0].shape[:2]
    scale = min(1.0, cfg.max_side / max(h0, w0))
    size = (int(round(w0 * scale)), int(round(h0 * scale)))
    greys = [_grey(f) if scale == 1.0 else cv2.resize(_grey(f), size, interpolation=cv2.INTER_AREA) for f in frames]
    flows = {}
    for t in range(len(frames) - 1):
        flows[(t, t + 1)] = dense_flow(greys[t], greys[t + 1])
        flows[(t + 1, t)] = dense_flow(greys[t + 1], greys[t])
    residuals, diags = [], []
    for t in range(len(frames)):
        per = [pair_residual(flows[(t, n)], flows[(n, t)], cfg) for n in (t - 1, t + 1) if 0 <= n < len(frames)]
        residuals.append(np.minimum.reduce([r for r, _ in per]))
        diags.append([g for _, g in per])
    return residuals, diags, scale


def flow_motion_masks(frames: Sequence[np.ndarray], threshold_px: float = DEFAULT_THRESHOLD_PX,
                      config: Optional[FlowBaselineConfig] = None) -> List[np.ndarray]:
    """Motion masks of a frame sequence: (H, W) bool per frame, True where a pixel moves on its own.

    ``frames``: (H, W, 3) uint8 RGB of one size, in time order, ≥ 2. ``threshold_px``: residual
    threshold in pixels of the original resolution (scaled with the frames when they are processed
    downscaled). See the module docstring for the method.
    """
    cfg = config or FlowBaselineConfig()
    residuals, _, scale = flow_residuals(frames, cfg)
    h0, w0 = frames[0].shape[:2]
    diameter = max(1, int(round(cfg.morph_frac * min(residuals[0].shape))))
    masks = []
    for res in residuals:
        m = _clean(res > threshold_px * scale, diameter)
        if m.shape != (h0, w0):
            m = cv2.resize(m.astype(np.uint8), (w0, h0), interpolation=cv2.INTER_NEAREST).astype(bool)
        masks.append(m)
    return masks
