"""numpy <-> sensor_msgs/Image fields: round trips and validation."""
import array

import numpy as np
import pytest

from easi3r_ros.io.image_codec import (ImageCodecError, array_to_fields, decode_compressed, decode_rgb8,
                                       fields_to_array, to_rgb8)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding,shape,dtype", [
    ("rgb8", (5, 7, 3), np.uint8), ("bgr8", (5, 7, 3), np.uint8), ("rgba8", (4, 3, 4), np.uint8),
    ("bgra8", (4, 3, 4), np.uint8), ("mono8", (6, 9), np.uint8), ("mono16", (3, 5), np.uint16),
    ("16UC1", (3, 5), np.uint16), ("32FC1", (2, 3), np.float32)])
def test_round_trip(encoding, shape, dtype):
    a = (RNG.random(shape) * 1000).astype(dtype) if dtype != np.uint8 else RNG.integers(0, 256, shape, dtype=np.uint8)
    f = array_to_fields(a, encoding)
    assert f.height == shape[0] and f.width == shape[1] and f.is_bigendian == 0
    assert f.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert isinstance(f.data, bytes) and len(f.data) == f.height * f.step
    for data in (f.data, bytearray(f.data), memoryview(f.data), np.frombuffer(f.data, np.uint8),
                 array.array("B", f.data)):
        b = fields_to_array(f.height, f.width, f.encoding, f.is_bigendian, f.step, data)
        assert b.dtype == dtype and b.shape == shape
        np.testing.assert_array_equal(b, a)
    assert fields_to_array(**f.as_dict(), copy=True).flags.writeable


