"""Reduced precision against fp32, measured on the CPU (bf16 autocast): which parts of the network may run in bf16
without changing the masks.

    python benchmarks/precision.py [--threads 1] [--no-fixtures]

The shipped easi3r-tiny model on the synthetic 8-frame moving-object window that ``benchmarks/gpu.py`` uses, and
the two random-weight reference fixtures (``../shared/fixtures/reference`` or ``$EASI3R_FIXTURES``), each run by
the window pipeline (reference preset, 5 alignment iterations) in fp32 and in bf16 with:

- *cross-attention fp32* — the default (``WindowConfig.keep_fp32="cross-attention"``): the decoder's
  cross-attention, whose logits are Easi3R's signal, runs in fp32; self-attention, MLPs and heads in bf16;
- *decoder fp32* (``keep_fp32="decoder"``) — only the prediction heads in bf16: the masks are fp32's;
- *all reduced* (``keep_fp32="nothing"``) — everything after the encoder in bf16.

Reported against fp32 on the same machine: the dynamic maps' max error relative to their max (pass 1 and 2),
the pass-1 and pass-2 masks' IoU (min over frames; aim ≥ 0.99), the pointmaps' max relative error, and the
window's wall time. CPU bf16 GEMMs accumulate in fp32, as CUDA's do, so the errors indicate what the GPU shows;
``benchmarks/gpu.sh`` measures bf16 and fp16 on a GPU. Report: ``results/precision/precision.md`` (+ ``.json``).
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine  # noqa: E402
from gpu import _shipped_model_and_scene, fixtures_dir, precision_errors  # noqa: E402

OUT = RESULTS / "precision"
VARIANTS = (("bf16", "cross-attention", "cross-attention fp32 (default)"),
            ("bf16", "decoder", "decoder fp32, heads reduced"), ("bf16", "nothing", "all reduced"))


def run_case(name: str, net, frames, config_fn) -> list:
    from easi3r_ros.pipeline.window import WindowPipeline

    rows, base = [], None
    for precision, keep, label in (("fp32", "cross-attention", "fp32"),) + VARIANTS:
        t = time.perf_counter()
        out = WindowPipeline(net, config_fn(precision=precision, keep_fp32=keep)).run(
            frames, frame_ids=range(len(frames))).arrays
        wall = time.perf_counter() - t
        if base is None:
            base = out
            rows.append({"case": name, "variant": label, "wall_s": wall})
            continue
        rows.append({"case": name, "variant": label, "wall_s": wall, **precision_errors(base, out)})
        print(f"[precision] {name} {label}: {rows[-1]}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-fixtures", action="store_true", help="the trained model only")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.model.preprocess import load_rgb
    from easi3r_ros.pipeline.window import WindowConfig, preset_config

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = []
    net, scene = _shipped_model_and_scene()
    if net is not None:
        rows += run_case("easi3r-tiny (trained), synthetic window", net, scene.frames,
                         lambda **kw: preset_config("reference", niter=5, keep_arrays=True, device="cpu", **kw))
    for name in () if args.no_fixtures else ("tiny_linear_vtest", "tiny_dpt_synthetic"):
        path = fixtures_dir() / name
        if not (path / "reference.npz").is_file():
            rows.append({"case": name, "skipped": f"not found under {fixtures_dir()}"})
            continue
        meta = json.loads((path / "meta.json").read_text())
        frames = [load_rgb(f) for f in sorted(glob.glob(str(path / "frames" / "*.png")))]
        fnet, _ = random_network(meta["weights"]["model_str"], meta["weights"]["seed"])
        rows += run_case(f"{name} (random weights)", fnet, frames,
                         lambda **kw: WindowConfig(niter=5, keep_arrays=True, device="cpu", **kw))
    lines = ["# Reduced precision against fp32 (bf16 autocast on the CPU)", "",
             f"Machine: {machine()}; torch threads {args.threads} (`benchmarks/precision.py`, {time.perf_counter() - t0:.0f} s).",
             "", "| case | variant | dynamic map rel. err | pass-1 mask IoU (min) | pass-2 mask IoU (min) | "
             "pointmap rel. err | window (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['case']} | skipped: {r['skipped']} | | | | | |")
        elif r["variant"] == "fp32":
            lines.append(f"| {r['case']} | fp32 | – | – | – | – | {r['wall_s']:.1f} |")
        else:
            lines.append(f"| {r['case']} | bf16, {r['variant']} | {r['dynamic_map_rel_err']:.3f} | {r['pass1_mask_iou']:.4f} "
                         f"| {r['pass2_mask_iou']:.4f} | {r['pts_rel_err']:.3f} | {r['wall_s']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps({"rows": rows, "machine": machine()}, indent=1))
    (args.out / "precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
