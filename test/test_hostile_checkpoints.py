"""Every file of the hostile-checkpoint set (test/hostile_checkpoints.py) is refused in one line, fast."""
import threading
import time

import numpy as np
import pytest

from easi3r_ros.model.checkpoint import CheckpointError, load_checkpoint
from hostile_checkpoints import MARKER, generate


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, generate(folder)


def _refusal(path, seconds: float):
    """(exception, seconds taken) of load_checkpoint(path), run in a thread so a blocking load fails the test."""
    result = {}

    def load():
        try:
            load_checkpoint(path)
        except BaseException as exc:  # anything but a CheckpointError is a finding, reported below
            result["error"] = exc

    start = time.perf_counter()
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    return ("blocked" if thread.is_alive() else result.get("error", "loaded")), time.perf_counter() - start


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_every_hostile_checkpoint_is_refused_in_one_line_within_two_seconds(hostile):
    folder, cases = hostile
    findings = []
    for name, case in cases.items():
        error, seconds = _refusal(case.path, 10)
        text = str(error)
        if not isinstance(error, CheckpointError):
            kind = type(error).__name__ if isinstance(error, BaseException) else error
            findings.append(f"{name}: {kind}: {text[:200]}")
        elif case.words not in text or "\n" in text or seconds > 2:
            findings.append(f"{name}: {seconds:.1f} s, expected {case.words!r} in one line, got {text[:300]!r}")
    assert not findings, "\n".join(findings)
    assert not (folder / MARKER).exists(), "a pickled payload ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", ["runs_code", "nan_weight", "hf_nested_config", "storage_overflow", "hf_fifo_weights",
                                  "enc_depth_3M"])
def test_cli_reports_a_hostile_checkpoint_in_one_line(hostile, tmp_path, capsys, name):
    import cv2
    from easi3r_ros import cli
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        cv2.imwrite(str(frames / f"{k:03d}.png"), np.full((64, 64, 3), 40 * k, np.uint8))
    folder, cases = hostile
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", str(frames), "--checkpoint", str(cases[name].path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert err.startswith("easi3r: error: ") and cases[name].words in err and "\n" not in err, err
