"""Held-out checks of a pointmap network, in the order issue 11 asks for them, each against a baseline.

(a) geometry: view-2 pointmap error (the loss's scale-normalised ``l``, mean over valid pixels) against
    "ignore the camera motion" (view 2's own-frame points, as if camera 2 were camera 1) and an "average
    room" (a fixed per-pixel mean pointmap, no network); view-1 depth abs-rel and delta<1.25 after median
    scaling.
(b) confidence: mean C where the geometry is right (small l) against where it is wrong; C can rise above 1
    only where ``l < alpha`` (the loss's optimum is C = alpha / l).
(c) correspondence: per decoder layer and head of branch 1, how often the cross-attention's argmax over
    view-2 tokens is the true match of a view-1 token (exactly, or within one token), against the "same
    position" baseline (the true match is the token at the same index).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch

from ..eval.depth import median_scaled_errors
from .correspondence import CrossAttentionCapture, token_matches
from .loss import LossWeights, confidence_loss, normalise_pair, pointmap_errors

LOW_ERR = 0.1   # l below this: "geometry right" (the optimal confidence alpha/l is then >= 2 for alpha 0.2)


def points_in_camera2(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """GT view-2 points (given in camera 1) moved to camera 2's own frame: the "ignore the motion" prediction."""
    cam1_to_cam2 = torch.linalg.solve(batch["cam2_to_world"].double(), batch["cam1_to_world"].double())
    rot, trans = cam1_to_cam2[:, None, :3, :3], cam1_to_cam2[:, None, None, :3, 3]
    pts = batch["pts2"].double()
    return (torch.einsum("bhij,bhwj->bhwi", rot, pts) + trans).float()


