"""Odometry tracks (TUM files looked up by stamp) and simulated robot odometry for synthetic sequences."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from easi3r_ros.io.odometry import OdometryError, OdometryTrack, read_odometry
from easi3r_ros.io.writers import write_tum
from easi3r_ros.synthetic.odometry import DEFAULT_MOUNTING, OdometryNoise, simulate_odometry

S = 1_000_000_000


def _pose(rotvec, t):
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    m[:3, 3] = t
    return m


def test_lookup_interpolates_between_samples(tmp_path):
    stamps = [10 * S, 11 * S, 12 * S]
    poses = [_pose([0, 0, 0], [0, 0, 0]), _pose([0, 0, 0.4], [1, 2, 0]), _pose([0, 0, 0.4], [1, 2, 3])]
    track = read_odometry(write_tum(tmp_path / "odom.txt", stamps, poses), max_gap_s=1.5)
    assert len(track) == 3
    np.testing.assert_allclose(track.lookup(11 * S), poses[1], atol=1e-9)
    mid = track(10 * S + S // 4)  # callable: the stream's odometry(stamp_ns) hook
    np.testing.assert_allclose(mid[:3, 3], [0.25, 0.5, 0], atol=1e-9)
    np.testing.assert_allclose(Rotation.from_matrix(mid[:3, :3]).as_rotvec(), [0, 0, 0.1], atol=1e-9)  # slerp
    np.testing.assert_allclose(track(12 * S + 5_000_000), poses[2], atol=1e-9)  # within the tolerance
    assert track(12 * S + 50_000_000) is None and track(9 * S) is None  # outside the track


def test_gaps_are_not_bridged():
    track = OdometryTrack([0, S // 10, 2 * S], np.stack([_pose([0, 0, 0], [k, 0, 0]) for k in range(3)]),
                          max_gap_s=0.5)
    assert track(S) is None                        # inside a 1.9 s dropout
    np.testing.assert_allclose(track(S // 10 + 1000)[:3, 3], [1, 0, 0])   # at its edge (tolerance)
    assert track(S // 20) is not None


@pytest.mark.parametrize("text, message", [
    ("1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 1\n", r"odom.txt:2: expected 8 fields"),
    ("1.0 0 0 x 0 0 0 1\n", "malformed TUM line"),
    ("1.0 0 0 0 0 0 0 0\n", "malformed TUM line"),            # zero quaternion
    ("2.0 0 0 0 0 0 0 1\n1.0 0 0 0 0 0 0 1\n", "stamps must increase"),
    ("# only a comment\n", "no poses"),
])
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "odom.txt"
    path.write_text(text)
    with pytest.raises(OdometryError, match=message):
        read_odometry(path)


def test_missing_file(tmp_path):
    with pytest.raises(OdometryError, match="cannot read odometry"):
        read_odometry(tmp_path / "none.txt")


def _robot_path(n=20, speed=0.5, fps=10.0):
    """A camera on a robot driving an arc (camera poses in a world frame, optical axes)."""
    base = [_pose([0, 0, 0.05 * k], [speed / fps * k, 0.02 * k ** 1.5 / fps, 0]) for k in range(n)]
    world_T_base0 = _pose([0.1, 0, 1.0], [3, -1, 0])
    cams = np.stack([world_T_base0 @ b @ DEFAULT_MOUNTING for b in base])
    return cams, 1_000 * S + np.arange(n) * S // 10


def test_mounting_is_the_optical_rotation():
    np.testing.assert_allclose(DEFAULT_MOUNTING[:3, 2], [1, 0, 0], atol=1e-12)   # optical z = forward
    np.testing.assert_allclose(DEFAULT_MOUNTING[:3, 0], [0, -1, 0], atol=1e-12)  # optical x = right
    np.testing.assert_allclose(DEFAULT_MOUNTING[:3, 3], [0.1, 0, 0.2])


def test_zero_noise_is_the_truth_in_odom():
    cams, stamps = _robot_path()
    odo = simulate_odometry(cams, stamps, OdometryNoise.none(), seed=3)
    np.testing.assert_allclose(odo.odom_T_base[0], np.eye(4), atol=1e-12)  # the base starts at the odom origin
    np.testing.assert_allclose(odo.odom_T_cam, odo.truth_in_odom(cams), atol=1e-9)
    np.testing.assert_allclose(odo.world_T_odom @ odo.odom_T_cam, cams, atol=1e-9)
    fine = simulate_odometry(cams, stamps, OdometryNoise.none(), per_frame=4)
    assert len(fine.stamps_ns) == 4 * (len(stamps) - 1) + 1
    np.testing.assert_allclose(fine.odom_T_cam[::4], odo.odom_T_cam, atol=1e-9)  # frames are samples
    track = fine.track()
    np.testing.assert_allclose(track(int(stamps[7])), odo.odom_T_cam[7], atol=1e-9)


def test_noise_and_drift_are_seeded_and_of_the_stated_size():
    cams, stamps = _robot_path(n=40)
    noise = OdometryNoise(scale_bias=0.03, yaw_drift_deg_per_m=2.0, trans_noise=0.01, rot_noise_deg=0.05)
    a, b = simulate_odometry(cams, stamps, noise, seed=7), simulate_odometry(cams, stamps, noise, seed=7)
    np.testing.assert_array_equal(a.odom_T_cam, b.odom_T_cam)
    assert not np.allclose(simulate_odometry(cams, stamps, noise, seed=8).odom_T_cam, a.odom_T_cam)
    true_base = a.truth_in_odom(cams) @ np.linalg.inv(DEFAULT_MOUNTING)
    # distances are 3 % long (noise averages out over 40 steps)
    true_len = np.linalg.norm(np.diff(true_base[:, :3, 3], axis=0), axis=1).sum()
    odo_len = np.linalg.norm(np.diff(a.odom_T_base[:, :3, 3], axis=0), axis=1).sum()
    assert abs(odo_len / true_len - 1.03) < 0.01
    # heading drifts by about 2 degrees per metre driven
    yaw_err = np.degrees(Rotation.from_matrix(a.odom_T_base[-1, :3, :3] @ true_base[-1, :3, :3].T).as_rotvec()[2])
    assert abs(yaw_err - 2.0 * true_len) < 1.0
