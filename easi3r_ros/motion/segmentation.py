"""Dynamic masks from the dynamic map: clustering, refinement, adaptive multi-Otsu (spec §7, §8).

Reference preset (reproduces the fixtures exactly):

1. k-means, k = 64, on the encoder tokens of all frames jointly: scikit-learn
   ``KMeans(n_clusters=64, random_state=42)`` with the library defaults (one k-means++ init, Lloyd),
   fed the float32 tokens (N·h·w, C) → labels (N, h, w).
2. Refined map: every token gets the mean of D over its cluster (all frames), then min–max per frame
   (+1e-6).
3. Bilinear upsampling to H×W (``F.interpolate``, ``align_corners=False``, float32).
4. One threshold τ for the window by adaptive multi-Otsu on all upsampled values: for k ∈ {2, 3, 4},
   thresholds = ``skimage.filters.threshold_multiotsu(values, classes=k)`` (256 bins), class means of
   the ``np.digitize``'d regions, score_k = population variance of the class means / √k; the best
   score wins (ties keep the smaller k); τ = its largest threshold.
5. Mask = map > τ (strict, float32 comparison).

Also here: the token mask of a pixel mask (16×16 max-pool, spec §8) used to re-weight pass 2, and an
optional torch k-means (``method="torch"``) that runs on the GPU; it does not reproduce the
scikit-learn labels (a different k-means never does) — compare masks, not labels.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Union[np.ndarray, torch.Tensor]

EPS = 1e-6
DEFAULT_CLUSTERS = 64
DEFAULT_SEED = 42
PATCH = 16


class SegmentationError(ValueError):
    """Inconsistent inputs to the segmentation stage."""


@dataclass
class SegmentationResult:
    """Output of :func:`segment_dynamic`.

    ``labels`` (N, h, w) int64; ``refined`` (N, h, w) float32; ``upsampled`` (N, H, W) float32;
    ``threshold`` τ (float, a float32 value); ``masks`` (N, H, W) bool; ``otsu_classes`` the chosen k
    (0 when the map was constant and no threshold exists: masks are then empty).
    """

    labels: np.ndarray
    refined: np.ndarray
    upsampled: np.ndarray
    threshold: float
    masks: np.ndarray
    otsu_classes: int

    def as_numpy(self, prefix: str = "") -> dict:
        """Fixture-named arrays (``cluster_labels``, ``refined_dynamic_map``, ``otsu_threshold``, ``dynamic_masks``)."""
        return {prefix + "cluster_labels": self.labels, prefix + "refined_dynamic_map": self.refined,
                prefix + "otsu_threshold": np.float64(self.threshold), prefix + "dynamic_masks": self.masks}


def to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------------------------- clustering

def cluster_tokens(encoder_feat: ArrayLike, n_clusters: int = DEFAULT_CLUSTERS, random_state: int = DEFAULT_SEED,
                   method: str = "sklearn", device: Optional[Union[str, torch.device]] = None,
                   threads: Optional[int] = None) -> np.ndarray:
    """k-means labels (N, h, w) int64 of the encoder tokens (N, h, w, C) of all frames jointly.

    ``method="sklearn"``: the reference (``KMeans(n_clusters, random_state=random_state)``, defaults),
    on float32 tokens. ``method="torch"``: :func:`torch_kmeans` (k-means++ + Lloyd; GPU-friendly).
    When there are fewer tokens than clusters, k is lowered to the number of tokens. ``threads`` caps
    scikit-learn's OpenMP threads (None: library default). The labels were measured identical with 1, 2
    and 4 threads on every fixture; on a loaded CPU 1 thread is often the fastest for these sizes.
    """
    feat = encoder_feat
    shape = tuple(feat.shape)
    if len(shape) != 4:
        raise SegmentationError(f"encoder_feat must be (N, h, w, C), got {shape}")
    n_tok = shape[0] * shape[1] * shape[2]
    if n_tok == 0:
        raise SegmentationError("no encoder tokens to cluster")
    k = min(int(n_clusters), n_tok)
    if method == "sklearn":
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits
        x = np.ascontiguousarray(to_numpy(feat).reshape(n_tok, shape[3]), dtype=np.float32)
        with warnings.catch_warnings():
            # duplicate points (e.g. identical frames) make sklearn warn about fewer distinct clusters
            warnings.simplefilter("ignore", category=UserWarning)
            try:
                from sklearn.exceptions import ConvergenceWarning
                warnings.simplefilter("ignore", category=ConvergenceWarning)
            except ImportError:  # pragma: no cover
                pass
            with threadpool_limits(limits=None if threads is None else int(threads)):   # None: no limit
                labels = KMeans(n_clusters=k, random_state=random_state).fit_predict(x)
    elif method == "torch":
        x = feat if isinstance(feat, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(feat))
        if device is not None:
            x = x.to(device)
        labels = to_numpy(torch_kmeans(x.reshape(n_tok, shape[3]).float(), k, seed=random_state))
    else:
        raise SegmentationError(f"unknown k-means method {method!r} (use 'sklearn' or 'torch')")
    return np.asarray(labels, dtype=np.int64).reshape(shape[:3])


def sklearn_kmeanspp_init(xc: np.ndarray, n_clusters: int, random_state: int = DEFAULT_SEED) -> np.ndarray:
    """The k-means++ centres scikit-learn's ``KMeans(n_clusters, random_state)`` starts from.

    KMeans centres the data on its mean (``X -= X.mean(axis=0)`` in float32), then draws greedy
    k-means++ with a fresh ``RandomState(random_state)`` and unit weights; we call scikit-learn's own
    ``kmeans_plusplus`` the same way. ``xc`` (n, d) float32 is the data already centred that way.
    """
    from sklearn.cluster import kmeans_plusplus
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):  # small BLAS calls: one thread is faster (and immune to contention)
        centers, _ = kmeans_plusplus(xc, n_clusters, sample_weight=np.ones(len(xc), dtype=xc.dtype),
                                     random_state=np.random.RandomState(random_state))
    return centers


def torch_kmeanspp_init(xc: torch.Tensor, n_clusters: int, seed: int = DEFAULT_SEED) -> torch.Tensor:
    """Greedy k-means++ (the variant scikit-learn uses: 2 + ln k candidates per centre, the one that lowers
    the potential most is kept) on ``xc``'s device with torch's generator: the same algorithm, another draw.
    On a GPU the host round trip and scikit-learn's float64 distances cost more than the whole Lloyd loop."""
    n = xc.shape[0]
    gen = torch.Generator(device=xc.device).manual_seed(int(seed))
    trials = 2 + int(np.log(n_clusters))
    x_sq = (xc * xc).sum(1)

    def sqdist(rows):  # (m, n) squared distances of xc[rows] to every point
        c = xc[rows]
        return ((c * c).sum(1)[:, None] - 2 * c @ xc.T + x_sq[None, :]).clamp_min_(0)

    first = torch.randint(n, (1,), generator=gen, device=xc.device)
    ids = [first]
    closest = sqdist(first)[0]
    for _ in range(1, n_clusters):
        cum = torch.cumsum(closest.double(), 0)
        draws = torch.rand(trials, generator=gen, device=xc.device, dtype=torch.float64) * cum[-1]
        cand = torch.searchsorted(cum, draws).clamp_max_(n - 1)
        dist = torch.minimum(closest[None, :], sqdist(cand))
        best = torch.argmin(dist.sum(1))
        ids.append(cand[best].reshape(1))
        closest = dist[best]
    return xc[torch.cat(ids)].clone()


