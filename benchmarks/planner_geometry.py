"""Planner-ready geometry: known intrinsics vs estimated, and metric scale from simulated robot odometry.

    python benchmarks/planner_geometry.py [--checkpoint CKPT] [--quick]      (make bench-geometry)

(a) Intrinsics. Held-out synthetic sequences (split ``heldout``, the quality benchmark's seed scheme:
n_moving cycles 1, 2, 3, seeds the renderer cannot populate are skipped) run through the offline sliding
windows (the node's scheduler and chaining) with the focal estimated vs the true K given: focal error and
ATE (evo, Sim(3)-aligned). Also the global alignment alone on the GA reference fixture
(``ga_synthetic_geometry``: exact pointmaps of a known scene, true focal 201.6 px), estimated vs known K.

(b) Metric scale. The same sequences with simulated odometry of the camera (true motion + 2 % scale bias,
1°/m yaw drift, per-step noise; :mod:`easi3r_ros.synthetic.odometry`), known K:

* ``none``: monocular, the first window's free scale;
* ``odometry``: ``scale_source="odometry"``, poses anchored in the odometry frame, in metres;
* ``odometry (exact)``: the same with error-free odometry (what the scale estimator reaches by itself);
* ``fixed (true)``: ``scale_source="fixed"`` with the oracle scale (Umeyama scale of the first window's
  frames against the truth), i.e. the ``none`` trajectory times that scale (``--scale`` multiplies the
  whole reconstruction by S, which test_cli checks).

Scale error = |s − 1| over the frames after the first metre of true travel (needs 3 such frames: sequences
that travel less are scored over all frames and marked), two ways: ``distance`` — s the median over those
frames of their estimated distance from the first camera / the true one (what a planner reads off the output);
``Umeyama`` — s the scale of the Sim(3) that best aligns their estimated camera centres onto the true ones
(also shrinks when the estimated path's shape is noisy). ATE in metres: evo, SE(3)-aligned (no scale fitted),
and unaligned in the odometry frame. Sequences run at ``--fps`` (default 3) so that a robot (0.2–0.7 m/s) travels 0.7–2.6 m in 12
frames; two windows of 8 frames every 4 per sequence. About 19 minutes on one thread of a 2-core Xeon
(measured with other jobs on the machine).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine  # noqa: E402

OUT = RESULTS / "planner_geometry"
MIN_TRAVEL_M = 1.0


def sequences(n: int, frames: int, hw, fps: float, first_seed: int = 0):
    from easi3r_ros.synthetic import make_sequence

    seed, done = first_seed, 0
    while done < n:
        try:
            seq = make_sequence(seed, n_frames=frames, hw=hw, n_moving=1 + done % 3, split="heldout", fps=fps)
        except RuntimeError:  # the renderer could not keep the movers in view
            seed += 1
            continue
        yield seq
        seed, done = seed + 1, done + 1


def umeyama_scale(est: np.ndarray, ref: np.ndarray) -> float:
    from easi3r_ros.align.sim3 import umeyama

    return float(umeyama(est, ref, with_scale=True)[0])


def travelled(c2w: np.ndarray) -> np.ndarray:
    """Cumulative path length of the camera centres (m) at each frame."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1))])


def scale_error(est: np.ndarray, ref: np.ndarray) -> dict:
    """|s − 1| after the first metre of true travel (over all frames where it travels less): s from the
    distances to the first camera (median ratio) and from a Sim(3) fit of the camera centres."""
    after = travelled(ref) >= MIN_TRAVEL_M
    subset = after if after.sum() >= 3 else np.arange(len(ref)) > 0
    d_est = np.linalg.norm(est[subset, :3, 3] - est[0, :3, 3], axis=1)
    d_ref = np.linalg.norm(ref[subset, :3, 3] - ref[0, :3, 3], axis=1)
    s_distance = float(np.median(d_est / np.maximum(d_ref, 1e-9)))
    s_umeyama = 1.0 / umeyama_scale(est[subset, :3, 3], ref[subset, :3, 3])  # estimated per true metre
    return {"scale_error": abs(s_distance - 1.0), "scale_error_umeyama": abs(s_umeyama - 1.0),
            "after_first_metre": bool(after.sum() >= 3), "frames_scored": int(subset.sum())}


