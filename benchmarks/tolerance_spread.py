"""Spread of the fixture-compared quantities across CPU code paths and thread counts; writes a markdown table.

    python benchmarks/tolerance_spread.py [--fixtures tiny_dpt_synthetic ...] [--configs NAME ...] [--out FILE]

Each configuration runs in a fresh process (the math libraries read their dispatch settings once, at start):

- ``MKL_CBWR``: unset (MKL picks its kernels for this CPU) or ``COMPATIBLE`` (MKL's generic code path, as the
  test suite sets it in ``test/conftest.py``);
- ISA level of ATen's vectorised kernels and of oneDNN's convolutions (``ATEN_CPU_CAPABILITY`` +
  ``ONEDNN_MAX_CPU_ISA``): native (AVX-512 where the CPU has it), AVX2, default/SSE4.1;
- torch threads 1 or 2 (the reference fixtures were recorded with 2).

Measured per configuration, each against the reference fixtures (as the tests in ``test/`` compare them):

- ``ga_synthetic_geometry`` (+ ``_flow``): MST initialisation and the 300-iteration alignments fed the fixture's
  own aligner inputs (test_align.py);
- ``tiny_linear_vtest`` / ``tiny_dpt_synthetic``: the window pipeline from the frames (test_pipeline.py) and the
  MST initialisation on its pass-2 pointmaps (test_align_tiny.py), the latter also with the Umeyama
  registrations solved in float64 to separate the registration's own rounding from the network's.
About 2 to 4 minutes per configuration on 2 idle cores, 8 configurations.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import RESULTS, machine  # noqa: E402

FIXTURES = Path(os.environ.get("EASI3R_FIXTURES", ROOT.parent / "shared" / "fixtures" / "reference"))
TINY = ("tiny_linear_vtest", "tiny_dpt_synthetic")
RAW_AND_FUSED = tuple(f"attn_k_{v}_{s}_{k}" for k in ("raw", "fused") for v in "ij" for s in ("mean", "std"))


def has_avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


def configurations() -> Dict[str, dict]:
    """name -> {env, threads}. ISA levels: native, avx2, default (ATen default + oneDNN SSE4.1)."""
    isa = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
           "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}}
    native = "avx512" if has_avx512() else "avx2"
    out = {}
    for threads in (2, 1):
        out[f"mkl-auto/{native}/t{threads}"] = dict(env={}, threads=threads)
    for level, env in isa.items():
        for threads in (2, 1):
            out[f"mkl-compatible/{native if level == 'native' else level}/t{threads}"] = dict(
                env={"MKL_CBWR": "COMPATIBLE", **env}, threads=threads)
    return out


# ----------------------------------------------------------------------------------------- child
def load(name: str):
    path = FIXTURES / name
    with np.load(path / "reference.npz") as npz:
        ref = {k: npz[k] for k in npz.files}
    return ref, json.loads((path / "meta.json").read_text()), path


def instrumented_register(original, float64: bool, cancellation: list):
    """init.register, optionally solved in float64 (outputs cast back), recording for every call the
    cancellation factor max|weighted centroid of dst| / (|T| + 1) over the translation entries (how many times
    the translation, in the tests' error metric, is smaller than the sums it is the difference of)."""
    def register(src, dst, weights):
        if float64:
            s, rot, trans = original(src.double(), dst.double(), weights.double())
            s, rot, trans = s.to(src.dtype), rot.to(src.dtype), trans.to(src.dtype)
        else:
            s, rot, trans = original(src, dst, weights)
        w = weights.reshape(-1, 1).double()
        centroid = (w * dst.reshape(-1, 3).double()).sum(0) / w.sum()
        cancellation.append(float(centroid.abs().max() / (trans.double().abs().min() + 1)))
        return s, rot, trans
    return register


def mst_poses(inputs, n_frames: int, float64: bool = False):
    """Aligner after the MST initialisation, and the cancellation factors of its Umeyama calls."""
    import easi3r_ros.align.init as init
    from easi3r_ros.align.global_alignment import GlobalAligner

    original, cancellation = init.register, []
    init.register = instrumented_register(original, float64, cancellation)
    try:
        al = GlobalAligner(*inputs, n_frames)
        al.init_mst()
    finally:
        init.register = original
    return al, cancellation


def pose_errors(poses: np.ndarray, ref: np.ndarray, frames: List[int]) -> dict:
    """Max over `frames` of |ΔR| (absolute) and of |ΔT|/(|T_ref|+1) (test_align_tiny's metric), with the frame."""
    rot = [float(np.abs(poses[n, :3, :3] - ref[n, :3, :3]).max()) for n in frames]
    trans = [float((np.abs(poses[n, :3, 3] - ref[n, :3, 3]) / (np.abs(ref[n, :3, 3]) + 1)).max()) for n in frames]
    k = int(np.argmax(trans))
    return dict(rot=max(rot), trans=trans[k], trans_frame=frames[k], trans_all=trans)


def measure_ga() -> dict:
    ref, _, _ = load("ga_synthetic_geometry")
    inputs = (ref["pass2_pred1_pts3d"], ref["pass2_pred1_conf"], ref["pass2_pred2_pts3d_in_other_view"],
              ref["pass2_pred2_conf"], ref["edges"])
    al, _ = mst_poses(inputs, 6)
    poses, rp = al.poses().numpy(), ref["init_poses_c2w"]
    pnp = list(al.mst.pnp_frames)
    tree = [n for n in range(6) if n not in pnp]
    err = np.abs(poses - rp).reshape(6, -1).max(1)
    depths = al.depths().reshape(ref["init_depths"].shape).numpy()
    return dict(pnp_frames=pnp, tree_pose=float(err[tree].max()), pnp_pose=float(err[pnp].max()) if pnp else 0.0,
                depth_rel=float(np.abs(depths / ref["init_depths"] - 1).max()),
                focal_rel=float(abs(float(al.focal()) / float(ref["init_focals"][0]) - 1)))


def measure_ga_alignment(flow: bool) -> dict:
    """test_align.py's 300-iteration alignment on the fixture's inputs (MST init with 2 threads; Adam with 1
    thread without flow, 2 with, as the test) and the quantities it asserts."""
    import torch
    from scipy.spatial.transform import Rotation

    from easi3r_ros.align.global_alignment import GlobalAligner
    from easi3r_ros.eval.trajectory import ate_rmse

    inputs_ref, meta, _ = load("ga_synthetic_geometry")
    ref, meta = (load("ga_synthetic_geometry_flow")[:2] if flow else (inputs_ref, meta))
    flow_cfg = None
    if flow:
        flow_cfg = dict(flow_ij=ref["flow_ij"], flow_ji=ref["flow_ji"], dynamic_masks=ref["pass2_dynamic_masks"],
                        weight=meta["flow_loss_weight"], start_fraction=meta["flow_loss_start_epoch"],
                        gate=meta["flow_loss_thre"])
    al = GlobalAligner(inputs_ref["pass2_pred1_pts3d"], inputs_ref["pass2_pred1_conf"],
                       inputs_ref["pass2_pred2_pts3d_in_other_view"], inputs_ref["pass2_pred2_conf"],
                       inputs_ref["edges"], inputs_ref["conf"].shape[0], flow=flow_cfg)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        al.init_mst()
        torch.set_num_threads(2 if flow else 1)
        curve, _ = al.optimize(300)
    finally:
        torch.set_num_threads(old)
    final = al.snapshot(points=False)
    poses, rp = final["poses_c2w"], ref["poses_c2w"]
    rel = np.einsum("nji,njk->nik", poses[:, :3, :3].astype(np.float64), rp[:, :3, :3].astype(np.float64))
    depth_rel = np.abs(final["depths"] / ref["depths"] - 1)
    curve_rel = np.abs(curve[:, 0] / ref["ga_loss_curve"][:, 0] - 1)
    return dict(centre=float(np.linalg.norm(poses[:, :3, 3] - rp[:, :3, 3], axis=1).max()),
                rot_deg=float(np.degrees(np.linalg.norm(Rotation.from_matrix(rel).as_rotvec(), axis=1)).max()),
                focal_rel=float(abs(final["focal"] / float(ref["focals"][0]) - 1)),
                depth_median=float(np.median(depth_rel)), depth_p99=float(np.percentile(depth_rel, 99)),
                final_loss_rel=float(abs(curve[-1, 0] / float(ref["final_loss"]) - 1)),
                curve_max=float(curve_rel.max()), curve_median=float(np.median(curve_rel)),
                ate=float(ate_rmse(poses, ref["synthetic_gt_poses_c2w"])))


def measure_tiny(name: str) -> dict:
    from easi3r_ros.model.checkpoint import random_network
    from easi3r_ros.model.preprocess import load_rgb
    from easi3r_ros.motion.segmentation import upsample
    from easi3r_ros.pipeline.window import WindowConfig, WindowPipeline

    ref, meta, path = load(name)
    net, _ = random_network(meta["weights"]["model_str"], meta["weights"]["seed"])
    frames = [load_rgb(f) for f in sorted(glob.glob(str(path / "frames" / "*.png")))]
    ours = WindowPipeline(net, WindowConfig(niter=1, keep_arrays=True)).run(frames, frame_ids=range(len(frames))).arrays
    out = dict(conf_rel=float((np.abs(ours["conf"] - ref["conf"]) / ref["conf"]).max()))
    for p in ("pass1", "pass2"):
        out[f"{p}_maps_rel"] = max(
            float(np.abs(ours[f"{p}_{k}"] - ref[f"{p}_{k}"]).max() / np.abs(ref[f"{p}_{k}"]).max())
            for k in RAW_AND_FUSED + ("dynamic_map",))
        out[f"{p}_labels_differ"] = int((ours[f"{p}_cluster_labels"] != ref[f"{p}_cluster_labels"]).sum())
        differ = ours[f"{p}_dynamic_masks"] != ref[f"{p}_dynamic_masks"]
        out[f"{p}_mask_pixels_differ"] = int(differ.sum())
        # how close to the threshold the flipped pixels are (their upsampled refined-map value vs tau)
        up = upsample(ours[f"{p}_refined_dynamic_map"], differ.shape[1:])
        tau = float(ours[f"{p}_otsu_threshold"])
        out[f"{p}_flip_margin"] = float(np.abs(up[differ] - tau).max()) if differ.any() else 0.0
        refined = f"{p}_refined_dynamic_map"
        out[f"{p}_refined_err"] = float(np.abs(ours[refined] - ref[refined]).max())
    n = len(frames)
    inputs = (ours["pass2_pred1_pts3d"], ours["pass2_pred1_conf"], ours["pass2_pred2_pts3d_in_other_view"],
              ours["pass2_pred2_conf"], ours["edges"])
    for tag, f64 in (("f32", False), ("f64", True)):
        al, cancellation = mst_poses(inputs, n, float64=f64)
        tree = [k for k in range(n) if k not in al.mst.pnp_frames]
        if not f64:
            out["cancellation_tree"] = max(cancellation[:len(al.mst.tree_edges) - 1])
        out[f"init_{tag}"] = pose_errors(al.poses().numpy(), ref["init_poses_c2w"], tree)
        out[f"init_{tag}"]["translations"] = al.poses().numpy()[tree, :3, 3].tolist()
        out[f"init_{tag}"]["tree_frames"] = tree
    return out


def child(threads: int, fixtures: List[str]) -> None:
    import torch

    torch.set_num_threads(threads)
    result = dict(capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                  ga=measure_ga(), ga_align=measure_ga_alignment(flow=False), ga_flow=measure_ga_alignment(flow=True))
    for name in fixtures:
        result[name] = measure_tiny(name)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------- parent
def run_config(cfg: dict, fixtures: List[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    # passive OpenMP waits: same numbers, no CPU burnt spinning when the machine is shared
    env.update(cfg["env"], OMP_NUM_THREADS=str(cfg["threads"]), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, __file__, "--child", str(cfg["threads"]), *fixtures], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"configuration {cfg} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def spread(values) -> float:
    """Max over rows and entries of |v − mean| / (|mean| + 1), the mean taken over the rows."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(0)
    return float((np.abs(values - mean) / (np.abs(mean) + 1)).max())


def report(results: Dict[str, dict], fixtures: List[str]) -> str:
    lines = ["# Spread of the fixture comparisons across CPU code paths and thread counts", "",
             f"Machine: {machine()}.",
             "Regenerate: `python benchmarks/tolerance_spread.py` (fresh process per row).", "",
             "## `ga_synthetic_geometry`: MST initialisation on the fixture's own aligner inputs", "",
             "Max absolute pose-entry error of tree-placed / PnP-placed frames, max relative depth and focal error "
             "(test_align.py: poses atol 1e-4, depth and focal rtol 1e-4; tree frames atol 1e-6 in the stale-focal "
             "test).",
             "", "| configuration | ATen | PnP frames | tree pose | PnP pose | depth rel | focal rel |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        g = r["ga"]
        lines.append(f"| {name} | {r['capability']} | {g['pnp_frames']} | {g['tree_pose']:.1e} | {g['pnp_pose']:.1e} | "
                     f"{g['depth_rel']:.1e} | {g['focal_rel']:.1e} |")
    lines += ["", "## `ga_synthetic_geometry` (+ `_flow`): the 300-iteration alignment as test_align.py runs it", "",
              "Max camera-centre error, max rotation error (deg), focal and final-loss relative error, depth relative "
              "error median / 99th percentile, loss-curve relative error max / median, ATE to the ground truth. "
              "test_align.py: centres 2e-3, rotations 0.2°, focal 1e-3, depth 1e-3 / 1e-2, final loss 1e-3, curve max "
              "1e-2 (flow 6.5e-2) and median 5e-3 (flow), ATE 1.02e-3 without flow and 2.4e-4 with. The reference's "
              "own two runs: ATE 9.76e-4 / 9.98e-4 and 2.00e-4 / 2.04e-4, flow curve 2.9e-2 apart.",
              "", "| configuration | flow | centre | rot ° | focal | depth med / p99 | final loss | curve max / med "
              "| ATE |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for key, flow in (("ga_align", "no"), ("ga_flow", "yes")):
            a = r[key]
            lines.append(f"| {name} | {flow} | {a['centre']:.1e} | {a['rot_deg']:.3f} | {a['focal_rel']:.1e} | "
                         f"{a['depth_median']:.1e} / {a['depth_p99']:.1e} | {a['final_loss_rel']:.1e} | "
                         f"{a['curve_max']:.1e} / {a['curve_median']:.1e} | {a['ate']:.3e} |")
    for fx in fixtures:
        lines += ["", f"## `{fx}`: window pipeline from the frames, then the MST initialisation", "",
                  "maps: max |Δ| / max |ref| of the raw/fused/dynamic attention maps (test_pipeline.py: 1e-4); "
                  "refined: max |Δ| of the refined (cluster-mean) dynamic map; labels, mask px: how many differ "
                  "(labels exact; linear-head masks exact except pixels within float noise of τ); margin: max "
                  "|upsampled refined map − τ| over the flipped pixels; conf: max relative error (2e-4); init R: max "
                  "|ΔR| over tree-placed frames; init T: max |ΔT|/(|T_ref|+1) (frame) with the Umeyama registrations "
                  "in float32 (as the code) and float64.", "",
                  "| configuration | maps p1 / p2 | refined p1 / p2 | labels p1 / p2 | mask px p1 / p2 | margin "
                  "| conf | "
                  "init R f32 | init T f32 | init T f64 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in results.items():
            t = r[fx]
            a, b = t["init_f32"], t["init_f64"]
            margin = max(t["pass1_flip_margin"], t["pass2_flip_margin"])
            lines.append(f"| {name} | {t['pass1_maps_rel']:.1e} / {t['pass2_maps_rel']:.1e} | "
                         f"{t['pass1_refined_err']:.1e} / {t['pass2_refined_err']:.1e} | "
                         f"{t['pass1_labels_differ']} / {t['pass2_labels_differ']} | "
                         f"{t['pass1_mask_pixels_differ']} / {t['pass2_mask_pixels_differ']} | "
                         f"{margin:.1e} | {t['conf_rel']:.1e} | "
                         f"{a['rot']:.1e} | {a['trans']:.1e} ({a['trans_frame']}) | "
                         f"{b['trans']:.1e} ({b['trans_frame']}) |")
        lines += ["", "- Umeyama cancellation factor of the tree placements, max over the calls of max|centroid of the "
                      "target points| / (min|T entry| + 1): " + ", ".join(
                          f"{r[fx]['cancellation_tree']:.0f}" for r in results.values()) + " (rows in order)."]
        for tag, label in (("f32", "float32"), ("f64", "float64")):
            trees = {tuple(r[fx][f"init_{tag}"]["tree_frames"]) for r in results.values()}
            if len(trees) == 1:
                rows = [r[fx][f"init_{tag}"]["translations"] for r in results.values()]
                lines.append(f"- Tree-placed translations ({label} Umeyama), spread of our own rows around their mean, "
                             f"max |T − mean|/(|mean|+1): {spread(rows):.1e} (frames {sorted(trees.pop())}).")
            else:
                lines.append(f"- Tree-placed frames differ between rows ({label}): {sorted(trees)}.")
    lines += ["", "## How the tests use this", "",
              "- `test/conftest.py` sets `MKL_CBWR=COMPATIBLE`, so the `mkl-compatible/*` rows are the tests' setting. "
              "The MST and tiny-fixture rows run at the row's thread count (the tests pin 2, as the reference); the "
              "alignment rows pin threads as test_align.py does, hence t1 = t2 there.",
              "- Errors against a fixture value: bound = 2x the worst value of those rows, rounded up to 1, 2 or 5 x "
              "10^k. Quantities with a run-to-run spread of their own (ATE, the flow loss curve): bound = worst + "
              "range of those rows and of the reference's own repeats, rounded up.",
              "- `test_align.py`: MST initialisation at README tolerances (poses atol 1e-4, tree frames 1e-6): MKL's "
              "own Intel kernels (`mkl-auto`) or 1 thread move the PnP-placed frames by up to 1e-2 (10-iteration "
              "PnP-RANSAC turns last-bit differences into another inlier set), MKL's generic path at 2 threads does "
              "not. ATE bounds 1.02e-3 (no flow) and 2.4e-4 (flow), flow loss curve max 6.5e-2.",
              "- `test_align_tiny.py`: rotation entries atol 1e-4; translations relative 5e-6 (linear heads) and 2e-3 "
              "(DPT): the Umeyama placement of the degenerate DPT pointmaps subtracts centroids ~500 times larger "
              "than the translation (cancellation factor above), so the network's per-ISA output noise and the "
              "float32 centroid sums reach the translation amplified.",
              "- `test_pipeline.py`: linear-head masks equal the fixture's except pixels whose upsampled refined map "
              "lies within 1e-5 of τ (above the margin column and the refined map's own error in the column before).",
              ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", nargs="*", default=list(TINY), choices=TINY)
    ap.add_argument("--configs", nargs="*", help="subset of the configuration names (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "tolerance_spread.md")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.child is not None:
        child(args.child, rest or args.fixtures)
        return
    configs = configurations()
    names = args.configs or list(configs)
    results = {}
    for name in names:
        print(f"{name} ...", flush=True)
        results[name] = run_config(configs[name], args.fixtures)
    text = report(results, args.fixtures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
