"""A calibrated pinhole camera: intrinsics at the source image's resolution and its lens distortion.

Conventions are those of ROS ``sensor_msgs/CameraInfo`` and OpenCV: pixel (u, v) has its centre at
integer coordinates, K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]. Supported distortion models:
``plumb_bob`` (k1 k2 t1 t2 k3) and ``rational_polynomial`` (k1 k2 t1 t2 k3 k4 k5 k6), both handled by
OpenCV's standard model; an empty model or all-zero coefficients mean none.

The network sees the *undistorted* image (same K, same size). Masks and depth computed there are mapped
back onto the image as received (:meth:`CameraModel.to_raw`), so what the node publishes overlays the
source image pixel for pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence, Tuple

import numpy as np

SUPPORTED_DISTORTION = ("plumb_bob", "rational_polynomial")
_COEFFS = {"plumb_bob": (5,), "rational_polynomial": (8,)}


class CameraModelError(ValueError):
    """Intrinsics or a distortion model that cannot be used; the message says why."""


@dataclass(frozen=True)
class CameraModel:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    D: Tuple[float, ...] = ()
    _maps: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self):
        for name in ("fx", "fy", "cx", "cy"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v)):
                raise CameraModelError(f"{name} must be a finite number (got {v!r})")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraModelError(f"focal lengths must be positive (fx={self.fx}, fy={self.fy})")
        if int(self.width) < 1 or int(self.height) < 1:
            raise CameraModelError(f"image size must be positive (got {self.width}x{self.height})")
        d = tuple(float(x) for x in self.D)
        if not all(math.isfinite(x) for x in d):
            raise CameraModelError("distortion coefficients must be finite")
        object.__setattr__(self, "D", d)
        if any(d):
            if self.distortion_model not in SUPPORTED_DISTORTION:
                raise CameraModelError(
                    f"distortion model {self.distortion_model or '(empty)'!r} is not supported (supported: "
                    f"{', '.join(SUPPORTED_DISTORTION)}); rectify the images first (image_proc) or give "
                    "zero coefficients")
            if len(d) not in _COEFFS[self.distortion_model] and len(d) < 4:
                raise CameraModelError(f"{self.distortion_model} needs {_COEFFS[self.distortion_model][0]} "
                                       f"coefficients (got {len(d)})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(cls, K, width: int, height: int, distortion_model: str = "",
                    D: Sequence[float] = ()) -> "CameraModel":
        k = np.asarray(K, np.float64).reshape(3, 3)
        if abs(k[0, 1]) > 1e-9:
            raise CameraModelError(f"skewed intrinsics (K[0,1] = {k[0, 1]}) are not supported")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height),
                   distortion_model, tuple(D))

    @classmethod
    def parse(cls, text: str, width: int, height: int) -> "CameraModel":
        """``"fx,fy,cx,cy"`` (pixels of the source image) -> an undistorted camera."""
        try:
            values = [float(x) for x in str(text).replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise CameraModelError(f"intrinsics must be four numbers fx,fy,cx,cy (got {text!r})")
        return cls(*values, width=int(width), height=int(height))

    # ------------------------------------------------------------------ properties
    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distorted(self) -> bool:
        return any(self.D)

    def check_image(self, height: int, width: int) -> None:
        if (int(height), int(width)) != (int(self.height), int(self.width)):
            raise CameraModelError(f"the calibration is for {self.width}x{self.height} images, the image is "
                                   f"{width}x{height}")

    def scaled_to(self, height: int, width: int) -> "CameraModel":
        """The same camera for an image resized to (height, width) (e.g. calibration at another binning)."""
        sx, sy = width / self.width, height / self.height
        return CameraModel(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                           int(width), int(height), self.distortion_model, self.D)

    # ------------------------------------------------------------------ distortion
    def _rectify_maps(self):
        import cv2
        if "rect" not in self._maps:
            k, d = self.K, np.asarray(self.D, np.float64)
            self._maps["rect"] = cv2.initUndistortRectifyMap(k, d, None, k, (self.width, self.height), cv2.CV_32FC1)
        return self._maps["rect"]

    def _raw_maps(self):
        """For every raw pixel, where it lands in the undistorted image."""
        import cv2
        if "raw" not in self._maps:
            u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
            pts = np.stack([u.ravel(), v.ravel()], -1).reshape(-1, 1, 2)
            crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-6)
            und = cv2.undistortPoints(pts, self.K, np.asarray(self.D, np.float64), P=self.K, criteria=crit)
            und = und.reshape(self.height, self.width, 2).astype(np.float32)
            self._maps["raw"] = (und[..., 0].copy(), und[..., 1].copy())
        return self._maps["raw"]

    def undistort(self, rgb: np.ndarray) -> np.ndarray:
        """The image as an ideal pinhole camera with the same K would see it (a copy; no-op without distortion)."""
        if not self.distorted:
            return rgb
        import cv2
        self.check_image(*np.shape(rgb)[:2])
        mx, my = self._rectify_maps()
        return cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def to_raw(self, image: np.ndarray, nearest: bool = False, fill: float = 0.0) -> np.ndarray:
        """An image defined on the undistorted grid (mask, depth) resampled onto the raw image's pixels."""
        if not self.distorted:
            return image
        import cv2
        mx, my = self._raw_maps()
        src = image.astype(np.uint8) if image.dtype == bool else image
        out = cv2.remap(src, mx, my, cv2.INTER_NEAREST if nearest or image.dtype == bool else cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        return out.astype(bool) if image.dtype == bool else out

    # ------------------------------------------------------------------ network resolution
    def network_intrinsics(self, crop) -> Tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in the network input's pixels: the inverse of CropInfo.intrinsics_to_camera."""
        self.check_image(*crop.camera_hw)
        sy = crop.camera_hw[0] / crop.resized_hw[0]
        sx = crop.camera_hw[1] / crop.resized_hw[1]
        left, top = crop.crop_box[:2]
        return (self.fx / sx, self.fy / sy, (self.cx + 0.5) / sx - 0.5 - left, (self.cy + 0.5) / sy - 0.5 - top)