def ate_metres(est: np.ndarray, ref: np.ndarray) -> dict:
    from easi3r_ros.eval.trajectory import ate, to_evo

    e, r = to_evo(est), to_evo(ref)
    return {"ate_se3": ate(e, r, with_scale=False)["rmse"], "ate_unaligned": ate(e, r, align=False)["rmse"]}


def run(pipeline, frames, cfg, camera=None, odometry=None, fixed_scale=None, source="none"):
    """Offline sliding windows (the node's scheduler and chaining) -> (poses, mean fx, last scale estimate, s)."""
    from easi3r_ros.pipeline.offline import run_windows, sliding_config

    config = sliding_config(len(frames), cfg.window, cfg.stride, scale_source=source, fixed_scale=fixed_scale)
    start = time.perf_counter()
    results, _, _, windows, scales = run_windows(pipeline, frames, config, camera, odometry)
    pipeline.reset()
    poses = np.stack([r.cam_to_world for r in results]).astype(np.float64)
    fx = float(np.mean([r.intrinsics_camera[0, 0] for r in results]))
    return poses, fx, (scales[-1] if scales else None), time.perf_counter() - start, windows


def evaluate(pipeline, seq, cfg) -> dict:
    from easi3r_ros.eval.trajectory import ate_rmse
    from easi3r_ros.io.camera_model import CameraModel
    from easi3r_ros.io.frames import Frame
    from easi3r_ros.synthetic.odometry import OdometryNoise, simulate_odometry

    H, W = seq.frames[0].shape[:2]
    frames = [Frame(rgb, int(st), f"{seq.seed}#{k}", k) for k, (rgb, st) in enumerate(zip(seq.frames, seq.stamps_ns))]
    camera = CameraModel.from_matrix(seq.K, W, H)
    odo = simulate_odometry(seq.cam_to_world, seq.stamps_ns, OdometryNoise(), seed=seq.seed, per_frame=2)
    exact = simulate_odometry(seq.cam_to_world, seq.stamps_ns, OdometryNoise.none(), per_frame=2)
    truth = odo.truth_in_odom(seq.cam_to_world)   # metres, odometry frame (the same for both odometries)
    rec = {"seed": seq.seed, "n_moving": seq.n_moving, "style": seq.camera_style, "frames": len(seq),
           "travel_m": float(travelled(truth)[-1]), "true_fx": float(seq.K[0, 0]), "rows": {}}
    rows = rec["rows"]
    poses, fx, _, sec, windows = run(pipeline, frames, cfg)
    rec["windows"] = windows
    rec["truth_odom"] = truth.tolist()
    rows["estimated K"] = {"focal_error": abs(fx / seq.K[0, 0] - 1), "ate_sim3": ate_rmse(poses, truth), "seconds": sec,
                           "poses": poses.tolist()}
    poses, fx, _, sec, _ = run(pipeline, frames, cfg, camera)
    rows["known K"] = {"focal_error": abs(fx / seq.K[0, 0] - 1), "ate_sim3": ate_rmse(poses, truth), "seconds": sec}
    rows["none"] = {**scale_error(poses, truth), **ate_metres(poses, truth), "seconds": sec, "poses": poses.tolist()}
    first = slice(0, cfg.window)  # oracle: the first window's true scale
    s_true = umeyama_scale(poses[first, :3, 3], truth[first, :3, 3])
    fixed = poses.copy()
    fixed[:, :3, 3] *= s_true
    rows["fixed (true)"] = {**scale_error(fixed, truth), **ate_metres(fixed, truth), "fixed_scale": s_true}
    for name, o in (("odometry", odo), ("odometry (exact)", exact)):
        poses, _, scale, sec, _ = run(pipeline, frames, cfg, camera, o.track(), source="odometry")
        rows[name] = {**scale_error(poses, truth), **ate_metres(poses, truth), "seconds": sec,
                      "reported": scale, "ate_sim3": ate_rmse(poses, truth), "poses": poses.tolist()}
    return rec


