"""The DUSt3R network: configuration, blocks, heads, checkpoints, recipe weights, preprocessing.

Names are resolved lazily so that ``easi3r_ros.model.config`` (pure Python) can be used without importing
torch, e.g. to validate a parameter.
"""
import importlib

_EXPORTS = {
    "ModelConfig": "config", "ModelConfigError": "config", "PRESETS": "config", "parse_model_string": "config",
    "resolve_model": "config", "Dust3rNetwork": "network", "PairPrediction": "network", "Reweighting": "blocks",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
