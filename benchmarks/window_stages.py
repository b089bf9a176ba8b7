"""Wall time per stage and peak RSS of one full-size window, beside the reference's figures.

    python benchmarks/window_stages.py [--models dust3r-224-linear dust3r-512-dpt] [--frames 6] [--niter 300]

Each model runs in a fresh process on 6 synthetic 640x360 frames (panning camera + moving disk) with
random recipe-v1 weights. The reference's figures were measured alone on this machine kind (2 cores):
they are quoted from the project's issue tracker, not re-measured here (the original code is not part of
this repository). Results go to benchmarks/results/window_stages.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, emit, machine, peak_rss_mb, run_child, weights_mb  # noqa: E402

# Original Easi3R, 2 CPU cores, 6 frames, 18 ordered pairs (issue tracker).
REFERENCE = {
    "dust3r-224-linear": {"pass1_s": 38.7, "pass2_s": 38.2, "masks_s": 0.4, "align_s": 18.2, "peak_rss_mb": 3.05 * 1024},
    "dust3r-512-dpt": {"pair_forward_s": 9.3, "peak_rss_mb": 4.6 * 1024},
}


def child(args) -> None:
    import torch

    from easi3r_ros.eval.scenes import make_window
    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.pipeline.window import WindowConfig, WindowPipeline

    torch.set_grad_enabled(False)
    net, _ = random_network(args.model, seed=0)
    weights = weights_mb(net)
    pipe = WindowPipeline(net, WindowConfig(niter=args.niter, kmeans=args.kmeans))
    runs = []
    for seed in (0, 1):  # a cold first window, then a warm one on other frames (nothing cached is reused)
        frames = make_window(args.frames, size=(360, 640), pan_px=6, object_px=12, noise=1.0, seed=seed).frames
        t = time.perf_counter()
        result = pipe.run(frames)
        runs.append((result.timings, time.perf_counter() - t))
    emit({"model": args.model, "timings": runs[1][0], "wall_s": runs[1][1], "cold_timings": runs[0][0],
          "cold_wall_s": runs[0][1], "peak_rss_mb": peak_rss_mb(), "weights_mb": weights,
          "pairs": len(result.edges), "niter": args.niter, "kmeans": args.kmeans})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=["dust3r-224-linear", "dust3r-512-dpt"])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--niter", type=int, default=300)
    ap.add_argument("--kmeans", default="sklearn", choices=["sklearn", "torch"])
    ap.add_argument("--report", type=Path, default=RESULTS / "window_stages.md")
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    rows = []
    for model in args.models:
        res = run_child(Path(__file__), ["--model", model, "--frames", args.frames, "--niter", args.niter,
                                         "--kmeans", args.kmeans], timeout=7200)
        print(res, flush=True)
        rows.append(res)
    lines = ["# One window, stage by stage, against the original Easi3R", "", f"Machine: {machine()}.", "",
             f"{args.frames} frames (640x360 synthetic, panning camera + moving disk), swinstride-5 symmetrized, "
             f"{args.niter} alignment iterations, fp32, KMeans {args.kmeans}, random recipe-v1 weights, one process "
             "per model, two windows per process (the table shows the second). Reference: the original code measured alone on this machine kind (2 cores), as quoted in "
             "the issue tracker.", ""]
    for r in rows:
        t, ref = r["timings"], REFERENCE.get(r["model"], {})
        masks = t.get("masks1_s", 0) + t.get("masks2_s", 0)
        lines += [f"## {r['model']} ({r['pairs']} ordered pairs)", "",
                  "| stage | ours (s) | reference (s) | speed-up |", "|---|---|---|---|"]

        def row(name, ours, theirs):
            ratio = f"{theirs / ours:.2f}x" if theirs and ours else "–"
            return f"| {name} | {ours:.2f} | {f'{theirs:.2f}' if theirs else '–'} | {ratio} |"

        lines.append(row("encode (each frame once)", t["encode_s"], None))
        lines.append(row("pass 1 (decoder + attention statistics)", t["pass1_s"], ref.get("pass1_s")))
        lines.append(row("masks (both passes)", masks, ref.get("masks_s")))
        lines.append(row("pass 2 (re-weighted decoder + heads)", t["pass2_s"], ref.get("pass2_s")))
        lines.append(row(f"global alignment ({r['niter']} it)", t["align_s"], ref.get("align_s")))
        if "pass1_s" in ref:
            ours_net = t["encode_s"] + t["pass1_s"] + t["pass2_s"]
            lines.append(row("network total (encode + both passes)", ours_net, ref["pass1_s"] + ref["pass2_s"]))
        if "pair_forward_s" in ref:
            per_pair = (t["encode_s"] + t["pass2_s"]) / r["pairs"]
            lines.append(row("ordered-pair forward (pass 2, encode amortised)", per_pair, ref["pair_forward_s"]))
        lines.append(row("total", r["wall_s"], sum(v for k, v in ref.items() if k.endswith("_s") and k != "pair_forward_s") or None))
        cold = r["cold_timings"]
        lines += ["", "Warm window (steady state) above; the first, cold window of the process took "
                      f"{r['cold_wall_s']:.1f} s (" + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in cold.items()
                                                             if k != "total_s") + " s): one-time costs such as "
                      "thread-pool start-up and lazy imports.",
                  "", f"Peak RSS {r['peak_rss_mb']:.0f} MiB (reference {ref.get('peak_rss_mb', float('nan')):.0f} MiB, "
                      f"ratio {ref.get('peak_rss_mb', float('nan')) / r['peak_rss_mb']:.2f}x); of which weights "
                      f"{r['weights_mb']:.0f} MiB.", ""]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
