"""Segment history and transitions, exact on a small hand-checked case."""

from datetime import datetime

import duckdb
import pytest

from seg_assets.publish.history import record_history, segment_sizes_over_time
from seg_assets.warehouse import prepare_connection

T1, T2, T3 = datetime(2026, 1, 1), datetime(2026, 1, 2), datetime(2026, 1, 3)


@pytest.fixture()
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.user_segments (user_id VARCHAR, segment_id INTEGER, segment_name VARCHAR, model_version VARCHAR)")
    return con


def assign(con, rows):
    con.sql("DELETE FROM analytics.user_segments")
    con.executemany("INSERT INTO analytics.user_segments VALUES (?, ?, ?, 'v1')", [(u, s, f"S{s}") for u, s in rows])


def test_history_and_transitions_exact(con):
    assign(con, [("a", 1), ("b", 1), ("c", 2)])
    first = record_history(con, T1, "r1")
    assert (first.new_users, first.moved_users, first.unchanged_users) == (3, 0, 0)

    assign(con, [("a", 1), ("b", 2), ("c", 2), ("d", 3)])  # b moves 1 -> 2, d is new
    second = record_history(con, T2, "r2")
    assert (second.new_users, second.moved_users, second.unchanged_users) == (1, 1, 2)

    assign(con, [("a", 1), ("b", 1), ("c", 2), ("d", 3)])  # b moves back
    record_history(con, T3, "r3")

    history = con.sql("SELECT user_id, segment_id, valid_from, valid_to FROM analytics.segment_history "
                      "ORDER BY user_id, valid_from").fetchall()
    assert history == [
        ("a", 1, T1, None),
        ("b", 1, T1, T2), ("b", 2, T2, T3), ("b", 1, T3, None),
        ("c", 2, T1, None),
        ("d", 3, T2, None),
    ]
    transitions = con.sql("SELECT as_of, from_segment, to_segment, users FROM analytics.segment_transitions "
                          "ORDER BY as_of, from_segment NULLS FIRST, to_segment").fetchall()
    assert transitions == [
        (T1, None, 1, 2), (T1, None, 2, 1),
        (T2, None, 3, 1), (T2, 1, 2, 1),
        (T3, 2, 1, 1),
    ]
    sizes = {(r["as_of"], r["segment_id"]): r["users"] for r in segment_sizes_over_time(con).iter_rows(named=True)}
    assert sizes == {(T1, 1): 2, (T1, 2): 1, (T2, 1): 1, (T2, 2): 2, (T2, 3): 1, (T3, 1): 2, (T3, 2): 1, (T3, 3): 1}


def test_rerun_with_nothing_changed_writes_nothing(con):
    assign(con, [("a", 1), ("b", 2)])
    record_history(con, T1, "r1")
    def counts():
        return [con.sql(f"SELECT count(*) FROM analytics.{t}").fetchall() for t in ("segment_history", "segment_transitions")]

    before = counts()
    again = record_history(con, T2, "r2")
    assert (again.new_users, again.moved_users, again.unchanged_users) == (0, 0, 2)
    assert before == counts()


def test_transaction_rolls_back_on_failure(con):
    from seg_assets.warehouse import transaction

    with pytest.raises(ZeroDivisionError):
        with transaction(con):
            con.sql("INSERT INTO analytics.user_segments VALUES ('x', 1, 'S1', 'v1')")
            raise ZeroDivisionError
    assert con.sql("SELECT count(*) FROM analytics.user_segments").fetchall() == [(0,)]
    with transaction(con):
        con.sql("INSERT INTO analytics.user_segments VALUES ('x', 1, 'S1', 'v1')")
    assert con.sql("SELECT count(*) FROM analytics.user_segments").fetchall() == [(1,)]


T4 = datetime(2026, 1, 4)


def history(con):
    return con.sql("SELECT user_id, segment_id, valid_from, valid_to FROM analytics.segment_history "
                   "ORDER BY user_id, valid_from").fetchall()


def transitions(con):
    return con.sql("SELECT as_of, from_segment, to_segment, users, run_id FROM analytics.segment_transitions "
                   "ORDER BY as_of, from_segment NULLS FIRST, to_segment").fetchall()


