"""A missing, corrupt or absent checkpoint at start: a clear error, ERROR diagnostics, the node stays up (no
crash loop) and recovers when given a usable model. Also: the node runs from config/easi3r.yaml alone."""
import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = pytest.mark.ros

from ros_testing import (REPO, Listener, call_service, image_msg, next_domain, get_params, set_params_atomically, start_node,  # noqa: E402
                         stop, wait_log, wait_until)

FAST = {"diagnostics_period": 0.25, "input_reliability": "reliable", "torch_threads": 1}


def _start(tmp_path, name, params, extra=None):
    from diagnostic_msgs.msg import DiagnosticArray
    domain = next_domain()
    listener = Listener(domain)
    listener.listen("/diagnostics", DiagnosticArray, depth=50)
    log = tmp_path / f"{name}.log"
    node = start_node(domain, params, log, remaps={"image": "/cam/image_raw"}, extra=extra)
    return listener, node, log


def _wait_error(listener, node, log, text):
    wait_until(lambda: listener.last_diag() is not None and listener.last_diag().level in (b"\x02", 2), 60,
               what="ERROR diagnostics")
    st = listener.last_diag()
    assert text in st.message, st.message
    wait_log(log, text)
    assert node.poll() is None, log.read_text()


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_checkpoint_reports_error_and_stays_up(tmp_path, kind):
    from sensor_msgs.msg import Image
    if kind == "missing":
        ckpt, text = tmp_path / "nope.pth", "checkpoint not found"
    else:
        ckpt, text = tmp_path / "broken.pth", "corrupt"
        ckpt.write_bytes(b"PK\x03\x04 this is not a torch checkpoint" * 10)
    # invalid start-up values too: refused with a reason, the defaults are used
    params = dict(FAST, checkpoint=str(ckpt))
    if kind == "corrupt":
        params.update(window_size=2, preset="bogus")
    listener, node, log = _start(tmp_path, kind, params)
    try:
        _wait_error(listener, node, log, text)
        assert listener.diag_values()["state"] == "error"
        if kind == "corrupt":
            errors = listener.diag_values()["parameter_errors"]
            assert "window_size" in errors and "preset" in errors
            assert get_params(listener, "easi3r", ["window_size", "preset"]) == {"window_size": 8, "preset": "robot"}
            wait_log(log, "parameter refused")
        # frames arriving meanwhile are counted as dropped, not buffered forever
        pub = listener.node.create_publisher(Image, "/cam/image_raw", listener.qos(depth=10))
        wait_until(lambda: pub.get_subscription_count() >= 1, 30, what="node subscription")
        pub.publish(image_msg(32, 32, "rgb8", bytes(32 * 96), 5))
        wait_until(lambda: listener.diag_values().get("frames_dropped") == "1", 30, what="drop counted")
        assert "no model" in listener.diag_values()["dropped_by_reason"]
        # still up, no crash loop: the node keeps publishing diagnostics after the drop
        seen = len(listener.get("/diagnostics"))
        wait_until(lambda: len(listener.get("/diagnostics")) >= seen + 3 or node.poll() is not None, 30,
                   what="three more diagnostics")
        assert node.poll() is None, log.read_text()
        # trust is a launch-time decision: a peer on the graph cannot switch unpickling on (issue: one atomic
        # request {random_weights: "", trust_checkpoint: true, checkpoint: <payload>} used to run code)
        ok, reason = set_params_atomically(listener, "easi3r", random_weights="", trust_checkpoint=True,
                                           checkpoint=str(ckpt))
        assert not ok and ("read-only" in reason.lower() or "start-up" in reason), reason
        assert get_params(listener, "easi3r", ["trust_checkpoint"]) == {"trust_checkpoint": False}
        # a usable model at run time brings it back
        ok, reason = set_params_atomically(listener, "easi3r", checkpoint="", random_weights="tiny-224-linear")
        assert ok, reason
        wait_until(lambda: listener.diag_values().get("state") == "ready", 60, what="recovery")
    finally:
        rc = stop(node)
        listener.close()
    assert rc == 0


def test_node_runs_from_the_params_file_alone(tmp_path):
    """``easi3r_node --ros-args --params-file config/easi3r.yaml``: every value comes from the file; with no
    checkpoint configured the node loads the shipped easi3r-tiny model."""
    path = REPO / "config" / "easi3r.yaml"
    listener, node, log = _start(tmp_path, "yaml", {}, extra=["--params-file", str(path)])
    try:
        wait_until(lambda: listener.diag_values().get("state") == "ready", 60, what="the shipped model loaded")
        assert "easi3r-tiny" in listener.diag_values()["model"], log.read_text()
        expected = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
        got = get_params(listener, "easi3r", list(expected))
        for k, v in expected.items():
            assert got[k] == pytest.approx(v) if isinstance(v, (float, list)) else got[k] == v, k
        assert "parameter refused" not in log.read_text()
        # and the node declares nothing the file lacks (beyond rclpy's own parameters)
        from rcl_interfaces.srv import ListParameters
        names = call_service(listener, ListParameters, "/easi3r/list_parameters", ListParameters.Request()).result.names
        own = {n for n in names if n not in ("use_sim_time", "start_type_description_service")
               and not n.startswith("qos_overrides")}
        assert own == set(expected)
    finally:
        rc = stop(node)
        listener.close()
    assert rc == 0
