"""Recipe weights v1: a random network that anyone regenerates bit-exactly from a model string and a seed.

Every state-dict tensor (official names; the DPT ``scratch.layer_rn.*`` aliases skipped) is drawn from its
own ``numpy.random.RandomState((crc32(name) + seed) % 2**32)`` standard-normal stream, scaled by rank and
name, computed in float64 and cast once to float32. Used by the tests (the reference fixtures use these
weights) and by the ``--random-weights`` smoke-test mode, whose results mean nothing.
"""
from __future__ import annotations

import hashlib
import zlib
from typing import Dict, Tuple

import numpy as np
import torch

RECIPE_VERSION = "v1"
ALIAS_MARKER = "scratch.layer_rn."


def recipe_tensor(name: str, shape: Tuple[int, ...], seed: int) -> np.ndarray:
    rs = np.random.RandomState((zlib.crc32(name.encode("utf-8")) + seed) % 2**32)
    z = rs.standard_normal(size=shape)
    if name == "mask_token":
        scale, offset = 0.02, 0.0
    elif len(shape) >= 2:
        scale, offset = 1.0 / np.sqrt(np.prod(shape[1:])), 0.0
    elif name.endswith(".weight") and "norm" in name[: -len(".weight")].rsplit(".", 1)[-1]:
        scale, offset = 0.1, 1.0
    else:
        scale, offset = 0.1, 0.0
    return (z * scale + offset).astype(np.float32)


def fill_with_recipe(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter of ``model`` with recipe v1 values (aliases follow their tensor).

    One tensor at a time, so the peak memory is the model plus its largest tensor.
    """
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if ALIAS_MARKER not in name:
                tensor.copy_(torch.from_numpy(recipe_tensor(name, tuple(tensor.shape), seed)))
    return model


def recipe_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the non-alias tensors in sorted name order: name, NUL, little-endian float32 bytes."""
    h = hashlib.sha256()
    for name in sorted(k for k in state_dict if ALIAS_MARKER not in k):
        h.update(name.encode("utf-8") + b"\0")
        h.update(np.ascontiguousarray(state_dict[name].detach().cpu().numpy(), dtype="<f4").tobytes())
    return h.hexdigest()
