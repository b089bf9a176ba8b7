#!/usr/bin/env bash
# The GPU path, measured in one run of at most 5 minutes, no downloads (see benchmarks/gpu.py):
# CPU/GPU agreement on the reference fixtures (fp32 within the fixture tolerances; bf16/fp16 mask IoU),
# then steady-state streaming on full-size 512x288 DPT and 224 linear networks for fp32 / bf16 / fp16
# (new frames/s, per-window latency, peak GPU memory). Report: benchmarks/results/gpu/gpu.md (+ .json).
# Without CUDA it says so and exits with status 3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${EASI3R_VENV:-.venv}/bin/python"
[ -x "$PY" ] || PY=python3
exec timeout --kill-after=10 300 "$PY" benchmarks/gpu.py "$@"