def torch_kmeans(x: torch.Tensor, n_clusters: int, seed: int = DEFAULT_SEED, max_iter: int = 300,
                 tol: float = 1e-4, init: str = "auto") -> torch.Tensor:
    """k-means in torch (Lloyd iterations on x's device) from scikit-learn's own k-means++ initial centres.

    Mirrors scikit-learn's default ``KMeans`` (centred data, same k-means++ draw for ``seed``, Lloyd,
    stop on unchanged labels or squared centre shift ≤ tol·mean feature variance, final relabel), but
    distances and means are float32 torch reductions in another order, so a near-tie can resolve
    differently and the labels are not guaranteed identical to the reference. An empty cluster keeps
    its previous centre (scikit-learn moves it to a far point). Returns labels (n,) int64.

    ``init``: "sklearn" (scikit-learn's own draw, on the host), "torch" (:func:`torch_kmeanspp_init` on x's
    device), "auto" (torch on CUDA, scikit-learn elsewhere).
    """
    n = x.shape[0]
    k = int(min(n_clusters, n))
    if init == "auto":
        init = "torch" if x.device.type == "cuda" else "sklearn"
    if init == "torch":
        xf = x.detach().float()
        xf = xf - xf.mean(0)
        c = torch_kmeanspp_init(xf, k, seed)
    elif init == "sklearn":
        # centre exactly as scikit-learn does (numpy float32), then move to x's device
        xc = np.array(x.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)
        xc -= xc.mean(axis=0)
        c = torch.from_numpy(sklearn_kmeanspp_init(xc, k, seed)).to(x.device)
        xf = torch.from_numpy(xc).to(x.device)
    else:
        raise SegmentationError(f"unknown k-means initialisation {init!r} (use 'auto', 'sklearn' or 'torch')")
    tol_abs = float(tol) * float(xf.var(0, unbiased=False).mean())
    x_sq = (xf * xf).sum(1, keepdim=True)

    def assign(centers):
        d = x_sq - 2 * xf @ centers.T + (centers * centers).sum(1)[None, :]
        return torch.argmin(d, 1)

    labels_old = None
    strict = False
    labels = None
    for _ in range(max_iter):
        labels = assign(c)
        sums = torch.zeros_like(c).index_add_(0, labels, xf)
        counts = torch.bincount(labels, minlength=k).to(xf.dtype)
        new_c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        shift = float(((new_c - c) ** 2).sum())
        c = new_c
        if labels_old is not None and torch.equal(labels, labels_old):
            strict = True
            break
        if shift <= tol_abs:
            break
        labels_old = labels
    if not strict:
        labels = assign(c)
    return labels


