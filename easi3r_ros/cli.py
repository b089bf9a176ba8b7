"""``easi3r``: offline runs, bag tools, the demo and evaluation.

    easi3r run INPUT (--checkpoint CKPT | --random-weights MODEL) --out DIR [options]
        [--intrinsics fx,fy,cx,cy | --camera-info CALIB.yaml] [--odometry TUM_FILE | --scale S]
    easi3r bag from-video VIDEO OUT [--topic T] [--storage mcap|sqlite3]
    easi3r bag from-synthetic SEED OUT [--frames N] [--odometry-noise default|none]
    easi3r bag play BAG [--rate R] [--loop] [--clock]
    easi3r demo [--checkpoint CKPT]
    easi3r eval masks PRED_DIR GT_DIR | easi3r eval traj EST.txt REF.txt
    easi3r train --model MODEL --out DIR [options]

Errors are reported as one line (``easi3r: error: ...``) with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

from .model.config import KEEP_FP32
from .model.config import PRESETS as MODEL_PRESETS


class CliError(Exception):
    pass


def _positive(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="Easi3R on a video, image folder or ROS 2 bag; writes masks, poses, depth, clouds",
                       description="Run Easi3R on INPUT (a video file, an image folder, or a ROS 2 bag directory "
                                   "with --topic) and write per-frame masks, an overlay video, TUM poses, intrinsics, "
                                   "depth maps, a static point cloud and results.npz to --out.")
    p.add_argument("input", type=Path, help="video file, image folder, or rosbag2 directory")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path,
                         help="official DUSt3R/MonST3R .pth or a Hugging Face folder (default: the shipped "
                              "easi3r-tiny model, trained on synthetic rooms)")
    weights.add_argument("--random-weights", metavar="MODEL",
                         help=f"run on recipe-v1 random weights (meaningless results): a preset "
                              f"({', '.join(MODEL_PRESETS)}) or a constructor string")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow arbitrary pickled objects in a .pth (only for files from a trusted source)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--topic", help="image topic when INPUT is a bag")
    p.add_argument("--fps", type=float, help="frame rate for image folders (stamps), default 30")
    p.add_argument("--max-frames", type=_positive, help="use at most this many frames")
    p.add_argument("--every", type=int, default=1, help="take every n-th frame of the input (default 1)")
    p.add_argument("--window", type=_positive, default=0,
                   help="frames per sliding window (default 0: all frames in one window, as the reference)")
    p.add_argument("--stride", type=_positive, default=0, help="new frames per window (default window/2)")
    p.add_argument("--preset", choices=["reference", "robot"], default="reference",
                   help="reference: the original Easi3R settings; robot: adds the 'nothing moves' guard")
    p.add_argument("--image-size", type=int, choices=[224, 512], help="network input size (default: the model's)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast on CUDA (bf16 also on the CPU)")
    p.add_argument("--keep-fp32", choices=KEEP_FP32, default="cross-attention",
                   help="under bf16/fp16, what stays fp32 besides the encoder: cross-attention (default; the motion "
                        "signal), decoder (only the heads reduced: masks as fp32's) or nothing")
    p.add_argument("--flow-loss", action="store_true",
                   help="add the reference's optional optical-flow term to the alignment (DIS flow between each "
                        "pair's images, on static pixels)")
    p.add_argument("--align-coarse", type=_positive,
                   help="global alignment on every n-th pixel, then each full-resolution depth in closed form "
                        "(default: the preset's, robot 4, reference 1)")
    p.add_argument("--warm-start", action="store_true",
                   help="with --window: start each window's alignment from the previous solution, with an early "
                        "stop (it starts no closer and ends at a higher loss on the synthetic benchmark)")
    p.add_argument("--pair-batch", type=_positive, help="ordered pairs per network call (default 1 on the CPU, 8 on "
                   "CUDA; halved when the GPU runs out of memory)")
    p.add_argument("--niter", type=_positive, help="global-alignment iterations (default: the preset's, reference 300, robot 150)")
    p.add_argument("--scene-graph", help="scene graph, swinstride-W (default swinstride-5)")
    p.add_argument("--kmeans", choices=["sklearn", "torch"], help="clustering backend (default sklearn = reference)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    geometry = p.add_argument_group("planner geometry: calibrated intrinsics and metric scale")
    known = geometry.add_mutually_exclusive_group()
    known.add_argument("--intrinsics", metavar="FX,FY,CX,CY",
                       help="known pinhole intrinsics in the source images' pixels (held fixed by the alignment)")
    known.add_argument("--camera-info", type=Path, metavar="CALIB.yaml",
                       help="ROS camera-calibration YAML (camera_calibration / camera_info_manager): K and "
                            "distortion (plumb_bob, rational_polynomial) of the source images")
    metric = geometry.add_mutually_exclusive_group()
    metric.add_argument("--odometry", type=Path, metavar="TUM_FILE",
                        help="the camera optical frame's poses from the robot's odometry (TUM: stamp_s tx ty tz qx "
                             "qy qz qw, metres), matched to frames by stamp: poses_tum.txt in that frame, in metres")
    metric.add_argument("--scale", type=float, metavar="S",
                        help="known metric scale: metres per unit of the first window's reconstruction")
    geometry.add_argument("--start-time", type=float, metavar="SECONDS",
                          help="stamp of the first frame of an image folder or video (they are stamped index/fps "
                               "from 0), to share the odometry's clock")


def _cmd_run(args) -> int:
    from .io.frames import check_same_size, open_frames
    from .model.checkpoint import load_checkpoint, random_network
    from .model.default import DEFAULT_MODEL_NAME, calibrated_overrides, default_model_path
    from .pipeline.offline import RANDOM_WEIGHTS_WARNING, describe, run_offline, sliding_config
    from .pipeline.scheduler import StreamConfigError
    from .pipeline.window import WindowPipeline, preset_config, resolve_device

    if args.window and args.window < 3:
        raise CliError(f"--window must be 0 (all frames) or >= 3, got {args.window}")
    frames = list(open_frames(args.input, topic=args.topic, fps=args.fps, stride=args.every,
                              max_frames=args.max_frames))
    if len(frames) < 3:
        raise CliError(f"{args.input}: {len(frames)} frame(s); Easi3R needs at least 3 frames in a window")
    check_same_size(frames)  # before the (slow) model load
    if args.start_time is not None:
        frames = [replace(f, stamp_ns=f.stamp_ns + int(round(args.start_time * 1e9))) for f in frames]
    camera, intrinsics_source = _known_camera(args, *frames[0].rgb.shape[:2])
    odometry = _odometry_for(args.odometry, frames) if args.odometry else None
    if args.scale is not None and not (args.scale > 0 and math.isfinite(args.scale)):
        raise CliError(f"--scale must be a positive number, got {args.scale}")
    if args.window and args.window < len(frames):
        try:
            sliding_config(len(frames), args.window, args.stride)
        except StreamConfigError as exc:
            raise CliError(f"--window {args.window} --stride {args.stride}: {exc}") from None
    config = preset_config(args.preset, image_size=args.image_size, device=args.device, precision=args.precision,
                           keep_fp32=args.keep_fp32, niter=args.niter, scene_graph=args.scene_graph, kmeans=args.kmeans, keep_arrays=True,
                           pair_batch=args.pair_batch, warm_start=args.warm_start or None,
                           flow_loss=args.flow_loss or None, align_coarse=args.align_coarse)
    device = resolve_device(args.device)
    if args.random_weights:
        network, model_string = random_network(args.random_weights, args.weights_seed, device=device)
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
        source = {"random_weights": True, "weights": {"recipe": "v1", "seed": args.weights_seed},
                  "warning": RANDOM_WEIGHTS_WARNING}
    else:
        checkpoint = args.checkpoint or default_model_path()
        if checkpoint is None:
            raise CliError("no --checkpoint given and this installation ships no default model")
        network, info = load_checkpoint(checkpoint, allow_pickle=args.trust_checkpoint, device=device)
        model_string = info.model_string
        source = {"random_weights": False, "checkpoint": str(checkpoint),
                  "model": DEFAULT_MODEL_NAME if args.checkpoint is None else "user checkpoint"}
        config = replace(config, **calibrated_overrides(checkpoint))
    progress = None
    if not args.quiet:
        from functools import partial

        from tqdm import tqdm
        progress = partial(tqdm, leave=False, file=sys.stderr, unit="it")
    pipeline = WindowPipeline(network, config, progress=progress)
    meta = {"input": str(args.input), "model_str": model_string, "preset": args.preset, "device": str(pipeline.device),
            "n_frames": len(frames), "window": args.window, "stride": args.stride, "fps": args.fps,
            "config": {k: v for k, v in vars(config).items()}, **source, "intrinsics_source": intrinsics_source,
            "odometry": str(args.odometry) if args.odometry else None}
    print(f"easi3r: {len(frames)} frames from {args.input} on {pipeline.device}, model {model_string[:80]}...",
          file=sys.stderr)
    start = time.perf_counter()
    summary = run_offline(frames, pipeline, args.out, meta, window=args.window, stride=args.stride, camera=camera,
                          odometry=odometry, fixed_scale=args.scale)
    print(f"easi3r: {describe(summary)}; wall {time.perf_counter() - start:.1f}s; wrote {args.out}/")
    if args.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    return 0


def _known_camera(args, height: int, width: int):
    """(CameraModel or None, where the intrinsics come from), checked against the frames' size."""
    from .io.calibration import read_camera_yaml
    from .io.camera_model import CameraModel

    if args.camera_info:
        camera = read_camera_yaml(args.camera_info)
        if (camera.width, camera.height) != (width, height):
            raise CliError(f"--camera-info {args.camera_info} is for {camera.width}x{camera.height} images, the "
                           f"frames are {width}x{height}")
        return camera, f"camera-info {args.camera_info}"
    if args.intrinsics:
        camera = CameraModel.parse(args.intrinsics, width, height)
        if not (0 <= camera.cx < width and 0 <= camera.cy < height):
            raise CliError(f"--intrinsics: principal point ({camera.cx:g}, {camera.cy:g}) lies outside the "
                           f"{width}x{height} frames (K is in the source images' pixels)")
        return camera, "intrinsics"
    return None, "estimated"


