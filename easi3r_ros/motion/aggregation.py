"""Aggregation of per-edge cross-attention maps into a per-frame dynamic map (spec §6).

Inputs are the query-mean pre-softmax cross-attention logits of every ordered edge e = (i, j):

* ``maps_view1[e]`` (h, w, C): branch 1 (queries = frame i), laid out on frame **j**'s tokens;
* ``maps_view2[e]`` (h, w, C): branch 2 (queries = frame j), laid out on frame **i**'s tokens;

C = dec_depth · dec_num_heads, channel = layer · n_heads + head.

For every frame n:

* source family    = branch-1 maps of the edges (·, n)  → ``attn_k_i_{mean,std}_raw``
* reference family = branch-2 maps of the edges (n, ·)  → ``attn_k_j_{mean,std}_raw``

Each family is stacked (h, w, C, K_n) in increasing partner-frame order (as the reference does), token (0, 0) is replaced by the mean of tokens
(0, 1) and (1, 0), then μ = mean over the K_n edges and σ = unbiased std (K_n ≥ 2 required).
Each of the four (N, h, w, C) tensors is min–max normalised over the whole tensor (+1e-6 in the
denominator), averaged over channels and min–max normalised again over all frames and positions
(+1e-6): the ``*_fused`` maps Ā. The dynamic map is

    D = (1 − Ā_μ,src) · Ā_σ,src · Ā_μ,ref · (1 − Ā_σ,ref),   min–max per frame (+1e-6).

Everything runs in torch float32 like the reference (the tests measure the errors against the fixtures).

Note on what the normalisation discards: the first min–max is one affine map applied to all
channels, so the channel mean of the raw tensor is an affine function of the fused map before its
second min–max. The fused maps therefore keep *all* spatial information of the raw channel means and
throw away exactly their offset and scale — which is what the "nothing moves" guard
(:mod:`easi3r_ros.motion.guard`) looks at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

EPS = 1e-6

RAW_NAMES = ("attn_k_i_mean_raw", "attn_k_i_std_raw", "attn_k_j_mean_raw", "attn_k_j_std_raw")
FUSED_NAMES = ("attn_k_i_mean_fused", "attn_k_i_std_fused", "attn_k_j_mean_fused", "attn_k_j_std_fused")


class AggregationError(ValueError):
    """Inconsistent inputs to the aggregation (shapes, edges, too few edges for a frame)."""


@dataclass
class AggregatedAttention:
    """Result of :func:`aggregate_attention`; all tensors float32 on the input's device.

    ``raw``: the four (N, h, w, C) statistics keyed by the fixture names (without the pass prefix);
    ``fused``: the four (N, h, w) fused maps; ``dynamic_map``: D (N, h, w);
    ``n_source`` / ``n_reference``: number of edges per frame in each family.
    """

    raw: Dict[str, torch.Tensor]
    fused: Dict[str, torch.Tensor]
    dynamic_map: torch.Tensor
    n_source: np.ndarray
    n_reference: np.ndarray

    def as_numpy(self, prefix: str = "") -> Dict[str, np.ndarray]:
        """Fixture-named float32 numpy arrays (e.g. ``prefix="pass1_"``) for results.npz."""
        out = {prefix + k: v.detach().cpu().numpy() for k, v in self.raw.items()}
        out.update({prefix + k: v.detach().cpu().numpy() for k, v in self.fused.items()})
        out[prefix + "dynamic_map"] = self.dynamic_map.detach().cpu().numpy()
        return out


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 4:
        raise AggregationError(f"{name} must be (E, h, w, C), got shape {tuple(t.shape)}")
    return t.to(torch.float32)


def minmax(x: torch.Tensor, dims: Optional[Sequence[int]] = None, eps: float = EPS) -> torch.Tensor:
    """(x − min) / (max − min + eps), min/max over ``dims`` (all elements when None)."""
    if dims is None:
        lo, hi = x.min(), x.max()
    else:
        lo = x.amin(dim=tuple(dims), keepdim=True)
        hi = x.amax(dim=tuple(dims), keepdim=True)
    return (x - lo) / (hi - lo + eps)


def fix_top_left(stacked: torch.Tensor) -> torch.Tensor:
    """Replace token (0, 0) of a (h, w, ...) tensor by the mean of tokens (0, 1) and (1, 0) (copy)."""
    out = stacked.clone()
    out[0, 0] = (stacked[0, 1] + stacked[1, 0]) / 2
    return out


def family_statistics(maps: Sequence[torch.Tensor], frame: int = -1, family: str = "") -> Tuple[torch.Tensor, torch.Tensor]:
    """μ and unbiased σ over K ≥ 2 maps (each (h, w, C)), after the top-left fix."""
    if len(maps) < 2:
        raise AggregationError(
            f"frame {frame} has {len(maps)} edge(s) in its {family or 'edge'} family; the unbiased std needs >= 2 "
            "(use a larger window or a denser scene graph)")
    stacked = torch.stack(list(maps), dim=-1)  # (h, w, C, K), as in the spec
    stacked = fix_top_left(stacked)
    return stacked.mean(dim=-1), stacked.std(dim=-1)  # torch.std is unbiased by default


def fuse(raw: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(N, h, w, C) → (N, h, w): global min–max, mean over channels, global min–max."""
    return minmax(minmax(raw, eps=eps).mean(dim=-1), eps=eps)


