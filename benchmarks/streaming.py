"""Streaming at robot rates: work per new frame in steady state, and memory over a long stream.

    python benchmarks/streaming.py [--quick] [--fresh] [--parts cost alternatives rss] [--configs 8x4 6x2]

**cost** (the shipped easi3r-tiny model, held-out synthetic sequences of W + 2S frames at 240x320 with two
moving objects, one thread): consecutive windows of W frames every S new frames, for (W, S) = (8, 4) (the
node's defaults) and (6, 2):

- *steady* — the ``robot`` preset as the stream runs it: frame encodings and pass-1 pair decodes cached by
  frame, pass-2 decodes reused for pairs whose frames' token masks did not change, the alignment coarse to
  fine (the preset's 150 iterations on every 4th pixel, then each full-resolution depth in closed form);
- *robot, full resolution* — the same windows with the alignment on every pixel (300 iterations) and the
  pass-2 reuse off: the reference for the quality comparison (final alignment loss, ATE of the chained
  trajectory, JM of the published masks, published as the stream does);
- *reference, cold* — one full ``reference``-preset window per stride, nothing reused (what re-running the
  original per window costs): the reference for the cost.

The "nothing moves" guard is off in these runs, so that every window has masks to re-weight (the harder
case for the pass-2 reuse; with the guard on, easi3r-tiny judges these windows static and more is reused).
Cost per new frame = a window's wall time / S; "steady" averages the windows after the first. The reference
runs on the first ``REFERENCE_SEQUENCES`` sequences, right after their steady windows; the speed-ups are means
of per-sequence ratios (paired in time: this machine's speed drifts over a run).

**alternatives**: other alignment settings on the same windows, for the quality table (``ALTERNATIVES``):
20 full-resolution steps after the coarse-to-fine solution, the opt-in warm start with its early stop, and
a control — warm-started, no early stop — that ends at the full-resolution loss by another path.

**rss**: a micro model (random weights, 64x48 input) through :class:`StreamProcessor` for ``--rss-frames``
frames (a rendered clip played back and forth with increasing stamps), resident memory sampled every
window; the slope after the warm-up (least squares over the last 3/4 of the frames) in % of the mean per
1000 frames, plotted to ``results/streaming/rss.png``.

Each part is saved under ``results/streaming/parts/`` as it finishes; a rerun skips what is there
(``--fresh`` starts again). Report: ``results/streaming/streaming.md`` (+ ``.json``). The cost parts time
every window: run them with nothing else on the machine (``--parts cost``); the alternatives and rss parts
measure quality and memory and may share it (e.g. ``--parts alternatives --configs 8x4`` and ``6x2`` side by
side, one per core).
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
                        "timings": {k: float(v) for k, v in result.timings.items()},
                        "align_loss": result.align_loss, "align_iterations": result.align_iterations,
                        "align_curve": {str(k): float(result.align_loss_curve[k]) for k in CURVE_AT
                                        if k < len(result.align_loss_curve)}})
    order = sorted(poses)
    return windows, np.stack([poses[i] for i in order]), [masks[i] for i in order], order


# sequences whose windows are also run cold with the reference preset, right after the steady ones (the cost
# reference). The speed-up is the mean of these sequences' paired ratios: this machine's speed drifts by 10-30 %
# over a run of several minutes, more than the windows of different sequences differ in work.
REFERENCE_SEQUENCES = 5
# iterations at which the benchmark keeps an alignment's loss
CURVE_AT = (0, 10, 20, 40, 100, 200, 299)
# other alignments of the same windows, measured against the full-resolution one (part "alternatives"):
# settings a user can choose, and a control — warm-started but run to the full iteration count — whose
# final loss equals the cold one's, so that its ATE differences show how far equally good solutions lie apart
ALTERNATIVES = {
    "polish": {"align_polish": 20},                                        # coarse to fine + 20 full steps
    "warm": {"align_coarse": 1, "warm_start": True},                       # opt-in warm start, early stop
    "warm_full": {"align_coarse": 1, "warm_start": True, "early_stop_patience": 0},   # the control
}
ALTERNATIVE_LABELS = {"steady": "robot preset (coarse to fine)", "polish": "coarse to fine + 20 full-resolution steps",
                      "warm": "warm start, early stop (opt-in)",
                      "warm_full": "warm start, no early stop (control)"}


def cost_part(w: int, s: int, seed: int, with_reference: bool, quick: bool, alternatives: bool = False) -> dict:
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
    niter = 20 if quick else 300           # full-resolution, warm-started and reference alignments
    robot_niter = 10 if quick else None    # the robot preset's own (coarse to fine)
    common = dict(motion_guard=False, **{k: v for k, v in cal.items() if k != "motion_guard_level"})

    def robot(**over):   # full-resolution paths run the reference's iteration count, coarse to fine the preset's
        its = dict(niter=niter, warm_niter=niter) if over.get("align_coarse") == 1 else dict(niter=robot_niter)
        return preset_config("robot", **common, **its, **over)

    runs = {}
    variants = (("steady", robot()), ("robot_cold", robot(align_coarse=1, reuse_pass2=False)))
    if alternatives:
        variants = tuple((name, robot(**over)) for name, over in ALTERNATIVES.items())
        with_reference = False
    for name, cfg in variants:
        windows, poses, masks, order = stream_windows(WindowPipeline(net, cfg), seq, w, s)
        gt_poses = seq.cam_to_world[order]
        runs[name] = {"windows": windows, "ate": pose_metrics(poses, gt_poses).get("ate_rmse", float("nan")),
                      "JM": float(mask_metrics(masks, [seq.dynamic[i] for i in order])["JM"])}
    if with_reference:
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
    return {"W": w, "S": s, "seed": seed, "frames": n_frames, "niter": niter, "robot_niter": variants[0][1].niter,
            "runs": runs,
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
    cfg = preset_config("robot", niter=30, scene_graph="swinstride-3")
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
def paired_ratio(parts, slow: str, fast: str, reduce=None):
    """Per sequence measured with both paths: mean window time of ``slow`` / that of ``fast`` (steady windows:
    after the first); the mean of these ratios, or ``reduce(ratios)``."""
    import numpy as np

    ratios = []
    for p in parts:
        if slow in p["runs"] and fast in p["runs"]:
            a = [w["wall_s"] for w in p["runs"][slow]["windows"]]
            b = [w["wall_s"] for w in p["runs"][fast]["windows"][1:]]
            ratios.append(float(np.mean(a) / np.mean(b)))
    if not ratios:
        return float("nan")
    return reduce(ratios) if reduce else float(np.mean(ratios))


def summarise_cost(parts) -> list:
    import numpy as np

    rows = []
    for (w, s) in sorted({(p["W"], p["S"]) for p in parts}, reverse=True):
        ps = [p for p in parts if (p["W"], p["S"]) == (w, s)]
        steady = [win for p in ps for win in p["runs"]["steady"]["windows"][1:]]
        first = [p["runs"]["steady"]["windows"][0] for p in ps]
        rcold = [win for p in ps for win in p["runs"]["robot_cold"]["windows"]]
        ref = [win for p in ps if "reference_cold" in p["runs"] for win in p["runs"]["reference_cold"]["windows"]]
        mean = lambda ws, key="wall_s": float(np.mean([x[key] for x in ws])) if ws else float("nan")  # noqa: E731
        cnt = lambda ws, key: float(np.mean([x["counts"][key] for x in ws]))  # noqa: E731
        stage = lambda ws, key: float(np.mean([x["timings"].get(key, 0.0) for x in ws]))  # noqa: E731
        rows.append({
            "W": w, "S": s, "seeds": [p["seed"] for p in ps], "niter": ps[0]["niter"],
            "steady_per_frame_s": mean(steady) / s, "robot_cold_per_frame_s": mean(rcold) / s,
            "reference_cold_per_frame_s": mean(ref) / s,
            "speedup_vs_reference": paired_ratio(ps, "reference_cold", "steady"),
            "speedup_vs_reference_range": paired_ratio(ps, "reference_cold", "steady", reduce=lambda r: [min(r), max(r)]),
            "reference_windows": len(ref), "reference_seeds": [p["seed"] for p in ps if "reference_cold" in p["runs"]],
            "reference_range_per_frame_s": [min(x["wall_s"] for x in ref) / s, max(x["wall_s"] for x in ref) / s]
            if ref else [],
            "speedup_vs_robot_cold": paired_ratio(ps, "robot_cold", "steady"),
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
        })
    return rows


def paired_difference(a, b) -> dict:
    """Per-sequence relative differences a/b − 1: mean, sample sd and the 95 % t-interval of the mean."""
    import numpy as np
    from scipy import stats

    rel = np.asarray(a, float) / np.asarray(b, float) - 1
    sd = float(rel.std(ddof=1)) if len(rel) > 1 else float("nan")
    half = float(stats.t.ppf(0.975, len(rel) - 1) * sd / np.sqrt(len(rel))) if len(rel) > 1 else float("nan")
    return {"mean": float(rel.mean()), "sd": sd, "ci95": [float(rel.mean()) - half, float(rel.mean()) + half]}


def _curve_vs_cold(runs, name: str) -> dict:
    """{iteration: mean loss of path ``name`` there / the cold path's final loss − 1} over the windows after the
    first (iterations the path reached). ``runs``: (path's runs, cold runs) per sequence."""
    import numpy as np

    out = {}
    for k in CURVE_AT:
        ratios = [wv["align_curve"][str(k)] / wc["align_loss"] for mine, cold in runs
                  for wv, wc in zip(mine[name]["windows"][1:], cold["windows"][1:]) if str(k) in wv["align_curve"]]
        if ratios:
            out[k] = float(np.mean(ratios) - 1)
    return out


def summarise_quality(parts, alt_parts=()) -> list:
    """Each alignment path against the full-resolution cold one on the same windows: final loss, iterations,
    ATE (ratio of means, and the per-sequence differences), masks."""
    import numpy as np

    rows = []
    for (w, s) in sorted({(p["W"], p["S"]) for p in parts}, reverse=True):
        ps = {p["seed"]: p for p in parts if (p["W"], p["S"]) == (w, s)}
        alts = {p["seed"]: p for p in alt_parts if (p["W"], p["S"]) == (w, s)}
        cold = {seed: p["runs"]["robot_cold"] for seed, p in ps.items()}
        row = {"W": w, "S": s, "seeds": sorted(ps), "ate_cold": float(np.mean([c["ate"] for c in cold.values()])),
               "cold_loss_curve_vs_final": _curve_vs_cold([(p["runs"], cold[seed]) for seed, p in ps.items()],
                                                          "robot_cold"), "paths": {}}
        for name in ["steady"] + list(ALTERNATIVES):
            src = ps if name == "steady" else alts
            seeds = sorted(set(src) & set(cold))
            if not seeds:
                continue
            ate = [src[k]["runs"][name]["ate"] for k in seeds]
            ate_c = [cold[k]["ate"] for k in seeds]
            pairs = [(src[k]["runs"], cold[k]) for k in seeds]
            ratio = [wv["align_loss"] / wc["align_loss"] for mine, c in pairs
                     for wv, wc in zip(mine[name]["windows"][1:], c["windows"][1:])]
            its = [wv["align_iterations"] for mine, _ in pairs for wv in mine[name]["windows"][1:]]
            row["paths"][name] = {
                "seeds": seeds, "ate": float(np.mean(ate)), "ate_cold": float(np.mean(ate_c)),
                "ate_rel_diff": float(np.mean(ate) / np.mean(ate_c) - 1), "per_sequence": paired_difference(ate, ate_c),
                "loss_vs_cold": float(np.mean(ratio) - 1), "iterations": float(np.mean(its)),
                "loss_curve_vs_cold_final": _curve_vs_cold(pairs, name),
                "jm": float(np.mean([src[k]["runs"][name]["JM"] for k in seeds])),
                "jm_cold": float(np.mean([cold[k]["JM"] for k in seeds])),
                "steady_wall_s": float(np.mean([wv["wall_s"] for mine, _ in pairs for wv in mine[name]["windows"][1:]]))}
        rows.append(row)
    return rows


def markdown(rows, rss, gpu_note: str, mach: str, quick: bool, quality=()) -> str:
    lines = ["# Streaming: work per new frame and memory over a long stream", "",
             f"Machine: {mach}; torch threads 1 (`benchmarks/streaming.py`{' --quick: NOT a measurement' if quick else ''}).", ""]
    if rows:
        lines += ["## Cost per new frame (easi3r-tiny, 240x320 synthetic, guard off)", "",
                  "| W, S | steady state (robot preset) | robot, full-resolution alignment | reference preset, cold "
                  "window per stride (windows: range) | speed-up vs reference (per sequence: range) | "
                  "vs full resolution |", "|---|---|---|---|---|---|"]
        for r in rows:
            lo, hi = r.get("reference_range_per_frame_s") or (float("nan"), float("nan"))
            slo, shi = r.get("speedup_vs_reference_range") or (float("nan"), float("nan"))
            lines.append(f"| {r['W']}, {r['S']} | {r['steady_per_frame_s']:.2f} s | {r['robot_cold_per_frame_s']:.2f} s | "
                         f"{r['reference_cold_per_frame_s']:.2f} s ({r.get('reference_windows', 0)}: {lo:.2f}–{hi:.2f} s) | "
                         f"**{r['speedup_vs_reference']:.2f}×** ({len(r.get('reference_seeds', []))}: {slo:.2f}–{shi:.2f}×) | "
                         f"{r['speedup_vs_robot_cold']:.2f}× |")
        lines += ["", "Speed-ups: the mean over sequences of each sequence's ratio of mean window times, both paths run "
                  "one after the other in one process (the machine's speed drifts over a run); per new frame: means "
                  "over all windows of all sequences."]
        lines += ["", "What one window recomputes (means per window; steady = windows after the first):", "",
                  "| W, S | path | edges | encodes | pass-1 pairs decoded / reused | pass-2 pairs decoded / reused | "
                  "alignment iterations | encode / pass 1 / masks / pass 2 / align (s) |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            for name, c, st, e in (("steady", r["steady_counts"], r["steady_stages"], r["robot_edges"]),
                                   ("robot, full resolution", r["robot_cold_counts"], r["robot_cold_stages"],
                                    r["robot_edges"])):
                lines.append(f"| {r['W']}, {r['S']} | {name} | {e} | {c['encoded']:.1f} | {c['pairs_decoded']:.1f} / "
                             f"{c['pairs_reused']:.1f} | {c['pass2_decoded']:.1f} / {c['pass2_reused']:.1f} | "
                             f"{c['align_iterations']:.0f} | {st['encode_s']:.2f} / {st['pass1_s']:.2f} / "
                             f"{st['masks1_s'] + st['masks2_s']:.2f} / {st['pass2_s']:.2f} / {st['align_s']:.2f} |")
            st = r["reference_stages"]
            lines.append(f"| {r['W']}, {r['S']} | reference cold | {r['reference_edges']} | {r['W']} | all | all | "
                         f"{r['niter']} | {st['encode_s']:.2f} / {st['pass1_s']:.2f} / {st['masks1_s'] + st['masks2_s']:.2f} / "
                         f"{st['pass2_s']:.2f} / {st['align_s']:.2f} |")
    if quality:
        lines += ["", "Quality against the full-resolution alignment (robot preset with `align_coarse` 1, 300 "
                  "iterations, cold) on the same windows, chained and published as the stream does (aim: ATE and JM "
                  "within 2 %). Final loss: mean over the windows after the first; per sequence: the relative ATE "
                  "differences, their spread and the 95 % interval of their mean:", "",
                  "| W, S | path | seeds | alignment iterations | window (s) | final loss vs full | ATE | ATE full | "
                  "ATE vs full | per sequence: mean ± sd | 95 % interval | JM | JM full |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in quality:
            for name, v in r["paths"].items():
                d = v["per_sequence"]
                lines.append(f"| {r['W']}, {r['S']} | {ALTERNATIVE_LABELS[name]} | {v['seeds']} | {v['iterations']:.0f} | "
                             f"{v['steady_wall_s']:.2f} | {100 * v['loss_vs_cold']:+.1f} % | {v['ate']:.4f} | "
                             f"{v['ate_cold']:.4f} | {100 * v['ate_rel_diff']:+.1f} % | {100 * d['mean']:+.1f} ± "
                             f"{100 * d['sd']:.1f} % | [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] % | "
                             f"{v['jm']:.3f} | {v['jm_cold']:.3f} |")
        lines += ["", "Alignment loss along the way, above the full-resolution cold path's final loss on the same "
                  "window (means over the windows after the first; the coarse-to-fine curve is on the coarse grid):",
                  "", "| W, S | path | " + " | ".join(f"iteration {k}" for k in CURVE_AT) + " |",
                  "|---|---|" + "---|" * len(CURVE_AT)]
        for r in quality:
            curves = [("full resolution, cold", r["cold_loss_curve_vs_final"])] + [
                (ALTERNATIVE_LABELS[name], v["loss_curve_vs_cold_final"]) for name, v in r["paths"].items()]
            for label, curve in curves:
                lines.append(f"| {r['W']}, {r['S']} | {label} | " + " | ".join(
                    f"{100 * curve[k]:+.1f} %" if k in curve else "" for k in CURVE_AT) + " |")
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
    ap.add_argument("--parts", nargs="+", default=["cost", "alternatives", "rss"],
                    choices=["cost", "alternatives", "rss"],
                    help="alternatives: other alignment settings on the same windows (ALTERNATIVES)")
    ap.add_argument("--configs", nargs="+", default=["8x4", "6x2"], choices=["8x4", "6x2"],
                    help="window size x stride (run them in two processes on two cores)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)),
                    help="held-out sequences per (W, S); the report quotes 10")
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

    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs]
    seeds = args.seeds[:1] if args.quick else args.seeds
    cost = []
    if "cost" in args.parts:
        for w, s in configs[:1] if args.quick else configs:
            for k, seed in enumerate(seeds):
                cost.append(part(f"cost-W{w}S{s}-seed{seed}",
                                 lambda: cost_part(w, s, seed, with_reference=k < REFERENCE_SEQUENCES,
                                                   quick=args.quick)))
    alternatives = []
    if "alternatives" in args.parts and cost:
        for w, s in configs[:1] if args.quick else configs:
            for seed in seeds:
                alternatives.append(part(f"alternatives-W{w}S{s}-seed{seed}",
                                         lambda: cost_part(w, s, seed, with_reference=False, quick=args.quick,
                                                           alternatives=True)))
    rss = None
    if "rss" in args.parts:
        rss = part("rss", lambda: rss_part(200 if args.quick else args.rss_frames, args.quick))
        plot_rss(rss, out / "rss.png")
    rows = summarise_cost(cost) if cost else []
    gpu = out.parent / "gpu" / "gpu.md"
    gpu_note = "See [gpu/gpu.md](../gpu/gpu.md)." if gpu.exists() else \
        "No GPU was lent to the run of this report: `benchmarks/gpu.sh` writes `results/gpu/gpu.md` where one is."
    quality = summarise_quality(cost, alternatives) if cost else []
    (out / "streaming.json").write_text(json.dumps({"cost": rows, "quality": quality, "rss": {k: v for k, v in (rss or {}).items()
                                                                            if k != "samples"},
                                                    "machine": machine()}, indent=1))
    text = markdown(rows, rss, gpu_note, machine(), args.quick, quality)
    (out / "streaming.md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
