"""``easi3r demo`` end to end on a few frames of the sample clip (random weights, tiny model)."""
import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")

from ros_testing import REPO, child_env, next_domain  # noqa: E402


def test_demo_prints_a_summary(tmp_path):
    clip = REPO / "data" / "vtest_clip.mp4"
    if not clip.exists():
        pytest.skip("data/vtest_clip.mp4 not in this checkout")
    out = subprocess.run([sys.executable, "-m", "easi3r_ros.ros.demo", str(clip), "--max-frames", "8",
                          "--window-size", "4", "--stride", "2", "--ga-iters", "20", "--scene-graph-width", "2",
                          "--torch-threads", "1", "--domain-id", str(next_domain()), "--rate", "4",
                          "--logs", str(tmp_path), "--timeout", "150"],
                         cwd=REPO, env=child_env(0), capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "RANDOM WEIGHTS" in text and "easi3r demo summary" in text
    assert "frames in         8" in text
    lines = {l.split()[1]: l for l in text.splitlines() if l.startswith("  frames ")}
    published = int(lines["published"].split()[2])
    dropped = int(lines["dropped"].split()[2])
    assert published + dropped == 8
    assert "window latency    mean" in text
    assert (tmp_path / "node.log").exists()