# ----------------------------------------------------------------------------------------- refinement

def refine_by_clusters(dynamic_map: ArrayLike, labels: ArrayLike, eps: float = EPS) -> np.ndarray:
    """Every token ← mean of D over its cluster (all frames), then min–max per frame; (N, h, w) float32.

    Cluster means are numpy float32 means over the cluster's tokens in row-major order (bit-identical to
    the fixtures; a float64 or scatter-add mean differs in the last bit).
    """
    d = np.asarray(to_numpy(dynamic_map), dtype=np.float32)
    lab = np.asarray(to_numpy(labels), dtype=np.int64)
    if d.shape != lab.shape:
        raise SegmentationError(f"dynamic map {d.shape} and labels {lab.shape} differ in shape")
    if d.ndim != 3:
        raise SegmentationError(f"dynamic map must be (N, h, w), got {d.shape}")
    flat_d, flat_l = d.reshape(-1), lab.reshape(-1)
    order = np.argsort(flat_l, kind="stable")  # tokens of one cluster contiguous, in row-major order
    sorted_l = flat_l[order]
    starts = np.flatnonzero(np.r_[True, sorted_l[1:] != sorted_l[:-1]])
    ends = np.r_[starts[1:], len(sorted_l)]
    refined = np.empty_like(flat_d)
    grouped = flat_d[order]
    for a, b in zip(starts, ends):
        refined[order[a:b]] = grouped[a:b].mean()
    refined = refined.reshape(d.shape)
    lo = refined.min(axis=(1, 2), keepdims=True)
    hi = refined.max(axis=(1, 2), keepdims=True)
    return ((refined - lo) / (hi - lo + np.float32(eps))).astype(np.float32, copy=False)


def upsample(maps: ArrayLike, size: Tuple[int, int]) -> np.ndarray:
    """(N, h, w) → (N, H, W) bilinear, align_corners=False, float32."""
    t = torch.as_tensor(to_numpy(maps), dtype=torch.float32)[:, None]
    return F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[:, 0].numpy()


# ------------------------------------------------------------------------------------------- threshold

