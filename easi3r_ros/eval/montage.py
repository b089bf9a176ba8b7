"""Montage pictures: frames and masks in a labelled grid (one row per source, one column per frame)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple, Union

import cv2
import numpy as np

Tile = np.ndarray  # (H, W, 3) uint8 RGB, or (H, W) bool mask


def overlay(rgb: np.ndarray, mask: np.ndarray, color=(255, 40, 40), alpha: float = 0.55) -> np.ndarray:
    """``rgb`` with ``mask`` pixels tinted (mask resized to the image, nearest)."""
    mask = np.asarray(mask, bool)
    if mask.shape != rgb.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.float32(color)
    return out.round().astype(np.uint8)


def _tile(item: Tile, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    img = np.asarray(item)
    if img.ndim == 2:
        img = np.repeat((img.astype(bool) * 255).astype(np.uint8)[..., None], 3, axis=2)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST if img.dtype == bool else cv2.INTER_AREA)


def montage(rows: Sequence[Tuple[str, Sequence[Tile]]], tile_hw: Tuple[int, int] = (120, 160),
            label_width: int = 170, title: str = "") -> np.ndarray:
    """(H, W, 3) uint8 RGB grid: each row a label then its tiles (missing tiles stay grey)."""
    h, w = tile_hw
    n_cols = max((len(t) for _, t in rows), default=0)
    top = 28 if title else 0
    canvas = np.full((top + len(rows) * (h + 4), label_width + n_cols * (w + 4), 3), 40, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if title:
        cv2.putText(canvas, title, (6, 19), font, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    for r, (label, tiles) in enumerate(rows):
        y = top + r * (h + 4)
        for k, line in enumerate(label.split("\n")[:4]):
            cv2.putText(canvas, line, (6, y + 20 + 18 * k), font, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        for c, item in enumerate(tiles):
            x = label_width + c * (w + 4)
            canvas[y:y + h, x:x + w] = _tile(item, tile_hw)
    return canvas


def save_png(image: np.ndarray, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
