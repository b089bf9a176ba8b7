"""Writers: every output parsed back and checked."""
import json

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from easi3r_ros.io.frames import iter_video
from easi3r_ros.io.stamps import format_stamp
from easi3r_ros.io.writers import (OverlayVideoWriter, overlay, read_intrinsics, read_mask_png,
                                   read_ply, read_tum, write_depth, write_intrinsics,
                                   write_mask_png, write_ply, write_results_npz, write_tum)


def test_mask_png(tmp_path):
    m = np.zeros((6, 8), bool)
    m[2:4, 3:7] = True
    p = write_mask_png(tmp_path / "sub" / "m.png", m)
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint8 and raw.ndim == 2 and set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(read_mask_png(p), m)
    # camera resolution: nearest resize
    p2 = write_mask_png(tmp_path / "m2.png", m, size=(12, 16))
    big = read_mask_png(p2)
    assert big.shape == (12, 16)
    np.testing.assert_array_equal(big[::2, ::2], m)


def test_overlay_and_video(tmp_path):
    rgb = np.full((32, 48, 3), 100, np.uint8)
    m = np.zeros((32, 48), bool)
    m[:, :24] = True
    o = overlay(rgb, m)
    assert (o[0, 0] == [178, 50, 50]).all() and (o[0, 40] == 100).all()
    o2 = overlay(rgb, m[::2, ::2])  # a mask of another resolution is resized
    np.testing.assert_array_equal(o2, o)
    with OverlayVideoWriter(tmp_path / "o.mp4", fps=10) as wr:
        for _ in range(3):
            wr.write(rgb, m)
        wr.write(cv2.resize(rgb, (24, 16)), None)  # resized to the first frame's size
    got = list(iter_video(tmp_path / "o.mp4"))
    assert len(got) == 4 and got[0].rgb.shape == (32, 48, 3)
    left, right = got[0].rgb[:, 4:20].reshape(-1, 3).mean(0), got[0].rgb[:, 28:44].reshape(-1, 3).mean(0)
    assert left[0] > left[1] + 80 and abs(right[0] - right[1]) < 10  # red-tinted vs untouched
    with pytest.raises(ValueError):
        OverlayVideoWriter(tmp_path / "x.mp4").write(np.zeros((4, 4), np.uint8))


def test_tum(tmp_path):
    rng = np.random.default_rng(0)
    poses = []
    for _ in range(4):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=rng.integers(1 << 30)).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        poses.append(T)
    stamps = [1_700_000_000_123_456_789, 1_700_000_000_156_790_122, 5, 0]
    p = write_tum(tmp_path / "t.tum", stamps, poses)
    lines = p.read_text().splitlines()
    assert lines[0].split()[0] == "1700000000.123456789" and lines[2].split()[0] == "0.000000005"
    for line in lines:
        f = line.split()
        assert len(f) == 8 and len(f[0].split(".")[1]) == 9
        q = np.array([float(x) for x in f[4:]])
        assert abs(np.linalg.norm(q) - 1) < 1e-8 and q[3] >= 0  # qx qy qz qw, scalar last
    st, back = read_tum(p)
    assert st.tolist() == stamps
    np.testing.assert_allclose(back, np.array(poses), atol=1e-8)
    write_tum(p, [7], [np.eye(4)], append=True)
    assert read_tum(p)[0].tolist() == stamps + [7]
    assert p.read_text().splitlines()[-1] == "0.000000007 " + " ".join(["0.000000000"] * 6 + ["1.000000000"])
    assert format_stamp(-1_500_000_000) == "-1.500000000"
    with pytest.raises(ValueError):
        write_tum(p, [1, 2], [np.eye(4)])


def test_intrinsics_depth_npz(tmp_path):
    K = np.array([[500.5, 0, 320.0], [0, 500.5, 240.25], [0, 0, 1]])
    pj = write_intrinsics(tmp_path / "k.json", K, 640, 480)
    d = json.loads(pj.read_text())
    assert d["width"] == 640 and d["height"] == 480 and d["fx"] == 500.5 and d["cy"] == 240.25
    np.testing.assert_array_equal(read_intrinsics(pj), K)
    pt = write_intrinsics(tmp_path / "k.txt", K, 640, 480)
    assert pt.read_text().startswith("# 3x3 intrinsics K, image 640x480")
    np.testing.assert_allclose(read_intrinsics(pt), K)
    depth = np.random.default_rng(0).random((5, 7))
    pd = write_depth(tmp_path / "d.npy", depth)
    back = np.load(pd)
    assert back.dtype == np.float32 and np.allclose(back, depth, atol=1e-7)
    pn = write_results_npz(tmp_path / "results.npz", {"a": np.arange(3), "b": np.ones((2, 2), bool), "none": None},
                           meta={"focal": np.float32(2.5), "names": ["x"]})
    with np.load(pn) as z:
        assert sorted(z.files) == ["a", "b", "meta_json"]
        assert json.loads(str(z["meta_json"])) == {"focal": 2.5, "names": ["x"]}
        assert z["b"].dtype == bool


def test_ply(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (100, 3), dtype=np.uint8)
    p = write_ply(tmp_path / "p.ply", pts, cols)
    data = p.read_bytes()
    header = data[:data.index(b"end_header\n") + 11].decode()
    assert "format binary_little_endian 1.0" in header and "element vertex 100" in header
    assert header.index("property float x") < header.index("property uchar red") < header.index("property uchar blue")
    assert len(data) == len(header) + 100 * 15
    p2, c2 = read_ply(p)
    np.testing.assert_array_equal(p2, pts)
    np.testing.assert_array_equal(c2, cols)
    # float colours in [0, 1] (the aligner's images) are scaled to 0..255
    _, c3 = read_ply(write_ply(tmp_path / "f.ply", pts[:2], np.array([[0, 0.5, 1], [1, 1, 1]], np.float32)))
    assert c3.tolist() == [[0, 128, 255], [255, 255, 255]]
    _, c4 = read_ply(write_ply(tmp_path / "g.ply", pts[:1]))
    assert c4.tolist() == [[200, 200, 200]]
    assert read_ply(write_ply(tmp_path / "e.ply", np.zeros((0, 3))))[0].shape == (0, 3)
    with pytest.raises(ValueError):
        write_ply(tmp_path / "bad.ply", pts, cols[:5])


