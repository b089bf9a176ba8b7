"""Frame sources: video files, image folders, windows; their error messages."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from easi3r_ros.io.frames import (Frame, InputError, check_same_size, iter_image_folder, iter_video,
                                  list_images, open_frames)
from easi3r_ros.io.writers import OverlayVideoWriter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _frames(n, h=48, w=64, seed=0):
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = (40 * i % 256, 100, 200)  # flat colours survive lossy codecs
        img[8:24, 8 + 4 * i:24 + 4 * i] = 255
        out.append(img)
    return out


def test_video_round_trip(tmp_path):
    frames = _frames(6)
    path = tmp_path / "v.mp4"
    with OverlayVideoWriter(path, fps=5) as wr:
        for f in frames:
            wr.write(f)
    assert wr.frames_written == 6
    got = list(iter_video(path))
    assert len(got) == 6
    for g, f in zip(got, frames):
        assert g.rgb.shape == f.shape and g.rgb.dtype == np.uint8
        assert np.abs(g.rgb.astype(int) - f).mean() < 12  # mp4v is lossy
    stamps = [g.stamp_ns for g in got]
    assert stamps[0] == 0 and np.allclose(np.diff(stamps), 2e8, atol=2e6)  # 5 fps
    assert [g.index for g in got] == list(range(6)) and got[2].source == "v.mp4#2"
    sub = list(iter_video(path, start=1, stride=2, max_frames=2))
    assert [g.index for g in sub] == [1, 3] and sub[1].stamp_ns == got[3].stamp_ns


def test_real_video_stamps():
    p = DATA / "vtest.avi"
    if not p.exists():
        pytest.skip("vtest.avi not available")
    got = list(iter_video(p, max_frames=3, stride=2))
    assert [g.rgb.shape for g in got] == [(576, 768, 3)] * 3
    assert [g.stamp_ns for g in got] == [0, 200_000_000, 400_000_000]  # 10 fps container


def test_video_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list(iter_video(tmp_path / "missing.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(InputError, match="bad.mp4"):
        list(iter_video(bad))
    with pytest.raises(InputError, match="stride"):
        list(iter_video(bad, stride=0))


def test_image_folder(tmp_path):
    frames = _frames(4)
    for i, f in enumerate(frames):
        ext = ".png" if i % 2 == 0 else ".PNG"
        cv2.imwrite(str(tmp_path / f"img_{i:03d}{ext}"), f[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in list_images(tmp_path)] == ["img_000.png", "img_001.PNG", "img_002.png", "img_003.PNG"]
    got = list(iter_image_folder(tmp_path, fps=4))
    assert len(got) == 4
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g.rgb, f)  # PNG is lossless, channel order RGB
    assert [g.stamp_ns for g in got] == [0, 250_000_000, 500_000_000, 750_000_000]
    assert got[1].source == "img_001.PNG"
    assert [g.index for g in open_frames(tmp_path, start=1, stride=2)] == [1, 3]


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="contains no .jpg/.jpeg/.png images"):
        list(iter_image_folder(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        list(iter_image_folder(tmp_path / "nope"))
    with pytest.raises(InputError, match="fps"):
        list(iter_image_folder(tmp_path, fps=0))
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read image"):
        list(iter_image_folder(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        open_frames(tmp_path / "missing")
    with pytest.raises(InputError, match="not a rosbag2 directory"):
        open_frames(tmp_path, topic="/camera")


def _f(i, h=4, w=6):
    return Frame(np.zeros((h, w, 3), np.uint8), i, f"f{i}", i)


def test_mixed_sizes():
    frames = [_f(i) for i in range(7)]
    assert check_same_size(frames) == (4, 6)
    mixed = frames[:2] + [_f(2, 8, 6)]
    with pytest.raises(InputError, match="mixed sizes.*f0 is 6x4 but f2 is 6x8"):
        check_same_size(mixed)
    with pytest.raises(InputError, match="empty window"):
        check_same_size([])
