"""Synthetic camera windows with known motion, for tests, calibration and benchmarks.

A smooth random colour texture is viewed by a camera that stays put or pans; optionally a textured
disk moves across it; optionally sensor noise is added. No network weights are needed to make them,
and their ground truth (which pixels move on their own) is exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np


def smooth_texture(height: int, width: int, seed: int, blur: float = 6.0) -> np.ndarray:
    """(H, W, 3) uint8 texture: blurred Gaussian noise stretched to the full range per channel."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    lo, hi = smooth.min(axis=(0, 1)), smooth.max(axis=(0, 1))
    return ((smooth - lo) / (hi - lo) * 255).astype(np.uint8)


@dataclass
class SyntheticWindow:
    frames: List[np.ndarray]        # (H, W, 3) uint8 RGB
    moving_masks: List[np.ndarray]  # (H, W) bool: pixels of the independently moving object


def make_window(n_frames: int = 6, size: Tuple[int, int] = (288, 384), *, pan_px: float = 0.0,
                object_px: float = 0.0, object_radius: int = 40, noise: float = 0.0,
                seed: int = 0) -> SyntheticWindow:
    """Frames of a static textured scene seen by a camera panning ``pan_px`` per frame, with a disk
    moving ``object_px`` per frame (no disk when 0), plus Gaussian sensor noise of ``noise`` grey levels."""
    h, w = size
    margin = int(abs(pan_px) * n_frames) + 2
    background = smooth_texture(h, w + margin, seed)
    disk_texture = smooth_texture(2 * object_radius + 1, 2 * object_radius + 1, seed + 1000, blur=3.0)
    disk_texture[..., 0] = np.maximum(disk_texture[..., 0], 160)  # reddish, visibly distinct
    yy, xx = np.mgrid[-object_radius:object_radius + 1, -object_radius:object_radius + 1]
    disk = xx ** 2 + yy ** 2 <= object_radius ** 2
    rng = np.random.default_rng(seed + 1)
    frames, masks = [], []
    for n in range(n_frames):
        x0 = int(round(n * pan_px)) if pan_px >= 0 else margin - 2 + int(round(n * pan_px))
        frame = background[:, x0:x0 + w].copy()
        mask = np.zeros((h, w), bool)
        if object_px:
            cx = int(round(w * 0.25 + n * object_px))
            cy = h // 2
            ys, xs = slice(cy - object_radius, cy + object_radius + 1), slice(cx - object_radius, cx + object_radius + 1)
            region = frame[ys, xs]
            valid = disk[: region.shape[0], : region.shape[1]]
            region[valid] = disk_texture[: region.shape[0], : region.shape[1]][valid]
            mask[ys, xs] = valid
        if noise:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
        masks.append(mask)
    return SyntheticWindow(frames, masks)
