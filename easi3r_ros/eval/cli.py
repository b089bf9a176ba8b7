"""``easi3r eval``: score masks against ground truth and trajectories against a reference.

    easi3r eval masks PRED_DIR GT_DIR [--moving-ids 2] [--static-ids 1]
    easi3r eval traj EST.txt REF.txt [--no-scale] [--delta 1]

Masks: PNG files matched by name (predicted 0/255 masks; ground truth label PNGs, any non-zero label is an
object unless ids are given); DAVIS J (IoU), F (boundary), JM, JR. Trajectories: TUM files matched by
timestamp (1 ms tolerance); ATE RMSE after Sim(3) (or SE(3)) Umeyama alignment and RPE, as evo computes them.
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
    from ..align.sim3 import ate_rmse, rpe
    from ..io.writers import read_tum

    est_t, est = read_tum(args.est)
    ref_t, ref = read_tum(args.ref)
    ref_index = {int(t): k for k, t in enumerate(ref_t)}
    pairs = []
    for k, t in enumerate(est_t):
        hit = ref_index.get(int(t))
        if hit is None:
            near = int(np.argmin(np.abs(ref_t - t)))
            hit = near if abs(int(ref_t[near]) - int(t)) <= 1_000_000 else None
        if hit is not None:
            pairs.append((k, hit))
    if len(pairs) < 3:
        raise SystemExit(f"easi3r eval: error: only {len(pairs)} poses matched by timestamp (need 3)")
    e = est[[k for k, _ in pairs]]
    g = ref[[h for _, h in pairs]]
    scale = not args.no_scale
    rel = rpe(e, g, delta=args.delta, with_scale=scale)
    return {"matched_poses": len(pairs), "alignment": "Sim(3)" if scale else "SE(3)",
            "ate_rmse": ate_rmse(e, g, with_scale=scale), "rpe_trans_rmse": rel["trans"]["rmse"],
            "rpe_rot_deg_rmse": rel["rot_deg"]["rmse"]}


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
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
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
