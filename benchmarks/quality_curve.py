"""Mask quality against training compute and model size: is a bigger or longer-trained model the next step?

    .venv/bin/python benchmarks/quality_curve.py --run runs/tiny_main --run runs/size_micro --run runs/size_small \
        [--sequences 10] [--frames 8] [--niter 30] [--threads 2] [--out benchmarks/results/quality_curve]

Each ``--run`` is a training folder of ``easi3r train`` (its ``hf/`` export, its ``snapshots/step_*`` and its
``val.json``/``train_log.csv`` for the compute axis). Every checkpoint is scored on the same held-out synthetic
sequences as ``easi3r eval bench`` (first seeds of the held-out split): JM of the Easi3R pass-2 masks with the
"nothing moves" guard off (the network's own ability; the guard's threshold is per model) and depth abs-rel.
The learning-free flow baseline and the all-dynamic masks are scored on the same sequences as reference lines.
Writes ``curve.md``, ``curve.json`` and ``curve.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def checkpoints_of(run: Path):
    """(label, hf folder, pairs seen) for each snapshot and the final export of a training run."""
    settings = json.loads((run / "val.json").read_text())["settings"] if (run / "val.json").is_file() else None
    batch = settings["batch"] if settings else 8
    for snap in sorted((run / "snapshots").glob("step_*")):
        step = int(snap.name.split("_")[1])
        yield f"{run.name}@{step}", snap, step * batch
    if (run / "hf" / "config.json").is_file():
        steps = json.loads((run / "val.json").read_text())["steps"]
        yield f"{run.name}@{steps}", run / "hf", steps * batch + _pairs_before(settings)


def _pairs_before(settings) -> int:
    """Pairs seen by the run a fine-tuning run started from (--init RUN/hf), else 0."""
    init = Path(settings["init"]) if settings and settings.get("init") else None
    val = init.parent / "val.json" if init is not None else None
    return json.loads(val.read_text())["pairs_seen"] if val is not None and val.is_file() else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="an easi3r train output folder")
    ap.add_argument("--sequences", type=int, default=10)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--niter", type=int, default=30, help="alignment iterations (depth only; masks come before)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_curve"))
    ap.add_argument("--append", action="store_true",
                    help="add these runs' points to OUT/curve.json (same sequences and settings required)")
    args = ap.parse_args(argv)

    import torch

    from easi3r_ros.eval.bench import BenchConfig, heldout_sequences, machine, mask_metrics
    from easi3r_ros.eval.depth import depth_errors, to_network_resolution
    from easi3r_ros.model.checkpoint import load_checkpoint
    from easi3r_ros.model.preprocess import preprocess_image
    from easi3r_ros.motion.flow_baseline import flow_motion_masks
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BenchConfig(sequences=args.sequences, static=0, frames=args.frames)
    sequences = [seq for _, seq in heldout_sequences(cfg)]
    window = preset_config("robot", motion_guard=False, niter=args.niter)

    def gt_at(seq, size):
        crop = preprocess_image(seq.frames[0], size)[1]
        return crop, [to_network_resolution(m, crop) for m in seq.dynamic], \
            [to_network_resolution(d, crop) for d in seq.depth]

    refs = {"flow baseline": [], "all dynamic": []}
    for seq in sequences:
        crop, gt, _ = gt_at(seq, 224)
        flow = [to_network_resolution(m, crop) for m in flow_motion_masks(seq.frames)]
        refs["flow baseline"].append(mask_metrics(flow, gt)["JM"])
        refs["all dynamic"].append(mask_metrics([np.ones_like(g) for g in gt], gt)["JM"])
    points = []
    if args.append:
        previous = json.loads((args.out / "curve.json").read_text())
        if (previous["sequences"], previous["frames"], previous["niter"]) != (len(sequences), args.frames, args.niter):
            raise SystemExit("--append: OUT/curve.json was measured with other sequences or settings")
        points = previous["points"]
    for run in args.run:
        for label, path, pairs in checkpoints_of(run):
            net, _ = load_checkpoint(path)
            params = sum(p.numel() for p in net.parameters())
            pipe = WindowPipeline(net, window)
            jm, absrel, t0 = [], [], time.perf_counter()
            for k, seq in enumerate(sequences):
                _, gt, gt_depth = gt_at(seq, pipe.image_size)
                res = pipe.run(seq.frames, [int(s) for s in seq.stamps_ns], [(label, k, i) for i in range(len(seq))])
                pipe.reset()
                jm.append(mask_metrics([f.mask for f in res.frames], gt)["JM"])
                absrel.append(depth_errors([f.depth for f in res.frames], gt_depth)["abs_rel"])
            points.append({"label": label, "run": run.name, "pairs_seen": pairs, "parameters": params,
                           "JM": float(np.mean(jm)), "abs_rel": float(np.nanmean(absrel)),
                           "seconds": time.perf_counter() - t0})
            print(f"{label:28s} params {params / 1e6:5.2f}M  pairs {pairs:7d}  JM {points[-1]['JM']:.3f}  "
                  f"abs-rel {points[-1]['abs_rel']:.3f}", file=sys.stderr)
    result = {"machine": machine(), "sequences": len(sequences), "frames": args.frames, "niter": args.niter,
              "points": points, "reference_JM": {k: float(np.mean(v)) for k, v in refs.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curve.json").write_text(json.dumps(result, indent=2))
    lines = ["# Mask quality vs training compute and model size",
             "",
             f"`benchmarks/quality_curve.py`; {len(sequences)} held-out synthetic sequences of {args.frames} frames; "
             f"Easi3R pass-2 masks, guard off; machine: {result['machine'].get('cpu', '?')}, "
             f"{result['machine'].get('cores', '?')} cores.",
             "",
             "| checkpoint | parameters | pairs seen | JM | depth abs-rel |",
             "|---|---|---|---|---|"]
    lines += [f"| {p['label']} | {p['parameters'] / 1e6:.2f}M | {p['pairs_seen']} | {p['JM']:.3f} | {p['abs_rel']:.3f} |"
              for p in points]
    lines += ["", "Reference lines on the same sequences: " +
              ", ".join(f"{k} JM {v:.3f}" for k, v in result["reference_JM"].items()) + "."]
    (args.out / "curve.md").write_text("\n".join(lines) + "\n")
    _plot(result, args.out / "curve.png")
    print("\n".join(lines))
    return 0


def _plot(result, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    runs = sorted({p["run"] for p in result["points"]})
    for run in runs:
        pts = sorted((p for p in result["points"] if p["run"] == run), key=lambda p: p["pairs_seen"])
        axes[0].plot([p["pairs_seen"] for p in pts], [p["JM"] for p in pts], "o-",
                     label=f"{run} ({pts[0]['parameters'] / 1e6:.1f}M)")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training pairs seen")
    axes[0].set_title("JM vs training compute")
    finals = {}
    for p in result["points"]:  # model-size axis: each run's checkpoint at the smallest common compute
        finals.setdefault(p["pairs_seen"], []).append(p)
    common = max((k for k, v in finals.items() if len(v) == len(runs)), default=None)
    if common is not None:
        pts = sorted(finals[common], key=lambda p: p["parameters"])
        axes[1].plot([p["parameters"] / 1e6 for p in pts], [p["JM"] for p in pts], "o-",
                     label=f"{common} pairs seen")
    axes[1].set_xlabel("parameters (M)")
    axes[1].set_title("JM vs model size")
    for ax in axes:
        for (name, value), style in zip(result["reference_JM"].items(), ("--", ":")):
            ax.axhline(value, linestyle=style, color="grey", label=name)
        ax.set_ylabel("JM (pass-2 masks)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
