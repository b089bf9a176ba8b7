"""DAVIS-style mask metrics (spec §10) and static/moving object scores.

* J = IoU per frame (both empty → 1), JM = mean J, JR = fraction of frames with J > 0.5;
* F = boundary F-measure per frame: boundaries are the mask pixels with a 4-neighbour outside the mask
  (image border counts as outside), matched within a tolerance of ``ceil(0.008 · diagonal)`` pixels
  (a disk dilation), as in the DAVIS protocol (our own implementation: values are close to, not
  bit-identical with, the official toolkit); FM = mean F;
* :func:`static_dynamic_scores` for label maps with object ids (e.g. ``labelme_truck``: 1 = parked car,
  static, must NOT be flagged; 2 = truck, moving): per-id recall (= fraction of the object's pixels
  flagged) and the false-positive rate on the static ids.

Ground truth is resized to the prediction's size with nearest neighbour (spec §10: "resized like the
input"; pass it through the same resize/crop as the frames when comparing at network resolution).
"""
from __future__ import annotations

import math
import os
from typing import Dict, Iterable, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def load_label_png(path: PathLike) -> np.ndarray:
    """Palette (or grey) PNG → (H, W) uint8 label ids (0 = background)."""
    from PIL import Image
    with Image.open(path) as im:
        if im.mode in ("P", "L", "I", "I;16"):
            return np.array(im).astype(np.uint8 if im.mode in ("P", "L") else np.int64)
        return np.array(im.convert("L"))


def resize_labels(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to (H, W)."""
    import cv2
    lab = np.asarray(labels)
    if lab.shape[:2] == tuple(size):
        return lab
    return cv2.resize(lab.astype(np.int32), (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST).astype(lab.dtype)


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1]
    interior = inner & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return inner & ~interior


def _dilate(b: np.ndarray, radius: int) -> np.ndarray:
    import cv2
    if radius <= 0:
        return b
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = ((yy * yy + xx * xx) <= radius * radius).astype(np.uint8)
    return cv2.dilate(b.astype(np.uint8), disk, iterations=1).astype(bool)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS-style boundary F-measure of two boolean masks (1.0 when both are empty, 0 when one is)."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    radius = int(math.ceil(bound_th * math.hypot(*p.shape))) if bound_th < 1 else int(bound_th)
    bp, bg = _boundary(p), _boundary(g)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    precision = float((bp & _dilate(bg, radius)).sum()) / n_p
    recall = float((bg & _dilate(bp, radius)).sum()) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def davis_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], j_threshold: float = 0.5) -> Dict[str, object]:
    """Per-frame J and F plus JM, JR, FM, FR, J&F over a sequence (gt resized to pred size, nearest)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth masks")
    j, f = [], []
    for p, g in zip(preds, gts):
        p = np.asarray(p, bool)
        g = resize_labels(np.asarray(g).astype(np.uint8), p.shape) > 0
        j.append(jaccard(p, g))
        f.append(boundary_f_measure(p, g))
    j, f = np.array(j), np.array(f)
    return {"J": j, "F": f, "JM": float(j.mean()) if len(j) else float("nan"),
            "JR": float((j > j_threshold).mean()) if len(j) else float("nan"),
            "FM": float(f.mean()) if len(f) else float("nan"),
            "FR": float((f > j_threshold).mean()) if len(f) else float("nan"),
            "JF": float((j.mean() + f.mean()) / 2) if len(j) else float("nan")}


def static_dynamic_scores(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                          moving_ids: Iterable[int] = (2,), static_ids: Iterable[int] = (1,)) -> Dict[str, object]:
    """Recall of moving objects and false-positive rate on static objects.

    Per frame and id: fraction of the object's pixels that the predicted mask flags (labels resized to
    the prediction, nearest). Returns per-frame arrays ``recall_<id>`` / ``fp_<id>`` and their means
    ``moving_recall`` / ``static_fp_rate`` (pixel-weighted over all frames), plus ``J_moving``: IoU of
    the prediction with the union of the moving ids, with the static-id pixels ignored.
    """
    moving_ids, static_ids = list(moving_ids), list(static_ids)
    out: Dict[str, object] = {}
    mov_hit = mov_tot = st_hit = st_tot = 0
    jm = []
    per: Dict[str, list] = {}
    for p, lab in zip(preds, labels):
        p = np.asarray(p, bool)
        lab = resize_labels(np.asarray(lab), p.shape)
        for i in moving_ids + static_ids:
            obj = lab == i
            n = int(obj.sum())
            hit = int((p & obj).sum())
            key = ("recall_" if i in moving_ids else "fp_") + str(i)
            per.setdefault(key, []).append(hit / n if n else float("nan"))
            if i in moving_ids:
                mov_hit, mov_tot = mov_hit + hit, mov_tot + n
            else:
                st_hit, st_tot = st_hit + hit, st_tot + n
        moving = np.isin(lab, moving_ids)
        care = ~np.isin(lab, static_ids)
        jm.append(jaccard(p & care, moving & care))
    out.update({k: np.array(v) for k, v in per.items()})
    out["moving_recall"] = mov_hit / mov_tot if mov_tot else float("nan")
    out["static_fp_rate"] = st_hit / st_tot if st_tot else float("nan")
    out["J_moving"] = np.array(jm)
    out["JM_moving"] = float(np.mean(jm)) if jm else float("nan")
    return out
