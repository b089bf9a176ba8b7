"""The GPU path, measured: CPU/GPU agreement on the reference fixtures, then steady-state streaming on
full-size networks for fp32 / bf16 / fp16. Run through ``benchmarks/gpu.sh`` (5-minute budget, no downloads).

    python benchmarks/gpu.py [--report benchmarks/results/gpu/gpu.md] [--budget-s 290] [--device cuda]

1. Agreement (fixtures under ``../shared/fixtures/reference`` or ``$EASI3R_FIXTURES``; recipe-v1 random
   weights as the fixtures name them): the window pipeline on the GPU against the original code's arrays —
   fp32 with the fixture tolerances of the test suite (attention statistics and dynamic maps rel. error
   ≤ 1e-4, cluster labels equal, Otsu threshold within 1e-4, masks IoU ≥ 0.99, confidences rtol 2e-4);
   bf16 / fp16 report their errors and the masks' IoU against the CPU's fp32 (aim ≥ 0.99), with the decoder's
   cross-attention in fp32 (the default, ``keep_fp32="cross-attention"``), with the whole decoder in fp32 (only
   the heads reduced) and with everything reduced.
2. Reduced precision with the shipped trained model (bf16/fp16 against fp32 on the GPU), and the alignment's
   CUDA-graph steps against eager steps (300 iterations).
3. Throughput: ``dust3r-512-dpt`` (512x288 input) and ``dust3r-224-linear`` with random recipe-v1 weights
   (speed does not depend on the weights), the ``robot`` preset as the node streams it (W=8, S=4, pairs
   batched, torch k-means; the default coarse-to-fine alignment, and fp32 at full resolution), synthetic 640x360 frames: new
   frames per second in steady state (stride / mean window time after the first window), per-window latency,
   stage times, peak GPU memory.

Without CUDA it says so and exits with status 3 (nothing is measured, no report is written).
Sections that would overrun the budget are skipped and named in the report.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RAW = ("attn_k_i_mean_raw", "attn_k_i_std_raw", "attn_k_j_mean_raw", "attn_k_j_std_raw")
FUSED = ("attn_k_i_mean_fused", "attn_k_i_std_fused", "attn_k_j_mean_fused", "attn_k_j_std_fused")
# (precision, keep_fp32) of the agreement checks: the default keeps the decoder's cross-attention in fp32 under
# bf16/fp16, "decoder" the whole decoder (only the heads reduced), "nothing" autocasts it all
AGREEMENT = (("fp32", "cross-attention"), ("bf16", "cross-attention"), ("bf16", "decoder"), ("bf16", "nothing"),
             ("fp16", "cross-attention"), ("fp16", "decoder"), ("fp16", "nothing"))
# (precision, alignment overrides of the robot preset): its default alignment is coarse to fine
# in order of interest: rows that would overrun the time budget are skipped from the end
VARIANTS = (("bf16", {}), ("fp32", {}), ("bf16", {"keep_fp32": "decoder"}), ("fp16", {}),
            ("bf16", {"keep_fp32": "nothing"}), ("fp32", {"align_coarse": 1}))


KEEP_LABELS = {"cross-attention": "cross-attention fp32", "decoder": "decoder fp32, heads reduced",
               "nothing": "all reduced"}


def _precision_label(r: dict) -> str:
    if r.get("precision") in (None, "fp32"):
        return r.get("precision", "")
    keep = r.get("keep_fp32", "cross-attention")
    return f"{r['precision']} ({KEEP_LABELS.get(keep, keep)})"


def _alignment_label(overrides: dict) -> str:
    return "full resolution" if overrides.get("align_coarse") == 1 else "coarse to fine (default)"


def _iou(a, b) -> float:
    from easi3r_ros.eval.masks import jaccard

    return jaccard(a, b)


def precision_errors(base: dict, out: dict) -> dict:
    """A reduced-precision window's arrays against the fp32 ones: the dynamic maps' max error relative to their
    max (pass 1 and 2), the pass-1 / pass-2 masks' IoU (min over frames) and the pointmaps' max relative error."""
    import numpy as np

    def rel(key):
        return float(np.abs(out[key] - base[key]).max() / max(np.abs(base[key]).max(), 1e-30))

    return {"dynamic_map_rel_err": max(rel(f"{p}_dynamic_map") for p in ("pass1", "pass2")),
            "pass1_mask_iou": min(_iou(a, b) for a, b in zip(out["pass1_dynamic_masks"], base["pass1_dynamic_masks"])),
            "pass2_mask_iou": min(_iou(a, b) for a, b in zip(out["pass2_dynamic_masks"], base["pass2_dynamic_masks"])),
            "pts_rel_err": rel("pass2_pred1_pts3d")}


def fixtures_dir() -> Path:
    return Path(os.environ.get("EASI3R_FIXTURES", ROOT.parent / "shared" / "fixtures" / "reference"))


def agreement(device: str, budget_end: float, names=("tiny_linear_vtest", "tiny_dpt_synthetic")) -> list:
    import numpy as np

    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.model.preprocess import load_rgb
    from easi3r_ros.pipeline.window import WindowConfig, WindowPipeline

    rows = []
    for name in names:
        path = fixtures_dir() / name
        if not (path / "reference.npz").is_file():
            rows.append({"fixture": name, "skipped": f"not found under {fixtures_dir()}"})
            continue
        ref = dict(np.load(path / "reference.npz"))
        meta = json.loads((path / "meta.json").read_text())
        frames = [load_rgb(f) for f in sorted(glob.glob(str(path / "frames" / "*.png")))]
        net, _ = random_network(meta["weights"]["model_str"], meta["weights"]["seed"])
        cpu = None
        for baseline, dev, precision, keep in [(True, "cpu", "fp32", "cross-attention")] + [(False, device, p, k) for p, k in AGREEMENT]:
            if time.monotonic() > budget_end:
                rows.append({"fixture": name, "precision": precision, "keep_fp32": keep, "skipped": "time budget"})
                continue
            cfg = WindowConfig(niter=5, keep_arrays=True, device=dev, precision=precision, keep_fp32=keep)
            t = time.perf_counter()
            ours = WindowPipeline(net, cfg).run(frames, frame_ids=range(len(frames))).arrays
            wall = time.perf_counter() - t
            if baseline:
                cpu = ours
                continue
            err = 0.0
            for p in ("pass1", "pass2"):
                for key in RAW + FUSED + ("dynamic_map",):
                    a, b = ours[f"{p}_{key}"], ref[f"{p}_{key}"]
                    err = max(err, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
            labels = all(np.array_equal(ours[f"{p}_cluster_labels"], ref[f"{p}_cluster_labels"]) for p in ("pass1", "pass2"))
            otsu = max(abs(float(ours[f"{p}_otsu_threshold"]) - float(ref[f"{p}_otsu_threshold"])) for p in ("pass1", "pass2"))
            iou_ref = min(_iou(a, b) for p in ("pass1", "pass2")
                          for a, b in zip(ours[f"{p}_dynamic_masks"], ref[f"{p}_dynamic_masks"]))
            vs_cpu = precision_errors(cpu, ours)
            iou_cpu, pts = vs_cpu["pass2_mask_iou"], vs_cpu["pts_rel_err"]
            conf = float(np.max(np.abs(ours["conf"] - ref["conf"]) / np.abs(ref["conf"])))
            ok = err <= 1e-4 and labels and otsu <= 1e-4 and iou_ref >= 0.99 and conf <= 2e-4
            rows.append({"fixture": name, "precision": precision, "keep_fp32": keep, "stat_rel_err": err, "labels_equal": labels,
                         "otsu_err": otsu, "mask_iou_ref": iou_ref, "mask_iou_cpu": iou_cpu, "conf_rel_err": conf,
                         "pts_rel_err_cpu": pts, "within_fixture_tolerances": ok,
                         "pass": ok if precision == "fp32" else iou_cpu >= 0.99, "wall_s": wall})
    return rows


def _shipped_model_and_scene():
    """(easi3r-tiny, an 8-frame synthetic window with a moving object), or (None, None) without the weights."""
    from easi3r_ros.eval.scenes import make_window
    from easi3r_ros.model.checkpoint import load_checkpoint
    from easi3r_ros.model.default import default_model_path

    path = default_model_path()
    if path is None:
        return None, None
    return load_checkpoint(path)[0], make_window(8, size=(288, 384), pan_px=6, object_px=12, noise=1.0, seed=3)


def trained_agreement(device: str, budget_end: float) -> list:
    """The shipped trained model (easi3r-tiny) on a synthetic moving-object window: bf16/fp16 against fp32 on the
    same device. Random-weight fixtures amplify rounding (their attention statistics vary little between pairs, so
    the per-pixel std over pairs is mostly rounding noise); a trained network is what a robot runs."""
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    net, scene = _shipped_model_and_scene()
    if net is None:
        return [{"fixture": "easi3r-tiny", "skipped": "the shipped weights are not in this checkout"}]
    rows, base = [], None
    for precision, keep in AGREEMENT:
        if time.monotonic() > budget_end:
            rows.append({"fixture": "easi3r-tiny", "precision": precision, "keep_fp32": keep, "skipped": "time budget"})
            continue
        cfg = preset_config("reference", niter=5, keep_arrays=True, device=device, precision=precision,
                            keep_fp32=keep)
        t = time.perf_counter()
        out = WindowPipeline(net, cfg).run(scene.frames, frame_ids=range(len(scene.frames))).arrays
        wall = time.perf_counter() - t
        if base is None:
            base = out
        err = precision_errors(base, out)
        rows.append({"fixture": "easi3r-tiny (trained), synthetic window", "precision": precision, "keep_fp32": keep,
                     "dynamic_map_rel_err": err["dynamic_map_rel_err"], "mask_iou_fp32": err["pass2_mask_iou"],
                     "pts_rel_err_fp32": err["pts_rel_err"], "pass": err["pass2_mask_iou"] >= 0.99, "wall_s": wall})
    return rows


def graph_check(device: str, budget_end: float) -> list:
    """Alignment steps replayed from a CUDA graph against eager steps: the shipped model on a synthetic window,
    300 cold iterations (the reference schedule), same decodes; poses, depths, final loss and time per step."""
    import numpy as np

    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    if time.monotonic() > budget_end:
        return [{"skipped": "time budget"}]
    net, scene = _shipped_model_and_scene()
    if net is None:
        return [{"skipped": "no shipped weights"}]
    runs = {}
    for graphs in (False, True, True):  # the second graphed run is timed warm
        pipe = WindowPipeline(net, preset_config("reference", device=device, keep_arrays=True, cuda_graphs=graphs))
        result = pipe.run(scene.frames, frame_ids=range(len(scene.frames)))
        runs[graphs] = (result, pipe.stats.windows_graphed)
    (eager, _), (graphed, n_graphed) = runs[False], runs[True]
    pe = np.stack([f.cam_to_world for f in eager.frames])
    pg = np.stack([f.cam_to_world for f in graphed.frames])
    scale = max(float(np.abs(pe[:, :3, 3]).max()), 1e-9)
    de = np.stack([f.depth for f in eager.frames])
    dg = np.stack([f.depth for f in graphed.frames])
    loss_e, loss_g = float(eager.arrays["final_loss"]), float(graphed.arrays["final_loss"])
    return [{"graphed_windows": n_graphed, "rotation_max_abs_diff": float(np.abs(pe[:, :3, :3] - pg[:, :3, :3]).max()),
             "translation_rel_diff": float(np.abs(pe[:, :3, 3] - pg[:, :3, 3]).max() / scale),
             "depth_rel_diff": float(np.nanmax(np.abs(de - dg) / np.abs(de).clip(1e-9))),
             "final_loss_eager": loss_e, "final_loss_graphed": loss_g,
             "align_s_eager": eager.timings["align_s"], "align_s_graphed": graphed.timings["align_s"]}]


def _sync(device: str) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def throughput(device: str, budget_end: float, windows: int,
               models=(("dust3r-512-dpt", 512), ("dust3r-224-linear", 224)), rows=None, on_row=None) -> list:
    import torch

    from easi3r_ros.eval.scenes import make_window
    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.pipeline.window import WindowPipeline, preset_config

    w, s = 8, 4
    n = w + s * (windows - 1)
    frames = make_window(n, size=(360, 640), pan_px=6, object_px=12, noise=1.0, seed=0).frames
    cuda = torch.device(device).type == "cuda"
    rows = [] if rows is None else rows
    for model, size in models:
        if time.monotonic() > budget_end:
            rows.append({"model": model, "skipped": "time budget"})
            continue
        t = time.perf_counter()
        net, _ = random_network(model, seed=0)
        load_s = time.perf_counter() - t
        for precision, overrides in VARIANTS:
            alignment = _alignment_label(overrides)
            keep = overrides.get("keep_fp32", "cross-attention")
            if time.monotonic() > budget_end:
                rows.append({"model": model, "precision": precision, "keep_fp32": keep, "alignment": alignment,
                             "skipped": "time budget"})
                continue
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            pipe = WindowPipeline(net, preset_config("robot", image_size=size, device=device, precision=precision,
                                                     kmeans="torch", pair_batch=8, **overrides))
            walls, stages, status = [], [], "ok"
            try:
                for k in range(windows):
                    if time.monotonic() > budget_end:
                        status = "time budget"
                        break
                    ids = list(range(k * s, k * s + w))
                    _sync(device)
                    t = time.perf_counter()
                    result = pipe.run([frames[i] for i in ids], frame_ids=ids)
                    _sync(device)
                    walls.append(time.perf_counter() - t)
                    stages.append(result.timings)
            except Exception as exc:  # a failure is a result too
                status = f"{type(exc).__name__}: {exc}"[:200]
            steady = walls[1:]
            mean = sum(steady) / len(steady) if steady else float("nan")
            steady_stages = {k: sum(st[k] for st in stages[1:]) / len(stages[1:]) for k in stages[0]} if len(stages) > 1 else {}
            rows.append({"model": model, "precision": precision, "keep_fp32": keep, "alignment": alignment,
                         "stages_s": steady_stages,
                         "status": status, "first_window_s": walls[0] if walls else None,
                         "steady_window_s": mean, "new_frames_per_s": s / mean if steady else float("nan"),
                         "windows": len(walls), "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else float("nan"),
                         "align_iterations": pipe.stats.align_iterations, "pass2_reused": pipe.stats.pass2_reused,
                         "oom_retries": pipe.stats.oom_retries, "load_s": load_s, "W": w, "S": s})
            if on_row:
                on_row()
        del net
        if cuda:
            torch.cuda.empty_cache()
    return rows


def markdown(info: dict, agree: list, trained: list, graphs: list, thr: list, total_s: float, done: bool = True) -> str:
    state = "" if done else " (run in progress or cut short: sections below may be missing)"
    lines = ["# GPU path", "", f"GPU: **{info['gpu']}** ({info['gpu_memory_gib']:.0f} GiB), CUDA {info['cuda']}, "
             f"torch {info['torch']}; host: {info['cpu']}, {info['cores']} cores. `benchmarks/gpu.sh`, {total_s:.0f} s{state}.", "",
             "## CPU/GPU agreement on the reference fixtures (window pipeline, 5 alignment iterations)", "",
             "Random recipe-v1 weights as the fixtures name them. fp32 is checked against the original code's arrays with "
             "the test suite's tolerances; bf16/fp16 report their errors and the masks' IoU against the CPU's fp32.", "",
             "| fixture | precision | attention stats rel. err vs reference | labels equal | Otsu err | mask IoU vs reference (min) "
             "| pass-2 mask IoU vs CPU fp32 (min) | pointmap rel. err vs CPU | result |", "|---|---|---|---|---|---|---|---|---|"]
    for r in agree:
        if "skipped" in r:
            lines.append(f"| {r['fixture']} | {_precision_label(r)} | skipped: {r['skipped']} | | | | | | |")
            continue
        verdict = ("within fixture tolerances" if r["within_fixture_tolerances"] else "OUTSIDE fixture tolerances") \
            if r["precision"] == "fp32" else ("IoU ≥ 0.99" if r["pass"] else "IoU < 0.99")
        lines.append(f"| {r['fixture']} | {_precision_label(r)} | {r['stat_rel_err']:.2e} | {r['labels_equal']} | "
                     f"{r['otsu_err']:.1e} | {r['mask_iou_ref']:.4f} | {r['mask_iou_cpu']:.4f} | {r['pts_rel_err_cpu']:.1e} | {verdict} |")
    lines += ["", "## Reduced precision with the trained model (easi3r-tiny, synthetic 8-frame window, against fp32 on the GPU)", "",
              "| precision | dynamic map rel. err | pass-2 mask IoU (min over frames) | pointmap rel. err | result |",
              "|---|---|---|---|---|"]
    for r in trained:
        if "skipped" in r:
            lines.append(f"| {_precision_label(r)} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(f"| {_precision_label(r)} | {r['dynamic_map_rel_err']:.2e} | {r['mask_iou_fp32']:.4f} | "
                     f"{r['pts_rel_err_fp32']:.1e} | {'IoU ≥ 0.99' if r['pass'] else 'IoU < 0.99'} |")
    lines += ["", "## Alignment steps from a CUDA graph against eager steps (easi3r-tiny, synthetic window, 300 iterations)", "",
              "| windows graphed | rotation max abs diff | translation max rel diff | depth max rel diff | final loss eager / graphed "
              "| alignment eager | alignment graphed |", "|---|---|---|---|---|---|---|"]
    for r in graphs:
        if "skipped" in r:
            lines.append(f"| skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(f"| {r['graphed_windows']} | {r['rotation_max_abs_diff']:.1e} | {r['translation_rel_diff']:.1e} | "
                     f"{r['depth_rel_diff']:.1e} | {r['final_loss_eager']:.6f} / {r['final_loss_graphed']:.6f} | "
                     f"{r['align_s_eager']:.2f} s | {r['align_s_graphed']:.2f} s |")
    lines += ["", "## Steady-state streaming (robot preset, W=8, S=4, pairs batched by 8, random recipe-v1 weights, "
              "640x360 synthetic frames)", "",
              "| model | precision | alignment | new frames/s | window latency (steady) | first window | peak GPU memory | "
              "steady window: encode / pass 1 / masks 1 / pass 2 / masks 2 / align / outputs (s) | status |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in thr:
        alignment = r.get("alignment") or ("warm start" if r.get("warm_start") else "full resolution, cold")
        if "skipped" in r:
            lines.append(f"| {r['model']} | {_precision_label(r) or 'all'} | {alignment} | skipped: {r['skipped']} | | | | | |")
            continue
        first = f"{r['first_window_s']:.2f} s" if r["first_window_s"] is not None else "–"
        st = r.get("stages_s") or {}
        stages = " / ".join(f"{st[k]:.3f}" for k in ("encode_s", "pass1_s", "masks1_s", "pass2_s", "masks2_s", "align_s",
                                                       "outputs_s") if k in st)
        lines.append(f"| {r['model']} | {_precision_label(r)} | {alignment} | **{r['new_frames_per_s']:.2f}** | {r['steady_window_s']:.2f} s | "
                     f"{first} | {r['peak_gpu_mib'] / 1024:.1f} GiB | {stages} | {r['status']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "results" / "gpu" / "gpu.md")
    ap.add_argument("--budget-s", type=float, default=290.0, help="stop starting new sections after this long")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--windows", type=int, default=5, help="windows per throughput run (the first is not counted)")
    ap.add_argument("--sections", default="agreement,trained,graphs,throughput",
                    help="comma-separated subset of agreement, trained, graphs, throughput")
    ap.add_argument("--models", default="dust3r-512-dpt:512,dust3r-224-linear:224", help="throughput models, name:size")
    ap.add_argument("--check-on-cpu", action="store_true",
                    help="exercise this script on the CPU with tiny models (a check of the script, not a measurement)")
    args = ap.parse_args(argv)
    import torch

    if args.check_on_cpu:
        torch.set_num_threads(1)
        t0 = time.monotonic()
        agree = agreement("cpu", t0 + 600, names=("tiny_linear_vtest",))
        trained = trained_agreement("cpu", t0 + 600)
        graphs = graph_check("cpu", t0 + 600)
        thr = throughput("cpu", t0 + 600, 2, models=(("tiny-224-linear", 224),))
        info = {"gpu": "none (--check-on-cpu)", "gpu_memory_gib": 0.0, "cuda": None, "torch": torch.__version__,
                "cpu": "this machine", "cores": os.cpu_count()}
        print(markdown(info, agree, trained, graphs, thr, time.monotonic() - t0))
        return 0

    if not torch.cuda.is_available():
        print(f"benchmarks/gpu.sh: no CUDA device available (torch {torch.__version__}, CUDA build: "
              f"{torch.version.cuda or 'none'}); nothing was measured and no report was written. Run it where a GPU "
              "is lent, with a CUDA build of torch (README, section GPU).", file=sys.stderr)
        return 3
    t0 = time.monotonic()
    end = t0 + args.budget_s
    from easi3r_ros.eval.bench import machine

    props = torch.cuda.get_device_properties(torch.device(args.device))
    info = dict(machine(), gpu=props.name, gpu_memory_gib=props.total_memory / 2 ** 30, cuda=torch.version.cuda)
    agree, trained, graphs, thr = [], [], [], []
    sections = set(args.sections.split(","))
    models = tuple((m.split(":")[0], int(m.split(":")[1])) for m in args.models.split(","))
    args.report.parent.mkdir(parents=True, exist_ok=True)

    def write(done: bool = False) -> None:  # after every section: a run cut short keeps what it measured
        total = time.monotonic() - t0
        args.report.write_text(markdown(info, agree, trained, graphs, thr, total, done))
        args.report.with_suffix(".json").write_text(json.dumps(
            {"machine": info, "agreement": agree, "trained_agreement": trained, "graph_check": graphs, "throughput": thr,
             "total_s": total, "complete": done}, indent=1, default=str))

    if "agreement" in sections:
        agree += agreement(args.device, t0 + 0.3 * args.budget_s)
        write()
    if "trained" in sections:
        trained += trained_agreement(args.device, t0 + 0.35 * args.budget_s)
        write()
    if "graphs" in sections:
        graphs += graph_check(args.device, t0 + 0.4 * args.budget_s)
        write()
    if "throughput" in sections:
        throughput(args.device, end, args.windows, models=models, rows=thr, on_row=write)
    write(done=True)
    print(args.report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
