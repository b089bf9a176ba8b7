"""The resumable run state ``DIR/last.pt``: model, optimiser, scheduler, step, RNG states, the run's settings.

Written atomically (a temporary file renamed over the old one), so an interrupted save never leaves a
truncated state behind. Loaded with ``weights_only=True``: it holds tensors and plain Python values only.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import torch

STATE_NAME = "last.pt"


class ResumeMismatchError(ValueError):
    """DIR/last.pt belongs to a run with different settings."""


def rng_states() -> Dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate()}


def set_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(path: Path, *, net, optimiser, scheduler, step: int, seconds: float,
               settings: Dict[str, Any]) -> None:
    state = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
             "model_string": net.cfg.to_string(), "optimizer": optimiser.state_dict(),
             "scheduler": scheduler.state_dict(), "step": int(step), "seconds": float(seconds),
             "rng": rng_states(), "settings": dict(settings)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_settings(saved: Dict[str, Any], current: Dict[str, Any], keys: Iterable[str], path: Path) -> None:
    """Refuse to resume a run whose trajectory-defining settings differ (they would silently mix two runs)."""
    diff = [f"{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)"
            for k in keys if saved.get(k) != current.get(k)]
    if diff:
        raise ResumeMismatchError(f"{path} was written by a run with other settings ({'; '.join(diff)}); "
                                  "re-run with the same options to resume, or use a new --out")
