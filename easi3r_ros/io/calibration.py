"""ROS camera-calibration YAML files (the format of ``camera_calibration`` and ``camera_info_manager``).

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [...]}
    projection_matrix: {rows: 3, cols: 4, data: [...]}

:func:`read_camera_yaml` gives a :class:`~easi3r_ros.io.camera_model.CameraModel` (K and distortion of the
raw image; the rectification and projection matrices of a stereo pair are not used: a monocular camera is
undistorted onto its own K). Problems raise :class:`CameraModelError` naming the file and the key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from .camera_model import CameraModel, CameraModelError

PathLike = Union[str, os.PathLike]


def _matrix(doc: dict, key: str, shape, where: str) -> np.ndarray:
    entry = doc.get(key)
    if not isinstance(entry, dict) or "data" not in entry:
        raise CameraModelError(f"{where}: {key} must be a mapping with rows, cols and data")
    try:
        data = np.asarray(entry["data"], np.float64).ravel()
    except (TypeError, ValueError):
        raise CameraModelError(f"{where}: {key}.data must be a list of numbers") from None
    rows, cols = entry.get("rows", shape[0]), entry.get("cols", shape[1])
    if shape[0] is not None and (rows, cols) != shape:
        raise CameraModelError(f"{where}: {key} must be {shape[0]}x{shape[1]} (got rows={rows}, cols={cols})")
    if len(data) != int(rows) * int(cols):
        raise CameraModelError(f"{where}: {key} has {len(data)} values for rows={rows}, cols={cols}")
    return data.reshape(int(rows), int(cols))


def camera_from_dict(doc: dict, where: str = "calibration") -> CameraModel:
    """A parsed calibration mapping -> CameraModel (``where`` names the source in errors)."""
    if not isinstance(doc, dict):
        raise CameraModelError(f"{where}: not a camera calibration (expected a YAML mapping)")
    missing = [k for k in ("image_width", "image_height", "camera_matrix") if k not in doc]
    if missing:
        raise CameraModelError(f"{where}: missing {', '.join(missing)}")
    try:
        width, height = int(doc["image_width"]), int(doc["image_height"])
    except (TypeError, ValueError):
        raise CameraModelError(f"{where}: image_width and image_height must be integers") from None
    K = _matrix(doc, "camera_matrix", (3, 3), where)
    if not np.allclose(K[2], (0, 0, 1)) or abs(K[1, 0]) > 1e-9:
        raise CameraModelError(f"{where}: camera_matrix is not a pinhole K (last row {K[2].tolist()})")
    model = str(doc.get("distortion_model") or "")
    D = _matrix(doc, "distortion_coefficients", (None, None), where).ravel() if "distortion_coefficients" in doc else ()
    try:
        return CameraModel.from_matrix(K, width, height, model, tuple(D))
    except CameraModelError as exc:
        raise CameraModelError(f"{where}: {exc}") from None


def read_camera_yaml(path: PathLike) -> CameraModel:
    """A ROS camera-calibration YAML file -> CameraModel. Raises CameraModelError."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise CameraModelError(f"cannot read camera calibration {str(p)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise CameraModelError(f"{p}: not valid YAML{line}") from None
    return camera_from_dict(doc, str(p))


def camera_to_dict(camera: CameraModel, camera_name: str = "camera") -> dict:
    """The calibration mapping of ``camera`` (identity rectification, P = [K | 0])."""
    D = list(camera.D) or [0.0] * 5
    P = np.hstack([camera.K, np.zeros((3, 1))])
    return {"image_width": int(camera.width), "image_height": int(camera.height), "camera_name": camera_name,
            "camera_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in camera.K.ravel()]},
            "distortion_model": camera.distortion_model or "plumb_bob",
            "distortion_coefficients": {"rows": 1, "cols": len(D), "data": [float(v) for v in D]},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in np.eye(3).ravel()]},
            "projection_matrix": {"rows": 3, "cols": 4, "data": [float(v) for v in P.ravel()]}}


def write_camera_yaml(path: PathLike, camera: CameraModel, camera_name: str = "camera") -> Path:
    """Write ``camera`` as a ROS camera-calibration YAML file (read back by camera_info_manager)."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(camera_to_dict(camera, camera_name), sort_keys=False, default_flow_style=None))
    return p