def test_padded_rows_and_big_endian():
    a = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    padded = np.zeros((4, 5 * 3 + 5), np.uint8)
    padded[:, :15] = a.reshape(4, 15)
    np.testing.assert_array_equal(fields_to_array(4, 5, "rgb8", 0, 20, padded.tobytes()), a)
    # the last row's padding may be missing
    np.testing.assert_array_equal(fields_to_array(4, 5, "rgb8", 0, 20, padded.tobytes()[:-5]), a)
    d = RNG.random((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(fields_to_array(3, 4, "32FC1", 1, 16, d.astype(">f4").tobytes()), d)
    u = RNG.integers(0, 65535, (3, 4)).astype(np.uint16)
    np.testing.assert_array_equal(fields_to_array(3, 4, "16UC1", 1, 8, u.astype(">u2").tobytes()), u)


def test_colour_conversion():
    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb8(rgb[:, :, ::-1], "bgr8"), rgb)
    rgba = np.dstack([rgb, np.full((3, 4), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb8(rgba, "rgba8"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgba[:, :, [2, 1, 0, 3]], "bgra8"), rgb)
    mono = rgb[:, :, 0]
    out = to_rgb8(mono, "mono8")
    assert out.shape == (3, 4, 3) and (out == mono[:, :, None]).all()
    f = array_to_fields(rgb[:, :, ::-1], "bgr8")
    np.testing.assert_array_equal(decode_rgb8(**f.as_dict()), rgb)
    # masks: bool → 0/255 mono8
    m = array_to_fields(np.array([[True, False]]), "mono8")
    assert m.data == b"\xff\x00"


@pytest.mark.parametrize("args,match", [
    ((0, 0, "rgb8", 0, 0, b""), "empty image"),
    ((0, 5, "rgb8", 0, 15, b""), "empty image"),
    ((-1, 5, "rgb8", 0, 15, b""), "empty image"),
    ((2, 2, "yuv422", 0, 4, b"\0" * 8), "unsupported image encoding 'yuv422'"),
    ((2, 2, "rgb8", 0, 5, b"\0" * 12), "step 5 is smaller than one row"),
    ((2, 2, "16UC1", 0, 5, b"\0" * 12), "not a multiple"),
    ((2, 2, "rgb8", 0, 6, b"\0" * 11), "image data too short: 11 B"),
    ((100000, 2, "mono8", 0, 2, b"\0" * 4), "exceeds"),
])
def test_field_validation(args, match):
    with pytest.raises(ImageCodecError, match=match):
        fields_to_array(*args)
    assert issubclass(ImageCodecError, ValueError)


def test_array_validation():
    with pytest.raises(ImageCodecError, match="needs 3 channel"):
        array_to_fields(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageCodecError, match="empty image"):
        array_to_fields(np.zeros((0, 2, 3), np.uint8), "rgb8")
    with pytest.raises(ImageCodecError, match="unsupported"):
        array_to_fields(np.zeros((2, 2, 3), np.uint8), "jpeg")
    with pytest.raises(ImageCodecError, match=r"\(H, W\)"):
        array_to_fields(np.zeros((2, 2, 3, 1), np.uint8), "rgb8")
    with pytest.raises(ImageCodecError, match="out of range"):
        array_to_fields(np.array([[300]], np.int32), "mono8")
    with pytest.raises(ImageCodecError, match="convert explicitly"):
        array_to_fields(np.zeros((2, 2), np.float32), "mono8")
    with pytest.raises(ImageCodecError, match="unsupported image encoding '16UC1'"):
        decode_rgb8(1, 1, "16UC1", 0, 2, b"\0\0")
    with pytest.raises(ImageCodecError, match="unsupported colour encoding"):
        to_rgb8(np.zeros((1, 1), np.uint16), "mono16")


def test_compressed():
    import cv2
    rgb = RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    np.testing.assert_array_equal(decode_compressed(buf, "png"), rgb)
    with pytest.raises(ImageCodecError, match="cannot decode"):
        decode_compressed(b"not an image", "jpeg")
    with pytest.raises(ImageCodecError, match="empty"):
        decode_compressed(b"", "jpeg")


def test_decoding_is_vectorised():
    """Whole-array operations, not a per-pixel Python loop: counted in function calls, not timed."""
    import sys
    a = RNG.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    f = array_to_fields(a, "bgr8")
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append(event) if event in ("call", "c_call") else None)
    try:
        out = decode_rgb8(**f.as_dict())
    finally:
        sys.setprofile(None)
    assert len(calls) < 1000, len(calls)  # 13 today; a loop over the 2 M pixels makes millions
    np.testing.assert_array_equal(out, a[:, :, ::-1])


def _png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of zeros, compressed from scanlines streamed one at a time (never held decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []  # filter byte 0 + one zero byte a pixel
    parts += [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def png_bomb():
    return _png_bomb(12000, 12000)


def test_compressed_bomb_is_rejected_from_its_header(png_bomb):
    """A 12000 x 12000 PNG of ~140 KB decodes to 432 MB of RGB: refused before decoding, naming the size."""
    import time
    import tracemalloc
    assert len(png_bomb) < 1 << 20
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageCodecError, match=r"image size 12000x12000 \(144 MP\) exceeds 67 MP"):
        decode_compressed(png_bomb, "png")
    elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 8 << 20, (elapsed, peak)


def test_compressed_size_is_read_from_the_header():
    import cv2
    from easi3r_ros.io.image_codec import compressed_size
    img = RNG.integers(0, 256, (21, 34, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        ok, buf = cv2.imencode(ext, img)
        assert compressed_size(buf) == (34, 21), ext
        assert decode_compressed(buf, ext[1:]).shape == (21, 34, 3)
    ok, progressive = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert compressed_size(progressive) == (34, 21)
    with pytest.raises(ImageCodecError, match="no JPEG frame header"):
        decode_compressed(b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 20, "jpeg")


def test_raw_and_compressed_images_share_one_size_limit(png_bomb):
    from easi3r_ros.io.image_codec import MAX_PIXELS
    with pytest.raises(ImageCodecError, match=r"image size 12000x12000 \(144 MP\) exceeds 67 MP"):
        fields_to_array(12000, 12000, "mono8", 0, 12000, b"")
    assert 7680 * 4320 <= MAX_PIXELS < 12000 * 12000  # 8K UHD passes, the bomb does not
