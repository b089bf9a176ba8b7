"""Acceptance of planner-ready geometry, across processes with real DDS: a synthetic robot bag (camera image,
calibrated CameraInfo, wheel odometry ``odom -> base_link`` on /tf with scale bias and drift, the mounting on
/tf_static; made by our bag tools) -> bag player -> easi3r_node with the shipped model -> this test.

The node must keep the robot's tree (it publishes map -> odom, never odom -> base_link), publish Odometry
and depth, put the trajectory in metres from odometry (distances between frames up to one window apart within
20 % of the truth), and publish every frame once or count it as dropped.
"""
import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: run with the bootstrapped venv (make test)")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

from ros_testing import (Listener, next_domain, pose_matrix, standard_outputs, start_node, start_player,  # noqa: E402
                         stop, tf_parents, transform_matrix, wait_until)

SEED, N_FRAMES, HW = 1001, 24, (240, 320)     # a robot-style path: 0.9 m forward with gentle yaw
# Distances between published camera positions up to one window apart, against the truth (median ratio over
# pairs that moved > 5 cm). Measured 0.865-0.952 over torch_threads 1/2 and two float-equivalent head norms; the
# whole-path Umeyama scale is not a usable check with easi3r-tiny: its poses zigzag (net span 0.1-0.25 of the
# truth), and that scale read 0.51-1.18 over the same four runs.
SCALE_TOLERANCE = 0.2

# The shipped model, windows small enough for a 2-core CPU.
PARAMS = {"window_size": 6, "stride": 3, "ga_iters": 100, "scene_graph_width": 3, "kmeans": "torch",
          "torch_threads": 2, "input_reliability": "reliable", "input_depth": 100, "queue_limit": 100,
          "flush_after": 1.5, "diagnostics_period": 0.25, "map_period": 0.5,
          "publish_odom_to_base_tf": False, "publish_map_to_odom_tf": True, "base_frame": "base_link",
          "scale_source": "odometry", "scale_min_motion": 0.05}


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory):
    from easi3r_ros.io.bag import write_synthetic_bag
    from easi3r_ros.synthetic import make_sequence
    from easi3r_ros.synthetic.odometry import OdometryNoise, simulate_odometry
    seq = make_sequence(SEED, n_frames=N_FRAMES, hw=HW, n_moving=1, split="heldout")
    odometry = simulate_odometry(seq.cam_to_world, seq.stamps_ns, OdometryNoise(), seed=SEED, per_frame=2)
    return write_synthetic_bag(tmp_path_factory.mktemp("robot") / "seq", seq, odometry)


def _umeyama_scale(est, ref):
    from easi3r_ros.align.sim3 import umeyama
    return float(umeyama(np.asarray(est, np.float64), np.asarray(ref, np.float64))[0])


def _window_distance_ratio(est, ref, span: int, min_motion: float = 0.05) -> float:
    """Median of |est_b - est_a| / |ref_b - ref_a| over frame pairs at most ``span`` apart that moved > min_motion."""
    ratios = [np.linalg.norm(est[b] - est[a]) / np.linalg.norm(ref[b] - ref[a])
              for a in range(len(est)) for b in range(a + 1, min(a + span + 1, len(est)))
              if np.linalg.norm(ref[b] - ref[a]) > min_motion]
    return float(np.median(ratios)) if ratios else float("nan")


