"""Measure the "nothing moves" guard statistic on static and moving windows; write a markdown table.

    python benchmarks/guard_calibration.py [--model tiny-224-linear] [--seeds 0 1 2] [--out FILE]

Windows: synthetic scenes with exact ground truth (static camera, panning camera, each with and without an
independently moving disk, with sensor noise) and real clips (``vtest.avi``: static camera + pedestrians;
``cockatoo.mp4``: hand-held camera + bird; ``labelme_truck``: static camera + moving truck). Only pass 1
runs (the guard reads pass-1 statistics). With random weights the attention carries no learned motion
cue, so the table measures what the statistic does for the networks at hand; re-run it with a real
checkpoint (``--checkpoint``) to calibrate for real use.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from easi3r_ros.eval.scenes import make_window  # noqa: E402
from easi3r_ros.io.frames import open_frames  # noqa: E402
from easi3r_ros.model.checkpoint import load_checkpoint, random_network  # noqa: E402
from easi3r_ros.motion.guard import motion_statistics  # noqa: E402
from easi3r_ros.motion.segmentation import token_mask  # noqa: E402
from easi3r_ros.pipeline.window import WindowConfig, WindowPipeline  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def synthetic_windows(seeds, n=6):
    cases = {  # name: (moving?, kwargs)
        "static camera, static scene": (False, dict(pan_px=0, object_px=0, noise=2.0)),
        "panning 4 px/frame, static scene": (False, dict(pan_px=4, object_px=0, noise=2.0)),
        "panning 12 px/frame, static scene": (False, dict(pan_px=12, object_px=0, noise=2.0)),
        "static camera, moving disk": (True, dict(pan_px=0, object_px=12, noise=2.0)),
        "panning 4 px/frame, moving disk": (True, dict(pan_px=4, object_px=12, noise=2.0)),
    }
    for name, (moving, kw) in cases.items():
        for seed in seeds:
            yield f"{name} (seed {seed})", moving, make_window(n, seed=seed, **kw).frames


def real_windows(n=6):
    clips = [("vtest.avi (static cam, pedestrians)", SHARED / "vtest.avi", dict(start=100, stride=4), 3),
             ("cockatoo.mp4 (hand-held, bird)", SHARED / "cockatoo.mp4", dict(start=0, stride=4), 2)]
    for name, path, sel, count in clips:
        if not path.exists():
            continue
        frames = [f.rgb for f in open_frames(path, max_frames=n * count, **sel)]
        for k in range(count):
            yield f"{name} window {k}", True, frames[k * n:(k + 1) * n]
    truck = SHARED / "labelme_truck" / "images"
    if truck.exists():
        yield "labelme_truck (static cam, truck)", True, [f.rgb for f in open_frames(truck)]


def measure(pipeline, frames):
    result = pipeline.run(frames)
    a = result.arrays
    raw = {k: a[f"pass1_{k}"] for k in ("attn_k_i_mean_raw", "attn_k_i_std_raw", "attn_k_j_mean_raw", "attn_k_j_std_raw")}
    return motion_statistics(raw, token_mask(a["pass1_dynamic_masks"]), labels=a["pass1_cluster_labels"])


def _verdict(what, static, moving):
    if max(static) < min(moving):
        return (f"- {what}: separable, static max {max(static):.4f} < moving min {min(moving):.4f}; "
                f"geometric midpoint {np.sqrt(max(static) * min(moving)):.4f}.")
    return f"- {what}: not separable (static max {max(static):.4f}, moving min {min(moving):.4f})."


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-224-linear", help="random-weights model (preset or string)")
    ap.add_argument("--checkpoint", type=Path, help="use real weights instead of random ones")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-real", action="store_true", help="synthetic windows only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard_calibration.md")
    args = ap.parse_args(argv)
    if args.checkpoint:
        net, info = load_checkpoint(args.checkpoint)
        label = f"checkpoint {args.checkpoint}"
    else:
        net, _ = random_network(args.model, 0)
        label = f"random weights ({args.model}, recipe v1 seed 0)"
    pipeline = WindowPipeline(net, WindowConfig(niter=0, keep_arrays=True))
    rows = []
    windows = list(synthetic_windows(args.seeds))
    if not args.no_real:
        windows += list(real_windows())
    for name, moving, frames in windows:
        t = time.perf_counter()
        s = measure(pipeline, frames)
        rows.append((name, moving, s, time.perf_counter() - t))
        print(f"{name:55s} moving={moving!s:5s} evidence_level={s['evidence_level']:.4f} "
              f"sigma_src_ratio={s['sigma_src_ratio']:.3f} "
              f"cluster_outlier={s.get('sigma_src_cluster_outlier', float('nan')):.2f} "
              f"sigma_src_median={s['sigma_src_median']:.2e}", flush=True)
    # "static" for the level stage: nothing changes but sensor noise (the camera too stands still)
    still = [r[2]["evidence_level"] for r in rows if not r[1] and r[0].startswith("static camera")]
    moving = [r[2]["evidence_level"] for r in rows if r[1]]
    contrast_static = [r[2]["sigma_src_ratio"] for r in rows if not r[1]]
    contrast_moving = [r[2]["sigma_src_ratio"] for r in rows if r[1]]
    lines = [f"# Guard calibration: {label}", "",
             f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}; "
             "statistics `evidence_level` and `sigma_src_ratio` (definitions in `easi3r_ros/motion/guard.py`).", "",
             "| window | object moves | evidence level | sigma contrast | cluster outlier | sigma_src median | s |",
             "|---|---|---|---|---|---|---|"]
    for name, mv, s, sec in rows:
        lines.append(f"| {name} | {'yes' if mv else 'no'} | {s['evidence_level']:.4f} | {s['sigma_src_ratio']:.3f} | "
                     f"{s.get('sigma_src_cluster_outlier', float('nan')):.2f} | {s['sigma_src_median']:.2e} | {sec:.1f} |")
    lines += ["", _verdict("evidence level, still camera + static scene vs moving object", still, moving),
              _verdict("sigma contrast, static scene (any camera) vs moving object", contrast_static, contrast_moving)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))  # the two verdicts
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
