"""Fault-injection soak of the node (a benchmark, not a test): a looping bag for MINUTES, parameter storms
and checkpoint swaps every few minutes, then SIGINT. Reports the node's RSS drift after warm-up, the frame
accounting (sent = received + lost before the node; received = published + dropped + rejected) and the
exit code, in results/soak/soak.md with an RSS plot.

    python benchmarks/soak.py [--minutes 30] [--storm-every 60] [--swap-every 180]

The node runs two tiny random-weight checkpoints (written here: one .pth, one Hugging Face folder) on the
sample clip, as a separate process over real DDS on localhost, in a domain of its own.
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

NODE_PARAMS = {"window_size": 6, "stride": 2, "queue_limit": 16, "ga_iters": 30, "image_size": 224,
               "scene_graph_width": 2, "kmeans": "torch", "torch_threads": 1, "input_reliability": "reliable",
               "input_depth": 100, "diagnostics_period": 1.0, "map_period": 2.0, "flush_after": 1.0,
               "shutdown_timeout": 10.0, "cloud_voxel_size": 0.05}


def _p(v):
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def storm_values(rng: random.Random):
    """One parameter change of a storm: valid ones that change outputs or the pipeline, and invalid ones."""
    return rng.choice([
        {"ga_iters": rng.randint(15, 40)}, {"publish_cloud": rng.random() < 0.5}, {"publish_map": rng.random() < 0.5},
        {"max_frame_age": rng.choice([0.0, 5.0, 20.0])}, {"diagnostics_period": rng.choice([0.5, 1.0])},
        {"window_size": rng.choice([5, 6, 7]), "stride": 2},
        {"window_size": 2}, {"stride": 99}, {"device": "tpu"}, {"odom_frame": ""}, {"queue_limit": -1},
        {"base_to_camera": [0.0, 1.0]}, {"trust_checkpoint": True}, {"preset": "bogus"},
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--storm-every", type=float, default=60.0, help="seconds between parameter storms")
    ap.add_argument("--storm-size", type=int, default=30, help="parameter requests per storm")
    ap.add_argument("--swap-every", type=float, default=180.0, help="seconds between checkpoint swaps")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--clip", default=str(REPO / "data" / "vtest_clip.mp4"))
    ap.add_argument("--out", default=str(HERE / "results" / "soak"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda text: print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731

    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from easi3r_ros.io.bag import write_image_bag
    from easi3r_ros.io.frames import open_frames
    from easi3r_ros.model.checkpoint import random_network, save_checkpoint
    from easi3r_ros.ros.bag_player import play_bag

    work = Path(tempfile.mkdtemp(prefix="easi3r_soak_"))
    checkpoints = [save_checkpoint(random_network("tiny-224-linear", seed=1)[0], work / "a.pth"),
                   save_checkpoint(random_network("tiny-224-linear", seed=2)[0], work / "b_hf", fmt="huggingface")]
    frames = ((f.rgb[::2, ::2].copy(), 1_700_000_000_000_000_000 + f.stamp_ns) for f in open_frames(args.clip))
    n_bag = write_image_bag(work / "bag", frames, topic="/camera/image_raw", frame_id="camera_optical_frame")
    log(f"bag of {n_bag} frames, checkpoints {[c.name for c in checkpoints]} in {work}")

    domain = 90 + os.getpid() % 9
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "easi3r_ros.ros.node", "--ros-args", "-r", "image:=/camera/image_raw",
           "-p", f"checkpoint:={checkpoints[0]}"]
    for k, v in NODE_PARAMS.items():
        cmd += ["-p", f"{k}:={_p(v)}"]
    node_log = out / "node.log"
    node = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(node_log, "w"), stderr=subprocess.STDOUT)

    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    ctl = rclpy.create_node("easi3r_soak", context=ctx)
    client = ctl.create_client(SetParameters, "/easi3r/set_parameters")
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(ctl)
    stop_play = threading.Event()
    play_result = {}

    def play():
        play_result["stats"] = play_bag(work / "bag", loop=True, wait_for_subscribers=1, wait_timeout=120,
                                        stop_event=stop_play, context=ctx, node_name="easi3r_soak_player")
    player = threading.Thread(target=play, daemon=True)
    player.start()

    def set_params(values):
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = client.call_async(req)
        executor.spin_until_future_complete(future, timeout_sec=30)
        res = future.result()
        return [] if res is None else [r.successful for r in res.results]

    try:
        return _soak(args, out, log, node, node_log, ctx, ctl, executor, client, stop_play, player, play_result,
                     checkpoints, n_bag, set_params)
    finally:
        if node.poll() is None:
            node.kill()


def _soak(args, out, log, node, node_log, ctx, ctl, executor, client, stop_play, player, play_result, checkpoints,
          n_bag, set_params):
    import rclpy
    rng = random.Random(0)
    samples, events = [], []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_storm, next_swap, next_sample, swap = t0 + args.storm_every, t0 + args.swap_every, t0, 0
    storms = {"requests": 0, "accepted": 0, "refused": 0}
    while time.monotonic() < end:
        now = time.monotonic()
        if node.poll() is not None:
            log(f"the node exited early with rc {node.returncode}")
            break
        if now >= next_sample:
            samples.append((now - t0, rss_mib(node.pid)))
            next_sample += args.sample_every
        if now >= next_storm and client.service_is_ready():
            for _ in range(args.storm_size):
                for ok in set_params(storm_values(rng)):
                    storms["requests"] += 1
                    storms["accepted" if ok else "refused"] += 1
            set_params(dict(ga_iters=30, window_size=6, stride=2, publish_cloud=True, publish_map=True,
                            max_frame_age=0.0))
            events.append((now - t0, "storm"))
            log(f"parameter storm: {storms}")
            next_storm += args.storm_every
        if now >= next_swap and client.service_is_ready():
            swap += 1
            ok = set_params({"checkpoint": str(checkpoints[swap % 2])})
            events.append((now - t0, f"checkpoint -> {checkpoints[swap % 2].name}"))
            log(f"checkpoint swap to {checkpoints[swap % 2].name}: {ok}")
            next_swap += args.swap_every
        time.sleep(0.2)
    stop_play.set()
    player.join(60)
    time.sleep(2.0)
    t_sig = time.monotonic()
    node.send_signal(signal.SIGINT)
    try:
        rc = node.wait(60)
    except subprocess.TimeoutExpired:
        node.kill()
        rc = "killed after 60 s"
    exit_s = time.monotonic() - t_sig
    executor.shutdown()
    ctl.destroy_node()
    rclpy.try_shutdown(context=ctx)

    stats = play_result.get("stats")
    sent = stats.per_topic.get("/camera/image_raw", 0) if stats else float("nan")
    text = node_log.read_text(errors="replace")
    stopped = [ln for ln in text.splitlines() if "stopped:" in ln]
    nums = {}
    if stopped:
        line = stopped[-1]
        for key, pat in (("received", r"(\d+) frames received"), ("published", r"(\d+) published"),
                         ("dropped", r"(\d+) dropped"), ("rejected", r"(\d+) rejected"),
                         ("unaccounted", r"(-?\d+) unaccounted"), ("lost", r"(\d+) lost before")):
            m = re.search(pat, line)
            nums[key] = int(m.group(1)) if m else None
        m = re.search(r"dropped \((\{.*?\}|none)\)", line)
        nums["dropped_by_reason"] = m.group(1) if m else ""
    warm = args.minutes * 60 / 6
    early = [r for t, r in samples if warm <= t < 2 * warm]
    late = [r for t, r in samples if t >= args.minutes * 60 - warm]
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")  # noqa: E731
    drift = (med(late) - med(early)) / med(early) * 100 if early and late else float("nan")
    tracebacks = text.count("Traceback")
    result = dict(minutes=args.minutes, machine=machine(), sent=sent, loops=stats.loops if stats else None,
                  rc=rc, exit_s=round(exit_s, 2), rss_first_mib=samples[0][1] if samples else None,
                  rss_early_median_mib=med(early), rss_late_median_mib=med(late), rss_drift_pct=drift,
                  storms=storms, swaps=swap, tracebacks=tracebacks, **nums)
    ok_frames = (nums.get("unaccounted") == 0 and stats is not None
                 and nums.get("received", -1) + nums.get("lost", 0) == sent
                 and nums["received"] == nums["published"] + nums["dropped"] + nums["rejected"])
    result["frames_accounted"] = ok_frames
    result["pass"] = bool(ok_frames and rc == 0 and abs(drift) < 5.0)
    (out / "soak.json").write_text(json.dumps(result, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t / 60 for t, _ in samples], [r for _, r in samples], lw=1)
    for t, what in events:
        ax.axvline(t / 60, color="tab:red" if what.startswith("checkpoint") else "0.8", lw=0.6, zorder=0)
    ax.axvspan(warm / 60, 2 * warm / 60, color="tab:green", alpha=0.08)
    ax.axvspan((args.minutes * 60 - warm) / 60, args.minutes, color="tab:green", alpha=0.08)
    ax.set_xlabel("minutes (grey: parameter storm, red: checkpoint swap, green: RSS compared)")
    ax.set_ylabel("node RSS (MiB)")
    ax.set_title(f"soak: RSS drift {drift:+.2f} % after warm-up")
    fig.tight_layout()
    fig.savefig(out / "rss.png", dpi=110)

    md = [f"# Node soak: {args.minutes:g} minutes of a looping bag with faults", "",
          f"Machine: {result['machine']}. Command: `python benchmarks/soak.py --minutes {args.minutes:g}` "
          f"(`make soak`).", "",
          "| measure | value |", "|---|---|",
          f"| frames sent by the player ({result['loops']} loops of {n_bag}) | {sent} |",
          f"| received by the node / lost before it | {nums.get('received')} / {nums.get('lost')} |",
          f"| published / dropped / rejected | {nums.get('published')} / {nums.get('dropped')} / "
          f"{nums.get('rejected')} |",
          f"| dropped by reason | {nums.get('dropped_by_reason')} |",
          f"| unaccounted frames | {nums.get('unaccounted')} |",
          f"| parameter requests in storms (accepted / refused) | {storms['requests']} "
          f"({storms['accepted']} / {storms['refused']}) |",
          f"| checkpoint swaps | {swap} |",
          f"| RSS median, minutes {warm / 60:.1f}-{2 * warm / 60:.1f} vs last {warm / 60:.1f} | "
          f"{med(early):.0f} MiB vs {med(late):.0f} MiB: **{drift:+.2f} %** |",
          f"| SIGINT -> exit | rc {rc} after {exit_s:.1f} s |",
          f"| tracebacks in the node log | {tracebacks} |",
          f"| verdict (frames accounted, rc 0, drift < 5 %) | {'PASS' if result['pass'] else 'FAIL'} |",
          "", "![node RSS](rss.png)", ""]
    (out / "soak.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
