"""``easi3r eval bench``: the ground-truth benchmark — masks, poses and depth on held-out synthetic sequences.

The set is fixed and generated on the fly (nothing committed): dynamic sequences of the ``heldout`` split
(scene seeds and textures disjoint from training) with 1–3 independently moving solids, seeds 0, 1, 2, …
(a seed the renderer cannot populate is skipped and recorded), and the static-only twins (same room and
camera path, nothing moving) of the first few. Every sequence is one window of the window pipeline.

Rows, all from one run:

* ``easi3r``        the evaluated model with Easi3R: pass-2 masks, poses, depth;
* ``easi3r_nog``    the same pass-2 masks with the "nothing moves" guard off (its threshold belongs to one
                    model: this row shows the masks themselves while it is uncalibrated);
* ``easi3r_pass1``  its pass-1 masks (same guard decision);
* ``no_reweight``   the same model without re-weighting: pass 2 = plain DUSt3R pointmaps and alignment;
* ``random``        random weights of the same architecture (recipe v1, seed 0), full Easi3R;
* ``flow``          the learning-free baseline (:mod:`easi3r_ros.motion.flow_baseline`);
* ``all_static`` / ``all_dynamic``  empty masks / every pixel moving;
* ``no_network``    a still camera (at its best similarity) and a constant depth.

Resolution: masks and depth are scored at network resolution; the ground truth (and the flow baseline's
camera-resolution masks) is mapped through the same resize and centre crop as the frames, nearest neighbour
(:func:`easi3r_ros.eval.depth.to_network_resolution`). Mask metrics (DAVIS J, JR, F; :mod:`.masks`) are
averaged over frames per sequence, then over the dynamic sequences; static sequences count towards "static
empty" (the share of static-only sequences whose masks are empty in every frame). Poses: ATE / RPE through
evo (:mod:`.trajectory`), Sim(3)-aligned, in metres and degrees. Depth: abs-rel and δ<1.25 after per-frame
median scaling (:mod:`.depth`). Pose and depth columns are means over the dynamic sequences; every number
per sequence is in ``quality.json``.

The guard: each sequence's pass-1 evidence level (``WindowResult.motion_score``) for the evaluated model, on
static-only vs dynamic sequences, gives the threshold that separates them best (least balanced error; ties:
the widest gap, geometric midpoint) and both error rates there and at the threshold in use; it is written
as ``calibration.json`` (the format of :mod:`easi3r_ros.model.default`) for the model's folder.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io.writers import json_default
from .depth import depth_errors, to_network_resolution
from .masks import davis_scores, load_label_png, static_dynamic_scores

ROWS: Dict[str, str] = {
    "easi3r": "Easi3R pass-2 masks (model)",
    "easi3r_nog": "Easi3R pass-2 masks, guard off (model)",
    "easi3r_pass1": "Easi3R pass-1 masks (model)",
    "no_reweight": "no re-weighting: plain DUSt3R (model)",
    "random": "random weights, same architecture",
    "flow": "flow baseline (DIS + RANSAC F/H residual)",
    "all_static": "all static (empty masks)",
    "all_dynamic": "all dynamic (every pixel)",
    "no_network": "no network: still camera, constant depth",
}
MASK_KEYS = ("JM", "JR", "FM")
POSE_KEYS = ("ate_rmse", "rpe_trans_rmse", "rpe_rot_deg_rmse")
DEPTH_KEYS = ("abs_rel", "delta_1_25")
REAL_CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "labelme_truck"


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs (defaults: the full benchmark)."""

    sequences: int = 20              # dynamic sequences (n_moving cycles 1, 2, 3)
    static: int = 4                  # static-only twins of the first dynamic sequences
    frames: int = 8                  # frames per sequence = one window (the node's default window_size)
    hw: Tuple[int, int] = (240, 320)  # rendered camera resolution (H, W)
    niter: Optional[int] = None      # global-alignment iterations (None: the preset's, as the node's ga_iters 0)
    preset: str = "robot"            # window-pipeline preset (robot: capped scene graph + guard)
    first_seed: int = 0
    device: str = "auto"
    montage_sequences: int = 3
    real_clip: Optional[str] = str(REAL_CLIP)  # labelme_truck folder (None or missing: skipped)