def dynamic_from_fused(mu_src: torch.Tensor, sd_src: torch.Tensor, mu_ref: torch.Tensor, sd_ref: torch.Tensor,
                       eps: float = EPS) -> torch.Tensor:
    """D = (1 − μ_src)·σ_src·μ_ref·(1 − σ_ref), min–max per frame."""
    d = (1 - mu_src) * sd_src * mu_ref * (1 - sd_ref)
    return minmax(d, dims=(1, 2), eps=eps)


def fuse_and_dynamic(raw: Mapping[str, torch.Tensor], eps: float = EPS) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """From the four raw (N, h, w, C) statistics: the fused maps and the dynamic map."""
    fused = {fname: fuse(raw[rname], eps) for rname, fname in zip(RAW_NAMES, FUSED_NAMES)}
    d = dynamic_from_fused(*(fused[k] for k in FUSED_NAMES), eps=eps)
    return fused, d


def aggregate_attention(maps_view1: ArrayLike, maps_view2: ArrayLike, edges: ArrayLike,
                        n_frames: Optional[int] = None, eps: float = EPS) -> AggregatedAttention:
    """Spec §6 on a window: per-edge maps (E, h, w, C) of both branches + edges (E, 2) → statistics and D.

    Frames are 0..n_frames−1 (default: max edge index + 1). Every frame needs ≥ 2 edges in both
    families (``swinstride`` with ≥ 3 frames satisfies this). Raises :class:`AggregationError` otherwise.
    """
    m1 = _as_tensor(maps_view1, "maps_view1")
    m2 = _as_tensor(maps_view2, "maps_view2")
    e = np.asarray(edges.cpu() if isinstance(edges, torch.Tensor) else edges, dtype=np.int64).reshape(-1, 2)
    if m1.shape != m2.shape:
        raise AggregationError(f"maps_view1 {tuple(m1.shape)} and maps_view2 {tuple(m2.shape)} differ in shape")
    if m1.shape[0] != len(e):
        raise AggregationError(f"{m1.shape[0]} per-edge maps but {len(e)} edges")
    if len(e) == 0:
        raise AggregationError("no edges")
    if m1.shape[1] < 2 or m1.shape[2] < 2:
        raise AggregationError(f"token grid {tuple(m1.shape[1:3])} too small (needs >= 2x2)")
    n = int(n_frames) if n_frames is not None else int(e.max()) + 1
    if e.min() < 0 or e.max() >= n:
        raise AggregationError(f"edge indices out of range for {n} frames")
    # Within a family the maps are stacked in increasing order of the partner frame (the reference's
    # order: it reproduces the fixtures' float32 means bit for bit, the plain edge order does not).
    src: List[List[Tuple[int, int]]] = [[] for _ in range(n)]
    ref: List[List[Tuple[int, int]]] = [[] for _ in range(n)]
    for k, (i, j) in enumerate(e.tolist()):
        src[j].append((i, k))  # branch 1 map lives on frame j, partner i
        ref[i].append((j, k))  # branch 2 map lives on frame i, partner j
    src_lists = [[m1[k] for _, k in sorted(lst, key=lambda t: t[0])] for lst in src]
    ref_lists = [[m2[k] for _, k in sorted(lst, key=lambda t: t[0])] for lst in ref]
    return aggregate_families(src_lists, ref_lists, eps=eps)


def aggregate_families(src_lists: Sequence[Sequence[ArrayLike]], ref_lists: Sequence[Sequence[ArrayLike]],
                       eps: float = EPS) -> AggregatedAttention:
    """Spec §6 from per-frame lists of maps: ``src_lists[n]`` = branch-1 maps on frame n (edges (·, n)),
    ``ref_lists[n]`` = branch-2 maps on frame n (edges (n, ·)), each (h, w, C), stacked in the given
    order (the reference order is increasing partner frame; float32 means depend on it in the last bit)."""
    n = len(src_lists)
    if len(ref_lists) != n:
        raise AggregationError("source and reference families must cover the same frames")

    def tens(x):
        return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))).to(torch.float32)

    mu_s, sd_s, mu_r, sd_r = [], [], [], []
    for f in range(n):
        a, b = family_statistics([tens(x) for x in src_lists[f]], f, "source (branch-1, edges (., n))")
        mu_s.append(a)
        sd_s.append(b)
        a, b = family_statistics([tens(x) for x in ref_lists[f]], f, "reference (branch-2, edges (n, .))")
        mu_r.append(a)
        sd_r.append(b)
    raw = dict(zip(RAW_NAMES, (torch.stack(mu_s), torch.stack(sd_s), torch.stack(mu_r), torch.stack(sd_r))))
    fused, d = fuse_and_dynamic(raw, eps=eps)
    return AggregatedAttention(raw=raw, fused=fused, dynamic_map=d,
                               n_source=np.array([len(x) for x in src_lists]),
                               n_reference=np.array([len(x) for x in ref_lists]))
