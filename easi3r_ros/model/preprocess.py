"""Image preprocessing exactly as the reference loader does it, and the map back to camera pixels.

Size 224: resize so the short side is 224, centre-crop 224x224. Size 512: resize so the long side is
512, centre-crop both sides to multiples of 16 (a square image becomes 512x384). Shrinking uses Lanczos,
enlarging bicubic (Pillow). Portrait images stay portrait.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import PIL.Image
import torch


@dataclass(frozen=True)
class CropInfo:
    """Where the network input came from in the camera image."""

    camera_hw: Tuple[int, int]      # (H0, W0) source image
    resized_hw: Tuple[int, int]     # (H1, W1) after the resize
    crop_box: Tuple[int, int, int, int]  # (left, top, right, bottom) in the resized image

    @property
    def network_hw(self) -> Tuple[int, int]:
        left, top, right, bottom = self.crop_box
        return bottom - top, right - left

    def intrinsics_to_camera(self, K: np.ndarray) -> np.ndarray:
        """Network-resolution intrinsics -> camera-resolution intrinsics (pixel-centre convention)."""
        sy = self.camera_hw[0] / self.resized_hw[0]
        sx = self.camera_hw[1] / self.resized_hw[1]
        left, top = self.crop_box[:2]
        out = np.array(K, dtype=np.float64, copy=True)
        out[0, 0] *= sx
        out[1, 1] *= sy
        out[0, 2] = (out[0, 2] + left + 0.5) * sx - 0.5
        out[1, 2] = (out[1, 2] + top + 0.5) * sy - 0.5
        return out

    def mask_to_camera(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) bool network mask -> (H0, W0) bool camera mask (outside the crop: False)."""
        import cv2

        canvas = np.zeros(self.resized_hw, dtype=np.uint8)
        left, top, right, bottom = self.crop_box
        canvas[top:bottom, left:right] = mask.astype(np.uint8)
        h0, w0 = self.camera_hw
        return cv2.resize(canvas, (w0, h0), interpolation=cv2.INTER_NEAREST).astype(bool)

    def depth_to_camera(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) network depth -> (H0, W0) float32 camera depth (bilinear; outside the crop: NaN).

        z-depth does not change with the image's scale, so values are copied, not rescaled."""
        import cv2

        canvas = np.full(self.resized_hw, np.nan, np.float32)
        left, top, right, bottom = self.crop_box
        canvas[top:bottom, left:right] = depth
        h0, w0 = self.camera_hw
        return cv2.resize(canvas, (w0, h0), interpolation=cv2.INTER_LINEAR)


def _resize_long_side(img: PIL.Image.Image, long_side: int) -> PIL.Image.Image:
    current = max(img.size)
    interp = PIL.Image.LANCZOS if current > long_side else PIL.Image.BICUBIC
    new_size = tuple(int(round(x * long_side / current)) for x in img.size)
    return img.resize(new_size, interp)


def preprocess_image(rgb: np.ndarray, size: int, square_ok: bool = False) -> Tuple[torch.Tensor, CropInfo]:
    """(H0, W0, 3) uint8 RGB -> ((3, H, W) float32 in [-1, 1], CropInfo)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    img = PIL.Image.fromarray(rgb)
    w0, h0 = img.size
    if size == 224:
        img = _resize_long_side(img, round(size * max(w0 / h0, h0 / w0)))
    else:
        img = _resize_long_side(img, size)
    w1, h1 = img.size
    cx, cy = w1 // 2, h1 // 2
    if size == 224:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
    else:
        halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if not square_ok and w1 == h1:
            halfh = 3 * halfw // 4
        box = (cx - halfw, cy - halfh, cx + halfw, cy + halfh)
    img = img.crop(box)
    tensor = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)
    tensor = (tensor - 0.5) / 0.5
    return tensor, CropInfo((h0, w0), (h1, w1), box)


def load_rgb(path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    with PIL.Image.open(path) as img:
        return np.asarray(img.convert("RGB")).copy()
