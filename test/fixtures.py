"""Locating the reference fixtures shared beside the checkout."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EASI3R_FIXTURES", REPO.parent / "shared" / "fixtures" / "reference"))


def fixture_dir(name: str) -> Path:
    """Directory of a reference fixture; skips the test with a clear message where it is absent."""
    path = FIXTURES / name
    if not (path / "reference.npz").exists():
        pytest.skip(f"reference fixture {name!r} not found under {FIXTURES} (set EASI3R_FIXTURES)")
    return path


def load_fixture(name: str):
    """(npz arrays as a dict, meta.json as a dict, directory) of a reference fixture."""
    path = fixture_dir(name)
    with np.load(path / "reference.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads((path / "meta.json").read_text())
    return arrays, meta, path
