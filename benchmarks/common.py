"""Shared helpers for the benchmarks: child-process runs, peak memory, machine description."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def weights_mb(net) -> float:
    """Size of a network's tensors, MiB."""
    return sum(p.numel() * p.element_size() for p in net.state_dict().values()) / 2**20


def machine() -> str:
    from easi3r_ros.eval.bench import describe_machine, machine as machine_facts

    return describe_machine(machine_facts())


def run_child(script: Path, args: list, timeout: int = 3600) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON line prefixed 'RESULT '."""
    proc = subprocess.run([sys.executable, str(script), "--child", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{script.name} {' '.join(map(str, args))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)
