"""Depth metrics after per-frame median scaling, and ground truth mapped to the network's resolution.

The pipeline predicts depth (z along the optical axis) at network resolution — the camera image resized
and centre-cropped by :func:`easi3r_ros.model.preprocess.preprocess_image` (224×224 for 224 models). The
ground truth is at camera resolution; :func:`to_network_resolution` maps it through the same resize and
crop (nearest neighbour: no depth mixed across object edges, masks stay binary), so predictions are
scored where the network saw the scene, pixel for pixel.

Metrics (standard monocular-depth definitions), on the valid ground-truth pixels (finite, > 0) only:
the prediction is scaled per frame by s = median(gt) / median(pred) (monocular depth has no scale), then

* abs-rel = mean(|s·pred − gt| / gt);
* δ<1.25 = fraction of pixels with max(s·pred / gt, gt / (s·pred)) < 1.25.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:  # the preprocessing module imports torch; only its CropInfo fields are read here
    from ..model.preprocess import CropInfo


def to_network_resolution(array: np.ndarray, crop: "CropInfo") -> np.ndarray:
    """(H0, W0[, C]) camera-resolution array → (H, W[, C]) as the network saw it (nearest resize, crop)."""
    a = np.asarray(array)
    if a.shape[:2] != tuple(crop.camera_hw):
        raise ValueError(f"array of shape {a.shape[:2]} for a camera of {crop.camera_hw}")
    h1, w1 = crop.resized_hw
    src = a.astype(np.uint8) if a.dtype == bool else a
    resized = cv2.resize(src, (w1, h1), interpolation=cv2.INTER_NEAREST)
    left, top, right, bottom = crop.crop_box
    out = resized[top:bottom, left:right]
    return out.astype(bool) if a.dtype == bool else out


def median_scaled_errors(pred: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
    """abs-rel and δ<1.25 of one depth map after median scaling (both (H, W); NaN when nothing is valid)."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    if not valid.any():
        return {"abs_rel": float("nan"), "delta_1_25": float("nan"), "scale": float("nan"), "valid": 0}
    p, g = pred[valid], gt[valid]
    scale = float(np.median(g) / np.median(p))
    p = p * scale
    ratio = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "delta_1_25": float(np.mean(ratio < 1.25)),
            "scale": scale, "valid": int(valid.sum())}


def depth_errors(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> Dict[str, float]:
    """Mean over frames of :func:`median_scaled_errors` (frames without valid pixels are left out)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted depth maps for {len(gts)} ground-truth maps")
    per = [median_scaled_errors(p, g) for p, g in zip(preds, gts)]
    per = [e for e in per if e["valid"]]
    if not per:
        return {"abs_rel": float("nan"), "delta_1_25": float("nan"), "frames": 0}
    return {"abs_rel": float(np.mean([e["abs_rel"] for e in per])),
            "delta_1_25": float(np.mean([e["delta_1_25"] for e in per])), "frames": len(per)}