def adaptive_multiotsu(values: ArrayLike, classes: Sequence[int] = (2, 3, 4), nbins: int = 256) -> Tuple[float, int]:
    """(τ, chosen k) by adaptive multi-Otsu over ``values`` (any shape, flattened).

    For each k: thresholds = skimage ``threshold_multiotsu(values, classes=k, nbins)``; regions =
    ``np.digitize(values, thresholds)``; score = ``np.var`` of the region means / √k. Best score wins,
    ties keep the smaller k; τ = largest threshold of the winner. A k that skimage cannot split (too
    few distinct values) is skipped; when none works (constant map) returns (max value, 0), which
    gives an empty mask with the strict comparison.
    """
    from skimage.exposure import histogram
    from skimage.filters import threshold_multiotsu
    v = to_numpy(values).ravel()
    if v.size == 0:
        raise SegmentationError("no values to threshold")
    # the histogram threshold_multiotsu would compute from the values, once for every k
    hist = histogram(v, nbins, source_range="image", normalize=True)
    best_score, best_t, best_k = -np.inf, None, 0
    for k in classes:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                th = threshold_multiotsu(classes=int(k), nbins=nbins, hist=hist)
        except ValueError:
            continue
        regions = np.digitize(v, bins=th)
        means = [v[regions == r].mean() for r in range(int(k)) if np.any(regions == r)]
        score = np.var(means) / np.sqrt(k)
        if score > best_score:
            best_score, best_t, best_k = score, th, int(k)
    if best_t is None:
        return float(v.max()), 0
    return float(best_t[-1]), best_k


def threshold_masks(upsampled: ArrayLike, threshold: float) -> np.ndarray:
    """map > τ, strict, compared in float32 (τ cast to float32 like the reference's tensor compare)."""
    u = to_numpy(upsampled).astype(np.float32, copy=False)
    return u > np.float32(threshold)


# ----------------------------------------------------------------------------------------- full stage

def segment_dynamic(dynamic_map: ArrayLike, encoder_feat: ArrayLike, image_size: Tuple[int, int],
                    n_clusters: int = DEFAULT_CLUSTERS, random_state: int = DEFAULT_SEED,
                    kmeans: str = "sklearn", labels: Optional[ArrayLike] = None,
                    device: Optional[Union[str, torch.device]] = None, kmeans_threads: Optional[int] = None,
                    eps: float = EPS) -> SegmentationResult:
    """Spec §7 on a window: D (N, h, w) + encoder tokens (N, h, w, C) → masks (N, H, W).

    ``image_size`` = (H, W) of the network input. ``labels`` may be passed to reuse a clustering
    (the encoder tokens are identical in both passes, so pass 2 can reuse pass 1's labels).
    """
    d = to_numpy(dynamic_map)
    if d.ndim != 3:
        raise SegmentationError(f"dynamic map must be (N, h, w), got {d.shape}")
    if labels is None:
        if tuple(encoder_feat.shape[:3]) != d.shape:
            raise SegmentationError(
                f"encoder tokens {tuple(encoder_feat.shape)} do not match the dynamic map {d.shape}")
        labels = cluster_tokens(encoder_feat, n_clusters, random_state, method=kmeans, device=device,
                                threads=kmeans_threads)
    labels = np.asarray(to_numpy(labels), dtype=np.int64)
    refined = refine_by_clusters(d, labels, eps=eps)
    up = upsample(refined, image_size)
    tau, k = adaptive_multiotsu(up)
    masks = threshold_masks(up, tau) if k > 0 else np.zeros(up.shape, dtype=bool)
    return SegmentationResult(labels=labels, refined=refined, upsampled=up, threshold=tau, masks=masks,
                              otsu_classes=k)


def token_mask(pixel_masks: ArrayLike, patch: int = PATCH) -> np.ndarray:
    """(N, H, W) pixel masks → (N, H/patch, W/patch) bool token masks: a token is dynamic if any pixel is."""
    m = to_numpy(pixel_masks)
    if m.ndim == 2:
        m = m[None]
    n, hh, ww = m.shape
    if hh % patch or ww % patch:
        raise SegmentationError(f"mask size {hh}x{ww} is not a multiple of the patch size {patch}")
    return m.astype(bool).reshape(n, hh // patch, patch, ww // patch, patch).any(axis=(2, 4))
