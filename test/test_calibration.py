"""ROS camera-calibration YAML files: read, write, and one clear error per problem."""
import numpy as np
import pytest

from easi3r_ros.io.calibration import read_camera_yaml, write_camera_yaml
from easi3r_ros.io.camera_model import CameraModel, CameraModelError

# as written by ROS camera_calibration (cameracalibrator.py) for a 640x480 camera
ROS_YAML = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [519.9, 0, 320.3, 0, 518.7, 241.6, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.21, 0.05, 0.001, -0.002, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [519.9, 0, 320.3, 0, 0, 518.7, 241.6, 0, 0, 0, 1, 0]
"""


def test_reads_a_ros_calibration(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text(ROS_YAML)
    cam = read_camera_yaml(path)
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (519.9, 518.7, 320.3, 241.6, 640, 480)
    assert cam.distortion_model == "plumb_bob" and cam.D == (-0.21, 0.05, 0.001, -0.002, 0.0) and cam.distorted


@pytest.mark.parametrize("camera", [
    CameraModel(300.0, 301.5, 161.0, 118.5, 320, 240),
    CameraModel(500.0, 500.0, 320.0, 240.0, 640, 480, "rational_polynomial",
                (0.1, -0.2, 0.0, 0.001, 0.0, 0.01, 0.0, 0.0)),
])
def test_write_read_round_trip(tmp_path, camera):
    back = read_camera_yaml(write_camera_yaml(tmp_path / "c.yaml", camera))
    np.testing.assert_allclose(back.K, camera.K)
    assert (back.width, back.height, back.D) == (camera.width, camera.height, tuple(camera.D) or (0.0,) * 5)
    assert not back.distorted if not camera.distorted else back.distortion_model == camera.distortion_model


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("image_width: 640\n", ""), "missing image_width"),
    (lambda t: t.replace("image_height: 480", "image_height: tall"), "must be integers"),
    (lambda t: t.replace("data: [519.9, 0, 320.3, 0, 518.7, 241.6, 0, 0, 1]", "data: [519.9, 0, 320.3]"),
     "camera_matrix has 3 values"),
    (lambda t: t.replace("rows: 3\n  cols: 3\n  data: [519.9", "rows: 2\n  cols: 3\n  data: [519.9", 1),
     "camera_matrix must be 3x3"),
    (lambda t: t.replace("518.7, 241.6, 0, 0, 1]", "518.7, 241.6, 0, 0, 2]", 1), "not a pinhole K"),
    (lambda t: t.replace("distortion_model: plumb_bob", "distortion_model: equidistant"), "not supported"),
    (lambda t: t.replace("519.9, 0, 320.3, 0, 518.7", "-519.9, 0, 320.3, 0, 518.7", 1), "must be positive"),
    (lambda t: t + "  - [unbalanced", "not valid YAML"),
    (lambda t: "just text", "expected a YAML mapping"),
])
def test_errors_name_the_problem(tmp_path, edit, message):
    path = tmp_path / "bad.yaml"
    path.write_text(edit(ROS_YAML))
    with pytest.raises(CameraModelError, match=message) as info:
        read_camera_yaml(path)
    assert "\n" not in str(info.value) and "bad.yaml" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CameraModelError, match="cannot read camera calibration"):
        read_camera_yaml(tmp_path / "none.yaml")
