"""Dynamic-object masks from attention statistics (spec §6–§8) and the "nothing moves" guard."""
from .aggregation import AggregatedAttention, AggregationError, aggregate_attention
from .guard import MotionGuard, motion_score, motion_statistics
from .masks import WindowMasks, window_masks
from .segmentation import SegmentationError, SegmentationResult, cluster_tokens, segment_dynamic, token_mask

__all__ = ["AggregatedAttention", "AggregationError", "aggregate_attention", "MotionGuard",
           "motion_score", "motion_statistics", "SegmentationError", "SegmentationResult", "cluster_tokens",
           "segment_dynamic", "token_mask", "WindowMasks", "window_masks"]
