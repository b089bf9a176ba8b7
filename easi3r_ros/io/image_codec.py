"""numpy ↔ ``sensor_msgs/Image`` fields, without ROS imports.

The ROS node (and the bag tools, through rosbags' message classes) wrap these two functions:

* :func:`fields_to_array` — (height, width, encoding, is_bigendian, step, data) → numpy view/copy;
* :func:`array_to_fields` — numpy image + encoding → :class:`ImageFields` (data as ``bytes``);
* :func:`to_rgb8` — any supported decoded image → (H, W, 3) uint8 RGB for the network.

Everything is vectorised (``np.frombuffer`` + strided views, no per-pixel Python). ``data`` may be
``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')`` (rclpy) or a uint8 numpy array
(rosbags). Invalid messages raise :class:`ImageCodecError` (a ``ValueError``) with a one-line reason.

Supported encodings: ``rgb8``, ``bgr8``, ``mono8``, ``rgba8``, ``bgra8`` (colour input) and, for
publishing masks/depth, ``mono16``, ``16UC1``, ``32FC1`` (plus ``8UC1``/``8UC3`` as raw aliases).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

# encoding → (numpy dtype (native byte order), channels)
ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")

# Images larger than this per side or in all are rejected as corrupt rather than allocated (8192 x 8192 holds
# every camera resolution up to 8K UHD; decoded as RGB it is 192 MiB).
MAX_SIDE = 1 << 15
MAX_PIXELS = 1 << 26


class ImageCodecError(ValueError):
    """An image message that cannot be converted (size, step, data length, encoding)."""


@dataclass
class ImageFields:
    """The ``sensor_msgs/Image`` payload fields (header excluded)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes

    def as_dict(self) -> Dict[str, Any]:
        return dict(height=self.height, width=self.width, encoding=self.encoding,
                    is_bigendian=self.is_bigendian, step=self.step, data=self.data)


def check_image_size(width: int, height: int) -> None:
    """ImageCodecError for an image above MAX_SIDE per side or MAX_PIXELS in all."""
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageCodecError(f"image size {width}x{height} exceeds {MAX_SIDE} px per side")
    if width * height > MAX_PIXELS:
        raise ImageCodecError(f"image size {width}x{height} ({width * height / 1e6:.0f} MP) exceeds "
                              f"{MAX_PIXELS / 1e6:.0f} MP")


def _spec(encoding: str) -> Tuple[np.dtype, int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageCodecError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}") from None


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # e.g. a list of ints


def fields_to_array(height: int, width: int, encoding: str, is_bigendian: int, step: int, data: Any,
                    copy: bool = False) -> np.ndarray:
    """Decode image fields to (H, W) or (H, W, C) numpy of the encoding's dtype (channel order kept).

    Returns a read-only view on ``data`` where possible (``copy=True`` for an owned, writeable array).
    Raises :class:`ImageCodecError` for 0×0 / negative / absurd sizes, a step smaller than a row, a step
    that is not a multiple of the pixel size, data shorter than height×step, or an unsupported encoding.
    """
    dtype, ch = _spec(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageCodecError(f"empty image: {width}x{height} ({encoding})")
    check_image_size(width, height)
    pix = dtype.itemsize * ch
    row = width * pix
    if step < row:
        raise ImageCodecError(f"step {step} is smaller than one row ({width} px x {pix} B = {row} B) for {encoding}")
    if step % dtype.itemsize:
        raise ImageCodecError(f"step {step} is not a multiple of the {encoding} sample size {dtype.itemsize}")
    buf = _buffer(data)
    need = (height - 1) * step + row  # the last row may omit its padding
    if buf.size < need:
        raise ImageCodecError(
            f"image data too short: {buf.size} B for {width}x{height} {encoding} with step {step} "
            f"(needs {height * step} B)")
    big = bool(is_bigendian)
    dt = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    if step == row and buf.size >= height * row:
        arr = buf[:height * row].view(dt).reshape(height, width, ch)
    else:
        rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row), strides=(step, 1))
        arr = np.ascontiguousarray(rows).view(dt).reshape(height, width, ch)
    if dt.byteorder not in ("=", "|") and dt != dtype:
        arr = arr.astype(dtype)  # to native order (copies)
    if ch == 1:
        arr = arr[:, :, 0]
    return arr.copy() if copy else arr


