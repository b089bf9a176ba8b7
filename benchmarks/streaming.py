"""Streaming at robot rates: work per new frame in steady state, and memory over a long stream.

    python benchmarks/streaming.py [--quick] [--fresh] [--parts cost rss]

**cost** (the shipped easi3r-tiny model, held-out synthetic sequences of W + 2S frames at 240x320 with two
moving objects, one thread): consecutive windows of W frames every S new frames, for (W, S) = (8, 4) (the
node's defaults) and (6, 2):

- *steady* — the ``robot`` preset as the stream runs it: frame encodings and pass-1 pair decodes cached by
  frame, pass-2 decodes reused for pairs whose frames' token masks did not change, the alignment warm-started
  from the previous window's solution on the shared frames with an early stop;
- *robot, cold* — the same windows with the warm start and the pass-2 reuse switched off (300 iterations per
  window): the reference for the quality comparison (ATE of the chained trajectory, JM of the published
  masks, published as the stream does);
- *reference, cold* — one full ``reference``-preset window per stride, nothing reused (what re-running the
  original per window costs): the reference for the cost.

The "nothing moves" guard is off in these runs, so that every window has masks to re-weight (the harder
case for the pass-2 reuse; with the guard on, easi3r-tiny judges these windows static and more is reused).
Cost per new frame = a window's wall time / S; "steady" averages the windows after the first.

**rss**: a micro model (random weights, 64x48 input) through :class:`StreamProcessor` for ``--rss-frames``
frames (a rendered clip played back and forth with increasing stamps), resident memory sampled every
window; the slope after the warm-up (least squares over the last 3/4 of the frames) in % of the mean per
1000 frames, plotted to ``results/streaming/rss.png``.

Each part is saved under ``results/streaming/parts/`` as it finishes; a rerun skips what is there
(``--fresh`` starts again). Report: ``results/streaming/streaming.md`` (+ ``.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine  # noqa: E402

OUT = RESULTS / "streaming"
MICRO_MODEL = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(64, 64), head_type='linear', "
               "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=32, "
               "enc_depth=1, enc_num_heads=1, dec_embed_dim=32, dec_depth=1, dec_num_heads=1)")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------- cost
def _published(n_frames: int, w: int, s: int):
    """Window starts and, per window, the positions it publishes (the stream's publish-once rule)."""
    from easi3r_ros.pipeline.scheduler import context_margin

    m = context_margin(w, s)
    starts = list(range(0, n_frames - w + 1, s))
    done, plan = set(), []
    for k, st in enumerate(starts):
        last = k == len(starts) - 1
        pos = [i for i in range(w) if st + i not in done and (last or w - 1 - i >= m)]
        done.update(st + i for i in pos)
        plan.append((st, pos))
    return plan


def stream_windows(pipe, seq, w: int, s: int, ids: bool = True):
    """Run the windows of ``seq``; returns per-window records and the chained, published poses and masks."""
    import numpy as np

    from easi3r_ros.align.chain import TrajectoryChainer

    chainer = TrajectoryChainer()
    poses, masks, windows = {}, {}, []
    for st, pos in _published(len(seq), w, s):
        idx = list(range(st, st + w))
        before = dict(vars(pipe.stats))
        t = time.perf_counter()
        result = pipe.run([seq.frames[i] for i in idx], [int(seq.stamps_ns[i]) for i in idx],
                          idx if ids else None)
        wall = time.perf_counter() - t
        delta = {k: int(v - before[k]) for k, v in vars(pipe.stats).items()}
        _, chained = chainer.attach(idx, result)
        for i in pos:
            poses[st + i] = chained[i]
            masks[st + i] = result.frames[i].mask_camera
        windows.append({"start": st, "wall_s": wall, "edges": len(result.edges), "counts": delta,
                        "timings": {k: float(v) for k, v in result.timings.items()}})
    order = sorted(poses)
    return windows, np.stack([poses[i] for i in order]), [masks[i] for i in order], order


# a faster early stop, measured beside the defaults (not the preset's setting)
FAST_STOP = {"warm_start": True, "early_stop_patience": 5, "early_stop_rel": 0.02}


def cost_part(w: int, s: int, seed: int, with_reference: bool, quick: bool, fast_only: bool = False) -> dict:
    import torch

    from easi3r_ros.eval.bench import mask_metrics, pose_metrics
    from easi3r_ros.model.checkpoint import load_checkpoint
    from easi3r_ros.model.default import calibrated_overrides, default_model_path
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config
    from easi3r_ros.synthetic import make_sequence

    torch.set_grad_enabled(False)
    n_frames = w + 2 * s
    seq = make_sequence(seed, n_frames=n_frames, hw=(240, 320), n_moving=2, split="heldout")
    path = default_model_path()
    net, _ = load_checkpoint(path)
    cal = calibrated_overrides(path)
    niter = 20 if quick else 300
    common = dict(motion_guard=False, niter=niter, warm_niter=niter, **{k: v for k, v in cal.items() if k != "motion_guard_level"})
    runs = {}
    variants = (("steady", preset_config("robot", warm_start=True, **common)),
                ("robot_cold", preset_config("robot", warm_start=False, reuse_pass2=False, **common)))
    if fast_only:
        variants = (("steady_fast", preset_config("robot", **common, **FAST_STOP)),)
    for name, cfg in variants:
        windows, poses, masks, order = stream_windows(WindowPipeline(net, cfg), seq, w, s)
        gt_poses = seq.cam_to_world[order]
        runs[name] = {"windows": windows, "ate": pose_metrics(poses, gt_poses).get("ate_rmse", float("nan")),
                      "JM": float(mask_metrics(masks, [seq.dynamic[i] for i in order])["JM"])}
    if with_reference and not fast_only:
        pipe = WindowPipeline(net, preset_config("reference", niter=niter, scene_graph="swinstride-5"))
        # every window cold: no frame ids, nothing is reused (two windows suffice for the cost)
        windows = []
        for st in (0, s):
            idx = list(range(st, st + w))
            t = time.perf_counter()
            result = pipe.run([seq.frames[i] for i in idx], [int(seq.stamps_ns[i]) for i in idx])
            windows.append({"start": st, "wall_s": time.perf_counter() - t, "edges": len(result.edges),
                            "timings": {k: float(v) for k, v in result.timings.items()}})
        runs["reference_cold"] = {"windows": windows}
    return {"W": w, "S": s, "seed": seed, "frames": n_frames, "niter": niter, "runs": runs,
            "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------- rss
def rss_part(n_frames: int, quick: bool) -> dict:
    import numpy as np
    import torch

    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.pipeline.scheduler import StreamConfig
    from easi3r_ros.pipeline.stream import StreamProcessor, StreamSink
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config
    from easi3r_ros.synthetic import make_sequence

    torch.set_grad_enabled(False)
    clip = make_sequence(0, n_frames=24, hw=(48, 64), n_moving=1, split="heldout").frames
    loop = clip + clip[-2:0:-1]  # back and forth: continuous motion, unbounded length
    net, _ = random_network(MICRO_MODEL, seed=0)
    cfg = preset_config("robot", warm_start=True, niter=30, warm_niter=30, scene_graph="swinstride-3")
    samples = []

    class Sink(StreamSink):
        def on_window(self, out):
            samples.append((out.frames[-1].seq + 1, rss_mb(), len(proc.map)))

    scfg = StreamConfig(window_size=6, stride=4, queue_limit=10 ** 6, cloud_voxel_size=0.02, map_max_points=20000)
    proc = StreamProcessor(scfg, lambda: WindowPipeline(net, cfg), Sink()).start()
    t0 = time.perf_counter()
    for k in range(n_frames):
        proc.push(loop[k % len(loop)], 10 ** 9 + k * 10 ** 8)
        if k % 8 == 7:  # keep the queue short (nothing is dropped): feed at the worker's pace
            proc.wait_idle(600)
    proc.wait_idle(600)
    wall = time.perf_counter() - t0
    stats = proc.stats
    proc.close(flush=True, timeout=600)
    x = np.array([s[0] for s in samples], float)
    y = np.array([s[1] for s in samples], float)
    keep = x >= x.max() / 4
    slope, icpt = np.polyfit(x[keep], y[keep], 1)
    pct = 100.0 * slope * 1000 / float(y[keep].mean())
    return {"frames": n_frames, "wall_s": wall, "samples": samples, "slope_mb_per_1000": float(slope * 1000),
            "slope_pct_per_1000": float(pct), "rss_mean_mb": float(y[keep].mean()), "rss_max_mb": float(y.max()),
            "windows_ok": stats.windows_ok, "windows_failed": stats.windows_failed,
            "frames_published": stats.frames_published, "frames_dropped": stats.frames_dropped,
            "map_voxels": len(proc.map), "map_max_points": scfg.map_max_points, "fit": [float(slope), float(icpt)]}


def plot_rss(rss: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s = np.array(rss["samples"], float)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(s[:, 0], s[:, 1], lw=1, label="RSS")
    x = s[s[:, 0] >= s[:, 0].max() / 4, 0]
    ax.plot(x, np.polyval(rss["fit"], x), "r--", lw=1,
            label=f"fit after warm-up: {rss['slope_pct_per_1000']:+.2f} % / 1000 frames")
    ax.set_xlabel("frames streamed")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("StreamProcessor, micro model, robot preset")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- report
def summarise_cost(parts, fast_parts=()) -> list:
    import numpy as np

    rows = []
    for (w, s) in sorted({(p["W"], p["S"]) for p in parts}, reverse=True):
        ps = [p for p in parts if (p["W"], p["S"]) == (w, s)]
        fs = [p for p in fast_parts if (p["W"], p["S"]) == (w, s)]
        steady = [win for p in ps for win in p["runs"]["steady"]["windows"][1:]]
        first = [p["runs"]["steady"]["windows"][0] for p in ps]
        rcold = [win for p in ps for win in p["runs"]["robot_cold"]["windows"]]
        ref = [win for p in ps if "reference_cold" in p["runs"] for win in p["runs"]["reference_cold"]["windows"]]
        mean = lambda ws, key="wall_s": float(np.mean([x[key] for x in ws])) if ws else float("nan")  # noqa: E731
        cnt = lambda ws, key: float(np.mean([x["counts"][key] for x in ws]))  # noqa: E731
        stage = lambda ws, key: float(np.mean([x["timings"].get(key, 0.0) for x in ws]))  # noqa: E731
        ate_w = [p["runs"]["steady"]["ate"] for p in ps]
        ate_c = [p["runs"]["robot_cold"]["ate"] for p in ps]
        jm_w = [p["runs"]["steady"]["JM"] for p in ps]
        jm_c = [p["runs"]["robot_cold"]["JM"] for p in ps]
        rows.append({
            "W": w, "S": s, "seeds": [p["seed"] for p in ps], "niter": ps[0]["niter"],
            "steady_per_frame_s": mean(steady) / s, "robot_cold_per_frame_s": mean(rcold) / s,
            "reference_cold_per_frame_s": mean(ref) / s, "speedup_vs_reference": mean(ref) / mean(steady),
            "speedup_vs_robot_cold": mean(rcold) / mean(steady),
            "steady_counts": {k: cnt(steady, k) for k in steady[0]["counts"]} if steady else {},
            "first_counts": {k: cnt(first, k) for k in first[0]["counts"]},
            "robot_cold_counts": {k: cnt(rcold, k) for k in rcold[0]["counts"]},
            "steady_stages": {k: stage(steady, k) for k in ("encode_s", "pass1_s", "masks1_s", "pass2_s",
                                                             "masks2_s", "align_s")},
            "robot_cold_stages": {k: stage(rcold, k) for k in ("encode_s", "pass1_s", "masks1_s", "pass2_s",
                                                               "masks2_s", "align_s")},
            "reference_stages": {k: stage(ref, k) for k in ("encode_s", "pass1_s", "masks1_s", "pass2_s",
                                                            "masks2_s", "align_s")},
            "reference_edges": ref[0]["edges"] if ref else 0, "robot_edges": steady[0]["edges"] if steady else 0,
            "ate_steady": float(np.mean(ate_w)), "ate_cold": float(np.mean(ate_c)),
            "ate_rel_diff": float(np.mean(ate_w) / np.mean(ate_c) - 1),
            "ate_per_seed": list(zip(ate_w, ate_c)),
            "jm_steady": float(np.mean(jm_w)), "jm_cold": float(np.mean(jm_c)),
            **(_fast_summary(fs, ps, s, mean(ref)) if fs else {}),
            "jm_rel_diff": float(np.mean(jm_w) / np.mean(jm_c) - 1) if np.mean(jm_c) > 0 else 0.0,
        })
    return rows


def _fast_summary(fs, ps, s, ref_window_s) -> dict:
    import numpy as np

    steady = [win for p in fs for win in p["runs"]["steady_fast"]["windows"][1:]]
    mean = float(np.mean([x["wall_s"] for x in steady]))
    by_seed = {p["seed"]: p["runs"]["robot_cold"]["ate"] for p in ps}
    ate_f = [p["runs"]["steady_fast"]["ate"] for p in fs]
    ate_c = [by_seed[p["seed"]] for p in fs]
    return {"fast_per_frame_s": mean / s, "fast_speedup_vs_reference": ref_window_s / mean,
            "fast_iterations": float(np.mean([x["counts"]["align_iterations"] for x in steady])),
            "ate_fast": float(np.mean(ate_f)), "ate_fast_rel_diff": float(np.mean(ate_f) / np.mean(ate_c) - 1),
            "jm_fast": float(np.mean([p["runs"]["steady_fast"]["JM"] for p in fs])), "fast_seeds": [p["seed"] for p in fs]}


def markdown(rows, rss, gpu_note: str, mach: str, quick: bool) -> str:
    lines = ["# Streaming: work per new frame and memory over a long stream", "",
             f"Machine: {mach}; torch threads 1 (`benchmarks/streaming.py`{' --quick: NOT a measurement' if quick else ''}).", ""]
    if rows:
        lines += ["## Cost per new frame (easi3r-tiny, 240x320 synthetic, guard off)", "",
                  "| W, S | steady state (warm) | robot preset, cold | reference preset, cold window per stride | "
                  "speed-up vs reference | vs robot cold |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['W']}, {r['S']} | {r['steady_per_frame_s']:.2f} s | {r['robot_cold_per_frame_s']:.2f} s | "
                         f"{r['reference_cold_per_frame_s']:.2f} s | **{r['speedup_vs_reference']:.1f}×** | "
                         f"{r['speedup_vs_robot_cold']:.1f}× |")
        lines += ["", "What one window recomputes (means per window; steady = windows after the first):", "",
                  "| W, S | path | edges | encodes | pass-1 pairs decoded / reused | pass-2 pairs decoded / reused | "
                  "alignment iterations | encode / pass 1 / masks / pass 2 / align (s) |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            for name, c, st, e in (("steady", r["steady_counts"], r["steady_stages"], r["robot_edges"]),
                                   ("robot cold", r["robot_cold_counts"], r["robot_cold_stages"], r["robot_edges"])):
                lines.append(f"| {r['W']}, {r['S']} | {name} | {e} | {c['encoded']:.1f} | {c['pairs_decoded']:.1f} / "
                             f"{c['pairs_reused']:.1f} | {c['pass2_decoded']:.1f} / {c['pass2_reused']:.1f} | "
                             f"{c['align_iterations']:.0f} | {st['encode_s']:.2f} / {st['pass1_s']:.2f} / "
                             f"{st['masks1_s'] + st['masks2_s']:.2f} / {st['pass2_s']:.2f} / {st['align_s']:.2f} |")
            st = r["reference_stages"]
            lines.append(f"| {r['W']}, {r['S']} | reference cold | {r['reference_edges']} | {r['W']} | all | all | "
                         f"{r['niter']} | {st['encode_s']:.2f} / {st['pass1_s']:.2f} / {st['masks1_s'] + st['masks2_s']:.2f} / "
                         f"{st['pass2_s']:.2f} / {st['align_s']:.2f} |")
        lines += ["", "Quality of the warm path against the cold robot path (same windows, chained and published as "
                  "the stream does; aim: within 2 %):", "",
                  "| W, S | sequences (seeds) | ATE warm | ATE cold | ATE difference | JM warm | JM cold | JM difference |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['W']}, {r['S']} | {r['seeds']} | {r['ate_steady']:.4f} | {r['ate_cold']:.4f} | "
                         f"{100 * r['ate_rel_diff']:+.1f} % | {r['jm_steady']:.3f} | {r['jm_cold']:.3f} | "
                         f"{100 * r['jm_rel_diff']:+.1f} % |")
        fast = [r for r in rows if "fast_per_frame_s" in r]
        if fast:
            lines += ["", f"A faster early stop (patience {FAST_STOP['early_stop_patience']}, "
                      f"{100 * FAST_STOP['early_stop_rel']:.0f} % relative; not the preset's default), same sequences:", "",
                      "| W, S | seeds | alignment iterations (steady) | cost per new frame | speed-up vs reference | "
                      "ATE | ATE vs cold | JM |", "|---|---|---|---|---|---|---|---|"]
            for r in fast:
                lines.append(f"| {r['W']}, {r['S']} | {r['fast_seeds']} | {r['fast_iterations']:.0f} | "
                             f"{r['fast_per_frame_s']:.2f} s | {r['fast_speedup_vs_reference']:.1f}× | {r['ate_fast']:.4f} | "
                             f"{100 * r['ate_fast_rel_diff']:+.1f} % | {r['jm_fast']:.3f} |")
    if rss:
        lines += ["", "## Memory over a long stream", "",
                  f"{rss['frames']} frames (micro model, 64x48, W=6, S=4, 30 alignment iterations, map capped at "
                  f"{rss['map_max_points']} voxels) through `StreamProcessor` in {rss['wall_s']:.0f} s: "
                  f"{rss['windows_ok']} windows ({rss['windows_failed']} failed), {rss['frames_published']} frames "
                  f"published, {rss['frames_dropped']} dropped. RSS after warm-up: mean {rss['rss_mean_mb']:.0f} MiB, "
                  f"slope **{rss['slope_pct_per_1000']:+.2f} % per 1000 frames** ({rss['slope_mb_per_1000']:+.2f} MiB; "
                  f"aim ≤ 1 %); map at the end: {rss['map_voxels']} voxels.", "", "![RSS](rss.png)"]
    if gpu_note:
        lines += ["", "## GPU", "", gpu_note]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short sequence, 20 iterations, 200 frames")
    ap.add_argument("--fresh", action="store_true", help="ignore saved parts")
    ap.add_argument("--parts", nargs="+", default=["cost", "fast", "rss"], choices=["cost", "fast", "rss"],
                    help="fast: the steady state again with a faster early stop (FAST_STOP)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rss-frames", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    out = args.out
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    tag = "quick-" if args.quick else ""

    def part(name, fn):
        path = parts_dir / f"{tag}{name}.json"
        if path.exists() and not args.fresh:
            return json.loads(path.read_text())
        t = time.perf_counter()
        res = fn()
        print(f"[streaming] {name}: {time.perf_counter() - t:.0f} s", flush=True)
        path.write_text(json.dumps(res))
        return res

    configs = [(8, 4), (6, 2)]
    seeds = args.seeds[:1] if args.quick else args.seeds
    cost = []
    if "cost" in args.parts:
        for w, s in configs[:1] if args.quick else configs:
            for k, seed in enumerate(seeds):
                cost.append(part(f"cost-W{w}S{s}-seed{seed}",
                                 lambda: cost_part(w, s, seed, with_reference=k == 0, quick=args.quick)))
    fast = []
    if "fast" in args.parts and cost:
        for w, s in configs[:1] if args.quick else configs:
            for seed in seeds:
                fast.append(part(f"fast-W{w}S{s}-seed{seed}",
                                 lambda: cost_part(w, s, seed, with_reference=False, quick=args.quick, fast_only=True)))
    rss = None
    if "rss" in args.parts:
        rss = part("rss", lambda: rss_part(200 if args.quick else args.rss_frames, args.quick))
        plot_rss(rss, out / "rss.png")
    rows = summarise_cost(cost, fast) if cost else []
    gpu = out.parent / "gpu" / "gpu.md"
    gpu_note = "See [gpu/gpu.md](../gpu/gpu.md)." if gpu.exists() else \
        "No GPU was lent to the run of this report: `benchmarks/gpu.sh` writes `results/gpu/gpu.md` where one is."
    (out / "streaming.json").write_text(json.dumps({"cost": rows, "rss": {k: v for k, v in (rss or {}).items()
                                                                            if k != "samples"},
                                                    "machine": machine()}, indent=1))
    text = markdown(rows, rss, gpu_note, machine(), args.quick)
    (out / "streaming.md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
