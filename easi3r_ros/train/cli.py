"""``easi3r train``: train a DUSt3R-shaped network on synthetic rooms (resumable; see --help)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional


def _indices(text: str):
    if text == "all":
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated indices, got {text!r}") from None


def _positive_int(text: str) -> int:
    n = int(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from ..model.config import PRESETS

    p = argparse.ArgumentParser(
        prog="easi3r train",
        description="Train a DUSt3R-shaped network (confidence-aware pointmap regression) on procedurally "
                    "rendered static pairs. Re-running the same command resumes from OUT/last.pt. Writes "
                    "OUT/train_log.csv, OUT/val.json (held-out diagnostics), OUT/model.pth (official format) "
                    "and OUT/hf/ (config.json + model.safetensors).")
    p.add_argument("--model", help=f"a preset ({', '.join(PRESETS)}) or a constructor string "
                                   "(optional with --init: the checkpoint's architecture)")
    p.add_argument("--out", type=Path, required=True, help="run folder (created; an existing run resumes)")
    p.add_argument("--steps", type=_positive_int, default=2000, help="optimiser steps (default 2000)")
    p.add_argument("--batch", type=_positive_int, default=8, help="pairs per step (default 8)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of every step's pairs (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 autocasts the network (use on CUDA; losses stay fp32)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--alpha", type=float, default=0.2, help="weight of -log C in the confidence loss (default 0.2)")
    p.add_argument("--regr-weight", type=float, default=0.0, help="weight of an extra plain regression term")
    p.add_argument("--attn-weight", type=float, default=0.0,
                   help="weight of the auxiliary cross-attention correspondence loss (default 0: off)")
    p.add_argument("--attn-layers", type=_indices, default=None,
                   help="decoder layers the correspondence loss supervises: 'all' (default) or e.g. '1,2'")
    p.add_argument("--attn-heads", type=_indices, default=None,
                   help="heads of those layers it supervises: 'all' (default) or e.g. '0' (others stay free)")
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm (default 1)")
    p.add_argument("--val-pairs", type=int, default=64, help="held-out pairs for val.json (default 64)")
    p.add_argument("--log-every", type=_positive_int, default=10, help="steps per train_log.csv row (default 10)")
    p.add_argument("--save-every", type=_positive_int, default=200, help="steps between saves of last.pt")
    p.add_argument("--init", help="start from this checkpoint (.pth or Hugging Face folder)")
    p.add_argument("--train-size", type=int,
                   help="square training resolution in pixels, a multiple of 16 (default: the model's img_size); "
                        "validation runs at img_size")
    p.add_argument("--snapshots", default="",
                   help="comma-separated steps at which OUT/snapshots/step_NNNNNN/ (Hugging Face folder) is written")
    p.add_argument("--max-seconds", type=float,
                   help="stop this invocation's training after this many seconds (state saved; the same command "
                        "resumes), then validate and export as usual; budget the validation on top")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is None and args.init is None:
        parser.error("give --model (a preset or constructor string) or --init CKPT")
    from ..model.checkpoint import CheckpointError
    from ..model.config import ModelConfigError
    from .state import ResumeMismatchError
    from .trainer import TrainConfig, TrainError, train

    config = TrainConfig(model=args.model, out=args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                         warmup=args.warmup, seed=args.seed, device=args.device, precision=args.precision,
                         threads=args.threads, alpha=args.alpha, regr_weight=args.regr_weight,
                         attn_weight=args.attn_weight, attn_layers=args.attn_layers, attn_heads=args.attn_heads,
                         clip=args.clip, val_pairs=args.val_pairs, log_every=args.log_every, save_every=args.save_every,
                         init=args.init, max_seconds=args.max_seconds, progress=not args.quiet,
                         train_size=args.train_size,
                         snapshots=tuple(int(v) for v in args.snapshots.split(",") if v.strip()))
    try:
        summary = train(config)
    except (TrainError, ResumeMismatchError, CheckpointError, ModelConfigError, ValueError) as exc:
        parser.exit(2, f"easi3r train: error: {exc}\n")
    val = summary.get("validation") or {}
    done = f"easi3r train: {summary['steps']}/{summary['steps_planned']} steps"
    if val:
        g = val["geometry"]
        print(f"{done}; held-out view-2 error {g['view2_err']:.4f} (ignore-motion baseline "
              f"{g['view2_err_ignore_motion']:.4f}); wrote {args.out}")
    else:
        print(f"{done}; wrote {args.out}")
    return 0
