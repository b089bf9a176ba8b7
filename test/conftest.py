import os
import sys
from pathlib import Path

import pytest

# MKL's generic code path in every test process (and the processes the tests start), set before anything calls
# MKL. On it this 2-core Xeon reproduces the fixtures' MST initialisation to <= 1.5e-8 (AVX2/AVX-512 ATen); with
# the AVX2/AVX-512 kernels MKL picks for Intel CPUs the last bits differ and the fixture comparisons amplify them:
# PnP-RANSAC moves PnP-placed frames by 4.7e-3, the Umeyama placement of the degenerate tiny_dpt pointmaps moves
# a translation by 2e-3, and 3 mask pixels flip. The tests spend little time in MKL's GEMM (the tiny pipeline
# test: same CPU time either way). Measurements: benchmarks/results/tolerance_spread.md.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

# Tests import the package from this checkout (and fixtures helpers from this folder).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_report_header(config):
    return f"MKL_CBWR={os.environ.get('MKL_CBWR', '')} (test/conftest.py)"


SLOW_TEST_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    # `slow` tests get 3x the default limit of pytest.ini: the DPT-network tests take about a minute on an idle
    # 2-core machine but were measured at 300 s on one shared with other jobs
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))



@pytest.fixture
def one_torch_thread():
    """Renderer and training tests run on one torch thread: same numbers everywhere, no oversubscription."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
