"""DAVIS-style mask metrics and the labelme_truck static/moving scores."""
from pathlib import Path

import numpy as np
import pytest

from easi3r_ros.eval import (boundary_f_measure, davis_scores, jaccard, load_label_png, resize_labels,
                             static_dynamic_scores)

TRUCK = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelme_truck" / "masks"


def test_jaccard_and_boundary():
    a = np.zeros((50, 50), bool)
    a[10:30, 10:30] = True
    b = np.zeros_like(a)
    b[20:40, 10:30] = True
    assert jaccard(a, a) == 1.0 and jaccard(a, b) == pytest.approx(200 / 600)
    assert jaccard(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert boundary_f_measure(a, a) == 1.0
    assert boundary_f_measure(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert boundary_f_measure(a, np.zeros_like(a)) == 0.0
    shifted = np.roll(a, 1, axis=1)  # within the tolerance (ceil(0.008·70.7) = 1 px)
    assert boundary_f_measure(a, shifted) == 1.0
    assert 0 < boundary_f_measure(a, b) < 1
    s = davis_scores([a, b], [a, a])
    assert s["JM"] == pytest.approx((1 + 1 / 3) / 2) and s["JR"] == 0.5 and s["F"][0] == 1.0
    with pytest.raises(ValueError):
        jaccard(a, a[:10])


def test_truck_scores():
    if not TRUCK.exists():
        pytest.skip("labelme_truck not available")
    labels = [load_label_png(p) for p in sorted(TRUCK.glob("*.png"))]
    assert labels[0].shape == (563, 1000) and set(np.unique(labels[0])) == {0, 1, 2}
    perfect = [lab == 2 for lab in labels]
    s = static_dynamic_scores(perfect, labels)
    assert s["moving_recall"] == 1.0 and s["static_fp_rate"] == 0.0 and s["JM_moving"] == 1.0
    everything = [np.ones_like(lab, bool) for lab in labels]
    s = static_dynamic_scores(everything, labels)
    assert s["moving_recall"] == 1.0 and s["static_fp_rate"] == 1.0 and s["JM_moving"] < 0.2
    # predictions at network resolution: labels are resized (nearest) to the prediction
    small = [resize_labels(lab, (288, 512)) == 2 for lab in labels]
    s = static_dynamic_scores(small, labels)
    assert s["moving_recall"] > 0.99 and s["static_fp_rate"] == 0.0
    d = davis_scores(small, [lab == 2 for lab in labels])
    assert d["JM"] > 0.99 and d["JR"] == 1.0
