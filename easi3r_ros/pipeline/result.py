"""What one window of frames yields: the contract between the core and its users (CLI, ROS node)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class FrameResult:
    """Everything the pipeline knows about one frame of a window.

    Network resolution is the preprocessed (resized + cropped) image the network saw, H x W;
    camera resolution is the source image, H0 x W0. Poses are camera-to-world in the window's
    world frame (camera optical convention: x right, y down, z forward, REP 103 optical frame).
    """

    index: int                       # position in the window
    stamp_ns: Optional[int]          # source image time (nanoseconds), None when unknown
    mask: np.ndarray                 # (H, W) bool, dynamic pixels at network resolution
    mask_camera: np.ndarray          # (H0, W0) bool, dynamic pixels at camera resolution
    cam_to_world: np.ndarray         # (4, 4) float64
    intrinsics: np.ndarray           # (3, 3) float64 at network resolution
    intrinsics_camera: np.ndarray    # (3, 3) float64 at camera resolution
    depth: np.ndarray                # (H, W) float32, z along the optical axis (window units)
    confidence: np.ndarray           # (H, W) float32, max over the frame's edges
    static_points: np.ndarray        # (M, 3) float32 world points: mask false, confidence above threshold
    static_colors: np.ndarray        # (M, 3) uint8 RGB of those points
    depth_camera: Optional[np.ndarray] = None  # (H0, W0) float32 depth on the image as received (NaN: none)

    @property
    def dynamic_ratio(self) -> float:
        return float(self.mask_camera.mean()) if self.mask_camera.size else 0.0


@dataclass
class WindowResult:
    """One window: per-frame results plus the window-level quantities and diagnostics."""

    frames: List[FrameResult]
    focal: float                                  # shared focal (px) at network resolution
    edges: np.ndarray                             # (E, 2) ordered edges (i, j) of the scene graph
    moving: bool = True                           # False when the "nothing moves" guard emptied the masks
    motion_score: Optional[float] = None          # the guard's evidence level (see motion.guard)
    otsu_threshold: Optional[float] = None        # the final (pass-2) adaptive multi-Otsu threshold
    align_loss: Optional[float] = None            # global alignment's final (best, with an early stop) loss
    align_iterations: int = 0                     # its Adam steps (fewer than niter after an early stop)
    align_warm: bool = False                      # it started from the previous window's solution
    align_loss_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (align_iterations,) loss
                                                                                # before each step
    timings: Dict[str, float] = field(default_factory=dict)  # seconds per stage
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)  # fixture-named arrays for results.npz

    def __len__(self) -> int:
        return len(self.frames)
