"""Where a step of the global alignment spends its time on a GPU: one 8-frame 512x288 window of synthetic
pairwise pointmaps, the alignment timed eager and from a CUDA graph, then torch's profiler over 20 eager steps
(top kernels by GPU time and by host time). Needs CUDA; prints to stdout
(`benchmarks/results/gpu/alignment_profile.txt` holds a run's output).

    python benchmarks/gpu_alignment_profile.py
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from easi3r_ros.align.global_alignment import GlobalAligner  # noqa: E402
from easi3r_ros.pipeline.scene_graph import make_edges  # noqa: E402


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_alignment_profile.py: no CUDA device; nothing measured", file=sys.stderr)
        return 3
    from torch.profiler import ProfilerActivity, profile

    dev, n, h, w = "cuda", 8, 288, 512
    edges = make_edges("swinstride-5", n)
    e = len(edges)
    g = torch.Generator().manual_seed(0)
    base = torch.stack(torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"), -1)
    pts = torch.cat([base, torch.ones(h, w, 1)], -1)
    p1 = (pts[None] + 0.01 * torch.randn(e, h, w, 3, generator=g)).to(dev)
    p2 = (pts[None] + 0.01 * torch.randn(e, h, w, 3, generator=g)).to(dev)
    c = (1 + torch.rand(e, h, w, generator=g) * 5).to(dev)
    for graph in (False, True, True):
        torch.cuda.synchronize()
        t = time.perf_counter()
        aligner = GlobalAligner(p1, c, p2, c.clone(), edges, n, device=dev)
        torch.cuda.synchronize()
        t_ctor = time.perf_counter() - t
        r = aligner.run(niter=300, cuda_graph=graph)
        torch.cuda.synchronize()
        print("graph", graph, "ctor %.3f" % t_ctor, {k: round(v, 3) for k, v in r.timings.items()}, r.optimizer,
              flush=True)
    aligner = GlobalAligner(p1, c, p2, c.clone(), edges, n, device=dev)
    aligner.init_mst()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        aligner.optimize(niter=20, cuda_graph=False)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
