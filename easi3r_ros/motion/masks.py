"""One call from per-edge attention maps to the masks of a window (spec §6–§8 + the guard).

Typical wiring in the window pipeline::

    m1 = window_masks(maps1_v1, maps1_v2, edges, enc_feat, (H, W), prefix="pass1_", guard=guard)
    if not m1.moving:          # nothing moves: pass 2 would equal pass 1 (empty re-weighting mask)
        final = m1
    else:
        # pass 2 network forwards with m1.token_masks as re-weighting masks (spec §8), then
        final = window_masks(maps2_v1, maps2_v2, edges, enc_feat, (H, W), prefix="pass2_",
                             labels=m1.seg.labels)   # encoder tokens unchanged: reuse the clustering
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from .aggregation import AggregatedAttention, aggregate_attention
from .guard import DEFAULT_FLOOR, GuardDecision, MotionGuard, motion_statistics  # noqa: F401 (GuardDecision re-exported)
from .segmentation import DEFAULT_CLUSTERS, DEFAULT_SEED, SegmentationResult, segment_dynamic, token_mask


@dataclass
class WindowMasks:
    """``masks`` (N, H, W) bool after the guard; ``token_masks`` (N, h, w) bool (their 16×16 max-pool,
    the pass-2 re-weighting masks); ``agg`` / ``seg`` the stage outputs (``seg.masks`` = the reference
    masks before the guard); ``decision`` the guard's verdict (None without a guard); ``stats`` all
    guard statistics (always computed: cheap, and the lead needs them to calibrate)."""

    masks: np.ndarray
    token_masks: np.ndarray
    agg: AggregatedAttention
    seg: SegmentationResult
    decision: Optional[GuardDecision]
    stats: Dict[str, object] = field(default_factory=dict)
    prefix: str = ""

    @property
    def moving(self) -> bool:
        return True if self.decision is None else self.decision.moving

    @property
    def motion_score(self) -> Optional[float]:
        return None if self.decision is None else self.decision.score

    def arrays(self) -> Dict[str, np.ndarray]:
        """Fixture-named arrays of this pass (for results.npz); ``dynamic_masks`` are the reference masks."""
        out = self.agg.as_numpy(self.prefix)
        out.update(self.seg.as_numpy(self.prefix))
        return out


def window_masks(maps_view1, maps_view2, edges, encoder_feat, image_size: Tuple[int, int], *,
                 n_frames: Optional[int] = None, labels=None, kmeans: str = "sklearn",
                 n_clusters: int = DEFAULT_CLUSTERS, random_state: int = DEFAULT_SEED,
                 kmeans_threads: Optional[int] = None, device: Optional[Union[str, torch.device]] = None,
                 guard: Optional[MotionGuard] = None, prefix: str = "") -> WindowMasks:
    """Aggregate (§6), segment (§7), apply the guard; see the module docstring for the two-pass use."""
    agg = aggregate_attention(maps_view1, maps_view2, edges, n_frames=n_frames)
    seg = segment_dynamic(agg.dynamic_map, encoder_feat, image_size, n_clusters=n_clusters,
                          random_state=random_state, kmeans=kmeans, labels=labels, device=device,
                          kmeans_threads=kmeans_threads)
    fg = token_mask(seg.masks)
    stats = motion_statistics(agg.raw, fg, labels=seg.labels, floor=DEFAULT_FLOOR if guard is None else guard.floor)
    decision = None if guard is None else guard.judge(stats)
    masks = seg.masks if decision is None else MotionGuard.apply(seg.masks, decision)
    tmask = fg if masks is seg.masks else token_mask(masks)
    return WindowMasks(masks=masks, token_masks=tmask, agg=agg, seg=seg, decision=decision, stats=stats,
                       prefix=prefix)
