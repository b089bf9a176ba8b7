"""All benchmarks, each writing its markdown report to benchmarks/results/.

    python benchmarks/run.py [--quick]

--quick runs the tiny models only (a check that the benchmarks work, not a measurement). The GPU report
(benchmarks/gpu.sh) is written only where CUDA is available.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu  # noqa: E402
import guard_calibration  # noqa: E402
import network_pairs  # noqa: E402
import precision  # noqa: E402
import streaming  # noqa: E402
import window_stages  # noqa: E402


def gpu_report(argv) -> None:
    import torch

    if torch.cuda.is_available():
        gpu.main(argv)
    else:
        print("benchmarks/gpu.sh skipped: no CUDA device on this machine (the GPU report needs one)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models, few iterations")
    args = ap.parse_args(argv)
    if args.quick:
        tmp = Path("out/bench-quick")
        network_pairs.main(["--models", "tiny-224-linear", "--pairs", "4", "--report", str(tmp / "network_pairs.md")])
        window_stages.main(["--models", "tiny-224-linear", "--niter", "20", "--report", str(tmp / "window_stages.md")])
        guard_calibration.main(["--seeds", "0", "--no-real", "--out", str(tmp / "guard_calibration.md")])
        gpu_report(["--report", str(tmp / "gpu" / "gpu.md"), "--budget-s", "120"])
        streaming.main(["--quick", "--fresh", "--out", str(tmp / "streaming")])
        precision.main(["--no-fixtures", "--out", str(tmp / "precision")])
        return
    network_pairs.main([])
    window_stages.main([])
    guard_calibration.main([])
    gpu_report([])       # first: the streaming report links the GPU report when there is one
    streaming.main([])   # per-new-frame cost (steady vs cold) and the RSS curve; resumable
    precision.main([])   # bf16 against fp32 on the CPU (the GPU report measures bf16/fp16 on a GPU)


if __name__ == "__main__":
    main()
