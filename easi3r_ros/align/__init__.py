"""Global alignment of a window's pairwise pointmaps (spec §9) and Sim(3) chaining of windows (§11).

No ROS imports. Main entry points: :func:`align_window` (MST init + Adam, optional flow term) and
:mod:`.sim3` (window chaining). Trajectory metrics: :mod:`easi3r_ros.eval.trajectory` (evo).
"""
import importlib

_EXPORTS = {
    "AlignmentResult": "global_alignment", "GlobalAligner": "global_alignment", "align_window": "global_alignment",
    "frame_confidence": "global_alignment", "WarmStart": "global_alignment", "ChainLink": "sim3", "estimate_window_sim3": "sim3",
}

__all__ = list(_EXPORTS)


def __getattr__(name):  # lazy: the Sim(3) tools are used where torch is not (yet) imported
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
