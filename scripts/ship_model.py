"""Make a trained run the shipped default model (easi3r_ros/weights/easi3r_tiny), in two steps.

    .venv/bin/python scripts/ship_model.py install RUN_DIR     # weights + guard calibration on the benchmark
    .venv/bin/easi3r eval bench --threads 2                    # the full benchmark of the installed model
    .venv/bin/python scripts/ship_model.py card RUN_DIR        # regression figures + MODEL_CARD.md

``install`` copies RUN_DIR/hf (config.json, model.safetensors) into the package and calibrates the "nothing
moves" guard's evidence level on the benchmark's static-only and dynamic sequences (a benchmark run with one
alignment iteration: the guard reads pass 1 only), writing ``calibration.json`` beside the weights.
``card`` measures the regression-guard figures that test/test_default_model.py re-checks and writes the model
card from the run's val.json, the benchmark's quality.json and the quality curve, so every number in the card
comes from a command.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def install(run: Path, threads: int) -> None:
    import torch

    from easi3r_ros.eval.bench import BenchConfig, resolve_model, run_bench
    from easi3r_ros.model.default import CALIBRATION_FILE, DEFAULT_MODEL_DIR

    if threads:
        torch.set_num_threads(threads)
    DEFAULT_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(run / "hf" / name, DEFAULT_MODEL_DIR / name)
    (DEFAULT_MODEL_DIR / CALIBRATION_FILE).unlink(missing_ok=True)  # calibrate from the library default
    out = REPO / "benchmarks" / "results" / "quality_calibration"
    run_bench(resolve_model(DEFAULT_MODEL_DIR, None), BenchConfig(niter=1, montage_sequences=0, real_clip=None), out)
    calibration = json.loads((out / "calibration.json").read_text())
    calibration["checkpoint"] = "easi3r-tiny (easi3r_ros/weights/easi3r_tiny)"
    calibration["note"] = ("evidence-level threshold of the 'nothing moves' guard for this model only, chosen on "
                           "the benchmark's static-only vs dynamic held-out sequences (least balanced error)")
    (DEFAULT_MODEL_DIR / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=1) + "\n")
    print(f"installed {run}/hf as {DEFAULT_MODEL_DIR}; guard level {calibration['motion_guard_level']:.4g} "
          f"(static called moving {calibration['static_called_moving']:.2f}, moving called static "
          f"{calibration['moving_called_static']:.2f})")


def _row(summary, name, key):
    value = summary.get(name, {}).get(key)
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _stages(run: Path):
    """The run and the runs it was initialised from, oldest first: (folder, val.json)."""
    chain = []
    while run is not None:
        val = json.loads((run / "val.json").read_text())
        chain.insert(0, (run, val))
        init = val["settings"].get("init")
        run = Path(init).parent if init and Path(init).name == "hf" else (Path(init) if init else None)
        if run is not None and not run.is_absolute():
            run = REPO / run
    return chain


def _stage_lines(run: Path, m) -> list:
    lines, total_s, total_pairs = [], 0.0, 0
    for k, (folder, val) in enumerate(_stages(run), 1):
        st = val["settings"]
        size = st.get("train_size") or 224
        init = f" --init {st['init']}" if st.get("init") else f" --model {st['model']}"
        heads = ",".join(map(str, st["attn_heads"])) if st["attn_heads"] else "all"
        lines.append(f"- Stage {k} (`{folder.name}`): `easi3r train{init} --steps {st['steps']} --batch {st['batch']} "
                     f"--lr {st['lr']:g} --warmup {st['warmup']} --train-size {size} --attn-weight "
                     f"{st['attn_weight']:g} --attn-heads {heads} --seed {st['seed']}` — {val['pairs_seen']} pairs at "
                     f"{size}×{size}, {val['train_seconds'] / 60:.0f} min on {val['device']} (1 thread)")
        total_s += val["train_seconds"]
        total_pairs += val["pairs_seen"]
    lines.append(f"- Compute in all: {total_pairs} pairs, {total_s / 60:.0f} min on 1 thread of a 2-core {m['cpu']}.")
    return lines


def card(run: Path, quality: Path, curve: Path, threads: int) -> None:
    import torch

    from easi3r_ros.eval.bench import REGRESSION, regression_figures
    from easi3r_ros.model.default import DEFAULT_MODEL_DIR, load_calibration

    if threads:
        torch.set_num_threads(threads)
    val = json.loads((run / "val.json").read_text())
    q = json.loads(quality.read_text()) if quality.is_file() else None
    cv = json.loads(curve.read_text()) if curve.is_file() else None
    figures = regression_figures(DEFAULT_MODEL_DIR)
    regression = {"figures": figures, "sequences": {"first_seed": REGRESSION.first_seed,
                                                    "count": REGRESSION.sequences, "frames": REGRESSION.frames,
                                                    "niter": REGRESSION.niter},
                  "measured_by": "scripts/ship_model.py card (easi3r_ros.eval.bench.regression_figures)"}
    (DEFAULT_MODEL_DIR / "regression.json").write_text(json.dumps(regression, indent=1) + "\n")
    cal = load_calibration(DEFAULT_MODEL_DIR)
    v, settings = val["validation"], val["settings"]
    from easi3r_ros.eval.bench import machine
    m = q["machine"] if q else machine()
    lines = [
        "# easi3r-tiny — model card",
        "",
        "**What it is.** A small DUSt3R-shaped network (AsymmetricCroCo3DStereo, 224 linear head, "
        f"{val['parameters'] / 1e6:.2f}M parameters) trained by this project from scratch on procedurally rendered "
        "synthetic rooms (`easi3r_ros.synthetic`, textures from scikit-image's bundled photographs, see "
        "`data/TEXTURES.md`). It is the model the node, `easi3r run` and `easi3r demo` use when no checkpoint is "
        "given, so that a first run shows something measured rather than random weights. It is rough on real "
        "video and it does not beat the learning-free optical-flow baseline at motion masks (numbers below). "
        "**Real robots should use the official DUSt3R / MonST3R checkpoints.**",
        "",
        "**Licence.** The weights are this project's (same licence as the code, `LICENSE`). The training textures' "
        "licences are listed in `data/TEXTURES.md`.",
        "",
        "## Training",
        "",
        *_stage_lines(run, m),
        f"- Loss: DUSt3R's confidence-aware regression of scale-normalised pointmaps (α = {settings['alpha']:g}), "
        "plus an auxiliary cross-entropy pulling one cross-attention head per decoder layer towards the true "
        "correspondences (weight as above). Training pairs are static (split `train`), rendered on the fly; "
        "validation uses held-out pairs at 224×224 (split `heldout`: other seeds, other textures).",
        "",
        "## Held-out pairs (`easi3r train` validation, 224×224)",
        "",
        "| | model | baseline |",
        "|---|---|---|",
        f"| view-2 pointmap error (scale-normalised) | {v['geometry']['view2_err']:.3f} | "
        f"{v['geometry']['view2_err_ignore_motion']:.3f} (ignore the camera motion) |",
        f"| view-1 pointmap error | {v['geometry']['view1_err']:.3f} | "
        f"{v['geometry']['view1_err_average_room']:.3f} (average room) |",
        f"| depth abs-rel | {v['depth']['abs_rel']:.3f} | {v['depth']['abs_rel_average_room']:.3f} (average room) |",
        f"| mean confidence | {v['confidence']['mean']:.3f} | 1 (collapsed) |",
        "",
    ]
    if q:
        s = q["summary"]
        lines += [
            f"## Benchmark (`easi3r eval bench`, {q['date']}, {m['cpu']}, {m['cores']} cores, torch {m['torch']})",
            "",
            f"{len(q['settings']['seeds'])} held-out dynamic sequences and {len(q['guard']['static_scores'])} "
            f"static-only ones ({q['settings']['frames']} frames, {q['settings']['hw'][0]}×{q['settings']['hw'][1]}).",
            "",
            "| row | JM | JR | FM | ATE (m, Sim(3)-aligned) | depth abs-rel |",
            "|---|---|---|---|---|---|",
        ]
        for name, label in q["rows"].items():
            if name in s:
                lines.append(f"| {label} | {_row(s, name, 'JM')} | {_row(s, name, 'JR')} | {_row(s, name, 'FM')} | "
                             f"{_row(s, name, 'ate_rmse')} | {_row(s, name, 'abs_rel')} |")
    else:
        lines += ["## Benchmark", "", "Not yet run for this model: `easi3r eval bench` (about half an hour on a "
                  "2-core CPU) writes `benchmarks/results/quality/`; re-run this script's `card` step afterwards."]
    lines += [
        "",
        f"**'Nothing moves' guard.** Evidence-level threshold {cal.get('motion_guard_level', float('nan')):.4g} for "
        f"this model (`calibration.json`): static-only windows called moving {cal.get('static_called_moving', 0):.0%}, "
        f"moving windows called static {cal.get('moving_called_static', 0):.0%} on the benchmark. The threshold "
        "belongs to this model; another checkpoint needs its own (`scripts/ship_model.py install` shows how).",
        "",
        f"**Regression guard** (`regression.json`, re-checked by `test/test_default_model.py`): on "
        f"{REGRESSION.sequences} held-out sequences from seed {REGRESSION.first_seed}, pass-2 JM (guard off) "
        f"{figures['JM']:.3f}, depth abs-rel {figures['abs_rel']:.3f} vs random weights {figures['random_abs_rel']:.3f}.",
    ]
    if cv:
        lines += ["", "## Quality against compute and size (`benchmarks/quality_curve.py`)", "",
                  "| checkpoint | parameters | pairs seen | JM | depth abs-rel |", "|---|---|---|---|---|"]
        lines += [f"| {p['label']} | {p['parameters'] / 1e6:.2f}M | {p['pairs_seen']} | {p['JM']:.3f} | "
                  f"{p['abs_rel']:.3f} |" for p in cv["points"]]
        lines += ["", "Same sequences: " + ", ".join(f"{k} JM {x:.3f}" for k, x in cv["reference_JM"].items()) + "."]
    (DEFAULT_MODEL_DIR / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {DEFAULT_MODEL_DIR}/MODEL_CARD.md and regression.json: {figures}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["install", "card"])
    ap.add_argument("run", type=Path, help="an easi3r train output folder")
    ap.add_argument("--quality", type=Path, default=REPO / "benchmarks/results/quality/quality.json")
    ap.add_argument("--curve", type=Path, default=REPO / "benchmarks/results/quality_curve/curve.json")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.step == "install":
        install(args.run, args.threads)
    else:
        card(args.run, args.quality, args.curve, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