QUICK = BenchConfig(sequences=2, static=1, frames=5, hw=(120, 160), niter=10, montage_sequences=2)
# The shipped model's regression guard (its card states these figures; test/test_default_model.py re-measures
# them): two short held-out sequences, seeds past the benchmark's first ones.
REGRESSION = BenchConfig(sequences=2, static=0, frames=6, niter=30, first_seed=100, montage_sequences=0,
                         real_clip=None)


def regression_figures(checkpoint: Path, cfg: BenchConfig = REGRESSION) -> Dict[str, float]:
    """JM of the pass-2 masks (guard off) and depth abs-rel of ``checkpoint``, and random weights' abs-rel,
    on the :data:`REGRESSION` sequences."""
    results = run_bench(resolve_model(checkpoint, None), cfg)
    rows = results["summary"]
    return {"JM": rows["easi3r_nog"]["JM"], "abs_rel": rows["easi3r"]["abs_rel"],
            "random_abs_rel": rows["random"]["abs_rel"], "flow_JM": rows["flow"]["JM"]}


# ------------------------------------------------------------------------------------ the held-out set
def heldout_sequences(cfg: BenchConfig, skipped: Optional[List[int]] = None):
    """Yield ("dynamic"|"static", SyntheticSequence): the dynamic ones first, then the static twins."""
    from ..synthetic import make_sequence

    seeds, seed, failed = [], cfg.first_seed, 0
    while len(seeds) < cfg.sequences:
        n_moving = 1 + len(seeds) % 3
        try:
            seq = make_sequence(seed, n_frames=cfg.frames, hw=cfg.hw, n_moving=n_moving, split="heldout")
        except RuntimeError as exc:  # the renderer could not keep the movers in view for this seed
            failed += 1
            if failed > 5 * cfg.sequences:
                raise RuntimeError(f"{failed} seeds failed to render (last: {exc})") from None
            if skipped is not None:
                skipped.append(seed)
            seed += 1
            continue
        seeds.append(seed)
        seed += 1
        yield "dynamic", seq
    for s in seeds[:cfg.static]:
        yield "static", make_sequence(s, n_frames=cfg.frames, hw=cfg.hw, n_moving=0, split="heldout")


# ------------------------------------------------------------------------------------ scoring
def mask_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> Dict[str, object]:
    """JM, JR, FM and per-frame J of predicted vs ground-truth masks (same resolution), plus the flagged share."""
    s = davis_scores(list(preds), list(gts))
    return {"JM": s["JM"], "JR": s["JR"], "FM": s["FM"], "J": [float(j) for j in s["J"]],
            "flagged": float(np.mean([np.mean(p) for p in preds])),
            "empty": bool(not any(np.any(p) for p in preds))}


def pose_metrics(est_c2w: np.ndarray, gt_c2w: np.ndarray) -> Dict[str, float]:
    """ATE / RPE (evo, Sim(3)); NaN when the estimate admits no alignment (e.g. non-finite poses)."""
    from .trajectory import trajectory_errors

    try:
        out = trajectory_errors(est_c2w, gt_c2w)
    except Exception as exc:  # evo raises its own exception types for degenerate input
        return {k: float("nan") for k in POSE_KEYS} | {"error": f"{type(exc).__name__}: {exc}"}
    return {k: out[k] for k in POSE_KEYS}


@dataclass
class RowOutput:
    """One row's prediction on one sequence (None: the row does not predict it)."""

    masks: Optional[List[np.ndarray]] = None
    poses: Optional[np.ndarray] = None
    depth: Optional[List[np.ndarray]] = None
    trajectory: Optional[Dict[str, float]] = None  # metrics given directly (the still camera)
    seconds: float = 0.0


def score(out: RowOutput, gt_masks, gt_poses, gt_depth) -> Dict[str, object]:
    res: Dict[str, object] = {"seconds": out.seconds}
    if out.masks is not None:
        res.update(mask_metrics(out.masks, gt_masks))
    if out.trajectory is not None:
        res.update(out.trajectory)
    elif out.poses is not None:
        res.update(pose_metrics(out.poses, gt_poses))
    if out.depth is not None:
        res.update({k: v for k, v in depth_errors(out.depth, gt_depth).items() if k in DEPTH_KEYS})
    return res