def array_to_fields(image: np.ndarray, encoding: str) -> ImageFields:
    """Encode (H, W) / (H, W, C) numpy as image fields (little-endian, tightly packed rows).

    The array must already be in the encoding's channel order and dtype (e.g. RGB uint8 for ``rgb8``,
    a bool or uint8 mask for ``mono8`` — bools become 0/255 —, float32 metres for ``32FC1``).
    """
    dtype, ch = _spec(encoding)
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1 and ch == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3):
        raise ImageCodecError(f"image must be (H, W) or (H, W, C), got shape {a.shape}")
    got_ch = 1 if a.ndim == 2 else a.shape[2]
    if got_ch != ch:
        raise ImageCodecError(f"{encoding} needs {ch} channel(s), got an array of shape {a.shape}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ImageCodecError(f"empty image: {w}x{h}")
    if a.dtype == np.bool_ and dtype == np.uint8:
        a = a.astype(np.uint8) * np.uint8(255)
    if a.dtype != dtype:
        if np.issubdtype(dtype, np.integer) and not np.issubdtype(a.dtype, np.integer):
            raise ImageCodecError(f"{encoding} needs {dtype} data, got {a.dtype} (convert explicitly)")
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise ImageCodecError(f"values out of range for {encoding} ({dtype})")
        a = a.astype(dtype)
    a = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype)
    return ImageFields(height=int(h), width=int(w), encoding=encoding, is_bigendian=0,
                       step=int(w * ch * dtype.itemsize), data=a.tobytes())


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded colour image in one of ``rgb8, bgr8, mono8, rgba8, bgra8`` → (H, W, 3) uint8 RGB."""
    if encoding not in COLOR_ENCODINGS:
        raise ImageCodecError(
            f"unsupported colour encoding {encoding!r} for the network input; supported: {', '.join(COLOR_ENCODINGS)}")
    a = np.asarray(image)
    if encoding == "rgb8":
        out = a
    elif encoding == "bgr8":
        out = a[:, :, ::-1]
    elif encoding == "rgba8":
        out = a[:, :, :3]
    elif encoding == "bgra8":
        out = a[:, :, 2::-1]
    else:  # mono8
        out = np.repeat(a.reshape(a.shape[0], a.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(out, dtype=np.uint8)


def decode_rgb8(height: int, width: int, encoding: str, is_bigendian: int, step: int, data: Any) -> np.ndarray:
    """Image fields of a colour image → (H, W, 3) uint8 RGB (one copy at most)."""
    if encoding not in COLOR_ENCODINGS:
        raise ImageCodecError(
            f"unsupported image encoding {encoding!r}; supported for input: {', '.join(COLOR_ENCODINGS)}")
    return to_rgb8(fields_to_array(height, width, encoding, is_bigendian, step, data), encoding)


def compressed_size(data: Any) -> Tuple[int, int]:
    """(width, height) from the header of a PNG, JPEG or other Pillow-readable image, decoding no pixels."""
    view = memoryview(_buffer(data))
    if view[:8] == b"\x89PNG\r\n\x1a\n" and view[12:16] == b"IHDR":
        return int.from_bytes(view[16:20], "big"), int.from_bytes(view[20:24], "big")
    if view[:2] == b"\xff\xd8":
        return _jpeg_size(view)
    import PIL.Image
    try:  # Image.open reads only the header (its own bomb check, far above MAX_PIXELS, raises here too)
        with PIL.Image.open(io.BytesIO(view)) as image:
            return image.size
    except PIL.UnidentifiedImageError:
        raise ImageCodecError("cannot decode: not a known image format") from None
    except Exception as exc:  # any failure to read a header rejects the frame, reported with its reason
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ImageCodecError(f"cannot decode: {reason}") from None


def _jpeg_size(buf: memoryview) -> Tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment."""
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            break
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 <= len(buf):
            height, width = int.from_bytes(buf[pos + 5:pos + 7], "big"), int.from_bytes(buf[pos + 7:pos + 9], "big")
            if width and height:
                return width, height
            break
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        pos += 2 + length
    raise ImageCodecError("cannot decode: no JPEG frame header before the image data")


def decode_compressed(data: Any, fmt: str = "") -> np.ndarray:
    """``sensor_msgs/CompressedImage`` data (JPEG/PNG/…) → (H, W, 3) uint8 RGB via ``cv2.imdecode``.

    The size in the header is checked first (:func:`check_image_size`): a small file that claims a huge image
    (a decompression bomb) is rejected before any pixel is allocated.
    """
    import cv2
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageCodecError(f"empty compressed image (format {fmt!r})")
    try:
        check_image_size(*compressed_size(buf))
    except ImageCodecError as exc:
        raise ImageCodecError(f"compressed image (format {fmt!r}, {buf.size} B): {exc}") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageCodecError(f"cannot decode compressed image (format {fmt!r}, {buf.size} B)")
    return np.ascontiguousarray(img[:, :, ::-1])
