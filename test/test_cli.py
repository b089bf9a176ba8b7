"""The easi3r command line: help texts, one-line errors, outputs, and the fixture reproduced through it."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from easi3r_ros.cli import main
from easi3r_ros.eval.scenes import make_window
from easi3r_ros.io.writers import read_ply, read_tum
from fixtures import load_fixture
from test_pipeline import assert_matches_reference


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of the CLI run in-process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv", [[], ["run"], ["bag"], ["bag", "from-video"]])
def test_help(argv, capsys):
    code, out, _ = run_cli(argv + ["--help"], capsys)
    assert code == 0 and "usage: easi3r" in out


def test_console_script_help():
    exe = shutil.which("easi3r", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the easi3r console script is installed by the bootstrap"
    out = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--random-weights" in out.stdout


def write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / f"f{k:03d}.png"), f[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = make_window(5, size=(180, 320), pan_px=3, object_px=8, seed=2).frames
    return write_frames(tmp_path_factory.mktemp("clip") / "frames", frames)


def test_run_writes_every_output(clip, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["run", clip, "--random-weights", "tiny-224-linear", "--niter", "5",
                                    "--out", out, "--quiet"], capsys)
    assert code == 0, stderr
    assert "RANDOM WEIGHTS" in stderr and "5 frames in 1 window" in stdout
    masks = sorted((out / "masks").glob("*.png"))
    assert [m.stem for m in masks] == [f"f{k:03d}" for k in range(5)]
    assert cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED).shape == (180, 320)
    assert set(np.unique(cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED))) <= {0, 255}
    stamps, poses = read_tum(out / "poses_tum.txt")
    assert len(stamps) == 5 and poses.shape == (5, 4, 4)
    pts, cols = read_ply(out / "static_cloud.ply")
    assert len(pts) == len(cols) and np.isfinite(pts).all()
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert len(list((out / "depth").glob("*.npy"))) == 5
    intr = json.loads((out / "intrinsics.json").read_text())
    assert len(intr["frames"]) == 5 and intr["random_weights"] is True and "meaningless" in intr["warning"]
    with np.load(out / "results.npz") as z:
        assert {"edges", "pass1_dynamic_masks", "pass2_dynamic_masks", "poses_c2w", "focals", "depths",
                "pass2_cross_atten_maps_k_view1", "conf"} <= set(z.files)
        assert json.loads(str(z["meta_json"]))["random_weights"] is True


@pytest.mark.fixtures
def test_run_reproduces_the_reference_fixture(tmp_path, capsys):
    ref, meta, path = load_fixture("tiny_linear_vtest")
    code, _, err = run_cli(["run", path / "frames", "--random-weights", meta["weights"]["model_str"],
                            "--weights-seed", meta["weights"]["seed"], "--niter", "2", "--out", tmp_path, "--quiet"],
                           capsys)
    assert code == 0, err
    with np.load(tmp_path / "results.npz") as z:
        assert_matches_reference(ref, {k: z[k] for k in z.files})


def one_line_error(result, words):
    code, _, err = result
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("easi3r: error:") and words in lines[0], err


def test_errors_are_one_clear_line(tmp_path, capsys):
    base = ["--random-weights", "tiny-224-linear", "--out", tmp_path / "o"]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    one_line_error(run_cli(["run", bad, *base], capsys), "broken.mp4")
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli(["run", tmp_path / "empty", *base], capsys), "empty")
    frames = make_window(4, size=(64, 96), seed=0).frames
    write_frames(tmp_path / "two", frames[:2])
    one_line_error(run_cli(["run", tmp_path / "two", *base], capsys), "at least 3 frames")
    mixed = write_frames(tmp_path / "mixed", frames[:3])
    cv2.imwrite(str(mixed / "f003.png"), np.zeros((50, 50, 3), np.uint8))
    one_line_error(run_cli(["run", mixed, *base], capsys), "mixed sizes")
    three = write_frames(tmp_path / "three", frames[:3])
    one_line_error(run_cli(["run", three, "--checkpoint", tmp_path / "none.pth", "--out", tmp_path], capsys),
                   "checkpoint not found")
    one_line_error(run_cli(["run", three, "--random-weights", "huge-model", "--out", tmp_path], capsys),
                   "unknown model 'huge-model'")
    five = write_frames(tmp_path / "five", make_window(6, size=(64, 96), seed=0).frames)
    one_line_error(run_cli(["run", five, *base, "--window", "5", "--stride", "4"], capsys), "stride must be in")


def test_bag_from_video_and_run_on_the_bag(clip, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (320, 180))
    for f in make_window(4, size=(180, 320), pan_px=3, seed=4).frames:
        writer.write(f[:, :, ::-1])
    writer.release()
    bag = tmp_path / "bag"
    code, out, err = run_cli(["bag", "from-video", video, bag, "--topic", "/cam/image", "--start-time", "100"], capsys)
    assert code == 0 and "wrote 4 messages" in out, err
    one_line_error(run_cli(["run", bag, "--topic", "/other", "--random-weights", "tiny-224-linear", "--out",
                             tmp_path / "o"], capsys), "/cam/image")
    code, out, err = run_cli(["run", bag, "--topic", "/cam/image", "--random-weights", "tiny-224-linear", "--niter",
                              "2", "--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 0, err
    stamps, _ = read_tum(tmp_path / "o" / "poses_tum.txt")
    np.testing.assert_array_equal(stamps, 100_000_000_000 + np.arange(4) * 200_000_000)  # ns, 5 fps


@pytest.mark.parametrize("argv", [["bag", "play", "--help"], ["demo", "--help"], ["eval", "--help"],
                                  ["eval", "traj", "--help"]])
def test_sub_tool_help(argv, capsys):
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "usage: easi3r" in out


def test_eval_masks_and_trajectories(tmp_path, capsys):
    from scipy.spatial.transform import Rotation

    from easi3r_ros.io.writers import write_mask_png, write_tum

    rng = np.random.default_rng(0)
    for k in range(3):
        labels = np.zeros((40, 60), np.uint8)
        labels[10:20, 5 + 10 * k:15 + 10 * k] = 2   # moving
        labels[25:35, 40:50] = 1                    # static
        (tmp_path / "gt").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "gt" / f"{k:03d}.png"), labels)
        write_mask_png(tmp_path / "pred" / f"{k:03d}.png", labels == 2)
    code, out, err = run_cli(["eval", "--json", "masks", tmp_path / "pred", tmp_path / "gt", "--moving-ids", "2",
                              "--static-ids", "1"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["JM"] == 1.0 and scores["moving_recall"] == 1.0 and scores["static_fp_rate"] == 0.0
    poses = np.tile(np.eye(4), (6, 1, 1))
    poses[:, :3, 3] = np.cumsum(rng.normal(size=(6, 3)), axis=0)
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(scale=0.2, size=(6, 3))).as_matrix()
    sim = np.eye(4)
    sim[:3, :3] = 2.0 * Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix()
    sim[:3, 3] = [1, 2, 3]
    moved = sim @ poses
    moved[:, :3, :3] /= 2.0  # a similarity maps camera frames to camera frames with unit-scale rotations
    stamps = [10**9 * k for k in range(6)]
    write_tum(tmp_path / "est.txt", stamps, poses)
    write_tum(tmp_path / "ref.txt", stamps, moved)
    code, out, _ = run_cli(["eval", "--json", "traj", tmp_path / "est.txt", tmp_path / "ref.txt"], capsys)
    assert code == 0 and json.loads(out)["ate_rmse"] < 1e-6 and json.loads(out)["matched_poses"] == 6
    code, out, _ = run_cli(["eval", "--json", "traj", tmp_path / "est.txt", tmp_path / "ref.txt", "--no-scale"], capsys)
    assert json.loads(out)["ate_rmse"] > 0.1  # scale differs by 2: SE(3) alignment cannot absorb it


def test_sliding_windows_give_each_frame_once_on_one_trajectory(tmp_path, capsys):
    frames = write_frames(tmp_path / "f", make_window(9, size=(120, 160), pan_px=3, object_px=6, seed=5).frames)
    code, out, err = run_cli(["run", frames, "--random-weights", "tiny-224-linear", "--window", "5", "--stride", "2",
                              "--niter", "5", "--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 0, err
    assert "9 frames in 3 window(s)" in out
    assert len(list((tmp_path / "o" / "masks").glob("*.png"))) == 9
    stamps, poses = read_tum(tmp_path / "o" / "poses_tum.txt")
    assert len(stamps) == 9 and np.all(np.diff(stamps) > 0) and np.isfinite(poses).all()
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-5)  # the first camera defines the frame
    with np.load(tmp_path / "o" / "results.npz") as z:
        assert z["window_of_frame"].tolist() == sorted(z["window_of_frame"].tolist())
        assert len(set(z["window_of_frame"].tolist())) == 3 and z["dynamic_masks"].shape == (9, 224, 224)


# ------------------------------------------------------------------------------ planner geometry options
def test_geometry_options_are_checked_before_the_model_loads(tmp_path, capsys):
    from easi3r_ros.io.calibration import write_camera_yaml
    from easi3r_ros.io.camera_model import CameraModel
    from easi3r_ros.io.writers import write_tum

    frames = write_frames(tmp_path / "f", make_window(4, size=(64, 96), seed=0).frames)  # stamped 0, 1/30 s, ...
    # a checkpoint that does not exist: every error below comes first
    base = ["run", frames, "--checkpoint", tmp_path / "none.pth", "--out", tmp_path / "o"]
    one_line_error(run_cli([*base, "--intrinsics", "80,80,48"], capsys), "four numbers fx,fy,cx,cy")
    one_line_error(run_cli([*base, "--intrinsics", "80,80,148,32"], capsys), "outside the 96x64 frames")
    one_line_error(run_cli([*base, "--intrinsics", "0,80,48,32"], capsys), "must be positive")
    write_camera_yaml(tmp_path / "cam.yaml", CameraModel(500, 500, 320, 240, 640, 480))
    one_line_error(run_cli([*base, "--camera-info", tmp_path / "cam.yaml"], capsys),
                   "is for 640x480 images, the frames are 96x64")
    one_line_error(run_cli([*base, "--camera-info", tmp_path / "none.yaml"], capsys), "cannot read camera calibration")
    write_tum(tmp_path / "odom.txt", [5 * 10**9 + 10**8 * k for k in range(10)], [np.eye(4)] * 10)
    one_line_error(run_cli([*base, "--odometry", tmp_path / "odom.txt"], capsys), "no frame has a pose")
    (tmp_path / "bad.txt").write_text("0.0 0 0 0 0 0 1\n")
    one_line_error(run_cli([*base, "--odometry", tmp_path / "bad.txt"], capsys), "bad.txt:1: expected 8 fields")
    one_line_error(run_cli([*base, "--scale", "-2"], capsys), "--scale must be a positive number")
    one_line_error(run_cli([*base, "--odometry", tmp_path / "odom.txt", "--start-time", "5"], capsys),
                   "checkpoint not found")  # --start-time put the frames on the odometry's clock
    for a, b in ((["--intrinsics", "1,1,1,1"], ["--camera-info", "c.yaml"]), (["--odometry", "o.txt"], ["--scale", "1"])):
        code, _, err = run_cli([*base, *a, *b], capsys)
        assert code == 2 and "not allowed with" in err


@pytest.fixture(scope="module")
def robot_run(tmp_path_factory):
    """A synthetic robot bag with its ground truth (easi3r bag from-synthetic)."""
    out = tmp_path_factory.mktemp("robot") / "seq"
    assert main(["bag", "from-synthetic", "3", str(out), "--frames", "6", "--size", "96x128", "--moving", "1"]) == 0
    return out


def test_run_with_calibration_and_odometry_writes_metric_poses(robot_run, tmp_path, capsys):
    from easi3r_ros.io.calibration import read_camera_yaml
    from easi3r_ros.io.odometry import read_odometry

    out = tmp_path / "o"
    code, stdout, err = run_cli(["run", robot_run / "bag", "--camera-info", robot_run / "camera.yaml", "--odometry",
                                 robot_run / "odometry_tum.txt", "--random-weights", "tiny-224-linear", "--niter", "5",
                                 "--out", out, "--quiet"], capsys)
    assert code == 0, err
    info = json.loads((out / "run_info.json").read_text())
    assert info["intrinsics_source"].startswith("camera-info") and info["scale"]["source"] == "odometry"
    assert {"value", "spread", "source", "state"} <= set(info["scale"]["final"])
    camera = read_camera_yaml(robot_run / "camera.yaml")
    intr = json.loads((out / "intrinsics.json").read_text())
    np.testing.assert_allclose(intr["frames"][0]["K"], camera.K, rtol=1e-5)   # the given K, not an estimate
    stamps, poses = read_tum(out / "poses_tum.txt")
    odometry = read_odometry(robot_run / "odometry_tum.txt")
    assert len(stamps) == 6 and np.isfinite(poses).all()
    np.testing.assert_allclose(poses[0], odometry(int(stamps[0])), atol=1e-5)  # anchored in the odometry frame


def test_run_with_intrinsics_and_a_fixed_scale(robot_run, tmp_path, capsys):
    from easi3r_ros.io.calibration import read_camera_yaml

    cam = read_camera_yaml(robot_run / "camera.yaml")
    runs = {}
    for name, extra in (("free", []), ("fixed", ["--scale", "2.5"])):
        code, stdout, err = run_cli(["run", robot_run / "gt" / "rgb", "--intrinsics", f"{cam.fx},{cam.fy},{cam.cx},{cam.cy}",
                                     *extra, "--random-weights", "tiny-224-linear", "--niter", "5", "--out",
                                     tmp_path / name, "--quiet"], capsys)
        assert code == 0, err
        runs[name] = read_tum(tmp_path / name / "poses_tum.txt")[1]
    info = json.loads((tmp_path / "fixed" / "run_info.json").read_text())
    assert info["intrinsics_source"] == "intrinsics" and info["units"] == "m"
    assert info["scale"]["final"]["source"] == "fixed" and info["scale"]["final"]["value"] == pytest.approx(2.5)
    assert json.loads((tmp_path / "free" / "run_info.json").read_text())["scale"] == {"source": "none"}
    # the same reconstruction, 2.5 times larger (the free one is in the alignment's world, the fixed one in the
    # first camera's frame: compare poses relative to the first)
    rel = {k: np.linalg.inv(p[0]) @ p for k, p in runs.items()}
    np.testing.assert_allclose(rel["fixed"][:, :3, 3], 2.5 * rel["free"][:, :3, 3], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(rel["fixed"][:, :3, :3], rel["free"][:, :3, :3], atol=1e-4)
