"""Evaluation helpers for our own tools (not used by the pipeline): DAVIS-style mask metrics (masks.py)."""
from .masks import (boundary_f_measure, davis_scores, jaccard, load_label_png, resize_labels,
                    static_dynamic_scores)

__all__ = ["jaccard", "boundary_f_measure", "davis_scores", "load_label_png", "resize_labels",
           "static_dynamic_scores"]
