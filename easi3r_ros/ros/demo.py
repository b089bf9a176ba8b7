"""``easi3r demo``: a bag (or a video, turned into a temporary bag) played through ``easi3r_node`` in separate
processes, as on a robot; prints what came out (frames in / published / dropped, window latency) as
read from /diagnostics and the node's topics.

Without ``--checkpoint`` the node runs on random weights: the pipeline and the ROS plumbing are real,
the masks and poses are meaningless.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLIP = PACKAGE_ROOT / "data" / "vtest_clip.mp4"
BANNER = "!" * 72


def _params_file() -> Optional[Path]:
    for cand in (PACKAGE_ROOT / "config" / "easi3r.yaml", Path(sys.prefix) / "share" / "easi3r_ros" / "config" /
                 "easi3r.yaml"):
        if cand.is_file():
            return cand
    return None


def _to_bag(source: Path, work: Path, max_frames: Optional[int], topic: Optional[str]):
    """(bag path, image topic, frame count) for a bag or a video."""
    from ..io.bag import write_image_bag
    from ..io.frames import is_bag, iter_video, list_image_topics
    if is_bag(source):
        topics = list_image_topics(source)
        if not topics:
            raise SystemExit(f"easi3r demo: error: no image topic in bag {source}")
        if topic is None:
            if len(topics) > 1:
                raise SystemExit(f"easi3r demo: error: several image topics in {source} "
                                 f"({', '.join(t for t, _, _ in topics)}); choose one with --topic")
            topic = topics[0][0]
        counts = {t: n for t, _, n in topics}
        if topic not in counts:
            raise SystemExit(f"easi3r demo: error: topic {topic} not in {source}")
        if max_frames:
            print("note: --max-frames applies to videos only; the whole bag is played")
        return source, topic, counts[topic]
    topic = topic or "/camera/image_raw"
    bag = work / "bag"
    n = write_image_bag(bag, iter_video(source, max_frames=max_frames), topic=topic, storage="mcap",
                        frame_id="camera_optical_frame")
    print(f"video {source} -> bag {bag} ({n} frames on {topic})")
    return bag, topic, n


def _env(domain: int) -> dict:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(proc: Optional[subprocess.Popen], timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="easi3r demo",
        description="Play a bag or a video through easi3r_node (separate processes, real ROS 2 middleware) and "
                    "print a summary read from /diagnostics and the node's outputs.")
    p.add_argument("source", nargs="?", type=Path, default=DEFAULT_CLIP,
                   help=f"ROS 2 bag directory or video file (default: {DEFAULT_CLIP.name})")
    p.add_argument("--topic", help="image topic (bag: which one; video: the topic to write, default /camera/image_raw)")
    p.add_argument("--checkpoint", help="DUSt3R/MonST3R checkpoint; without it the demo uses random weights")
    p.add_argument("--random-weights", default="tiny-224-linear", metavar="MODEL",
                   help="model preset for random weights when no checkpoint is given (default tiny-224-linear)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in the checkpoint")
    p.add_argument("--max-frames", type=int, default=None, help="video: use at most this many frames")
    p.add_argument("--window-size", type=int, default=6)
    p.add_argument("--stride", type=int, default=3)
    p.add_argument("--ga-iters", type=int, default=50, help="global-alignment iterations per window (default 50)")
    p.add_argument("--scene-graph-width", type=int, default=3, help="pairs per frame in a window (default 3)")
    p.add_argument("--queue-limit", type=int, default=0,
                   help="node queue limit in frames (default 0: the whole input, so no frame is dropped however "
                        "slow the machine; give a small value to see the real-time drop policy)")
    p.add_argument("--device", default="auto")
    p.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="CPU threads for the node's torch (default: half the cores, leaving the rest to the "
                        "player and the middleware; oversubscribed torch threads are many times slower)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: a random free-ish one)")
    p.add_argument("--logs", type=Path, default=None, help="keep the node and player logs in this folder")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.source.exists():
        print(f"easi3r demo: error: {args.source} does not exist", file=sys.stderr)
        return 2
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from easi3r_ros.msg import WindowStats

    from .diagnostics import values_of
    from .qos import qos_profile

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = args.domain_id if args.domain_id is not None else random.randint(30, 99)
    work = Path(tempfile.mkdtemp(prefix="easi3r_demo_"))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="easi3r_demo_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    node = player = None
    ctx = rclpy.Context()
    try:
        bag, topic, n_frames = _to_bag(args.source, work, args.max_frames, args.topic)
        params = {"window_size": args.window_size, "stride": args.stride, "ga_iters": args.ga_iters,
                  "scene_graph_width": args.scene_graph_width, "torch_threads": args.torch_threads,
                  "queue_limit": args.queue_limit or max(2 * args.window_size, n_frames + 1), "device": args.device,
                  "input_reliability": "reliable", "input_depth": 100, "diagnostics_period": 0.5,
                  "flush_after": 1.0}
        if args.checkpoint:
            params["checkpoint"] = str(Path(args.checkpoint).resolve())
            params["trust_checkpoint"] = bool(args.trust_checkpoint)
        else:
            params["random_weights"] = args.random_weights
            params["kmeans"] = "torch"  # the faster clustering: random-weight runs are smoke tests
            print(BANNER)
            print(f"NO CHECKPOINT: the node runs on RANDOM WEIGHTS ({args.random_weights}). Masks, poses and clouds "
                  "are MEANINGLESS; this run only exercises the pipeline and the ROS plumbing. "
                  "Give --checkpoint for real results.")
            print(BANNER)
        cmd = [sys.executable, "-m", "easi3r_ros.ros.node", "--ros-args"]
        pf = _params_file()
        if pf is not None:
            cmd += ["--params-file", str(pf)]
        for k, v in params.items():
            cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        cmd += ["-r", f"image:={topic}"]
        env = _env(domain)
        node_log = open(logs / "node.log", "w")
        node = subprocess.Popen(cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT)

        rclpy.init(context=ctx, domain_id=domain)
        listener = rclpy.create_node("easi3r_demo_listener", context=ctx)
        got = {"masks": 0, "stats": [], "diag": {}, "diag_msg": ""}
        lock = threading.Lock()

        def on_mask(_msg):
            with lock:
                got["masks"] += 1

        def on_stats(msg):
            with lock:
                got["stats"].append(msg)

        def on_diag(msg):
            vals = values_of(msg)
            if vals:
                with lock:
                    got["diag"] = vals
                    got["diag_msg"] = msg.status[0].message

        qos = qos_profile(200)
        listener.create_subscription(Image, "/easi3r/dynamic_mask", on_mask, qos)
        listener.create_subscription(WindowStats, "/easi3r/window_stats", on_stats, qos)
        listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(listener)

        def spin_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)

        print(f"node started (ROS_DOMAIN_ID={domain}); playing {n_frames} frames of {topic} from {bag}")
        player_log = open(logs / "player.log", "w")
        player = subprocess.Popen([sys.executable, "-m", "easi3r_ros.ros.bag_player", str(bag), "--topics", topic,
                                   "--rate", str(args.rate), "--wait-for-subscribers", "1", "--wait-timeout", "120"],
                                  env=env, stdout=player_log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        last_print = 0.0
        while True:
            spin_for(0.2)
            with lock:
                d = dict(got["diag"])
            done = bool(d) and int(d.get("frames_in", 0)) >= n_frames and \
                int(d.get("frames_in_flight", 1)) == 0 and d.get("busy") == "False"
            if done or node.poll() is not None or time.monotonic() - t0 > args.timeout:
                break
            if d.get("state") == "error" and time.monotonic() - t0 > 5:
                break
            if time.monotonic() - last_print > 5 and d:
                last_print = time.monotonic()
                print(f"  ... {d.get('state')}: in {d.get('frames_in')}, published {d.get('frames_published')}, "
                      f"dropped {d.get('frames_dropped')}, windows {d.get('windows_ok')}")
        spin_for(0.5)
        with lock:
            d, stats, masks, message = dict(got["diag"]), list(got["stats"]), got["masks"], got["diag_msg"]
        lat = [s.latency_s for s in stats]
        comp = [s.total_s for s in stats]
        print()
        print("easi3r demo summary")
        print(f"  source            {args.source} ({n_frames} frames)")
        print(f"  model             {d.get('model', '?')} on {d.get('device', '?')}  [state: {d.get('state', '?')}]")
        print(f"  frames in         {d.get('frames_in', '?')}")
        print(f"  frames published  {d.get('frames_published', '?')} (masks received: {masks})")
        print(f"  frames dropped    {d.get('frames_dropped', '?')} ({d.get('dropped_by_reason', '')})")
        print(f"  frames rejected   {d.get('frames_rejected', '?')}")
        print(f"  windows           {d.get('windows_ok', '?')} ok, {d.get('windows_failed', '?')} failed")
        if lat:
            print(f"  window latency    mean {sum(lat) / len(lat):.2f} s, max {max(lat):.2f} s "
                  f"(last frame arrival -> results published)")
            print(f"  window compute    mean {sum(comp) / len(comp):.2f} s")
        print(f"  diagnostics       {message}")
        if d.get("last_error", "none") != "none":
            print(f"  last error        {d['last_error']}")
        if not args.checkpoint:
            print(f"  RANDOM WEIGHTS ({args.random_weights}): the outputs above are meaningless.")
        print(f"  logs              {logs}")
        if node.poll() is not None:
            print(f"easi3r demo: error: the node exited with status {node.returncode}; see {logs / 'node.log'}",
                  file=sys.stderr)
            return 1
        if not d or int(d.get("frames_in", 0)) < n_frames:
            print("easi3r demo: error: not every frame reached the node in time", file=sys.stderr)
            return 1
        if d.get("state") == "error":
            return 1
        return 0
    finally:
        _stop(player)
        _stop(node)
        rclpy.try_shutdown(context=ctx)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
