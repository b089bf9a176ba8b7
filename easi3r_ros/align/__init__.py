"""Global alignment of a window's pairwise pointmaps (spec §9) and Sim(3) chaining / metrics (§10, §11).

No ROS imports. Main entry points: :func:`align_window` (MST init + Adam, optional flow term) and
:mod:`.sim3` (window chaining, ATE / RPE).
"""
from .global_alignment import AlignmentResult, GlobalAligner, align_window, frame_confidence
from .sim3 import TrajectoryChain, ate_rmse, estimate_window_sim3, rpe

__all__ = ["AlignmentResult", "GlobalAligner", "align_window", "frame_confidence", "TrajectoryChain",
           "ate_rmse", "estimate_window_sim3", "rpe"]
