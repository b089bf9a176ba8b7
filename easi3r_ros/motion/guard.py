"""The "nothing moves" guard (spec §11).

Problem. The reference always finds a foreground: D is min–max normalised (globally, then per frame)
and the adaptive multi-Otsu always splits the values, so a window where nothing moves still gets a
mask. The normalisations discard exactly the *scale* of the attention evidence — the first global
min–max is one affine map for all channels, so the fused maps keep every spatial detail of the raw
channel means and lose only their offset and range (see :mod:`easi3r_ros.motion.aggregation`). The
guard therefore looks at the **un-normalised** statistics ``attn_k_{i,j}_{mean,std}_raw``.

Two statistics, two stages (a window is "moving" only if it passes both enabled stages):

1. **Evidence level** ``evidence_level = median_all(s_src) / std_all(m_src)``: the edge-to-edge (temporal)
   variability of the attention a frame receives, relative to its spatial variability. Scale-free (a
   checkpoint's logit scale cancels) and 0 for identical frames. A window whose frames differ only by
   sensor noise (a robot standing still in a static scene) stays near 0; any change in the scene (an
   object moving, or the camera moving) raises it. Threshold measured on synthetic windows with exact
   ground truth and on real clips (``benchmarks/guard_calibration.py``, table in
   ``benchmarks/results/guard_calibration.md``): static camera + static scene + sensor noise 0.028–0.051,
   every window with a moving object 0.10–0.18 (random weights; tiny model). ``LEVEL_THRESHOLD`` = 0.07
   sits at the geometric midpoint of that gap.
2. **σ contrast** (optional, ``contrast_threshold``) below: separates camera motion (σ raised
   everywhere) from object motion (σ raised locally). With random weights the attention carries no
   learned motion cue and the contrast separates nothing (measured 1.00–1.19 for both), so it has no
   default: calibrate it with a real checkpoint (``guard_calibration.py --checkpoint``).

Definitions (all on the channel means of the raw statistics, logit units):

* ``s_src[n, p]`` = mean over channels of σ_src (``attn_k_i_std_raw``): how much the attention that
  other frames' queries pay to token p of frame n varies from partner to partner (edge to edge).
  ``s_ref`` likewise for σ_ref (``attn_k_j_std_raw``); ``m_src``, ``m_ref`` for the means.
* F = candidate dynamic tokens of the window (the mask the reference would output, at token level:
  ``refined > τ``, or any token mask), B = the other tokens, over all frames of the window.
* **Primary statistic — σ contrast** ``sigma_src_ratio = mean_F(s_src) / (median_all(s_src) + floor)``.
  Rationale: σ is the edge-to-edge (temporal) variability of the evidence. A camera moving through a
  static scene changes the attention everywhere, smoothly; an independently moving object changes it
  *locally* (it is somewhere else in every partner frame), so its tokens' σ stands out against the
  window's typical σ (its noise floor). D rewards high σ_src; this is the same quantity kept in its
  own units. It is a ratio, so it does not depend on the logit scale of a checkpoint, and it behaves
  at the degenerate ends: identical frames (σ ≈ 0 everywhere) give a ratio ≈ 0/floor → static; a
  static camera with moving people gives σ ≫ floor on the people only → large ratio.
  ``floor`` (default 1e-4 logit units) only guards the division.
* Secondary statistics, returned for measurement (:func:`motion_statistics`):
  ``sigma_ref_ratio = median_all(s_ref) / (mean_F(s_ref) + floor)`` (D rewards *low* σ_ref),
  ``mu_src_drop = (median_all(m_src) − mean_F(m_src)) / IQR_all(m_src)`` (D rewards low μ_src),
  ``mu_ref_rise = (mean_F(m_ref) − median_all(m_ref)) / IQR_all(m_ref)`` (D rewards high μ_ref),
  ``sigma_src_cluster_outlier`` = robust z-score of the highest cluster-mean s_src among all
  clusters' means (needs the k-means labels; (max − median) / (1.4826·MAD)),
  ``sigma_src_ratio_per_frame`` (N,), ``fg_fraction``, the noise floors ``sigma_src_median`` /
  ``sigma_ref_median`` (logit units) and the number of edges per frame.

Caveats, honestly:

* The thresholds should be re-measured with the checkpoint in use (``guard_calibration.py
  --checkpoint``). With random weights a panning camera over a static scene also raises the evidence
  level (0.23–0.57 measured), so on a moving robot the level stage alone keeps the reference's
  masks; the contrast stage is what can empty them there, once calibrated on real weights.
* F is chosen *because* it scores high, so every statistic is positively biased even in a static
  window (a selection effect): a static window gives ``sigma_src_ratio`` somewhat above 1, not 1.
* The fixtures' networks have random weights: their attention carries no motion information, so their
  statistics (measured in the tests only to pin behaviour) say nothing about where τ_guard lies.
* Edge-of-window frames have fewer edges (K_n = 2 or 3): their σ is noisier; the median-based floor
  and the window-level mean over F dampen this, the per-frame ratios show it.

Use it after pass 1: a window judged static skips pass 2 entirely — pass 2 with an empty mask is
exactly pass 1 (every query static, no key dynamic: nothing is re-weighted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Union

import numpy as np
import torch

from .segmentation import to_numpy

ArrayLike = Union[np.ndarray, torch.Tensor]

DEFAULT_STATISTIC = "sigma_src_ratio"
LEVEL_THRESHOLD = 0.07  # measured, see the module docstring
DEFAULT_FLOOR = 1e-4


def _raw_channel_means(raw: Mapping[str, ArrayLike]) -> Dict[str, np.ndarray]:
    def get(name):
        for key in (name, "pass1_" + name, "pass2_" + name):
            if key in raw:
                return to_numpy(raw[key]).astype(np.float64).mean(axis=-1)
        raise KeyError(f"raw statistics need {name!r} (got {sorted(raw)[:8]})")
    return {"m_src": get("attn_k_i_mean_raw"), "s_src": get("attn_k_i_std_raw"),
            "m_ref": get("attn_k_j_mean_raw"), "s_ref": get("attn_k_j_std_raw")}


def _iqr(x: np.ndarray) -> float:
    q75, q25 = np.percentile(x, [75, 25])
    return float(q75 - q25)


def motion_statistics(raw: Mapping[str, ArrayLike], fg_tokens: ArrayLike,
                      labels: Optional[ArrayLike] = None, floor: float = DEFAULT_FLOOR) -> Dict[str, object]:
    """Guard statistics of a window (definitions in the module docstring).

    ``raw``: the four (N, h, w, C) raw statistics keyed ``attn_k_{i,j}_{mean,std}_raw`` (an
    :class:`~easi3r_ros.motion.aggregation.AggregatedAttention` ``.raw`` dict, or fixture arrays with a
    ``pass1_``/``pass2_`` prefix). ``fg_tokens``: (N, h, w) bool candidate dynamic tokens (e.g.
    ``refined > τ`` or :func:`~easi3r_ros.motion.segmentation.token_mask` of the pixel masks).
    ``labels``: optional (N, h, w) k-means labels for the cluster-outlier statistic.
    Returns floats (and one per-frame array); an empty F gives 0 for the F-based statistics.
    """
    c = _raw_channel_means(raw)
    fg = to_numpy(fg_tokens).astype(bool)
    if fg.shape != c["s_src"].shape:
        raise ValueError(f"fg_tokens {fg.shape} do not match the token grid {c['s_src'].shape}")
    s_src, s_ref, m_src, m_ref = c["s_src"], c["s_ref"], c["m_src"], c["m_ref"]
    med_s, med_r = float(np.median(s_src)), float(np.median(s_ref))
    out: Dict[str, object] = {
        "evidence_level": float(med_s / (float(m_src.std()) + floor)),
        "sigma_src_median": med_s,
        "sigma_ref_median": med_r,
        "fg_fraction": float(fg.mean()),
    }
    if fg.any():
        out["sigma_src_ratio"] = float(s_src[fg].mean() / (med_s + floor))
        out["sigma_ref_ratio"] = float(med_r / (s_ref[fg].mean() + floor))
        out["mu_src_drop"] = float((np.median(m_src) - m_src[fg].mean()) / (_iqr(m_src) + floor))
        out["mu_ref_rise"] = float((m_ref[fg].mean() - np.median(m_ref)) / (_iqr(m_ref) + floor))
    else:
        out.update(sigma_src_ratio=0.0, sigma_ref_ratio=0.0, mu_src_drop=0.0, mu_ref_rise=0.0)
    per_frame = np.zeros(len(s_src))
    for n in range(len(s_src)):
        if fg[n].any():
            per_frame[n] = s_src[n][fg[n]].mean() / (med_s + floor)
    out["sigma_src_ratio_per_frame"] = per_frame
    if labels is not None:
        lab = to_numpy(labels).astype(np.int64).reshape(-1)
        flat = s_src.reshape(-1)
        if lab.shape != flat.shape:
            raise ValueError("labels do not match the token grid")
        means = np.array([flat[lab == k].mean() for k in np.unique(lab)])
        mad = 1.4826 * float(np.median(np.abs(means - np.median(means))))
        out["sigma_src_cluster_outlier"] = float((means.max() - np.median(means)) / (mad + floor))
    return out


def motion_score(raw: Mapping[str, ArrayLike], fg_tokens: ArrayLike, statistic: str = DEFAULT_STATISTIC,
                 labels: Optional[ArrayLike] = None, floor: float = DEFAULT_FLOOR) -> float:
    """One guard statistic (default ``sigma_src_ratio``) of a window as a float."""
    stats = motion_statistics(raw, fg_tokens, labels=labels, floor=floor)
    if statistic not in stats or isinstance(stats[statistic], np.ndarray):
        raise ValueError(f"unknown guard statistic {statistic!r}; choose one of "
                         f"{[k for k, v in stats.items() if not isinstance(v, np.ndarray)]}")
    return float(stats[statistic])


@dataclass
class GuardDecision:
    moving: bool
    score: float                      # the evidence level
    contrast: float                   # the σ contrast (sigma_src_ratio)
    level_threshold: Optional[float]
    contrast_threshold: Optional[float]


@dataclass
class MotionGuard:
    """Decides whether anything moves in a window (see the module docstring).

    moving = evidence_level >= level_threshold (when set) and sigma_src_ratio >= contrast_threshold
    (when set). Both None: disabled, every window moves (reference preset).
    """

    level_threshold: Optional[float] = None
    contrast_threshold: Optional[float] = None
    floor: float = DEFAULT_FLOOR

    @property
    def enabled(self) -> bool:
        return self.level_threshold is not None or self.contrast_threshold is not None

    def decide(self, raw: Mapping[str, ArrayLike], fg_tokens: ArrayLike,
               labels: Optional[ArrayLike] = None) -> GuardDecision:
        return self.judge(motion_statistics(raw, fg_tokens, labels=labels, floor=self.floor))

    def judge(self, stats: Mapping[str, object]) -> GuardDecision:
        """The decision from statistics already computed by :func:`motion_statistics` (with ``self.floor``)."""
        level, contrast = float(stats["evidence_level"]), float(stats["sigma_src_ratio"])
        moving = ((self.level_threshold is None or level >= self.level_threshold)
                  and (self.contrast_threshold is None or contrast >= self.contrast_threshold))
        return GuardDecision(moving, level, contrast, self.level_threshold, self.contrast_threshold)

    @staticmethod
    def apply(masks: np.ndarray, decision: GuardDecision) -> np.ndarray:
        """The masks unchanged when moving, all-False (same shape) otherwise."""
        return masks if decision.moving else np.zeros_like(masks, dtype=bool)
