"""Training of DUSt3R-shaped networks on synthetic pairs: loss, schedule, trainer, diagnostics, ``easi3r train``.

Core code (no ROS). Names resolve lazily so that ``easi3r train --help`` does not import torch.
"""
import importlib

_EXPORTS = {
    "TrainConfig": "trainer", "TrainError": "trainer", "train": "trainer", "init_weights": "trainer",
    "LossWeights": "loss", "confidence_loss": "loss", "pointmap_errors": "loss", "normalise_pair": "loss",
    "evaluate": "diagnostics", "format_report": "diagnostics", "average_room": "diagnostics",
    "token_matches": "correspondence", "CrossAttentionCapture": "correspondence",
    "attention_match_loss": "correspondence",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