def _odometry_for(path: Path, frames):
    """The odometry track, checked to cover the frames' stamps (one clock)."""
    from .io.odometry import read_odometry

    track = read_odometry(path)
    covered = sum(track.lookup(f.stamp_ns) is not None for f in frames)
    if covered == 0:
        first, last = track.span_ns
        raise CliError(f"--odometry {path} covers {first / 1e9:.3f}-{last / 1e9:.3f} s, the frames "
                       f"{frames[0].stamp_ns / 1e9:.3f}-{frames[-1].stamp_ns / 1e9:.3f} s: no frame has a pose "
                       "(image folders and videos are stamped from 0: see --start-time)")
    if covered < len(frames):
        print(f"easi3r: --odometry gives poses for {covered} of {len(frames)} frames", file=sys.stderr)
    return track


def _add_bag(sub) -> None:
    p = sub.add_parser("bag", help="ROS 2 bag tools that work without rosbag2",
                       description="Create and replay ROS 2 bags (sqlite3 or mcap) without a ROS 2 install.")
    bag = p.add_subparsers(dest="bag_command", metavar="{from-video,from-synthetic,play}", required=True)
    fv = bag.add_parser("from-video", help="write a video's frames as sensor_msgs/Image messages into a new bag",
                        description="Write VIDEO's frames as sensor_msgs/msg/Image on --topic into the new bag OUT, "
                                    "stamped with the video's own frame times (plus --start-time).")
    fv.add_argument("video", type=Path)
    fv.add_argument("out", type=Path, help="new bag directory (must not exist)")
    fv.add_argument("--topic", default="/camera/image_raw")
    fv.add_argument("--frame-id", default="camera_optical_frame")
    fv.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    fv.add_argument("--encoding", choices=["rgb8", "bgr8", "mono8"], default="rgb8")
    fv.add_argument("--compressed", choices=["jpeg", "png"], help="write sensor_msgs/CompressedImage instead")
    fv.add_argument("--max-frames", type=_positive)
    fv.add_argument("--every", type=int, default=1, help="take every n-th frame")
    fv.add_argument("--start-time", type=float, default=None,
                    help="stamp of the first frame, seconds since the epoch (default: now)")
    fs = bag.add_parser("from-synthetic", help="a synthetic sequence as a robot records it, with its ground truth",
                        description="Render the held-out synthetic sequence SEED and write OUT/bag (camera image, "
                                    "CameraInfo with the true K, odom -> base_link on /tf from simulated odometry, "
                                    "base_link -> camera_optical_frame on /tf_static) plus the ground truth beside "
                                    "it: OUT/gt/ (frames, masks, depth), OUT/gt_odom_tum.txt (true camera poses in "
                                    "odom, metres), OUT/odometry_tum.txt, OUT/camera.yaml, OUT/meta.json.")
    fs.add_argument("seed", type=int)
    fs.add_argument("out", type=Path, help="new folder (must not exist or be empty)")
    fs.add_argument("--frames", type=int, default=24, help="frames (default 24, 10 fps)")
    fs.add_argument("--size", default="240x320", help="image size HxW (default 240x320)")
    fs.add_argument("--moving", type=int, default=2, choices=range(4), help="moving objects (default 2)")
    fs.add_argument("--odometry-noise", choices=["default", "none"], default="default",
                    help="default: 2%% scale bias, 1 deg/m yaw drift, 2%% step noise; none: the exact motion")
    fs.add_argument("--odometry-rate", type=int, default=2, help="odometry samples per frame interval (default 2)")
    fs.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    bag.add_parser("play", help="replay a bag's messages at the recorded rate (needs rclpy; see bag play --help)")


