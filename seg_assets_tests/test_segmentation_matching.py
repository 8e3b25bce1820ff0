"""Stable ids: Hungarian matching, thresholds, fresh ids never reusing retired ones, stage groups."""

from __future__ import annotations

import numpy as np
import pytest

from seg_assets.segmentation.matching import canonical_order, carry_names, first_fit_ids, match_segments

OLD = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def test_permuted_clusters_keep_their_ids():
    new = np.array([[0.1, 10.0], [0.2, -0.1], [10.1, 0.3]])  # same clusters, estimator order shuffled
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0)
    assert r.segment_ids == [3, 1, 2] and r.status == ["kept"] * 3 and r.retired == [] and r.max_issued_id == 3
    assert max(r.distance) < 0.5
    assert r.mapping == {0: 3, 1: 1, 2: 2}


def test_far_cluster_gets_fresh_id_and_old_one_is_retired():
    new = np.array([[0.0, 0.2], [10.0, 0.1], [30.0, 30.0]])  # cluster 3 vanished, a new one appeared
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0)
    assert r.segment_ids == [1, 2, 4] and r.status == ["kept", "kept", "new"] and r.retired == [3]
    assert r.matched_old[2] == 3 and r.distance[2] > 1.0  # Hungarian paired them, the threshold refused
    frame = r.to_frame()
    assert frame.filter(frame["status"] == "retired")["segment_id"].to_list() == [3]


def test_retired_ids_are_never_reused():
    # ids 1..5 were issued in the past; 4 and 5 are already retired: the next fresh id is 6, not 4
    new = np.array([[0.0, 0.0], [50.0, 50.0]])
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0, max_issued_id=5)
    assert r.segment_ids == [1, 6] and r.retired == [2, 3] and r.max_issued_id == 6


def test_more_and_fewer_clusters():
    more = np.vstack([OLD, [[20.0, 20.0], [-20.0, 5.0]]])
    r = match_segments(OLD, [1, 2, 3], more, max_distance=1.0, new_order=[4, 3, 0, 1, 2])
    assert r.segment_ids == [1, 2, 3, 5, 4]  # fresh ids follow the canonical order given
    fewer = OLD[:2]
    r = match_segments(OLD, [7, 8, 9], fewer, max_distance=1.0)
    assert r.segment_ids == [7, 8] and r.retired == [9]
    first = match_segments(np.empty((0, 2)), [], OLD, max_distance=1.0)
    assert first.segment_ids == [1, 2, 3] and first.status == ["new"] * 3


def test_groups_forbid_matches_across_stages():
    new = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0, old_groups=["engaged", "engaged", "new"],
                       new_groups=["engaged", "engaged", "lapsed"])
    assert r.segment_ids[:2] == [1, 2] and r.segment_ids[2] == 4 and r.retired == [3]


def test_a_stage_of_one_segment_keeps_its_id_however_far_its_centroid_moved():
    """Its members are the stage's by rule (new customers turn over in weeks): a tester's refits renumbered them."""
    old_groups, new_groups = ["new", "engaged", "engaged"], ["new", "engaged", "engaged"]
    new = np.array([[3.0, 0.5], [10.0, 0.1], [40.0, 40.0]])  # "new" moved 3.0; an engaged cluster moved far
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0, old_groups=old_groups, new_groups=new_groups)
    assert r.segment_ids == [1, 2, 4] and r.status == ["kept", "kept", "new"] and r.retired == [3]
    assert r.distance[0] == pytest.approx(np.hypot(3.0, 0.5))
    # a stage of two clusters on one side is clustered, not one segment by rule: the distance decides
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0, old_groups=["new", "new", "engaged"],
                       new_groups=["new", "engaged", "engaged"])
    assert r.status[0] == "new"


def test_duplicate_old_ids_rejected():
    with pytest.raises(ValueError):
        match_segments(OLD, [1, 1, 2], OLD, max_distance=1.0)


def test_canonical_order_ignores_estimator_label_order():
    feats = ["recency_days", "frequency", "monetary"]
    C = np.array([[30.0, 2.0, 100.0], [5.0, 9.0, 900.0], [200.0, 1.0, 40.0], [10.0, 3.0, 100.0]])
    order = canonical_order(C, feats)
    assert order == [1, 3, 0, 2]  # monetary desc, then recency asc
    perm = [2, 0, 3, 1]
    assert [perm[i] for i in canonical_order(C[perm], feats)] == order
    assert first_fit_ids(order) == [3, 1, 4, 2]
    staged = canonical_order(C, feats, stages=["new", "engaged", "engaged", "lapsed"], stage_order=("engaged", "new", "lapsed"))
    assert staged == [1, 2, 0, 3]


def test_carry_names_only_for_kept():
    new = np.array([[0.0, 0.2], [10.0, 0.1], [30.0, 30.0]])
    r = match_segments(OLD, [1, 2, 3], new, max_distance=1.0)
    assert carry_names(r, {1: "A", 2: "B", 3: "C"}) == {1: "A", 2: "B"}
