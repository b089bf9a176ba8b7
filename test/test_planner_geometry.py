"""The planner-geometry benchmark: its metrics on known answers, and the script end to end (--quick)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import planner_geometry as bench  # noqa: E402


def _line(n=12, step=0.2):
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = step * np.arange(n)
    poses[:, 1, 3] = 0.05 * np.sin(np.arange(n))   # not collinear: the alignment is unique
    return poses


def test_scale_error_counts_after_the_first_metre():
    truth = _line()
    est = truth.copy()
    est[:, :3, 3] *= 1.04
    est[:5, :3, 3] *= 1.5           # before the first metre of travel (frames 0-4): not scored
    rigid = np.eye(4)
    rigid[:3, :3] = Rotation.from_rotvec([0.1, -0.3, 0.5]).as_matrix()
    rigid[:3, 3] = [2, 3, -1]
    out = bench.scale_error(rigid @ est, truth)
    assert out["after_first_metre"] and out["frames_scored"] == 7
    assert out["scale_error"] == pytest.approx(0.04, abs=1e-6) and out["scale_error_umeyama"] == pytest.approx(0.04, abs=1e-6)
    short = bench.scale_error(_line(step=0.05), _line(step=0.05))
    assert not short["after_first_metre"] and short["frames_scored"] == 11 and short["scale_error"] < 1e-9


def test_ate_in_metres_fits_no_scale():
    truth = _line()
    est = truth.copy()
    est[:, :3, 3] *= 2.0
    out = bench.ate_metres(est, truth)
    assert out["ate_se3"] > 0.3 and out["ate_unaligned"] >= out["ate_se3"]
    assert bench.ate_metres(truth, truth)["ate_unaligned"] < 1e-9


@pytest.mark.slow
def test_quick_run_writes_the_report(tmp_path):
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "geometry.json").read_text())
    assert len(res["sequences"]) == 2 and "Machine:" in (tmp_path / "geometry.md").read_text()
    for rec in res["sequences"]:
        assert rec["rows"]["known K"]["focal_error"] < 1e-4   # the given K is held
        assert {"none", "fixed (true)", "odometry", "odometry (exact)"} <= set(rec["rows"])
        assert np.isfinite(rec["rows"]["odometry"]["ate_se3"])
