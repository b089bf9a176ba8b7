"""The node as a managed (lifecycle) node, driven through its lifecycle services from another process."""
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = pytest.mark.ros

from ros_testing import (TINY, Listener, call_service, image_msg, next_domain, standard_outputs,  # noqa: E402
                         start_node, stop, wait_until)
from stream_fakes import scene  # noqa: E402

STAMP0 = 1_710_000_000_000_000_000


def _transition(listener, label):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
           "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
    res = call_service(listener, ChangeState, "/easi3r/change_state",
                       ChangeState.Request(transition=Transition(id=ids[label])))
    return res.success


def _state(listener):
    from lifecycle_msgs.srv import GetState
    return call_service(listener, GetState, "/easi3r/get_state", GetState.Request()).current_state.label


def test_lifecycle_transitions_gate_the_outputs(tmp_path):
    from sensor_msgs.msg import Image
    domain, log = next_domain(), tmp_path / "node.log"
    listener = Listener(domain)
    standard_outputs(listener)
    node = start_node(domain, dict(TINY, autostart=False), log)
    try:
        pub = listener.node.create_publisher(Image, "/image", listener.qos(depth=100))
        wait_until(lambda: listener.diag_values().get("lifecycle") == "unconfigured", 60, what="unconfigured")
        assert _state(listener) == "unconfigured"
        assert listener.diag_values()["state"] == "unconfigured" and pub.get_subscription_count() == 0
        assert _transition(listener, "configure") and _state(listener) == "inactive"
        wait_until(lambda: listener.diag_values().get("state") == "ready", 60, what="network loaded at configure")
        assert pub.get_subscription_count() == 0       # inactive: no camera subscription yet
        assert _transition(listener, "activate") and _state(listener) == "active"
        wait_until(lambda: pub.get_subscription_count() >= 1, 30, what="camera subscription when active")
        for k in range(6):
            pub.publish(image_msg(48, 64, "rgb8", scene(k, 48, 64).tobytes(), STAMP0 + k * 100_000_000))
        wait_until(lambda: listener.diag_values().get("frames_in") == "6", 30, what="frames received")
        # deactivate: the camera is dropped, and what was received is published first
        assert _transition(listener, "deactivate") and _state(listener) == "inactive"
        wait_until(lambda: int(listener.diag_values().get("frames_published", 0)) == 6, 30, what="published")
        wait_until(lambda: len(listener.get("/easi3r/dynamic_mask")) == 6, 30, what="six masks")
        wait_until(lambda: pub.get_subscription_count() == 0, 30, what="camera unsubscribed")
        assert _transition(listener, "cleanup") and _state(listener) == "unconfigured"
        wait_until(lambda: listener.diag_values().get("state") == "unconfigured", 30, what="unconfigured again")
    finally:
        rc = stop(node)
        listener.close()
    assert rc == 0, log.read_text()[-3000:]
