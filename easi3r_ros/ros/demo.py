"""``easi3r demo``: the product as a robot sees it, in separate processes over real ROS 2 middleware.

Two plays through ``easi3r_node``:

1. the sample clip (or any bag / video given): frames in / published / dropped and window latency, read
   from /diagnostics and the node's topics;
2. a held-out synthetic dynamic sequence with exact ground truth (``easi3r_ros.synthetic``): the node's
   masks are scored against the true moving-object pixels (DAVIS J / F), beside the learning-free
   optical-flow baseline on the same frames, and a montage PNG (frames, ground truth, flow masks, node
   masks) is written. Until a model beats the baseline, the summary says that the flow masks are the real
   motion masks of the demo.

Weights: ``--checkpoint`` if given, else the shipped easi3r-tiny model, else (``--random-weights MODEL``
only) seeded random weights, announced as meaningless.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLIP = PACKAGE_ROOT / "data" / "vtest_clip.mp4"
BANNER = "!" * 72
SYNTHETIC_TOPIC = "/camera/image_raw"


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
        description="Play a bag or a video, then a synthetic sequence with ground truth, through easi3r_node "
                    "(separate processes, real ROS 2 middleware); print a summary, mask scores against the "
                    "ground truth, and write a montage PNG.")
    p.add_argument("source", nargs="?", type=Path, default=DEFAULT_CLIP,
                   help=f"ROS 2 bag directory or video file (default: {DEFAULT_CLIP.name})")
    p.add_argument("--topic", help="image topic (bag: which one; video: the topic to write, default /camera/image_raw)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="DUSt3R/MonST3R checkpoint (default: the shipped easi3r-tiny model)")
    weights.add_argument("--random-weights", metavar="MODEL",
                         help="seeded random weights of a model preset instead (meaningless outputs; smoke runs)")
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
    p.add_argument("--timeout", type=float, default=900.0, help="give up on one play after this many seconds")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the first play; the synthetic play uses the next one (default: random)")
    p.add_argument("--logs", type=Path, default=None, help="keep the node and player logs in this folder")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic sequence with ground truth")
    p.add_argument("--synthetic-seed", type=int, default=7, help="held-out synthetic sequence seed (default 7)")
    p.add_argument("--synthetic-frames", type=int, default=12, help="frames of the synthetic sequence (default 12)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="where the montage PNG goes (default out/demo)")
    return p


@dataclass
class PlayResult:
    diag: Dict[str, str] = field(default_factory=dict)
    diag_message: str = ""
    stats: list = field(default_factory=list)
    masks: Dict[int, np.ndarray] = field(default_factory=dict)   # stamp (ns) -> mask at camera resolution
    node_rc: Optional[int] = None

    def ok(self, n_frames: int) -> Optional[str]:
        """None when the play went through, else why not."""
        if self.node_rc is not None:
            return f"the node exited with status {self.node_rc}"
        if not self.diag or int(self.diag.get("frames_in", 0)) < n_frames:
            return "not every frame reached the node in time"
        if self.diag.get("state") == "error":
            return f"the node reports an error: {self.diag.get('last_error', '?')}"
        return None


class _Listener:
    """The rclpy listener of one play: masks (decoded, by stamp), window stats and diagnostics. Each play has its
    own ROS domain, so a stopping node's last /diagnostics never counts for the next play."""

    def __init__(self, domain: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from easi3r_ros.msg import WindowStats

        from .qos import qos_profile

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("easi3r_demo_listener", context=self.ctx)
        self.lock = threading.Lock()
        self.result = PlayResult()
        qos = qos_profile(200)
        self.node.create_subscription(Image, "/easi3r/dynamic_mask", self._on_mask, qos)
        self.node.create_subscription(WindowStats, "/easi3r/window_stats", self._on_stats, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def _on_mask(self, msg):
        from ..io.image_codec import fields_to_array
        from .conversions import stamp_to_ns
        mask = fields_to_array(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data, copy=True)
        with self.lock:
            self.result.masks[stamp_to_ns(msg.header.stamp)] = mask > 0

    def _on_stats(self, msg):
        with self.lock:
            self.result.stats.append(msg)

    def _on_diag(self, msg):
        from .diagnostics import values_of
        vals = values_of(msg)
        if vals:
            with self.lock:
                self.result.diag, self.result.diag_message = vals, msg.status[0].message

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def take(self) -> PlayResult:
        with self.lock:
            result, self.result = self.result, PlayResult()
        return result

    def close(self) -> None:
        import rclpy
        rclpy.try_shutdown(context=self.ctx)


def _play(domain: int, bag: Path, topic: str, n_frames: int, params: dict, args, logs: Path,
          tag: str) -> PlayResult:
    """Start a node in ``domain``, play ``bag`` into it, wait until every frame is published or counted; stop."""
    cmd = [sys.executable, "-m", "easi3r_ros.ros.node", "--ros-args"]
    pf = _params_file()
    if pf is not None:
        cmd += ["--params-file", str(pf)]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    cmd += ["-r", f"image:={topic}"]
    node = player = None
    env = _env(domain)
    listener = _Listener(domain)
    try:
        with open(logs / f"node_{tag}.log", "w") as node_log, open(logs / f"player_{tag}.log", "w") as player_log:
            node = subprocess.Popen(cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT)
            print(f"[{tag}] node started (ROS_DOMAIN_ID={domain}); playing {n_frames} frames of {topic} from {bag}")
            player = subprocess.Popen([sys.executable, "-m", "easi3r_ros.ros.bag_player", str(bag), "--topics", topic,
                                       "--rate", str(args.rate), "--wait-for-subscribers", "1",
                                       "--wait-timeout", "120"], env=env, stdout=player_log, stderr=subprocess.STDOUT)
            t0 = last_print = time.monotonic()
            while True:
                listener.spin_for(0.2)
                with listener.lock:
                    d = dict(listener.result.diag)
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
            listener.spin_for(0.5)
            result = listener.take()
            result.node_rc = node.poll()
            return result
    finally:
        _stop(player)
        _stop(node)
        listener.close()


def _print_play(title: str, source: str, n_frames: int, res: PlayResult) -> None:
    d = res.diag
    lat = [s.latency_s for s in res.stats]
    comp = [s.total_s for s in res.stats]
    print()
    print(title)
    print(f"  source            {source} ({n_frames} frames)")
    print(f"  model             {d.get('model', '?')} on {d.get('device', '?')}  [state: {d.get('state', '?')}]")
    print(f"  frames in         {d.get('frames_in', '?')}")
    print(f"  frames published  {d.get('frames_published', '?')} (masks received: {len(res.masks)})")
    print(f"  frames dropped    {d.get('frames_dropped', '?')} ({d.get('dropped_by_reason', '')})")
    print(f"  frames rejected   {d.get('frames_rejected', '?')}")
    print(f"  windows           {d.get('windows_ok', '?')} ok, {d.get('windows_failed', '?')} failed")
    if lat:
        print(f"  window latency    mean {sum(lat) / len(lat):.2f} s, max {max(lat):.2f} s "
              f"(last frame arrival -> results published)")
        print(f"  window compute    mean {sum(comp) / len(comp):.2f} s")
    print(f"  diagnostics       {res.diag_message}")
    if d.get("last_error", "none") != "none":
        print(f"  last error        {d['last_error']}")


def _weights(args) -> tuple:
    """(node parameters for the weights, a label, whether the weights are random)."""
    if args.random_weights:
        return {"random_weights": args.random_weights, "kmeans": "torch"}, f"random:{args.random_weights}", True
    if args.checkpoint:
        return ({"checkpoint": str(Path(args.checkpoint).resolve()), "trust_checkpoint": bool(args.trust_checkpoint)},
                str(args.checkpoint), False)
    from ..model.default import DEFAULT_MODEL_NAME, default_model_path
    path = default_model_path()
    if path is None:
        raise SystemExit("easi3r demo: error: this installation ships no default model; give --checkpoint PATH "
                         "(or --random-weights tiny-224-linear for a smoke run)")
    return {}, f"{DEFAULT_MODEL_NAME} (shipped, {path})", False


def _score_synthetic(seq, res: PlayResult, out_dir: Path, model_label: str) -> Optional[Path]:
    """Print J/F of the node's masks and the flow baseline against the ground truth; write the montage."""
    from ..eval.masks import davis_scores
    from ..eval.montage import montage, overlay, save_png
    from ..motion.flow_baseline import flow_motion_masks

    stamps = [int(s) for s in seq.stamps_ns]
    short_label = model_label.split(" (")[0]   # the model's name, without its path
    got = [k for k, s in enumerate(stamps) if s in res.masks]
    flow = flow_motion_masks(seq.frames)
    gt = [seq.dynamic[k] for k in range(len(stamps))]
    print()
    print("synthetic sequence with ground truth (moving-object pixels)")
    print(f"  sequence          heldout seed {seq.seed}, {len(stamps)} frames, {seq.n_moving} moving objects")
    print(f"  masks received    {len(got)} of {len(stamps)} frames")
    print(f"  {'masks':34s}  {'JM':>5s}  {'JR':>5s}  {'FM':>5s}")
    rows = []
    if got:
        node_scores = davis_scores([res.masks[stamps[k]] for k in got], [gt[k] for k in got])
        rows.append((f"Easi3R node ({short_label[:22]})", node_scores))
    flow_scores = davis_scores([flow[k] for k in got] if got else flow, [gt[k] for k in got] if got else gt)
    rows.append(("optical-flow baseline (no network)", flow_scores))
    for label, s in rows:
        print(f"  {label:34s}  {s['JM']:5.3f}  {s['JR']:5.3f}  {s['FM']:5.3f}")
    if got:
        print("  (same frames for both rows; the flow baseline is a learning-free OpenCV motion mask)")
        if node_scores["JM"] <= flow_scores["JM"]:
            # the shipped model has not earned the title: say which masks are the real motion masks here
            print("  verdict           the optical-flow baseline's masks are the real motion masks of this demo;"
                  "\n                    the shipped model does not beat it. Easi3R masks worth using need an "
                  "official\n                    DUSt3R / MonST3R checkpoint (checkpoint:=/path/to/model.pth).")
        else:
            print("  verdict           the Easi3R node's masks beat the learning-free baseline on this sequence")
    cols = list(range(0, len(stamps), max(1, len(stamps) // 6)))[:6]
    empty = np.zeros(seq.frames[0].shape[:2], bool)
    picture = montage([
        ("frames", [seq.frames[k] for k in cols]),
        ("ground truth", [overlay(seq.frames[k], gt[k], (40, 200, 40)) for k in cols]),
        ("flow baseline\n(no network)", [overlay(seq.frames[k], flow[k], (40, 120, 255)) for k in cols]),
        ("Easi3R node\n" + short_label[:20], [overlay(seq.frames[k], res.masks.get(stamps[k], empty)) for k in cols]),
    ], title=f"easi3r demo: synthetic held-out sequence (seed {seq.seed}); columns = frames "
             f"{', '.join(str(c) for c in cols)}")
    return save_png(picture, out_dir / "montage.png")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.source.exists():
        print(f"easi3r demo: error: {args.source} does not exist", file=sys.stderr)
        return 2
    weight_params, model_label, random_weights = _weights(args)
    if random_weights:
        print(BANNER)
        print(f"RANDOM WEIGHTS ({args.random_weights}): masks, poses and clouds are MEANINGLESS; this run only "
              "exercises the pipeline and the ROS plumbing. Drop --random-weights to use the shipped model.")
        print(BANNER)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = args.domain_id if args.domain_id is not None else random.randint(30, 98)  # and domain + 1
    work = Path(tempfile.mkdtemp(prefix="easi3r_demo_"))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="easi3r_demo_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    try:
        bag, topic, n_frames = _to_bag(args.source, work, args.max_frames, args.topic)
        params = {"window_size": args.window_size, "stride": args.stride, "ga_iters": args.ga_iters,
                  "scene_graph_width": args.scene_graph_width, "torch_threads": args.torch_threads,
                  "queue_limit": args.queue_limit or max(2 * args.window_size, n_frames + 1), "device": args.device,
                  "input_reliability": "reliable", "input_depth": 100, "diagnostics_period": 0.5,
                  "flush_after": 1.0, **weight_params}
        print(f"logs in {logs}")
        clip = _play(domain, bag, topic, n_frames, params, args, logs, "clip")
        _print_play("easi3r demo summary: the clip", str(args.source), n_frames, clip)
        failure = clip.ok(n_frames)
        montage_path = None
        if failure is None and not args.no_synthetic:
            from ..io.bag import write_image_bag
            from ..synthetic import make_sequence
            seq = make_sequence(args.synthetic_seed, n_frames=args.synthetic_frames, hw=(240, 320), n_moving=2,
                                split="heldout")
            syn_bag = work / "synthetic"
            write_image_bag(syn_bag, zip(seq.frames, [int(s) for s in seq.stamps_ns]), topic=SYNTHETIC_TOPIC,
                            storage="mcap", frame_id="camera_optical_frame")
            syn_params = dict(params, queue_limit=args.queue_limit or max(2 * args.window_size, len(seq.frames) + 1))
            syn = _play(domain + 1, syn_bag, SYNTHETIC_TOPIC, len(seq.frames), syn_params, args, logs, "synthetic")
            _print_play("easi3r demo summary: the synthetic sequence", f"synthetic heldout seed {seq.seed}",
                        len(seq.frames), syn)
            failure = syn.ok(len(seq.frames))
            montage_path = _score_synthetic(seq, syn, args.out, model_label)
        print()
        if random_weights:
            print(f"RANDOM WEIGHTS ({args.random_weights}): the outputs above are meaningless.")
        if montage_path is not None:
            print(f"montage           {montage_path}  (frames / ground truth / flow baseline / node masks)")
        print(f"logs              {logs}")
        print(f"demo wall time    {time.monotonic() - t_start:.0f} s")
        if failure is not None:
            print(f"easi3r demo: error: {failure}; see {logs}", file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