def _cmd_bag_synthetic(args) -> int:
    from .io.bag import write_synthetic_bag
    from .synthetic import make_sequence
    from .synthetic.odometry import OdometryNoise, simulate_odometry

    try:
        hw = tuple(int(v) for v in args.size.lower().split("x"))
    except ValueError:
        hw = ()
    if len(hw) != 2 or min(hw) < 16:
        raise CliError(f"--size must be HxW with both >= 16, got {args.size!r}")
    if args.frames < 3 or args.odometry_rate < 1:
        raise CliError("--frames must be >= 3 and --odometry-rate >= 1")
    if args.out.exists() and any(args.out.iterdir()):
        raise CliError(f"{args.out} exists and is not empty")
    seq = make_sequence(args.seed, n_frames=args.frames, hw=hw, n_moving=args.moving, split="heldout")
    noise = OdometryNoise() if args.odometry_noise == "default" else OdometryNoise.none()
    odometry = simulate_odometry(seq.cam_to_world, seq.stamps_ns, noise, seed=args.seed, per_frame=args.odometry_rate)
    paths = write_synthetic_bag(args.out, seq, odometry, storage=args.storage)
    print(f"easi3r: wrote {args.out}/bag ({len(seq)} frames, {len(odometry.stamps_ns)} odometry poses, "
          f"{args.storage}) and the ground truth beside it; offline: easi3r run {paths['bag']} --camera-info "
          f"{paths['camera_yaml']} --odometry {paths['odometry_tum']} --out OUT")
    return 0


