"""The DUSt3R network: configuration, blocks, heads, checkpoints, recipe weights, preprocessing."""
from .config import ModelConfig, ModelConfigError, PRESETS, parse_model_string, resolve_model
from .network import Dust3rNetwork, PairPrediction
from .blocks import Reweighting

__all__ = ["ModelConfig", "ModelConfigError", "PRESETS", "parse_model_string", "resolve_model",
           "Dust3rNetwork", "PairPrediction", "Reweighting"]