def calibrate_threshold(static_scores: Sequence[float], moving_scores: Sequence[float],
                        default: Optional[float] = None) -> Dict[str, object]:
    """The evidence-level threshold separating static (score < t) from moving (≥ t) windows best.

    Candidates: the geometric midpoints between consecutive observed scores (arithmetic where one is ≤ 0),
    plus "every window moves" (the smallest score) and "none moves" (just above the largest). The winner
    has the least balanced error (mean of the two error rates); ties go to the widest gap.
    """
    s = np.asarray(static_scores, np.float64)
    m = np.asarray(moving_scores, np.float64)
    s, m = s[np.isfinite(s)], m[np.isfinite(m)]

    def rates(t):
        return (float(np.mean(s >= t)) if len(s) else float("nan"),
                float(np.mean(m < t)) if len(m) else float("nan"))

    out: Dict[str, object] = {"static_scores": s.tolist(), "moving_scores": m.tolist()}
    values = np.unique(np.concatenate([s, m]))
    if len(values) == 0:
        return out | {"threshold": float("nan")}
    cands = [(float(values[0]), 0.0), (float(np.nextafter(values[-1], np.inf)), 0.0)]
    for a, b in zip(values[:-1], values[1:]):
        mid = float(np.sqrt(a * b)) if a > 0 else float((a + b) / 2)
        cands.append((mid, float(b - a)))
    best = min(cands, key=lambda c: (np.nansum(rates(c[0])) / 2, -c[1]))
    fp, fn = rates(best[0])
    out.update(threshold=best[0], gap=best[1], static_called_moving=fp, moving_called_static=fn,
               separable=bool(len(s) and len(m) and s.max() < m.min()))
    if default is not None:
        dfp, dfn = rates(default)
        out["at_default"] = {"threshold": float(default), "static_called_moving": dfp, "moving_called_static": dfn}
    return out