def ga_fixture(niter: int) -> dict:
    """Global alignment alone on the GA fixture's exact pointmaps: estimated focal vs the true K held fixed."""
    import os

    from easi3r_ros.align.global_alignment import align_window
    from easi3r_ros.eval.trajectory import ate_rmse

    root = Path(os.environ.get("EASI3R_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" /
                               "reference")) / "ga_synthetic_geometry"
    if not (root / "reference.npz").exists():
        return {"skipped": f"{root} not found"}
    with np.load(root / "reference.npz") as z:
        a = {k: z[k] for k in z.files}
    inputs = (a["pass2_pred1_pts3d"], a["pass2_pred1_conf"], a["pass2_pred2_pts3d_in_other_view"],
              a["pass2_pred2_conf"], a["edges"], a["conf"].shape[0])
    H, W = a["true_shape"][0]
    f = float(a["synthetic_gt_focal"])
    out = {"true_focal": f, "image": f"{W}x{H} (network input)"}
    for name, known in (("estimated K", None), ("known K", (f, f, W / 2, H / 2))):
        start = time.perf_counter()
        res = align_window(*inputs, niter=niter, intrinsics=known)
        out[name] = {"focal": float(res.focal if known is None else res.intrinsics[0][0, 0]),
                     "focal_error": abs(float(res.intrinsics[0][0, 0]) / f - 1),
                     "ate_sim3": ate_rmse(res.poses_c2w, a["synthetic_gt_poses_c2w"]),
                     "seconds": time.perf_counter() - start}
    return out


def mean(records, row, key):
    vals = [r["rows"][row][key] for r in records if key in r["rows"].get(row, {})]
    return float(np.nanmean(vals)) if vals else float("nan")


