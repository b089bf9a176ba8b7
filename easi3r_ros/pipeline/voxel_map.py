"""Voxel downsampling and the bounded static map (least recently seen voxels dropped first). No ROS."""
from __future__ import annotations

import threading
from typing import Tuple

import numpy as np

_KEY_BITS = 21
_KEY_OFF = 1 << (_KEY_BITS - 1)


def _voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    # far outliers (and points beyond float32, now inf) share the border voxels instead of wrapping
    q = np.clip(np.nan_to_num(np.floor(points / voxel)), -_KEY_OFF, _KEY_OFF - 1).astype(np.int64) + _KEY_OFF
    return (q[:, 0] << (2 * _KEY_BITS)) | (q[:, 1] << _KEY_BITS) | q[:, 2]


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel: float) -> Tuple[np.ndarray, np.ndarray]:
    """Centroid position and mean colour per occupied voxel (unchanged when ``voxel`` is 0)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    if voxel <= 0 or len(points) == 0:
        return points, colors
    keys = _voxel_keys(points, voxel)
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    n = len(counts)
    p = np.zeros((n, 3)); c = np.zeros((n, 3))
    for d in range(3):
        p[:, d] = np.bincount(inv, points[:, d], n)
        c[:, d] = np.bincount(inv, colors[:, d], n)
    return (p / counts[:, None]).astype(np.float32), np.round(c / counts[:, None]).astype(np.uint8)


class VoxelMap:
    """Voxel-downsampled accumulation of static points (running centroid and colour per voxel), bounded
    by ``max_points``: the voxels seen longest ago go first. Thread-safe."""

    def __init__(self, voxel: float, max_points: int = 1_000_000):
        self.voxel = float(voxel)
        self.max_points = int(max_points)
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._keys = np.zeros(0, np.int64)
            self._sum = np.zeros((0, 3)); self._col = np.zeros((0, 3)); self._n = np.zeros(0)
            self._seen = np.zeros(0, np.int64)
            self._tick = 0
            self.version = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        colors = np.asarray(colors, np.float64).reshape(-1, 3)
        ok = np.isfinite(points).all(1)
        points, colors = points[ok], colors[ok]
        if not len(points):
            return
        # without a voxel size, every point is its own voxel (an unbounded map would still be capped)
        voxel = self.voxel if self.voxel > 0 else 1e-6
        with self._lock:
            self._tick += 1
            keys = np.concatenate([self._keys, _voxel_keys(points, voxel)])
            uniq, inv = np.unique(keys, return_inverse=True)
            m = len(uniq)
            s = np.zeros((m, 3)); c = np.zeros((m, 3))
            allp = np.concatenate([self._sum, points]); allc = np.concatenate([self._col, colors])
            n = np.bincount(inv, np.concatenate([self._n, np.ones(len(points))]), m)
            for d in range(3):
                s[:, d] = np.bincount(inv, allp[:, d], m)
                c[:, d] = np.bincount(inv, allc[:, d], m)
            seen = np.zeros(m, np.int64)
            np.maximum.at(seen, inv, np.concatenate([self._seen, np.full(len(points), self._tick)]))
            if m > self.max_points:
                keep = np.sort(np.argsort(-seen, kind="stable")[:self.max_points])
                uniq, s, c, n, seen = uniq[keep], s[keep], c[keep], n[keep], seen[keep]
            self._keys, self._sum, self._col, self._n, self._seen = uniq, s, c, n, seen
            self.version += 1

    def snapshot(self) -> Tuple[np.ndarray, np.ndarray]:
        """(points float32 (K, 3), colours uint8 (K, 3)): the voxel centroids."""
        with self._lock:
            if not len(self._keys):
                return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
            n = self._n[:, None]
            return (self._sum / n).astype(np.float32), np.round(self._col / n).clip(0, 255).astype(np.uint8)