def summarise(per_sequence: List[Dict[str, object]]) -> Dict[str, Dict[str, float]]:
    """Per row: mask metrics over dynamic sequences, static-empty share, pose/depth means, seconds."""
    summary: Dict[str, Dict[str, float]] = {}
    for row in ROWS:
        dyn = [s["rows"][row] for s in per_sequence if s["kind"] == "dynamic" and row in s["rows"]]
        sta = [s["rows"][row] for s in per_sequence if s["kind"] == "static" and row in s["rows"]]
        if not dyn and not sta:
            continue
        r: Dict[str, float] = {}
        for key in MASK_KEYS + POSE_KEYS + DEPTH_KEYS:
            vals = [d[key] for d in dyn if key in d]
            if vals:
                r[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        if any("empty" in d for d in sta):
            r["static_empty"] = float(np.mean([d["empty"] for d in sta]))
            r["static_flagged"] = float(np.mean([d["flagged"] for d in sta]))
        r["seconds"] = float(np.mean([d["seconds"] for d in dyn + sta]))
        summary[row] = r
    return summary


# ------------------------------------------------------------------------------------ running the rows
@dataclass
class Evaluated:
    """The evaluated network and where it came from."""

    network: object
    model_string: str
    source: str                      # checkpoint path, or "random weights (seed N)"
    sha256: Optional[str] = None
    checkpoint: Optional[Path] = None
    random_weights: bool = False
    extras: Dict[str, object] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    target = path / "model.safetensors" if path.is_dir() else path
    h = hashlib.sha256()
    with open(target, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(checkpoint: Optional[Path], random_weights: Optional[str], weights_seed: int = 0,
                  trust_checkpoint: bool = False) -> Evaluated:
    """--checkpoint, else --random-weights, else the shipped default model; none: a clear error."""
    from ..model.checkpoint import load_checkpoint, random_network

    if checkpoint is None and random_weights is None:
        from ..model.default import default_model_path

        checkpoint = default_model_path()
        if checkpoint is None:
            raise ValueError("no default model in this installation (easi3r_ros/weights/easi3r_tiny is empty): "
                             "pass --checkpoint PATH, or --random-weights MODEL to test the benchmark itself")
    if checkpoint is not None:
        net, info = load_checkpoint(checkpoint, allow_pickle=trust_checkpoint)
        return Evaluated(net, info.model_string, str(checkpoint), _sha256(Path(checkpoint))[:12], Path(checkpoint))
    net, text = random_network(random_weights, weights_seed)
    return Evaluated(net, text, f"random weights (recipe v1, seed {weights_seed})", random_weights=True)


class BenchRunner:
    """Runs every row on one sequence (the pipelines are built once and reused)."""

    def __init__(self, model: Evaluated, cfg: BenchConfig, flow_threshold: Optional[float] = None):
        from ..model.checkpoint import random_network
        from ..model.default import calibrated_overrides
        from ..pipeline.window import WindowPipeline, preset_config

        self.cfg = cfg
        overrides = calibrated_overrides(model.checkpoint) if model.checkpoint is not None else {}
        self.window_config = preset_config(cfg.preset, niter=cfg.niter, device=cfg.device, keep_arrays=True,
                                           **overrides)
        self.pipe = WindowPipeline(model.network, self.window_config)
        self.pipe_plain = WindowPipeline(model.network, replace(self.window_config, reweight=False))
        self.pipe_random = None
        if not model.random_weights:
            rnet, _ = random_network(model.model_string, 0)
            self.pipe_random = WindowPipeline(rnet, self.window_config)
        self.image_size = self.pipe.image_size
        self.flow_threshold = flow_threshold
        self._calls = 0

    @property
    def guard_level(self) -> Optional[float]:
        return self.window_config.motion_guard_level if self.window_config.motion_guard else None

    def _run(self, pipe, frames, stamps):
        self._calls += 1
        ids = [(self._calls, k) for k in range(len(frames))]  # fresh ids: nothing reused across runs
        start = time.perf_counter()
        res = pipe.run(frames, list(map(int, stamps)), ids)
        pipe.reset()
        return res, time.perf_counter() - start

    def rows(self, frames: List[np.ndarray], stamps) -> Tuple[Dict[str, RowOutput], Dict[str, object]]:
        """Every row's prediction on one sequence plus window facts (guard score, crop, network inputs)."""
        from ..model.preprocess import preprocess_image
        from ..motion.flow_baseline import DEFAULT_THRESHOLD_PX, flow_motion_masks

        crop = preprocess_image(frames[0], self.image_size)[1]
        out: Dict[str, RowOutput] = {}
        res, sec = self._run(self.pipe, frames, stamps)
        poses = np.stack([f.cam_to_world for f in res.frames])
        depth = [f.depth for f in res.frames]
        out["easi3r"] = RowOutput([f.mask for f in res.frames], poses, depth, seconds=sec)
        out["easi3r_nog"] = RowOutput(list(res.arrays["pass2_dynamic_masks"].astype(bool)), seconds=sec)
        pass1 = res.arrays["pass1_dynamic_masks"].astype(bool)
        out["easi3r_pass1"] = RowOutput(list(pass1 if res.moving else np.zeros_like(pass1)), seconds=sec)
        if res.moving and pass1.any():
            plain, psec = self._run(self.pipe_plain, frames, stamps)
            out["no_reweight"] = RowOutput(None, np.stack([f.cam_to_world for f in plain.frames]),
                                           [f.depth for f in plain.frames], seconds=psec)
        else:  # nothing was re-weighted: pass 2 already was plain DUSt3R (identical result)
            out["no_reweight"] = RowOutput(None, poses, depth, seconds=sec)
        if self.pipe_random is not None:
            rres, rsec = self._run(self.pipe_random, frames, stamps)
            out["random"] = RowOutput([f.mask for f in rres.frames], np.stack([f.cam_to_world for f in rres.frames]),
                                      [f.depth for f in rres.frames], seconds=rsec)
        start = time.perf_counter()
        flow = flow_motion_masks(frames, self.flow_threshold or DEFAULT_THRESHOLD_PX)
        out["flow"] = RowOutput([to_network_resolution(m, crop) for m in flow], seconds=time.perf_counter() - start)
        shape = res.frames[0].mask.shape
        out["all_static"] = RowOutput([np.zeros(shape, bool) for _ in frames])
        out["all_dynamic"] = RowOutput([np.ones(shape, bool) for _ in frames])
        out["no_network"] = RowOutput(None, None, [np.ones(shape, np.float32) for _ in frames])
        facts = {"motion_score": res.motion_score, "moving": bool(res.moving), "crop": crop,
                 "input_imgs": res.arrays["input_imgs"], "timings": dict(res.timings)}
        return out, facts


def evaluate_sequence(runner: BenchRunner, kind: str, seq) -> Tuple[Dict[str, object], Dict[str, RowOutput], dict]:
    """Score every row on one synthetic sequence (ground truth mapped to network resolution)."""
    from .trajectory import still_camera_errors

    rows, facts = runner.rows(seq.frames, seq.stamps_ns)
    crop = facts["crop"]
    gt_masks = [to_network_resolution(m, crop) for m in seq.dynamic]
    gt_depth = [to_network_resolution(d, crop) for d in seq.depth]
    rows["no_network"].trajectory = still_camera_errors(seq.cam_to_world)
    record = {"kind": kind, "seed": int(seq.seed), "n_moving": int(seq.n_moving), "frames": len(seq),
              "camera_style": getattr(seq, "camera_style", ""), "motion_score": facts["motion_score"],
              "guard_moving": facts["moving"], "timings": facts["timings"],
              "gt_dynamic_share": float(np.mean(gt_masks)),
              "rows": {name: score(out, gt_masks, seq.cam_to_world, gt_depth) for name, out in rows.items()}}
    return record, rows, {"gt_masks": gt_masks, "input_imgs": facts["input_imgs"]}


def evaluate_real_clip(runner: BenchRunner, folder: Path) -> Optional[Dict[str, object]]:
    """J of the moving truck (label 2) on ``labelme_truck``; truck recall and parked-car (label 1) false positives.

    The walking pedestrian is not labelled: every mask pays for it in J alike.
    """
    from ..model.preprocess import load_rgb, preprocess_image
    from ..motion.flow_baseline import DEFAULT_THRESHOLD_PX, flow_motion_masks

    images = sorted((folder / "images").glob("*.jpg"))
    labels_dir = folder / "masks"
    if len(images) < 3 or not labels_dir.is_dir():
        return None
    frames = [load_rgb(p) for p in images]
    labels_cam = [load_label_png(labels_dir / f"{p.stem}.png") for p in images]
    res, sec = runner._run(runner.pipe, frames, [k * 100_000_000 for k in range(len(frames))])
    crop = preprocess_image(frames[0], runner.image_size)[1]
    labels = [to_network_resolution(lab, crop) for lab in labels_cam]
    start = time.perf_counter()
    flow = [to_network_resolution(m, crop) for m in
            flow_motion_masks(frames, runner.flow_threshold or DEFAULT_THRESHOLD_PX)]
    flow_sec = time.perf_counter() - start
    pass1 = res.arrays["pass1_dynamic_masks"].astype(bool)
    preds = {"easi3r": ([f.mask for f in res.frames], sec),
             "easi3r_nog": (list(res.arrays["pass2_dynamic_masks"].astype(bool)), sec),
             "easi3r_pass1": (list(pass1 if res.moving else np.zeros_like(pass1)), sec),
             "flow": (flow, flow_sec),
             "all_dynamic": ([np.ones_like(f.mask) for f in res.frames], 0.0)}
    out: Dict[str, object] = {"folder": str(folder), "frames": len(frames), "motion_score": res.motion_score,
                              "guard_moving": bool(res.moving), "rows": {}}
    for name, (masks, seconds) in preds.items():
        d = davis_scores(masks, [lab == 2 for lab in labels])
        sd = static_dynamic_scores(masks, labels, moving_ids=(2,), static_ids=(1,))
        out["rows"][name] = {"JM": d["JM"], "JR": d["JR"], "FM": d["FM"], "truck_recall": sd["moving_recall"],
                             "car_fp_rate": sd["static_fp_rate"], "seconds": seconds}
    return out


# ------------------------------------------------------------------------------------ reports
def machine() -> Dict[str, object]:
    """The machine the numbers were measured on."""
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        memory = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2 ** 20)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def describe_machine(m: Dict[str, object]) -> str:
    """One line naming the machine of :func:`machine` (for report headers)."""
    mem = f", {m['memory_gib']} GiB RAM" if m.get("memory_gib") else ""
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['cpu']}, {m['cores']} cores{mem}{gpu}; torch {m['torch']} ({m['threads']} threads), "
            f"Python {m['python']}")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown(results: Dict[str, object]) -> str:
    """quality.md: the results table, the guard calibration and the real clip, with the machine named."""
    m, mod, st = results["machine"], results["model"], results["settings"]
    lines = [
        "# Quality benchmark: masks, poses and depth against ground truth (`easi3r eval bench`)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; "
        f"torch {m['torch']} ({m['threads']} threads), Python {m['python']}. Date: {results['date']}.", "",
        f"Model: {mod['source']}" + (f" (sha256 {mod['sha256']}…)" if mod.get("sha256") else "")
        + f"; architecture `{mod['model_string']}`.", "",
        f"Set: {st['sequences']} dynamic + {st['static']} static-only held-out synthetic sequences "
        f"(split `heldout`, seeds {st['seeds'][0] if st['seeds'] else '-'}–{st['seeds'][-1] if st['seeds'] else '-'}"
        + (f", skipped {st['skipped_seeds']}" if st["skipped_seeds"] else "")
        + f"), {st['frames']} frames of {st['hw'][0]}×{st['hw'][1]} each, one window per sequence; "
          f"preset `{st['preset']}`, {st['niter']} alignment iterations, guard level {_fmt(st['guard_level'])}.", "",
        "Masks and depth at network resolution (ground truth mapped through the same resize + centre crop, "
        "nearest). JM / JR / FM: DAVIS over the dynamic sequences; static empty: share of static-only sequences "
        "with empty masks in every frame. ATE, RPE (evo, Sim(3)-aligned; metres, degrees) and depth "
        "(median-scaled) are means over the dynamic sequences. Seconds: wall time per sequence of that row's "
        "method.", "",
        "| row | JM ↑ | JR ↑ | FM ↑ | static empty ↑ | ATE (m) ↓ | RPE trans (m) ↓ | RPE rot (°) ↓ | abs-rel ↓ "
        "| δ<1.25 ↑ | s / seq |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in results["summary"].items():
        lines.append("| " + " | ".join([ROWS[row]] + [_fmt(r.get(k)) for k in MASK_KEYS + ("static_empty",)]
                                      + [_fmt(r.get(k), 4) for k in POSE_KEYS[:2]] + [_fmt(r.get(POSE_KEYS[2]), 2)]
                                      + [_fmt(r.get(k)) for k in DEPTH_KEYS] + [_fmt(r.get("seconds"), 2)]) + " |")
    g = results["guard"]
    moving = np.asarray(g["moving_scores"], np.float64)
    spread = (f"min {_fmt(moving.min())}, median {_fmt(float(np.median(moving)))}, max {_fmt(moving.max())}"
              if len(moving) else "none")
    lines += ["", "## The \"nothing moves\" guard", "",
              f"Pass-1 evidence level of the evaluated model: static-only sequences "
              f"{', '.join(_fmt(v) for v in g['static_scores']) or 'none'}; dynamic sequences {spread}.", "",
              "| threshold | static windows called moving | moving windows called static |", "|---|---|---|"]
    if np.isfinite(g.get("threshold", float("nan"))):
        lines.append(f"| {_fmt(g['threshold'], 4)} (best on this set{', separable' if g.get('separable') else ''}) "
                     f"| {_fmt(g['static_called_moving'], 2)} | {_fmt(g['moving_called_static'], 2)} |")
    if "at_default" in g:
        d = g["at_default"]
        lines.append(f"| {_fmt(d['threshold'], 4)} (in use) | {_fmt(d['static_called_moving'], 2)} "
                     f"| {_fmt(d['moving_called_static'], 2)} |")
    lines += ["", f"The threshold belongs to this model ({mod['source']}); `calibration.json` beside this report "
                  "records it for the model's folder."]
    real = results.get("real_clip")
    if real:
        lines += ["", f"## Real clip: labelme_truck ({real['frames']} frames, static camera, moving truck)", "",
                  f"Guard: evidence level {_fmt(real['motion_score'])}, "
                  f"{'moving' if real['guard_moving'] else 'judged static (masks emptied)'}. J against the truck; "
                  "the walking pedestrian is not labelled (it costs every row alike).", "",
                  "| row | JM ↑ | JR ↑ | FM ↑ | truck recall ↑ | parked-car false positives ↓ | s |",
                  "|---|---|---|---|---|---|---|"]
        for row, r in real["rows"].items():
            lines.append("| " + " | ".join([ROWS[row], _fmt(r["JM"]), _fmt(r["JR"]), _fmt(r["FM"]),
                                            _fmt(r["truck_recall"]), _fmt(r["car_fp_rate"]), _fmt(r["seconds"], 2)])
                         + " |")
        if all(not np.isfinite(r["car_fp_rate"]) for r in real["rows"].values()):
            lines += ["", "The parked car lies outside the network's centre crop (n/a): only the truck is scored."]
    if results.get("montage"):
        lines += ["", f"![montage]({results['montage']})", "",
                  "Montage: per sequence, the network's input frames, the ground-truth moving pixels, Easi3R's "
                  "pass-2 masks and the flow baseline's masks."]
    lines += ["", f"Total wall time {results['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def montage_image(samples: List[Dict[str, object]], rows_per: Dict[str, str], n_cols: int = 6) -> np.ndarray:
    """Frames, ground truth and predicted masks of a few sequences in one labelled grid."""
    from .montage import montage, overlay

    grid = []
    for s in samples:
        imgs = s["input_imgs"]
        frames = [((imgs[k].transpose(1, 2, 0) * 0.5 + 0.5).clip(0, 1) * 255).round().astype(np.uint8)
                  for k in range(len(imgs))]
        cols = np.unique(np.linspace(0, len(frames) - 1, min(n_cols, len(frames))).round().astype(int))
        label = f"seed {s['seed']}, {s['n_moving']} moving"
        grid.append((f"{label}\nframes", [frames[k] for k in cols]))
        grid.append(("ground truth", [overlay(frames[k], s["gt_masks"][k], color=(40, 220, 40)) for k in cols]))
        for key, name in rows_per.items():
            masks = s["masks"][key]
            grid.append((f"{name}\nJM {s['JM'][key]:.2f}", [overlay(frames[k], masks[k]) for k in cols]))
    return montage(grid, tile_hw=(112, 112), label_width=180, title="held-out synthetic sequences")


def write_reports(results: Dict[str, object], out_dir: Path, samples: List[Dict[str, object]]) -> Dict[str, Path]:
    from .montage import save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    if samples:
        paths["montage"] = save_png(montage_image(samples, {"easi3r": "Easi3R pass 2", "flow": "flow baseline"}),
                                    out_dir / "montage.png")
        results["montage"] = "montage.png"
    paths["json"] = out_dir / "quality.json"
    paths["json"].write_text(json.dumps(results, indent=1, default=json_default, allow_nan=True))
    paths["markdown"] = out_dir / "quality.md"
    paths["markdown"].write_text(markdown(results))
    g = results["guard"]
    if np.isfinite(g.get("threshold", float("nan"))):
        paths["calibration"] = out_dir / "calibration.json"
        paths["calibration"].write_text(json.dumps({
            "motion_guard_level": g["threshold"], "model": results["model"]["model_string"],
            "checkpoint": results["model"]["source"], "sha256_prefix": results["model"].get("sha256"),
            "static_called_moving": g["static_called_moving"], "moving_called_static": g["moving_called_static"],
            "measured_by": "easi3r eval bench", "date": results["date"],
            "sequences": {"dynamic": len(g["moving_scores"]), "static": len(g["static_scores"])}}, indent=1))
    return paths


# ------------------------------------------------------------------------------------ the whole benchmark
def run_bench(model: Evaluated, cfg: BenchConfig, out_dir: Optional[Path] = None,
              progress: Optional[Callable[..., object]] = None) -> Dict[str, object]:
    """Run every row on the held-out set (and the real clip); write the reports when ``out_dir`` is given."""
    start = time.perf_counter()
    runner = BenchRunner(model, cfg)
    skipped: List[int] = []
    per_sequence, samples = [], []
    total = cfg.sequences + min(cfg.static, cfg.sequences)
    bar = progress(total=total, desc="bench sequences", unit="seq") if progress else None
    for kind, seq in heldout_sequences(cfg, skipped):
        record, rows, extra = evaluate_sequence(runner, kind, seq)
        per_sequence.append(record)
        if kind == "dynamic" and len(samples) < cfg.montage_sequences:
            samples.append({"seed": record["seed"], "n_moving": record["n_moving"], "gt_masks": extra["gt_masks"],
                            "input_imgs": extra["input_imgs"],
                            "masks": {k: rows[k].masks for k in ("easi3r", "flow")},
                            "JM": {k: record["rows"][k]["JM"] for k in ("easi3r", "flow")}})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(JM=f"{record['rows']['easi3r'].get('JM', float('nan')):.2f}",
                            flow=f"{record['rows']['flow'].get('JM', float('nan')):.2f}")
    if bar is not None:
        bar.close()
    real = None
    if cfg.real_clip and Path(cfg.real_clip).is_dir():
        real = evaluate_real_clip(runner, Path(cfg.real_clip))
    static_scores = [s["motion_score"] for s in per_sequence if s["kind"] == "static"]
    moving_scores = [s["motion_score"] for s in per_sequence if s["kind"] == "dynamic"]
    from ..motion.guard import LEVEL_THRESHOLD

    results: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "model": {"source": model.source, "model_string": model.model_string, "sha256": model.sha256,
                  "random_weights": model.random_weights},
        "settings": asdict(cfg) | {"niter": runner.window_config.niter,   # the preset's when cfg.niter is None
                                   "seeds": [s["seed"] for s in per_sequence if s["kind"] == "dynamic"],
                                   "skipped_seeds": skipped, "guard_level": runner.guard_level,
                                   "window_config": {k: v for k, v in asdict(runner.window_config).items()}},
        "rows": ROWS,
        "summary": summarise(per_sequence),
        "guard": calibrate_threshold(static_scores, moving_scores,
                                     default=runner.guard_level if runner.guard_level is not None else LEVEL_THRESHOLD),
        "real_clip": real,
        "sequences": per_sequence,
    }
    results["wall_s"] = time.perf_counter() - start
    if out_dir is not None:
        results["files"] = {k: str(v) for k, v in write_reports(results, Path(out_dir), samples).items()}
    return results


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``easi3r eval bench`` (see :func:`add_arguments`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="easi3r eval bench", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


def add_arguments(ap) -> None:
    weights = ap.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, help="model to evaluate (default: the shipped default model)")
    weights.add_argument("--random-weights", metavar="MODEL", help="evaluate random weights of MODEL (a preset "
                         "or constructor string): tests the benchmark itself")
    ap.add_argument("--weights-seed", type=int, default=0, help="seed of --random-weights (default 0)")
    ap.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in a trusted .pth")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"),
                    help="report folder (default benchmarks/results/quality)")
    ap.add_argument("--sequences", type=int, help=f"dynamic sequences (default {BenchConfig.sequences})")
    ap.add_argument("--static", type=int, help=f"static-only sequences (default {BenchConfig.static})")
    ap.add_argument("--frames", type=int, help=f"frames per sequence (default {BenchConfig.frames})")
    ap.add_argument("--niter", type=int, help="global-alignment iterations (default: the preset's)")
    ap.add_argument("--quick", action="store_true",
                    help=f"a check that the benchmark works, not a measurement: {QUICK.sequences} + {QUICK.static} "
                         f"sequences of {QUICK.frames} frames at {QUICK.hw[0]}x{QUICK.hw[1]}, {QUICK.niter} iterations")
    ap.add_argument("--threads", type=int, help="CPU threads for torch, OpenCV and BLAS (default: library defaults)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda ...")
    ap.add_argument("--real-clip", type=Path, default=REAL_CLIP,
                    help="labelme_truck folder (images/, masks/); skipped when missing")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args) -> int:
    import contextlib

    cfg = QUICK if args.quick else BenchConfig()
    cfg = replace(cfg, device=args.device, real_clip=str(args.real_clip) if args.real_clip else None,
                  **{k: v for k, v in (("sequences", args.sequences), ("static", args.static),
                                        ("frames", args.frames), ("niter", args.niter)) if v is not None})
    if cfg.frames < 3 or cfg.sequences < 1 or cfg.static < 0:
        raise SystemExit("easi3r eval bench: error: need --frames >= 3, --sequences >= 1 and --static >= 0")
    limits = contextlib.nullcontext()
    if args.threads:
        import cv2
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
        limits = threadpool_limits(limits=args.threads)
    try:
        model = resolve_model(args.checkpoint, args.random_weights, args.weights_seed, args.trust_checkpoint)
    except Exception as exc:  # checkpoint errors: one line, as the other commands
        raise SystemExit(f"easi3r eval bench: error: {exc}") from None
    progress = None
    if not args.quiet:
        from tqdm import tqdm
        progress = lambda **kw: tqdm(file=sys.stderr, **kw)  # noqa: E731
    with limits:
        results = run_bench(model, cfg, args.out, progress)
    print(markdown(results))
    print(f"easi3r eval bench: wrote {', '.join(results['files'].values())}", file=sys.stderr)
    return 0