@torch.no_grad()
def average_room(batches: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Per-pixel mean of the scale-normalised GT pointmaps (both in camera 1) of training pairs: a no-network
    prediction that knows only what rooms look like on average. Returns ``{"pts1", "pts2"}`` (H, W, 3)."""
    sums, counts = [None, None], [None, None]
    for batch in batches:
        g1, g2 = normalise_pair(batch["pts1"].float(), batch["pts2"].float(), batch["valid1"], batch["valid2"])
        for k, (g, v) in enumerate(((g1, batch["valid1"]), (g2, batch["valid2"]))):
            s = torch.where(v[..., None].bool(), g, 0.0).sum(0)
            c = v.float().sum(0)
            sums[k] = s if sums[k] is None else sums[k] + s
            counts[k] = c if counts[k] is None else counts[k] + c
    room = [s / c.clamp(min=1)[..., None] for s, c in zip(sums, counts)]
    # never-hit pixels: the view's mean point, so the baseline stays a plausible room everywhere
    for k in range(2):
        empty = counts[k] == 0
        if empty.any():
            room[k][empty] = room[k][~empty].mean(0)
    return {"pts1": room[0], "pts2": room[1]}


def depth_scores(pred_z: torch.Tensor, gt_z: torch.Tensor, valid: torch.Tensor) -> Dict[str, List[float]]:
    """Per-image abs-rel and delta<1.25 of predicted depth (B,H,W) after median scaling, over valid pixels,
    as the benchmark computes them (:func:`easi3r_ros.eval.depth.median_scaled_errors`)."""
    gt = torch.where(valid.bool(), gt_z.float(), 0.0).cpu().numpy()
    pred = pred_z.float().cpu().numpy()
    scores = [median_scaled_errors(p, g) for p, g in zip(pred, gt)]
    scores = [s for s in scores if s["valid"]]
    return {"abs_rel": [s["abs_rel"] for s in scores], "delta": [s["delta_1_25"] for s in scores]}


class _Mean:
    """Running sum / count of named values."""

    def __init__(self):
        self.sum: Dict[str, float] = {}
        self.n: Dict[str, float] = {}

    def add(self, name: str, total: float, count: float) -> None:
        self.sum[name] = self.sum.get(name, 0.0) + float(total)
        self.n[name] = self.n.get(name, 0.0) + float(count)

    def get(self, name: str) -> float:
        return self.sum[name] / self.n[name] if self.n.get(name) else float("nan")


def _view_means(acc: _Mean, prefix: str, err1, err2, v1, v2) -> None:
    acc.add(f"{prefix}1", err1[v1].sum().item(), v1.sum().item())
    acc.add(f"{prefix}2", err2[v2].sum().item(), v2.sum().item())


def _grid_distance(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """Chebyshev distance between row-major token indices on a grid of ``width`` columns."""
    return torch.maximum((a // width - b // width).abs(), (a % width - b % width).abs())


@torch.no_grad()
def evaluate(net, batches: Iterable[Dict[str, torch.Tensor]], *, room: Optional[Dict[str, torch.Tensor]] = None,
             weights: LossWeights = LossWeights(), precision: str = "fp32",
             attention: bool = True) -> Dict[str, object]:
    """The diagnostics over held-out batches (dicts of ``render_static_pairs``, on the network's device).

    ``room``: an :func:`average_room` for that baseline (skipped when None). Returns a JSON-ready dict.
    """
    was_training = net.training
    net.eval()
    device = net.device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    acc = _Mean()
    depth = {"net": {"abs_rel": [], "delta": []}, "room": {"abs_rel": [], "delta": []}}
    errs, confs = [], []
    heads = net.cfg.dec_num_heads
    layers = net.cfg.dec_depth
    hit = torch.zeros(layers, heads, dtype=torch.float64)
    near = torch.zeros(layers, heads, dtype=torch.float64)
    same = {"exact": 0.0, "within1": 0.0}
    n_tokens = 0.0
    pairs = 0
    patch = net.cfg.patch_size
    capture = CrossAttentionCapture(net) if attention else contextlib.nullcontext()
    try:
        with capture:
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast:
                    pred = net(batch["img1"], batch["img2"])
                    logits = capture.logits() if attention else None
                b = batch["img1"].shape[0]
                pairs += b
                _, parts = confidence_loss(pred, batch, weights)
                for name, value in parts.items():
                    acc.add(f"loss_{name}", value.item() * b, b)
                v1, v2 = batch["valid1"].bool(), batch["valid2"].bool()
                e1, e2 = pointmap_errors(pred.pts1, pred.pts2, batch["pts1"], batch["pts2"], v1, v2)
                _view_means(acc, "net", e1, e2, v1, v2)
                errs.append(torch.cat((e1[v1], e2[v2])).cpu())
                confs.append(torch.cat((pred.conf1.float()[v1], pred.conf2.float()[v2])).cpu())
                still1, still2 = pointmap_errors(batch["pts1"], points_in_camera2(batch), batch["pts1"],
                                                 batch["pts2"], v1, v2)
                _view_means(acc, "still", still1, still2, v1, v2)
                for name, value in depth_scores(pred.pts1[..., 2], batch["depth1"], v1).items():
                    depth["net"][name] += value
                if room is not None:
                    r1 = room["pts1"].to(device).expand_as(batch["pts1"])
                    r2 = room["pts2"].to(device).expand_as(batch["pts2"])
                    re1, re2 = pointmap_errors(r1, r2, batch["pts1"], batch["pts2"], v1, v2)
                    _view_means(acc, "room", re1, re2, v1, v2)
                    for name, value in depth_scores(r1[..., 2], batch["depth1"], v1).items():
                        depth["room"][name] += value
                if attention:
                    target, ok = token_matches(batch, patch)
                    width = batch["img1"].shape[-1] // patch
                    n_tokens += ok.sum().item()
                    query = torch.arange(target.shape[1], device=device).expand_as(target)
                    same["exact"] += ((target == query) & ok).sum().item()
                    same["within1"] += ((_grid_distance(target, query, width) <= 1) & ok).sum().item()
                    for layer, lg in enumerate(logits):
                        best = lg.float().argmax(-1)                                   # (B, heads, N)
                        t = target[:, None, :].expand_as(best)
                        m = ok[:, None, :].expand_as(best)
                        hit[layer] += ((best == t) & m).sum(dim=(0, 2)).double().cpu()
                        near[layer] += ((_grid_distance(best, t, width) <= 1) & m).sum(dim=(0, 2)).double().cpu()
                    capture.clear()
    finally:
        net.train(was_training)
    return _report(acc, depth, errs, confs, hit, near, same, n_tokens, pairs, weights, room is not None, attention)


def _report(acc, depth, errs, confs, hit, near, same, n_tokens, pairs, weights, has_room, attention) -> dict:
    err = torch.cat(errs).numpy() if errs else np.zeros(0)
    conf = torch.cat(confs).numpy() if confs else np.zeros(0)
    report: Dict[str, object] = {"pairs": pairs}
    report["loss"] = {k[len("loss_"):]: acc.get(k) for k in acc.sum if k.startswith("loss_")}
    geometry = {"view1_err": acc.get("net1"), "view2_err": acc.get("net2"),
                "view2_err_ignore_motion": acc.get("still2")}
    if has_room:
        geometry.update(view1_err_average_room=acc.get("room1"), view2_err_average_room=acc.get("room2"))
    geometry["beats_ignore_motion"] = bool(geometry["view2_err"] < geometry["view2_err_ignore_motion"])
    report["geometry"] = geometry
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    report["depth"] = {"abs_rel": mean(depth["net"]["abs_rel"]), "delta_1.25": mean(depth["net"]["delta"])}
    if has_room:
        report["depth"].update(abs_rel_average_room=mean(depth["room"]["abs_rel"]),
                               delta_average_room=mean(depth["room"]["delta"]))
    report["confidence"] = _confidence_stats(err, conf, weights.alpha)
    if attention:
        n = max(n_tokens, 1.0)
        exact, within = (hit / n).numpy(), (near / n).numpy()
        layer, head = np.unravel_index(int(np.argmax(exact)), exact.shape)
        report["attention"] = {
            "tokens": int(n_tokens),
            "match_exact": exact.round(4).tolist(), "match_within1": within.round(4).tolist(),
            "best": {"layer": int(layer), "head": int(head), "exact": float(exact[layer, head]),
                     "within1": float(within[layer, head])},
            "best_within1": float(within.max()),
            "same_position": {"exact": same["exact"] / n, "within1": same["within1"] / n},
        }
    return report


def _confidence_stats(err: np.ndarray, conf: np.ndarray, alpha: float) -> Dict[str, float]:
    if err.size == 0:
        return {}
    from scipy.stats import spearmanr

    low, high = err < LOW_ERR, err >= alpha
    q1, q3 = np.quantile(err, [0.25, 0.75])
    rng = np.random.default_rng(0)  # the rank correlation on a fixed subsample: it sorts
    pick = rng.choice(err.size, size=min(err.size, 200_000), replace=False)
    rho = spearmanr(conf[pick], err[pick]).statistic if np.ptp(conf[pick]) > 0 else float("nan")
    f = lambda m: float(conf[m].mean()) if m.any() else float("nan")  # noqa: E731
    return {"mean": float(conf.mean()), "max": float(conf.max()),
            f"mean_where_err_lt_{LOW_ERR:g}": f(low), f"mean_where_err_ge_{alpha:g}": f(high),
            f"frac_err_lt_{LOW_ERR:g}": float(low.mean()), "frac_conf_gt_1.1": float((conf > 1.1).mean()),
            "mean_best_quartile": f(err <= q1), "mean_worst_quartile": f(err >= q3),
            "spearman_conf_vs_err": float(rho)}


def format_report(report: Dict[str, object]) -> str:
    """A short human-readable table of :func:`evaluate`'s dict."""
    g, d, c = report["geometry"], report["depth"], report["confidence"]
    na = float("nan")
    room = lambda key: f"{g.get(key, d.get(key, na)):13.4f}"  # noqa: E731
    lines = [f"held-out pairs: {report['pairs']}   loss {report['loss'].get('loss', na):.4f}",
             f"{'check':30s} {'network':>9s} {'ignore-motion':>14s} {'average-room':>13s}",
             f"{'(a) view-2 pointmap err (l)':30s} {g['view2_err']:9.4f} {g['view2_err_ignore_motion']:14.4f} "
             f"{room('view2_err_average_room')}",
             f"{'    view-1 pointmap err (l)':30s} {g['view1_err']:9.4f} {'(exact)':>14s} "
             f"{room('view1_err_average_room')}",
             f"{'    view-1 depth abs-rel':30s} {d['abs_rel']:9.4g} {'(exact)':>14s} {room('abs_rel_average_room')}",
             f"{'    view-1 depth delta<1.25':30s} {d['delta_1.25']:9.4f} {'(exact)':>14s} "
             f"{room('delta_average_room')}"]
    if c:
        lines.append(f"(b) confidence: mean {c['mean']:.3f}, max {c['max']:.2f}; where l<{LOW_ERR:g}: "
                     f"{c[f'mean_where_err_lt_{LOW_ERR:g}']:.3f} ({100 * c[f'frac_err_lt_{LOW_ERR:g}']:.1f}% of "
                     f"pixels), where l>=alpha: {c[next(k for k in c if k.startswith('mean_where_err_ge'))]:.3f}; "
                     f"best/worst quartile {c['mean_best_quartile']:.3f}/{c['mean_worst_quartile']:.3f}; "
                     f"spearman(C, l) {c['spearman_conf_vs_err']:.3f}")
    a = report.get("attention")
    if a:
        best, same = a["best"], a["same_position"]
        lines.append(f"(c) cross-attention match (exact / within 1 token), {a['tokens']} tokens: best head "
                     f"L{best['layer']}H{best['head']} {best['exact']:.3f} / {best['within1']:.3f} "
                     f"(best within-1 {a['best_within1']:.3f}); same position {same['exact']:.3f} / "
                     f"{same['within1']:.3f}")
        for layer, row in enumerate(a["match_exact"]):
            lines.append(f"    layer {layer}: " + " ".join(f"{x:.3f}" for x in row))
    return "\n".join(lines)
