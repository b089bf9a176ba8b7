"""DUSt3R's confidence-aware regression of scale-normalised pointmaps.

Both pointmaps of a pair are expressed in camera 1's optical frame (x right, y down, z forward, metres for
the ground truth, arbitrary units for the network). Prediction and ground truth are each divided by their
own mean distance to the origin over the valid pixels of *both* views, so the loss is blind to global scale
(the network cannot know it from two images). Per valid pixel ``l = |X_hat / z_hat - X / z|`` and the loss
is the valid-pixel mean of ``C * l - alpha * log C``: for a fixed error the best confidence is
``C = alpha / l``, so C (>= 1 by the network's activation) can only rise above 1 where ``l < alpha``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch

EPS = 1e-8


def pair_scale(pts1: torch.Tensor, pts2: torch.Tensor, valid1: torch.Tensor, valid2: torch.Tensor) -> torch.Tensor:
    """(B,) mean distance to the origin of the valid points of both views (B,H,W,3) / masks (B,H,W).

    Invalid pixels may hold anything (inf, NaN): they are selected out, not multiplied by zero.
    """
    v1, v2 = valid1.bool(), valid2.bool()
    zero = pts1.new_zeros(())
    dist = (torch.where(v1, pts1.norm(dim=-1), zero).flatten(1).sum(1)
            + torch.where(v2, pts2.norm(dim=-1), zero).flatten(1).sum(1))
    count = v1.flatten(1).sum(1) + v2.flatten(1).sum(1)
    return (dist / count.clamp(min=1)).clamp(min=EPS)


def normalise_pair(pts1: torch.Tensor, pts2: torch.Tensor, valid1: torch.Tensor,
                   valid2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both pointmaps divided by :func:`pair_scale` (computed over the given valid pixels)."""
    scale = pair_scale(pts1, pts2, valid1, valid2)[:, None, None, None]
    return pts1 / scale, pts2 / scale


def pointmap_errors(pred1: torch.Tensor, pred2: torch.Tensor, gt1: torch.Tensor, gt2: torch.Tensor,
                    valid1: torch.Tensor, valid2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``l`` (B,H,W) of each view (0 at invalid pixels), prediction and ground truth each normalised
    over the valid pixels of both views.

    Computed in float32 whatever the prediction's dtype (bf16 norms lose the small errors that matter).
    """
    p1, p2 = normalise_pair(pred1.float(), pred2.float(), valid1, valid2)
    g1, g2 = normalise_pair(gt1.float(), gt2.float(), valid1, valid2)
    zero = p1.new_zeros(())
    return (torch.where(valid1.bool(), (p1 - g1).norm(dim=-1), zero),
            torch.where(valid2.bool(), (p2 - g2).norm(dim=-1), zero))


@dataclass(frozen=True)
class LossWeights:
    alpha: float = 0.2          # weight of -log C (DUSt3R's value)
    regression: float = 0.0     # weight of an extra plain mean(l) term


def confidence_loss(pred, batch: Dict[str, torch.Tensor],
                    weights: LossWeights = LossWeights()) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """(scalar loss, parts) for a :class:`PairPrediction` against a batch of ``render_static_pairs``.

    Parts are detached 0-d tensors (no device sync until the caller reads them): ``loss``; ``conf_term``
    mean C*l; ``logc_term`` mean -alpha*log C; ``regr`` mean l over both views, ``regr1`` / ``regr2`` per
    view; ``conf`` mean C; ``regr_term`` the weighted plain term. Means run over the valid pixels of the batch.
    """
    v1, v2 = batch["valid1"].float(), batch["valid2"].float()
    err1, err2 = pointmap_errors(pred.pts1, pred.pts2, batch["pts1"], batch["pts2"], v1, v2)
    conf1, conf2 = pred.conf1.float(), pred.conf2.float()
    n1, n2 = v1.sum().clamp(min=1), v2.sum().clamp(min=1)
    n = v1.sum() + v2.sum()
    if not n.is_cuda and n.item() == 0:  # on CUDA the zero-valid case shows up as a zero loss instead of a sync
        raise ValueError("the batch has no valid pixel: nothing to regress")
    n = n.clamp(min=1)

    def mean(a, b):  # valid-pixel mean over both views
        return ((a * v1).sum() + (b * v2).sum()) / n

    conf_term = mean(conf1 * err1, conf2 * err2)
    logc_term = -weights.alpha * mean(conf1.log(), conf2.log())
    regr = mean(err1, err2)
    loss = conf_term + logc_term + weights.regression * regr
    parts = {"loss": loss, "conf_term": conf_term, "logc_term": logc_term, "regr": regr,
             "regr1": (err1 * v1).sum() / n1, "regr2": (err2 * v2).sum() / n2,
             "conf": mean(conf1, conf2), "regr_term": weights.regression * regr}
    return loss, {k: v.detach() for k, v in parts.items()}