def test_a_backfill_leaves_the_history_as_it_was_and_later_refreshes_go_on(con):
    assign(con, [("a", 1), ("b", 1)])
    record_history(con, T1, "r1")
    assign(con, [("a", 1), ("b", 2), ("c", 2)])
    record_history(con, T3, "r3")
    before = history(con), transitions(con)

    assign(con, [("a", 2), ("b", 1)])  # as of T2: c had not signed up yet, a and b were elsewhere
    backfill = record_history(con, T2, "r2")
    assert backfill.skipped and "before the latest as-of" in backfill.skipped
    assert (history(con), transitions(con)) == before

    assign(con, [("a", 2), ("b", 2), ("c", 2)])  # back to now: a moves once, dated after everything recorded
    record_history(con, T4, "r4")
    assert history(con) == [("a", 1, T1, T4), ("a", 2, T4, None), ("b", 1, T1, T3), ("b", 2, T3, None), ("c", 2, T3, None)]
    assert transitions(con)[-1] == (T4, 1, 2, 1, "r4")


def test_a_republication_at_the_same_as_of_replaces_what_it_recorded(con):
    assign(con, [("a", 1), ("b", 1), ("c", 2)])
    record_history(con, T1, "r1")
    assign(con, [("a", 2), ("b", 2), ("c", 2), ("d", 3)])
    record_history(con, T2, "r2")

    # a refit at the same as-of: a goes back, b and d land elsewhere, c moves now
    assign(con, [("a", 1), ("b", 3), ("c", 1), ("d", 1)])
    again = record_history(con, T2, "r2b")
    assert (again.new_users, again.moved_users, again.unchanged_users) == (1, 2, 1)
    assert history(con) == [
        ("a", 1, T1, None),
        ("b", 1, T1, T2), ("b", 3, T2, None),
        ("c", 2, T1, T2), ("c", 1, T2, None),
        ("d", 1, T2, None),
    ]
    assert transitions(con) == [
        (T1, None, 1, 2, "r1"), (T1, None, 2, 1, "r1"),
        (T2, None, 1, 1, "r2b"), (T2, 1, 3, 1, "r2b"), (T2, 2, 1, 1, "r2b"),
    ]
    assert con.sql("SELECT count(*) FROM analytics.segment_history WHERE valid_to <= valid_from").fetchall() == [(0,)]
    before = history(con), transitions(con)
    assert record_history(con, T2, "r2c").unchanged_users == 4  # the same again: nothing written
    assert (history(con), transitions(con)) == before


def test_users_gone_at_the_as_of_that_recorded_them_leave_no_empty_spell_nor_transition(con):
    """A login dated before the latest data links a device to its customer: the refresh runs at the as-of that first
    segmented the device. Its spell was closed where it opened ([T, T)) and the transitions kept it as entered
    (h2, session 35: test_identities' 10 devices, 320 users entered for 310 segmented)."""
    assign(con, [("a", 1), ("b", 1), ("c", 2)])
    record_history(con, T1, "r1")
    assign(con, [("a", 2), ("b", 1), ("c", 2), ("dev", 3)])  # a moves, dev is new
    record_history(con, T2, "r2")
    assign(con, [("c", 2)])  # the same as-of again: a (moved at it), b and dev are gone
    again = record_history(con, T2, "r2b")
    assert again.left_users == 3
    assert history(con) == [("a", 1, T1, T2), ("b", 1, T1, T2), ("c", 2, T1, None)]
    assert transitions(con) == [(T1, None, 1, 2, "r1"), (T1, None, 2, 1, "r1")]
    assert con.sql("SELECT count(*) FROM analytics.segment_history WHERE valid_to <= valid_from").fetchall() == [(0,)]
    con.sql("DELETE FROM analytics.user_segments")  # later, c goes too: closed, as any user who leaves
    assert record_history(con, T3, "r3").left_users == 1
    assert history(con)[-1] == ("c", 2, T1, T3)


def test_the_history_asset_says_a_backfill_was_not_recorded(tmp_path):
    import dagster as dg

    from seg_assets.publish.assets import segment_history
    from seg_assets.resources import Warehouse

    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as db:
        prepare_connection(db)
        db.sql("CREATE TABLE analytics.user_segments AS SELECT 'a' AS user_id, 1 AS segment_id, 'S1' AS segment_name, "
               "'v1' AS model_version, TIMESTAMP '2026-01-03' AS as_of")
    resources = {"duckdb": Warehouse(database=str(path))}
    assert dg.materialize([segment_history], resources=resources).success
    with duckdb.connect(str(path)) as db:
        db.sql("UPDATE analytics.user_segments SET segment_id = 2, as_of = TIMESTAMP '2026-01-02'")
    result = dg.materialize([segment_history], resources=resources)
    for materialization in result.asset_materializations_for_node("segment_history"):  # history and transitions
        assert "before the latest as-of" in materialization.metadata["not_recorded"].value
    with duckdb.connect(str(path)) as db:
        assert db.sql("SELECT segment_id, valid_from, valid_to FROM analytics.segment_history").fetchall() == [(1, T3, None)]
