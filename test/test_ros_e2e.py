"""Acceptance, in separate processes with real DDS: bag -> bag player -> easi3r_node -> this test.

Random weights (tiny model): only the structure of the outputs is checked, not their values.
"""
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

from ros_testing import (TINY, Listener, next_domain, standard_outputs, start_node, start_player,  # noqa: E402
                         stop, wait_until)
from stream_fakes import scene  # noqa: E402

N_FRAMES = 14
H, W = 90, 122
T0 = 1_700_000_000_000_000_000
STAMPS = [T0 + k * 100_000_000 for k in range(N_FRAMES)]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from easi3r_ros.io.bag import write_image_bag
    path = tmp_path_factory.mktemp("bag") / "scene"
    write_image_bag(path, [(scene(k, H, W), s) for k, s in enumerate(STAMPS)], topic="/cam/image_raw",
                    storage="mcap", frame_id="cam_optical")
    return path


PER_FRAME_TOPICS = ("/easi3r/dynamic_mask", "/easi3r/frame_result", "/easi3r/camera_info")


def test_bag_player_node_listener(bag, tmp_path):
    from easi3r_ros.ros.conversions import cloud_to_array, stamp_to_ns

    domain = next_domain()
    listener = Listener(domain)
    node = player = None
    try:
        standard_outputs(listener)
        params = dict(TINY, base_frame="base_link", odom_frame="odom")
        node = start_node(domain, params, tmp_path / "node.log", remaps={"image": "/cam/image_raw"})
        # every topic the check below counts must be matched before the first frame (volatile QoS)
        topics = PER_FRAME_TOPICS + ("/tf", "/easi3r/path", "/easi3r/window_stats", "/easi3r/static_cloud")
        wait_until(lambda: all(listener.node.count_publishers(t) >= 1 for t in topics), 60, what="node publishers")
        player = start_player(domain, bag, tmp_path / "player.log", "--wait-for-subscribers", "1", "--rate", "3")

        def accounted():
            # diagnostics count first; every per-frame topic is a separate stream that must catch up
            d = listener.diag_values()
            if not d:
                return False
            n = int(d["frames_published"])
            paths = listener.get("/easi3r/path")
            return n + int(d["frames_dropped"]) == N_FRAMES and \
                all(len(listener.get(t)) == n for t in PER_FRAME_TOPICS) and \
                sum(len(m.transforms) for m in listener.get("/tf")) == n and \
                (n == 0 or (paths and len(paths[-1].poses) == n)) and \
                (n == 0 or (listener.get("/easi3r/window_stats") and listener.get("/easi3r/static_cloud")))
        wait_until(accounted, 120, step=0.2, what="every frame published or dropped, on every output")
        assert player.wait(10) == 0, (tmp_path / "player.log").read_text()
        assert node.poll() is None

        d = listener.diag_values()
        masks = listener.get("/easi3r/dynamic_mask")
        # every input frame: exactly one mask with its stamp and size, or counted as dropped
        stamps = [stamp_to_ns(m.header.stamp) for m in masks]
        assert len(stamps) == len(set(stamps)) and set(stamps) <= set(STAMPS)
        assert int(d["frames_in"]) == N_FRAMES and int(d["frames_rejected"]) == 0
        assert len(masks) + int(d["frames_dropped"]) == N_FRAMES
        assert len(masks) >= N_FRAMES // 2, f"too many windows failed: {d}"
        for m in masks:
            assert (m.height, m.width, m.encoding, m.step) == (H, W, "mono8", W)
            assert m.header.frame_id == "cam_optical"
            assert set(np.unique(np.frombuffer(bytes(m.data), np.uint8))) <= {0, 255}
        assert stamps == sorted(stamps)

        # work shared between overlapping windows was reused
        assert int(d["encoded_frames"]) <= N_FRAMES and int(d["encodings_reused"]) > 0
        assert int(d["pairs_reused"]) > 0

        # own messages decode and match the masks
        results = listener.get("/easi3r/frame_result")
        assert [stamp_to_ns(r.header.stamp) for r in results] == stamps
        for r, m in zip(results, masks):
            assert r.odom_frame_id == "odom" and (r.width, r.height) == (W, H) and len(r.k) == 9
            assert r.mask.data == m.data and r.header.frame_id == "cam_optical"
            q = r.pose.orientation
            assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-6
        stats = listener.get("/easi3r/window_stats")
        assert stats and all(s.header.frame_id == "odom" for s in stats)
        assert stats[0].chain_scale == pytest.approx(1.0)
        assert all(s.n_frames >= 3 and s.latency_s >= 0 and s.total_s > 0 for s in stats)
        assert all(s.align_iterations > 0 and s.align_loss > 0 for s in stats)
        ids = [s.window_id for s in stats]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        infos = listener.get("/easi3r/camera_info")
        assert len(infos) == len(masks) and all((i.width, i.height) == (W, H) and i.k[0] > 0 for i in infos)

        # TF: one tree map -> odom (identity) -> base_link -> cam_optical
        parents = {}
        for topic in ("/tf", "/tf_static"):
            for msg in listener.get(topic):
                for t in msg.transforms:
                    assert parents.setdefault(t.child_frame_id, t.header.frame_id) == t.header.frame_id
        assert parents == {"odom": "map", "base_link": "odom", "cam_optical": "base_link"}
        dyn = [t for msg in listener.get("/tf") for t in msg.transforms]
        assert sorted(stamp_to_ns(t.header.stamp) for t in dyn) == stamps

        # the path follows the published frames
        path = listener.get("/easi3r/path")[-1]
        assert path.header.frame_id == "odom" and len(path.poses) == len(masks)
        # base_link starts at the odometry origin (unless the first frame was dropped)
        assert stamps[0] == STAMPS[0] or int(d["frames_dropped"]) > 0
        if stamps[0] == STAMPS[0]:
            p0 = path.poses[0].pose.position
            assert abs(p0.x) + abs(p0.y) + abs(p0.z) < 1e-6

        # clouds decode with the declared fields
        clouds = listener.get("/easi3r/static_cloud")
        assert clouds
        for c in clouds:
            assert [f.name for f in c.fields] == ["x", "y", "z", "rgb"] and c.header.frame_id == "odom"
            arr = cloud_to_array(c)
            assert len(arr) == c.width * c.height and np.isfinite(arr["x"]).all()
        wait_until(lambda: listener.get("/easi3r/static_map"), 30, what="static map")
        m = cloud_to_array(listener.get("/easi3r/static_map")[-1])
        assert m.dtype.names == ("x", "y", "z", "rgb")

        # diagnostics name the device and model, and say the weights are random
        st = listener.last_diag()
        assert st.hardware_id == "cpu" and "RANDOM WEIGHTS" in st.message
        assert d["model"] == "random:tiny-224-linear" and d["state"] == "ready"
        assert float(d["window_latency_mean_s"]) > 0

        rc = stop(node)
        node = None
        assert rc == 0
    finally:
        stop(player)
        stop(node)
        listener.close()
