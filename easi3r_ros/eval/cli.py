"""``easi3r eval``: score masks against ground truth and trajectories against a reference.

    easi3r eval masks PRED_DIR GT_DIR [--moving-ids 2] [--static-ids 1]
    easi3r eval traj EST.txt REF.txt [--no-scale] [--delta 1]
    easi3r eval bench [--checkpoint PATH | --random-weights MODEL] [--out DIR] [--sequences N] [--static N]
                      [--frames T] [--niter N] [--quick] [--threads T]

Masks: PNG files matched by name (predicted 0/255 masks; ground truth label PNGs, any non-zero label is an
object unless ids are given); DAVIS J (IoU), F (boundary), JM, JR. Trajectories: TUM files matched by
timestamp (1 ms tolerance); ATE RMSE after Sim(3) (or SE(3)) Umeyama alignment and RPE, computed by evo.
Bench: the ground-truth quality benchmark on held-out synthetic sequences (masks, poses, depth; every
baseline row; the guard's threshold) — see :mod:`easi3r_ros.eval.bench`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np


def _masks(args) -> dict:
    from ..io.writers import read_mask_png
    from .masks import davis_scores, load_label_png, static_dynamic_scores

    preds = {p.stem: p for p in sorted(args.pred.glob("*.png"))}
    gts = {p.stem: p for p in sorted(args.gt.glob("*.png"))}
    names = sorted(set(preds) & set(gts))
    if not names:
        raise SystemExit(f"easi3r eval: error: no PNG names shared by {args.pred} and {args.gt}")
    pred = [read_mask_png(preds[n]) for n in names]
    labels = [load_label_png(gts[n]) for n in names]
    if args.moving_ids:
        scores = static_dynamic_scores(pred, labels, moving_ids=args.moving_ids, static_ids=args.static_ids or ())
        gt = [np.isin(lab, args.moving_ids) for lab in labels]
    else:
        scores, gt = {}, [lab > 0 for lab in labels]
    davis = davis_scores(pred, gt)
    out = {"frames": len(names), "JM": davis["JM"], "JR": davis["JR"], "FM": davis["FM"]}
    out.update({k: v for k, v in scores.items() if np.ndim(v) == 0})
    return out


def _traj(args) -> dict:
    from ..io.writers import read_tum
    from .trajectory import trajectory_errors

    est_t, est = read_tum(args.est)
    ref_t, ref = read_tum(args.ref)
    try:
        out = trajectory_errors(est, ref, np.asarray(est_t, np.int64), np.asarray(ref_t, np.int64),
                                with_scale=not args.no_scale, delta=args.delta, max_diff_s=1e-3)
    except ValueError as exc:
        raise SystemExit(f"easi3r eval: error: {exc}") from None
    return {"matched_poses": out["matched_poses"], "alignment": "SE(3)" if args.no_scale else "Sim(3)",
            **{k: v for k, v in out.items() if k != "matched_poses"}}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="easi3r eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("masks", help="DAVIS J&F of predicted masks against ground-truth label PNGs")
    m.add_argument("pred", type=Path)
    m.add_argument("gt", type=Path)
    m.add_argument("--moving-ids", type=int, nargs="*", help="label ids of moving objects (default: any non-zero)")
    m.add_argument("--static-ids", type=int, nargs="*", help="label ids of static objects (false-positive rate)")
    t = sub.add_parser("traj", help="ATE and RPE of a TUM trajectory against a reference TUM trajectory")
    t.add_argument("est", type=Path)
    t.add_argument("ref", type=Path)
    t.add_argument("--no-scale", action="store_true", help="SE(3) alignment instead of Sim(3)")
    t.add_argument("--delta", type=int, default=1, help="RPE frame delta (default 1)")
    b = sub.add_parser("bench", help="quality benchmark: masks, poses and depth against synthetic ground truth",
                       description="Easi3R (and every baseline row) on held-out synthetic sequences with exact "
                                   "ground truth; writes quality.md, quality.json, montage.png and calibration.json.")
    from .bench import add_arguments as add_bench_arguments
    add_bench_arguments(b)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if args.what == "bench":
        from .bench import run_from_args
        return run_from_args(args)
    result = _masks(args) if args.what == "masks" else _traj(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:{width}s}  {value:.6g}" if isinstance(value, float) else f"{key:{width}s}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
