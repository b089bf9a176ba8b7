"""The model shipped with the package (easi3r-tiny) and per-model calibration files.

easi3r-tiny is a small DUSt3R-shaped network this project trains on synthetic rooms (``easi3r train``; its
model card, ``MODEL_CARD.md``, lies beside the weights). It is what the node, ``easi3r run`` and the demo use when
no checkpoint is given. Real robots should use the official DUSt3R / MonST3R checkpoints.

Thresholds that depend on the network (the "nothing moves" guard's evidence level) belong to one model: a
calibration file beside the weights records them — ``calibration.json`` inside a Hugging Face folder, or
``<name>.calibration.json`` next to a ``.pth`` — written from ``easi3r eval bench`` results.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .checkpoint import CheckpointError

DEFAULT_MODEL_NAME = "easi3r-tiny"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "easi3r_tiny"
CALIBRATION_FILE = "calibration.json"

# Keys of a calibration file that map onto WindowConfig fields.
_CALIBRATED_FIELDS = ("motion_guard_level", "motion_guard_contrast")


def default_model_path() -> Optional[Path]:
    """The shipped model's Hugging Face folder, or None when this installation has no weights in it."""
    if (DEFAULT_MODEL_DIR / "config.json").is_file() and (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        return DEFAULT_MODEL_DIR
    return None


def calibration_path(checkpoint: Union[str, Path]) -> Path:
    path = Path(checkpoint)
    return path / CALIBRATION_FILE if path.is_dir() else path.with_name(path.stem + "." + CALIBRATION_FILE)


def load_calibration(checkpoint: Union[str, Path, None]) -> Dict[str, Any]:
    """The calibration recorded for ``checkpoint`` ({} when none): a JSON object of numbers and notes."""
    if checkpoint is None:
        return {}
    path = calibration_path(checkpoint)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable calibration file ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a calibration file holds a JSON object")
    return data


def calibrated_overrides(checkpoint: Union[str, Path, None]) -> Dict[str, float]:
    """WindowConfig overrides measured for this checkpoint (only the fields the file sets, as floats)."""
    data = load_calibration(checkpoint)
    out = {}
    for key in _CALIBRATED_FIELDS:
        value = data.get(key)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise CheckpointError(f"{calibration_path(checkpoint)}: {key} must be a finite number, got {value!r}")
            out[key] = float(value)
    return out
