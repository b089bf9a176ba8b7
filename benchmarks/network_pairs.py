"""Seconds per ordered pair and peak memory of the full-size networks, fused vs naive attention.

    python benchmarks/network_pairs.py [--models dust3r-224-linear dust3r-512-dpt] [--frames 6]

(a) ``fused``: every frame encoded once, each ordered pair decoded from the cached tokens with
    ``scaled_dot_product_attention`` and the O(N*D) query-mean logit statistic;
(b) ``naive``: the reference's way: both images encoded again for every pair, every attention logit
    matrix materialised (q @ k^T), and the decoder's logit maps of the pair kept until the pair is done
    (4 x layers x heads x N^2 values, what the reference holds to compute its statistics).
Both run on the same random (recipe-v1) weights and frames in separate processes, so peak RSS is each
configuration's own; their outputs are compared. Results go to benchmarks/results/network_pairs.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, emit, machine, peak_rss_mb, run_child, weights_mb  # noqa: E402


def _frames(model_size: int, n: int):
    import torch

    from easi3r_ros.eval.scenes import make_window
    from easi3r_ros.model.preprocess import preprocess_image

    window = make_window(n, size=(360, 640), pan_px=6, object_px=12, seed=0)
    return torch.stack([preprocess_image(f, model_size)[0] for f in window.frames])


def child(args) -> None:
    import torch

    import easi3r_ros.model.blocks as blocks
    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.pipeline.scene_graph import make_edges
    from easi3r_ros.pipeline.window import resolve_device

    torch.set_grad_enabled(False)
    device = resolve_device(args.device)
    net, _ = random_network(args.model, seed=0, device=device)
    weights = weights_mb(net)
    images = _frames(net.cfg.image_size, args.frames).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    edges = make_edges("swinstride-5", args.frames)
    if args.pairs:
        edges = edges[: args.pairs]
    rss_before = peak_rss_mb()
    retained = []
    if args.mode == "naive":
        def materialising(q, k, v, reweight=None, logit_mean=False, naive=True):
            # the reference's attention: full logits, softmax, matmul; logits kept for the whole pair
            logits = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5
            retained.append(logits)
            return logits.softmax(dim=-1) @ v, logits.mean(dim=-2) if logit_mean else None

        blocks.attend = materialising
    first = None
    t0 = time.perf_counter()
    if args.mode == "fused":
        enc = net.encode(images)
        for i, j in edges.tolist():
            pred = net.decode(enc[i:i + 1], enc[j:j + 1], images.shape[-2:], attention_stats=True)
            first = first or pred
    else:
        for i, j in edges.tolist():
            retained.clear()
            pred = net(images[i:i + 1], images[j:j + 1], attention_stats=True)
            first = first or pred
        retained.clear()
    sync()
    seconds = time.perf_counter() - t0
    np.savez(args.out, **{k: getattr(first, k).cpu().numpy() for k in ("pts1", "conf1", "pts2", "conf2", "attn1", "attn2")})
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    emit({"model": args.model, "mode": args.mode, "pairs": len(edges), "frames": args.frames,
          "seconds": seconds, "seconds_per_pair": seconds / len(edges), "peak_rss_mb": peak_rss_mb(),
          "rss_before_mb": rss_before, "weights_mb": weights, "hw": list(images.shape[-2:]),
          "device": str(device), "gpu_peak_mb": gpu_peak})


def compare(a: Path, b: Path) -> dict:
    x, y = np.load(a), np.load(b)
    pts = max(float((np.linalg.norm(x[k] - y[k], axis=-1) / (np.linalg.norm(y[k], axis=-1) + 1)).max())
              for k in ("pts1", "pts2"))
    conf = max(float((np.abs(x[k] - y[k]) / y[k]).max()) for k in ("conf1", "conf2"))
    attn = max(float(np.abs(x[k] - y[k]).max()) for k in ("attn1", "attn2"))
    return {"points": pts, "confidence": conf, "attention": attn}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["fused", "naive"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    ap.add_argument("--models", nargs="+", default=["dust3r-224-linear", "dust3r-512-dpt"])
    ap.add_argument("--frames", type=int, default=6, help="frames of the window (default 6: 18 ordered pairs)")
    ap.add_argument("--pairs", type=int, default=0, help="time only the first N ordered pairs (0: all)")
    ap.add_argument("--report", type=Path, default=RESULTS / "network_pairs.md")
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            res = {}
            for mode in ("fused", "naive"):
                out = Path(tmp) / f"{model}_{mode}.npz"
                res[mode] = run_child(Path(__file__), ["--model", model, "--mode", mode, "--frames", args.frames,
                                                       "--pairs", args.pairs, "--out", out, "--device", args.device])
                print(res[mode], flush=True)
            rows.append(res)
            checks.append((model, compare(Path(tmp) / f"{model}_fused.npz", Path(tmp) / f"{model}_naive.npz")))
    lines = ["# Network: seconds per ordered pair and peak memory, fused vs naive", "",
             f"Machine: {machine()}.", "",
             f"{args.frames} frames, swinstride-5 ordered pairs, batch 1, fp32, random recipe-v1 weights. Seconds per "
             "pair include encoding (once per frame for fused, twice per pair for naive). Peak RSS is the "
             "process's VmHWM; weights alone are listed for scale.", "",
             "| model | input | pairs | fused s/pair | naive s/pair | speed-up | fused peak RSS MiB | naive peak RSS MiB "
             "| memory ratio | weights MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for res in rows:
        f, n = res["fused"], res["naive"]
        if f["gpu_peak_mb"] is not None:
            lines.insert(-2, f"GPU peak allocated ({f['model']}): fused {f['gpu_peak_mb']:.0f} MiB, naive "
                             f"{n['gpu_peak_mb']:.0f} MiB.")
        lines.append(f"| {f['model']} | {f['hw'][0]}x{f['hw'][1]} | {f['pairs']} | {f['seconds_per_pair']:.2f} | "
                     f"{n['seconds_per_pair']:.2f} | {n['seconds_per_pair'] / f['seconds_per_pair']:.2f}x | "
                     f"{f['peak_rss_mb']:.0f} | {n['peak_rss_mb']:.0f} | {n['peak_rss_mb'] / f['peak_rss_mb']:.2f}x | "
                     f"{f['weights_mb']:.0f} |")
    lines += ["", "Outputs of the first pair, fused vs naive (same weights and frames):", ""]
    for model, c in checks:
        lines.append(f"- {model}: points max ‖Δp‖/(‖p‖+1) {c['points']:.1e}, confidence max rel {c['confidence']:.1e}, "
                     f"attention max abs {c['attention']:.1e}")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