def test_robot_bag_through_the_node(robot_bag, tmp_path):
    from easi3r_ros.io.writers import read_tum
    from easi3r_ros.ros.conversions import image_to_depth, stamp_to_ns

    meta = json.loads(robot_bag["meta"].read_text())
    names = meta["frame_ids"]
    stamps_gt, gt_odom_poses = read_tum(robot_bag["gt_odom_tum"])
    domain = next_domain()
    listener = Listener(domain)
    node = player = None
    try:
        standard_outputs(listener)
        node = start_node(domain, PARAMS, tmp_path / "node.log",
                          remaps={"image": names["image_topic"], "camera_info": names["info_topic"]})
        wait_until(lambda: listener.diag_values().get("state") == "ready", 120, what="the shipped model loaded")
        # this listener also subscribes to the camera topics, so that "2 subscribers on every played topic"
        # means the node and the listener: no /tf message is published before both can receive it
        from sensor_msgs.msg import CameraInfo, Image
        listener.listen(names["image_topic"], Image, depth=5)
        listener.listen(names["info_topic"], CameraInfo, depth=5)
        player = start_player(domain, robot_bag["bag"], tmp_path / "player.log", "--wait-for-subscribers", "2")

        def accounted():
            d = listener.diag_values()
            n = int(d.get("frames_published", 0))
            return d and n + int(d["frames_dropped"]) == N_FRAMES and \
                all(len(listener.get(t)) == n for t in ("/easi3r/dynamic_mask", "/easi3r/depth", "/easi3r/odometry",
                                                        "/easi3r/frame_result"))
        wait_until(accounted, 900, step=0.5, what="every frame published or dropped, on every output")
        assert player.wait(30) == 0, (tmp_path / "player.log").read_text()
        d = listener.diag_values()

        # every frame published once, or counted
        masks = listener.get("/easi3r/dynamic_mask")
        stamps = [stamp_to_ns(m.header.stamp) for m in masks]
        assert len(set(stamps)) == len(stamps) and len(stamps) + int(d["frames_dropped"]) == N_FRAMES
        assert len(stamps) >= N_FRAMES - 3, f"too many frames dropped: {d['dropped_by_reason']}"

        # the robot's tree, extended by the node's map -> odom only
        assert tf_parents(listener) == {"odom": {"map"}, names["base"]: {"odom"}, names["camera"]: {names["base"]}}
        dyn = [t for m in listener.get("/tf") for t in m.transforms]
        assert len([t for t in dyn if t.child_frame_id == names["base"]]) == meta["messages"]["/tf"]
        assert len([t for t in dyn if t.child_frame_id == "odom"]) == len(stamps)
        assert int(d["tf_lookup_failures"]) == 0, d["last_tf_error"]
        assert d["camera_info"].startswith("used") and d["camera_mounting"] == "tf"

        # Odometry and depth decode, one per frame, like the source image
        odos = listener.get("/easi3r/odometry")
        assert [stamp_to_ns(o.header.stamp) for o in odos] == stamps
        assert all((o.header.frame_id, o.child_frame_id) == ("map", names["base"]) for o in odos)
        depths = listener.get("/easi3r/depth")
        assert [dm.header for dm in depths] == [m.header for m in masks]
        assert all((dm.encoding, dm.height, dm.width) == ("32FC1",) + HW for dm in depths)

        # metric scale: the camera trajectory against the truth in odom (metres), after the first metre
        results = listener.get("/easi3r/frame_result")
        est = np.stack([pose_matrix(r.pose)[:3, 3] for r in results])
        ref = np.stack([gt_odom_poses[_frame_index(st, stamps_gt)][:3, 3] for st in stamps])
        scale = _window_distance_ratio(est, ref, span=PARAMS["window_size"] - 1)
        path_scale = _umeyama_scale(est, ref)   # reported only (see SCALE_TOLERANCE)
        # metric depth against the rendered depth of the same frames (median ratio over valid pixels)
        ratios = []
        for st, dm in zip(stamps, depths):
            true = np.load(robot_bag["gt"] / "depth" / f"{_frame_index(st, stamps_gt):06d}.npy")
            pub = image_to_depth(dm)
            ok = np.isfinite(pub) & (pub > 0) & np.isfinite(true) & (true > 0)
            ratios.append(np.median(true[ok] / pub[ok]))
        depth_ratio = float(np.median(ratios))
        stats = listener.get("/easi3r/window_stats")
        states = [s.scale_state for s in stats]
        report = (f"distance ratio {scale:.4f} (whole-path scale {path_scale:.4f}), depth ratio {depth_ratio:.4f}, window scales "
                  f"{[round(s.scale, 4) for s in stats]}, spreads {[round(s.scale_spread, 3) for s in stats]}, "
                  f"states {states}")
        print(report)
        assert "observed" in states and all(s.scale_source == "odometry" for s in stats), report
        assert abs(scale - 1) <= SCALE_TOLERANCE, report
        # Depth is published in the trajectory's unit. Whether that unit makes the depth metric depends on the
        # network: the shipped model's camera translations are ~9x too long for its depth, so its depth comes
        # out ~9x short once the trajectory is in metres (reported, not asserted; README "Frames and scale").
        assert np.isfinite(depth_ratio) and depth_ratio > 0, report

        # map -> odom composed with the robot's odometry is the node's estimate of map -> base_link
        odom_tf = {stamp_to_ns(t.header.stamp): transform_matrix(t) for t in dyn if t.child_frame_id == names["base"]}
        odo_by_stamp = {stamp_to_ns(o.header.stamp): pose_matrix(o.pose.pose) for o in odos}
        for t in (t for t in dyn if t.child_frame_id == "odom"):
            st = stamp_to_ns(t.header.stamp)
            if st in odom_tf:
                np.testing.assert_allclose(transform_matrix(t) @ odom_tf[st], odo_by_stamp[st], atol=1e-4)

        rc = stop(node, timeout=60)
        node = None
        assert rc == 0
    finally:
        stop(player)
        stop(node)
        listener.close()


def _frame_index(stamp_ns, stamps_gt_ns):
    """Index of a frame in the ground truth (TUM file, depth folder) from its stamp."""
    k = int(np.argmin(np.abs(np.asarray(stamps_gt_ns, np.int64) - int(stamp_ns))))
    assert abs(int(stamps_gt_ns[k]) - int(stamp_ns)) < 1_000_000, "a published stamp not in the ground truth"
    return k