def _cmd_bag(args) -> int:
    from .io.bag import write_image_bag

    if args.bag_command == "from-synthetic":
        return _cmd_bag_synthetic(args)
    from .io.frames import open_frames

    frames = open_frames(args.video, stride=args.every, max_frames=args.max_frames)
    offset = int((time.time() if args.start_time is None else args.start_time) * 1e9)
    stamped = ((f.rgb, offset + f.stamp_ns) for f in frames)
    n = write_image_bag(args.out, stamped, topic=args.topic, storage=args.storage, encoding=args.encoding,
                        frame_id=args.frame_id, compressed=args.compressed)
    if n == 0:
        raise CliError(f"{args.video}: no frames written")
    print(f"easi3r: wrote {n} messages on {args.topic} to {args.out} ({args.storage})")
    return 0


def _add_passthrough(sub, name: str, help_text: str) -> None:
    sub.add_parser(name, help=help_text)  # dispatched before parsing, listed here for --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easi3r", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{run,bag,demo,eval,train}", required=True)
    _add_run(sub)
    _add_bag(sub)
    _add_passthrough(sub, "demo", "play the sample clip through the ROS 2 node and print a summary (needs rclpy)")
    _add_passthrough(sub, "eval", "evaluate masks (J&F against ground truth) or trajectories (ATE/RPE)")
    _add_passthrough(sub, "train", "train a small DUSt3R-shaped network on synthetic rooms (see train --help)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # FFmpeg's own decoder messages would add lines to our one-line errors
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Sub-tools with their own parsers get their arguments untouched (their --help included).
    if argv[:2] == ["bag", "play"]:
        from .ros.bag_player import main as play_main
        return play_main(argv[2:])
    if argv[:1] in (["demo"], ["eval"], ["train"]):
        tool = importlib.import_module({"demo": ".ros.demo", "eval": ".eval.cli", "train": ".train.cli"}[argv[0]],
                                       __package__)
        return tool.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from .io.frames import InputError

    from .io.camera_model import CameraModelError
    from .io.odometry import OdometryError

    errors = (CliError, InputError, FileExistsError, CameraModelError, OdometryError)
    if args.command == "run":  # these modules import torch: only where the command needs them
        from .model.checkpoint import CheckpointError
        from .model.config import ModelConfigError
        from .pipeline.scene_graph import SceneGraphError
        from .pipeline.window import WindowError
        errors += (CheckpointError, ModelConfigError, SceneGraphError, WindowError)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "bag":
            return _cmd_bag(args)
    except errors as exc:
        parser.exit(2, f"easi3r: error: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
