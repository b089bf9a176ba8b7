"""``easi3r demo`` end to end on a few frames of the sample clip (random weights, tiny model)."""
import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

from ros_testing import REPO, child_env, next_domain  # noqa: E402


def test_demo_prints_a_summary(tmp_path):
    """Random weights, a few clip frames and a short synthetic sequence: both plays complete, every frame is
    published or counted, the synthetic masks are scored against the ground truth and the montage is written."""
    clip = REPO / "data" / "vtest_clip.mp4"
    if not clip.exists():
        pytest.skip("data/vtest_clip.mp4 not in this checkout")
    out = subprocess.run([sys.executable, "-m", "easi3r_ros.ros.demo", str(clip), "--max-frames", "8",
                          "--random-weights", "tiny-224-linear",
                          "--window-size", "4", "--stride", "2", "--ga-iters", "20", "--scene-graph-width", "2",
                          "--torch-threads", "1", "--domain-id", str(next_domain()), "--rate", "4",
                          "--synthetic-frames", "6", "--out", str(tmp_path / "out"),
                          "--logs", str(tmp_path), "--timeout", "150"],
                         cwd=REPO, env=child_env(0), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "RANDOM WEIGHTS" in text and "easi3r demo summary: the clip" in text
    assert "easi3r demo summary: the synthetic sequence" in text
    assert "frames in         8" in text and "frames in         6" in text
    for block, n in ((text.split("summary: the synthetic")[0], 8), (text.split("summary: the synthetic")[1], 6)):
        lines = {l.split()[1]: l for l in block.splitlines() if l.startswith("  frames ")}
        assert int(lines["published"].split()[2]) + int(lines["dropped"].split()[2]) == n
    assert "window latency    mean" in text
    scores = {l.split("  ")[1].strip(): l.split()[-3:] for l in text.splitlines()
              if l.startswith("  Easi3R node") or l.startswith("  optical-flow baseline")}
    assert len(scores) == 2 and all(0.0 <= float(v) <= 1.0 for row in scores.values() for v in row), scores
    assert (tmp_path / "out" / "montage.png").stat().st_size > 10_000
    assert (tmp_path / "node_clip.log").exists() and (tmp_path / "node_synthetic.log").exists()
