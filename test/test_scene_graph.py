"""Scene graph (spec §4): edge sets, the reference edge order of every fixture, name parsing."""
import json

import numpy as np
import pytest

from easi3r_ros.pipeline.scene_graph import (SceneGraphError, capped_window, edges_per_frame, make_edges,
                                             parse_scene_graph, swinstride_edges)
from fixtures import fixture_dir

PIPELINE_FIXTURES = ["tiny_linear_vtest", "tiny_dpt_synthetic", "ga_synthetic_geometry", "ga_synthetic_geometry_flow"]


@pytest.mark.fixtures
@pytest.mark.parametrize("name", PIPELINE_FIXTURES)
def test_reference_order_matches_fixture(name):
    d = fixture_dir(name)
    meta = json.loads((d / "meta.json").read_text())
    n = len(meta["frame_files"])
    with np.load(d / "reference.npz") as z:
        edges_npz = z["edges"]
    w = parse_scene_graph(meta["scenegraph"])
    for cap in (False, True):
        e = swinstride_edges(n, w, cap=cap)
        assert e.dtype == np.int64
        assert e.tolist() == meta["edges"], name
        np.testing.assert_array_equal(e, edges_npz)
    assert len(meta["edges"]) == meta["n_edges"] == {8: 32, 6: 18}[n]


def _expected_set(n, w):
    out = set()
    for i in range(n):
        for k in range(1, 2 * w, 2):
            if i + k < n:
                out.add((i, i + k))
                out.add((i + k, i))
    return out


@pytest.mark.parametrize("n,w", [(2, 5), (3, 1), (6, 5), (8, 5), (10, 2), (17, 5), (16, 3)])
def test_edge_set_and_symmetry(n, w):
    for order in ("reference", "sorted"):
        e = swinstride_edges(n, w, order=order)
        pairs = [tuple(p) for p in e.tolist()]
        assert len(pairs) == len(set(pairs))
        assert set(pairs) == _expected_set(n, w)
        half = len(pairs) // 2
        assert pairs[half:] == [(j, i) for i, j in pairs[:half]]  # reversed pairs in the same order
        assert all(i < j for i, j in pairs[:half])


def test_sorted_order_and_counts():
    e = swinstride_edges(6, 5, order="sorted")
    assert e[:9].tolist() == [[0, 1], [0, 3], [0, 5], [1, 2], [1, 4], [2, 3], [2, 5], [3, 4], [4, 5]]
    src, ref = edges_per_frame(e, 6)
    assert src.tolist() == ref.tolist() == [3, 3, 3, 3, 3, 3]


def test_cap_never_changes_edges():
    for n in range(2, 20):
        assert capped_window(n, 5) <= 5
        assert swinstride_edges(n, 5, cap=True).tolist() == swinstride_edges(n, 5).tolist()
    assert capped_window(6, 5) == 3 and capped_window(8, 5) == 4 and capped_window(16, 5) == 5


def test_small_windows():
    assert swinstride_edges(0).shape == (0, 2)
    assert swinstride_edges(1).shape == (0, 2)
    assert swinstride_edges(2).tolist() == [[0, 1], [1, 0]]


def test_parse_names():
    assert parse_scene_graph("swinstride-5") == 5
    assert parse_scene_graph("swinstride-3-noncyclic") == 3
    assert parse_scene_graph("swinstride") == 5
    assert make_edges("swinstride-5-noncyclic", 8).shape == (32, 2)
    for bad in ["complete", "swin-5", "swinstride-0", "swinstride-x", "oneref-0", "swinstride-5-cyclic", "", 5]:
        with pytest.raises(SceneGraphError, match="swinstride"):
            parse_scene_graph(bad)
    with pytest.raises(SceneGraphError):
        swinstride_edges(5, 0)
    with pytest.raises(SceneGraphError):
        swinstride_edges(5, 2, order="random")


def test_three_frame_windows_are_completed_so_every_frame_has_two_partners():
    from easi3r_ros.pipeline.scene_graph import edges_per_frame, make_edges

    edges = make_edges("swinstride-5", 3)
    assert {tuple(e) for e in edges.tolist()} == {(0, 1), (1, 2), (0, 2), (1, 0), (2, 1), (2, 0)}
    src, ref = edges_per_frame(edges, 3)
    assert src.min() >= 2 and ref.min() >= 2
    for n in (4, 6, 8):  # the reference graph is untouched from 4 frames on
        np.testing.assert_array_equal(make_edges("swinstride-5", n), swinstride_edges(n, 5))