def report(res: dict) -> str:
    recs, cfg = res["sequences"], res["config"]
    fmt = lambda v, d=3: "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"  # noqa: E731
    lines = ["# Planner geometry: known intrinsics and metric scale (`benchmarks/planner_geometry.py`)", "",
             f"Machine: {res['machine']}. Date: {res['date']}. Total wall time {res['seconds']:.0f} s.", "",
             f"Model: {res['model']}. Set: {len(recs)} held-out synthetic sequences (seeds "
             f"{', '.join(str(r['seed']) for r in recs)}), {cfg['frames']} frames of {cfg['hw'][0]}×{cfg['hw'][1]} "
             f"at {cfg['fps']:g} fps, windows of {cfg['window']} every {cfg['stride']} frames (the node's chaining), "
             f"preset `{cfg['preset']}`, {cfg['niter']} alignment iterations"
             f"{' on every %dth pixel (coarse to fine)' % cfg['align_coarse'] if cfg.get('align_coarse', 1) > 1 else ''}"
             f" (GA fixture: {cfg.get('ga_niter', cfg['niter'])} at full resolution). Odometry: simulated, "
             f"{res['odometry_noise']}.", "",
             "## (a) Known intrinsics vs estimated", "",
             "| | focal error ↓ | ATE Sim(3) (m) ↓ |", "|---|---|---|"]
    for row in ("estimated K", "known K"):
        lines.append(f"| {row} (sequences, mean) | {fmt(100 * mean(recs, row, 'focal_error'), 1)} % | "
                     f"{fmt(mean(recs, row, 'ate_sim3'), 4)} |")
    ga = res.get("ga_fixture", {})
    for row in ("estimated K", "known K"):
        if row in ga:
            lines.append(f"| {row} (GA fixture, alignment alone) | {fmt(100 * ga[row]['focal_error'], 2)} % | "
                         f"{ga[row]['ate_sim3']:.2e} |")
    if "skipped" in ga:
        lines.append(f"\nGA fixture: {ga['skipped']}.")
    lines += ["", "## (b) Metric scale", "",
              f"Scale error |s − 1| after the first {MIN_TRAVEL_M:g} m of true travel: *distance* = median ratio of "
              "estimated to true distance from the first camera, *Umeyama* = scale of the best Sim(3) fit of the "
              "camera centres. ATE in metres, SE(3)-aligned (no scale fitted) and unaligned in the odometry frame.",
              "", "| scale source | scale error, distance ↓ (mean / max) | scale error, Umeyama ↓ (mean) | "
              "ATE SE(3) (m) ↓ | ATE unaligned (m) ↓ |", "|---|---|---|---|---|"]
    for row in ("none", "fixed (true)", "odometry", "odometry (exact)"):
        errs = [r["rows"][row]["scale_error"] for r in recs if row in r["rows"]]
        lines.append(f"| {row} | {fmt(100 * mean(recs, row, 'scale_error'), 1)} % / "
                     f"{fmt(100 * max(errs) if errs else None, 1)} % | "
                     f"{fmt(100 * mean(recs, row, 'scale_error_umeyama'), 1)} % | "
                     f"{fmt(mean(recs, row, 'ate_se3'), 3)} | "
                     f"{fmt(mean(recs, row, 'ate_unaligned'), 3) if row.startswith('odometry') else '–'} |")
    lines += ["", "Per sequence (scale source odometry with noise and drift; * = travels under 1 m, scored over "
              "all frames):", "",
              "| seed | style | travel (m) | windows | focal err est. | scale err (distance / Umeyama) | "
              "ATE SE(3) (m) | reported scale (value, spread, state) |", "|---|---|---|---|---|---|---|---|"]
    for r in recs:
        o = r["rows"]["odometry"]
        rep = o.get("reported") or {}
        lines.append(f"| {r['seed']} | {r['style']} | {r['travel_m']:.2f} | {r['windows']} | "
                     f"{100 * r['rows']['estimated K']['focal_error']:.1f} % | {100 * o['scale_error']:.1f} % / "
                     f"{100 * o['scale_error_umeyama']:.1f} %{'' if o['after_first_metre'] else '*'} | "
                     f"{o['ate_se3']:.3f} | "
                     f"{fmt(rep.get('value'), 3)}, {fmt(rep.get('spread'), 3)}, {rep.get('state', '–')} |")
    scored = [r for r in recs if r["rows"]["odometry"]["after_first_metre"]]
    ok = [r["rows"]["odometry"]["scale_error"] <= 0.05 for r in scored]
    lines += ["", f"Aim: scale error ≤ 5 % after the first metre: reached on {sum(ok)} of {len(ok)} sequences that "
              f"travel ≥ 1 m (mean {fmt(100 * mean(scored, 'odometry', 'scale_error'), 1)} %).",
              "", "Every number per sequence is in `geometry.json`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="default: the shipped easi3r-tiny model")
    ap.add_argument("--sequences", type=int, default=6)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--fps", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--niter", type=int, help="alignment iterations (default: the robot preset's, as the node runs it; "
                    "the GA fixture's alignment alone runs the reference's 300)")
    ap.add_argument("--size", default="240x320")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 short sequences, 10 iterations (checks the script)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    from easi3r_ros.eval.bench import resolve_model
    from easi3r_ros.model.default import calibrated_overrides
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config
    from easi3r_ros.synthetic.odometry import OdometryNoise

    torch.set_num_threads(args.threads)
    if args.quick:
        args.sequences, args.frames, args.niter, args.size, args.window, args.stride = 2, 7, 10, "96x128", 5, 2
    hw = tuple(int(v) for v in args.size.split("x"))
    model = resolve_model(args.checkpoint, None)
    overrides = calibrated_overrides(model.checkpoint) if model.checkpoint is not None else {}
    pipeline = WindowPipeline(model.network, preset_config("robot", niter=args.niter, device="cpu", **overrides))
    cfg = argparse.Namespace(window=args.window, stride=args.stride)
    start = time.perf_counter()
    recs = []
    for seq in sequences(args.sequences, args.frames, hw, args.fps):
        recs.append(evaluate(pipeline, seq, cfg))
        o = recs[-1]["rows"]["odometry"]
        print(f"seed {seq.seed} ({seq.camera_style}, {recs[-1]['travel_m']:.2f} m): scale error "
              f"{100 * o['scale_error']:.1f} % (Umeyama {100 * o['scale_error_umeyama']:.1f} %), "
              f"ATE SE(3) {o['ate_se3']:.3f} m "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
    ga_niter = args.niter or 300   # the alignment alone: the reference's count unless --niter says otherwise
    res = {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "model": f"{model.source} (sha256 {model.sha256}…)" if model.sha256 else model.source,
           "odometry_noise": ", ".join(f"{k} {v:g}" for k, v in asdict(OdometryNoise()).items()),
           "config": {"frames": args.frames, "hw": hw, "fps": args.fps, "window": args.window, "stride": args.stride,
                      "niter": pipeline.config.niter, "align_coarse": pipeline.config.align_coarse, "preset": "robot",
                      "ga_niter": ga_niter, "threads": args.threads},
           "sequences": recs, "ga_fixture": ga_fixture(ga_niter)}
    res["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "geometry.json").write_text(json.dumps(res, indent=1, default=float))
    (args.out / "geometry.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
