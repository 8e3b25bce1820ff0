"""BI publication: one atomic switch per publication, seen by a reader that holds the file open."""

import os
import subprocess
import sys

import duckdb
import pytest

from seg_assets.publish.bi import publish_tables
from seg_assets.warehouse import prepare_connection

LIVE = ["current", "meta.bi_tables.parquet", "segments.duckdb", "tables"]  # besides a link per table


def visible(bi):
    """The names a person sees in bi/ (version folders and temporary names start with a dot)."""
    return sorted(p.name for p in bi.iterdir() if not p.name.startswith("."))


def versions(bi):
    return sorted(p.name for p in bi.iterdir() if p.name.startswith(".v-"))


def test_publish_replaces_files_and_keeps_schema(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.user_segments AS SELECT 'u' || i AS user_id, i % 3 AS segment_id FROM range(10) t(i)")
    first = publish_tables(con, tmp_path / "bi", ["analytics.user_segments"])
    assert first.rows == {"analytics.user_segments": 10}

    # A reader in another process holds the published file open read-only while we publish again.
    reader = subprocess.Popen(
        [sys.executable, "-c", (
            "import duckdb, sys, time\n"
            f"c = duckdb.connect(r'{first.database}', read_only=True)\n"
            "print(c.sql('select count(*) from analytics.user_segments').fetchall()[0][0], flush=True)\n"
            "sys.stdin.readline()\n"
            "print(c.sql('select count(*) from analytics.user_segments').fetchall()[0][0], flush=True)\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "10"
    con.sql("INSERT INTO analytics.user_segments SELECT 'v' || i, 1 FROM range(5) t(i)")
    second = publish_tables(con, tmp_path / "bi", ["analytics.user_segments"])  # must not block on the reader
    out, _ = reader.communicate("go\n", timeout=30)
    assert out.strip() == "15"  # the reader holding its connection sees the new publication at its next query
    assert second.rows == {"analytics.user_segments": 15}
    fresh = duckdb.connect(str(second.database), read_only=True)
    assert fresh.sql("SELECT count(*) FROM analytics.user_segments").fetchall() == [(15,)]
    assert duckdb.sql(f"SELECT count(*) FROM '{second.parquet['analytics.user_segments']}'").fetchall() == [(15,)]
    assert visible(tmp_path / "bi") == sorted(["analytics.user_segments.parquet", *LIVE])
    assert len(versions(tmp_path / "bi")) == 2  # the current one, and the one before for queries across the switch


def test_only_changed_tables_are_written_again(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.a AS SELECT i, 'x' || i AS s FROM range(1000) t(i)")
    con.sql("CREATE TABLE analytics.b AS SELECT i FROM range(500) t(i)")
    con.sql("CREATE TABLE analytics.c AS SELECT i FROM range(5) t(i)")
    bi = tmp_path / "bi"
    first = publish_tables(con, bi, ["analytics.a", "analytics.b", "analytics.c"])
    assert first.written == ("analytics.a", "analytics.b", "analytics.c")
    stamps = {t: p.stat().st_mtime_ns for t, p in first.parquet.items()}

    con.sql("UPDATE analytics.a SET s = 'changed' WHERE i = 7")  # one value of one table
    con.sql("CREATE OR REPLACE TABLE analytics.b AS SELECT i FROM range(500) t(i) ORDER BY i DESC")  # same rows, rewritten
    second = publish_tables(con, bi, ["analytics.a", "analytics.b"])  # c is no longer published
    assert second.written == ("analytics.a",)
    assert second.parquet["analytics.b"].stat().st_mtime_ns == stamps["analytics.b"]
    assert second.parquet["analytics.a"].stat().st_mtime_ns != stamps["analytics.a"]
    reader = duckdb.connect(str(second.database), read_only=True)
    assert reader.sql("SELECT s FROM analytics.a WHERE i = 7").fetchall() == [("changed",)]
    assert reader.sql("SELECT count(*), sum(i) FROM analytics.b").fetchall() == [(500, sum(range(500)))]
    assert reader.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'analytics' "
                      "ORDER BY 1").fetchall() == [("a",), ("b",)]
    written_at = dict(reader.sql("SELECT table_name, written_at FROM meta.bi_tables").fetchall())
    reader.close()
    assert written_at["analytics.a"] > written_at["analytics.b"]
    assert visible(bi) == sorted(["analytics.a.parquet", "analytics.b.parquet", *LIVE])

    con.sql("ALTER TABLE analytics.b ADD COLUMN j INTEGER")  # a new column is a change, even with the same rows
    assert publish_tables(con, bi, ["analytics.a", "analytics.b"]).written == ("analytics.b",)
    (bi / "current" / "analytics.a.parquet").unlink()  # a Parquet file gone missing is written again
    assert publish_tables(con, bi, ["analytics.a", "analytics.b"]).written == ("analytics.a",)
    assert duckdb.sql(f"SELECT count(*) FROM '{bi / 'analytics.a.parquet'}'").fetchall() == [(1000,)]


def test_the_bi_folder_keeps_two_versions_and_the_views_file_is_written_when_the_tables_change(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.gone AS SELECT 1 AS x")
    bi = tmp_path / "bi"
    sizes = []
    for n in range(5):  # a big table replaced each time: the folder does not grow without bound
        con.sql(f"CREATE OR REPLACE TABLE analytics.big AS SELECT i + {n} AS i, md5((i + {n})::VARCHAR) AS s FROM range(300000) t(i)")
        publish_tables(con, bi, ["analytics.big", "analytics.gone"])
        sizes.append(sum(f.stat().st_size for f in bi.rglob("*") if f.is_file() and not f.is_symlink()))
        assert len(versions(bi)) == min(n + 1, 2)
    assert max(sizes) <= 2.2 * sizes[0], sizes
    views = (bi / "segments.duckdb").stat().st_mtime_ns
    publish_tables(con, bi, ["analytics.big", "analytics.gone"])
    assert (bi / "segments.duckdb").stat().st_mtime_ns == views  # same tables, same folder: the views file is kept
    publish_tables(con, bi, ["analytics.big"])  # a table no longer published: its view and link go
    reader = duckdb.connect(str(bi / "segments.duckdb"), read_only=True)
    assert reader.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'analytics'").fetchall() == [("big",)]
    assert visible(bi) == sorted(["analytics.big.parquet", *LIVE])


def test_the_next_publication_removes_the_temp_files_of_a_killed_one(tmp_path):
    """A publication SIGKILLed mid-write leaves full-size temp files (its own cleanup never ran); the next removes
    them, and nothing else in bi/."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.user_segments AS SELECT 'u' || i AS user_id, i % 3 AS segment_id FROM range(10) t(i)")
    bi = tmp_path / "bi"
    publish_tables(con, bi, ["analytics.user_segments"])
    con.close()
    killed = subprocess.run([sys.executable, "-c", (  # a publication killed between writing and renaming
        "import os, signal, sys, duckdb\n"
        "from pathlib import Path\n"
        "from seg_assets.publish import bi\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.sql(\"INSERT INTO analytics.user_segments VALUES ('w', 2)\")\n"
        "bi.publish_tables(con, Path(sys.argv[2]), ['analytics.user_segments'])\n"),
        str(tmp_path / "warehouse.duckdb"), str(bi)], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    live = (bi / "current").resolve().name
    left = sorted(p.name for p in bi.iterdir() if p.name.startswith("."))
    staged = list((bi / "tables" / "analytics.user_segments").glob(".*.tmp"))
    assert len(staged) == 1, left  # killed at the switch: its file staged in the table's folder, not yet named
    killed_version = [n for n in versions(bi) if n != live]
    assert len(killed_version) == 1, left
    assert duckdb.connect(str(bi / "segments.duckdb"), read_only=True).sql(
        "SELECT count(*) FROM analytics.user_segments").fetchall() == [(10,)]  # readers still see the last publication
    (bi / "notes.txt").write_text("a reader's own file")
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("INSERT INTO analytics.user_segments SELECT 'v' || i, 1 FROM range(5) t(i)")
    publish_tables(con, bi, ["analytics.user_segments"])
    assert visible(bi) == sorted(["analytics.user_segments.parquet", "notes.txt", *LIVE])
    assert killed_version[0] not in versions(bi) and not any(p.name.endswith(".tmp") for p in bi.rglob("*"))
    published = duckdb.connect(str(bi / "segments.duckdb"), read_only=True)
    count = "SELECT count(*) FROM analytics.user_segments"
    assert published.sql(count).fetchall() == con.sql(count).fetchall()


def test_a_copy_of_the_data_folder_that_followed_the_links_publishes(tmp_path):
    """shutil.copytree (and some backup tools) copy what links point to: bi/current becomes a folder, the table
    links files. The copy's next publication still switches, and its views read the copy's files."""
    import shutil

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.a AS SELECT i FROM range(10) t(i)")
    publish_tables(con, tmp_path / "bi", ["analytics.a"])
    shutil.copytree(tmp_path / "bi", tmp_path / "copy")  # links followed
    assert not (tmp_path / "copy" / "current").is_symlink()
    con.sql("INSERT INTO analytics.a SELECT 10")
    publish_tables(con, tmp_path / "copy", ["analytics.a"])
    assert (tmp_path / "copy" / "current").is_symlink()
    reader = duckdb.connect(str(tmp_path / "copy" / "segments.duckdb"), read_only=True)
    assert reader.sql("SELECT count(*) FROM analytics.a").fetchall() == [(11,)]
    assert duckdb.connect(str(tmp_path / "bi" / "segments.duckdb"), read_only=True).sql(
        "SELECT count(*) FROM analytics.a").fetchall() == [(10,)]  # the original is untouched


def test_views_that_read_another_folder_are_noticed(tmp_path):
    """A moved data folder: the CLI's "segments are current" must not hold while BI's views read the old path."""
    from seg_assets.publish.bi import views_read

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.a AS SELECT 1 AS i")
    publish_tables(con, tmp_path / "bi", ["analytics.a"])
    assert views_read(tmp_path / "bi") == ["analytics.a"]
    (tmp_path / "bi").rename(tmp_path / "moved")
    assert views_read(tmp_path / "moved") is None
    publish_tables(con, tmp_path / "moved", ["analytics.a"])
    assert views_read(tmp_path / "moved") == ["analytics.a"]
    assert duckdb.connect(str(tmp_path / "moved" / "segments.duckdb"), read_only=True).sql(
        "SELECT count(*) FROM analytics.a").fetchall() == [(1,)]


def test_columns_carry_their_descriptions_and_a_new_column_or_description_rewrites_the_views(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.a AS SELECT i AS user_id, i * 2 AS score FROM range(3) t(i)")
    bi = tmp_path / "bi"
    docs = {"user_id": "The user's id.", "score": "Twice the id (it's a test)."}

    def comments():
        with duckdb.connect(str(bi / "segments.duckdb"), read_only=True) as reader:
            return dict(reader.sql("SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'a'").fetchall())

    publish_tables(con, bi, ["analytics.a"], lambda table, column: docs.get(column))
    assert comments() == docs
    inode = (bi / "segments.duckdb").stat().st_ino
    publish_tables(con, bi, ["analytics.a"], lambda table, column: docs.get(column))
    assert (bi / "segments.duckdb").stat().st_ino == inode  # nothing changed: the views file is kept
    con.sql("ALTER TABLE analytics.a ADD COLUMN extra INTEGER")  # a column without a description: none, no error
    docs["score"] = "Two times the id."
    publish_tables(con, bi, ["analytics.a"], lambda table, column: docs.get(column))
    assert comments() == {**docs, "extra": None}


def test_a_statement_prepared_before_a_publication_gets_one_whole_publication_and_folders_keep_two_files(tmp_path):
    """(DuckDB 2.0 binds a prepared statement again when it runs it: this is not the bind-before-switch race, which the
    loop test below exercises.) New queries read the newest; each table folder keeps its two newest files."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    bi = tmp_path / "bi"

    def publish(n: int, rows: int) -> None:
        con.sql(f"CREATE OR REPLACE TABLE analytics.t AS SELECT i, 'v{n}-' || md5(i::VARCHAR) AS s, {n} AS version "
                f"FROM range({rows}) r(i)")
        publish_tables(con, bi, ["analytics.t"])

    publish(1, 200_000)
    reader = duckdb.connect(str(bi / "segments.duckdb"), read_only=True)
    reader.execute("PREPARE q AS SELECT count(*), count(DISTINCT s), min(version), max(version) FROM analytics.t")
    publish(2, 50_000)  # another layout (rows, row groups, strings): old offsets are garbage in it
    assert reader.execute("EXECUTE q").fetchall() in ([(200_000, 200_000, 1, 1)], [(50_000, 50_000, 2, 2)])  # one whole
    assert reader.sql("SELECT count(*), min(version) FROM analytics.t").fetchall() == [(50_000, 2)]  # a new query: 2
    publish(3, 10)
    assert reader.sql("SELECT count(*), min(version) FROM analytics.t").fetchall() == [(10, 3)]
    files = sorted((bi / "tables" / "analytics.t").iterdir())
    assert len(files) == 2 and files[0].name < files[1].name  # the newest sorts first; older ones are removed


def test_a_reader_in_a_loop_never_errors_across_publications(tmp_path):
    """A held read-only connection querying while tables are published again and again: every result is one whole
    publication of each table."""
    import threading

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    bi = tmp_path / "bi"
    con.sql("CREATE TABLE analytics.t AS SELECT i, 0 AS version FROM range(100000) r(i)")
    publish_tables(con, bi, ["analytics.t"])
    reader = duckdb.connect(str(bi / "segments.duckdb"), read_only=True)
    seen, errors, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                seen.append(reader.sql("SELECT count(*), min(version), max(version), sum(i) FROM analytics.t").fetchall()[0])
            except duckdb.Error as exc:
                errors.append(str(exc))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for n in range(1, 21):
            rows = 100_000 - 3_000 * n  # each publication another size, so a mixed read shows
            con.sql(f"CREATE OR REPLACE TABLE analytics.t AS SELECT i, {n} AS version FROM range({rows}) r(i)")
            publish_tables(con, bi, ["analytics.t"])
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert seen and all(lo == hi and count == 100_000 - 3_000 * lo and total == count * (count - 1) // 2
                        for count, lo, hi, total in seen)
    assert seen[-1][1] == 20 or reader.sql("SELECT min(version) FROM analytics.t").fetchall() == [(20,)]


def test_an_empty_table_reads_its_own_file_only(tmp_path):
    """With an empty file DuckDB builds the join from the scan, which then opened every file of the folder: an empty
    table published with a column more than its previous file failed every query. Its folder keeps one file."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    bi = tmp_path / "bi"
    con.sql("CREATE TABLE analytics.t AS SELECT i FROM range(1000) r(i)")
    publish_tables(con, bi, ["analytics.t"])
    con.sql("CREATE OR REPLACE TABLE analytics.t (i BIGINT, added VARCHAR)")
    publish_tables(con, bi, ["analytics.t"])
    reader = duckdb.connect(str(bi / "segments.duckdb"), read_only=True)
    assert reader.sql("SELECT count(*) FROM analytics.t").fetchall() == [(0,)]
    assert [c[0] for c in reader.sql("DESCRIBE analytics.t").fetchall()] == ["i", "added"]
    assert len(list((bi / "tables" / "analytics.t").iterdir())) == 1
    con.sql("INSERT INTO analytics.t VALUES (1, 'x')")
    publish_tables(con, bi, ["analytics.t"])
    assert reader.sql("SELECT count(*), min(added) FROM analytics.t").fetchall() == [(1, "x")]


def test_a_column_named_like_the_views_file_column_is_refused_before_the_switch(tmp_path):
    import pytest

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.t AS SELECT 1 AS __bi_file")
    with pytest.raises(ValueError, match="rename that column"):
        publish_tables(con, tmp_path / "bi", ["analytics.t"])
    assert not (tmp_path / "bi" / "current").exists()


def test_a_publication_that_fails_half_way_leaves_every_table_as_it_was(tmp_path, monkeypatch):
    """A tester's find: one table's folder could not take its new file, after the link ``current`` and the tables
    before it had switched: BI showed part of a failed run (17,000 users in user_segments, 16,000 in the profiles) and
    the CLI said the published tables were left as they were. Every file is now staged before anything switches,
    and a failure after the switch undoes it."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    for name, n in (("a", 10), ("b", 20), ("c", 30)):
        con.sql(f"CREATE TABLE analytics.{name} AS SELECT i FROM range({n}) t(i)")
    bi = tmp_path / "bi"
    first = publish_tables(con, bi, ["analytics.a", "analytics.b", "analytics.c"])
    target = os.readlink(bi / "current")
    con.sql("INSERT INTO analytics.a SELECT i FROM range(5) t(i)")
    con.sql("INSERT INTO analytics.c SELECT i FROM range(5) t(i)")

    def counts():
        with duckdb.connect(str(first.database), read_only=True) as reader:
            return [reader.sql(f"SELECT count(*) FROM analytics.{t}").fetchall()[0][0] for t in "ac"] + [
                duckdb.sql(f"SELECT count(*) FROM '{bi}/analytics.{t}.parquet'").fetchall()[0][0] for t in "ac"]

    folder = bi / "tables" / "analytics.c"  # c's folder cannot take a file (a read-only folder, for root too)
    saved = tmp_path / "saved_c"
    folder.rename(saved)
    folder.write_text("not a folder")
    with pytest.raises(OSError):
        publish_tables(con, bi, ["analytics.a", "analytics.b", "analytics.c"])
    folder.unlink()
    saved.rename(folder)
    assert os.readlink(bi / "current") == target and counts() == [10, 30, 10, 30]
    assert not [p for p in bi.rglob("*") if p.name.endswith(".tmp")]  # nothing staged is left behind

    def fail_views(*args):
        raise OSError("disk full")

    from seg_assets.publish import bi as B

    with monkeypatch.context() as m:  # a failure after the switch: the views file is written last
        m.setattr(B, "_write_views", fail_views)
        with pytest.raises(OSError, match="disk full"):
            publish_tables(con, bi, ["analytics.a", "analytics.b", "analytics.c"])
    assert os.readlink(bi / "current") == target and counts() == [10, 30, 10, 30]
    assert publish_tables(con, bi, ["analytics.a", "analytics.b", "analytics.c"]).rows["analytics.c"] == 35
    assert counts() == [15, 35, 15, 35]


def test_a_publication_record_staged_by_a_killed_run_is_removed_by_a_later_one(tmp_path):
    """A run killed between staging the record of its publication and putting it in place left
    `state/.published.json.<token>.tmp`; they piled up. The next publication removes one older than an hour."""
    import time

    from seg_assets.publish import state as published_state
    from seg_assets.settings import data_paths

    paths = data_paths(tmp_path).ensure()
    state = published_state.state_path(paths)
    state.parent.mkdir(parents=True)
    stale, recent = state.with_name(f".{state.name}.0badc0de.tmp"), state.with_name(f".{state.name}.5eedf00d.tmp")
    for path, age in ((stale, published_state.STALE_STAGED_SECONDS + 60), (recent, 5)):
        path.write_text("{}")
        os.utime(path, (time.time() - age, time.time() - age))
    published_state.commit_state(paths, published_state.stage_published_state(paths, [], "2026-10-31", "settings"))
    assert sorted(p.name for p in state.parent.iterdir()) == [recent.name, state.name]


def test_bi_comments_name_the_settings_defaults_from_their_one_definition():
    """BI comments stated default thresholds as facts ('1-5', '80th / 50th') written by hand: wrong after --set and apt
    to drift from the code (a reviewer's). They say 'default' and read each value where it is defined."""
    from seg_assets.churn.assets import ChurnConfig
    from seg_assets.publish.columns import describe
    from seg_assets.segmentation.scoring import ScoringConfig

    scoring, churn = ScoringConfig(), ChurnConfig()
    assert f"1..rfm_bins (default {scoring.rfm_bins})" in describe("analytics.user_segments", "f_score")
    life = describe("analytics.user_segments", "lifecycle_stage")
    for days in (scoring.new_max_tenure_days, scoring.active_max_recency_days, scoring.at_risk_max_recency_days,
                 scoring.dormant_max_recency_days):
        assert f"<= {days:g} d" in life, life
    tier = describe("analytics.user_segments", "value_tier")
    assert f"{scoring.value_high_quantile:.0%} / {scoring.value_medium_quantile:.0%}" in tier and "defaults" in tier
    assert f"default {churn.horizon_days})" in describe("analytics.user_segments", "churn_probability")


def test_the_language_comment_says_the_rule_language_of_applies():
    """review_sentiment.language's BI comment said 'English unless the identifier is 90 % sure', while language_of also
    takes a language at 50 % and 99 % beside English, or at 70 % among the languages with a lexicon (a German review of
    a shop with de.txt is 'de' far below 90 %). It names each threshold from reviews/sentiment.py."""
    from seg_assets.publish.columns import describe
    from seg_assets.reviews.sentiment import BESIDE_ENGLISH, CONFIDENT, LIKELY, PROBABLE

    said = describe("analytics.review_sentiment", "language")
    for share in (CONFIDENT, PROBABLE, BESIDE_ENGLISH, LIKELY):
        assert f"{share:.0%}" in said, said


def test_a_switch_killed_half_way_is_undone_before_the_next_refresh_writes(tmp_path, monkeypatch):
    """The views switch table by table, then ``current``: a SIGKILL (or a second Ctrl-C) in between left some views on
    the killed run's tables and the rest, and the Parquet links, on the last publication, until a later refresh
    published (a tester's: user_segments and segment_profiles of the killed run beside 11 tables of the one before).
    The first step of the next refresh (ingestion, under the write lock) removes what the killed switch left."""
    from seg_assets.publish import bi as B

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    tables = [f"analytics.{t}" for t in "abc"]
    for name, n in (("a", 10), ("b", 20), ("c", 30)):
        con.sql(f"CREATE TABLE analytics.{name} AS SELECT i FROM range({n}) t(i)")
    bi = tmp_path / "bi"
    first = publish_tables(con, bi, tables)
    for name in "abc":
        con.sql(f"INSERT INTO analytics.{name} SELECT i FROM range(5) t(i)")

    def counts():
        with duckdb.connect(str(first.database), read_only=True) as reader:
            return [reader.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables]

    class Killed(BaseException):  # SIGKILL: nothing after it runs, no undo either
        pass

    real_replace, renamed = os.replace, []

    def killed_after_two(src, dst):
        if "/tables/" in str(dst):
            if len(renamed) == 2:
                raise Killed
            renamed.append(dst)
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(B.os, "replace", killed_after_two)
        m.setattr(B._Switch, "undo", lambda self: None)
        m.setattr(B.shutil, "rmtree", lambda *a, **k: None)  # nor the cleanup of its version folder
        with pytest.raises(Killed):
            publish_tables(con, bi, tables)
    assert counts() == [15, 25, 30]  # the split a reader saw
    undone = B.undo_unfinished_switch(bi)
    assert len(undone) == 2 and counts() == [10, 20, 30], undone
    assert B.undo_unfinished_switch(bi) == []  # nothing more; a finished publication is left alone
    assert publish_tables(con, bi, tables).rows == dict(zip(tables, [15, 25, 35], strict=True))
    assert B.undo_unfinished_switch(bi) == [] and counts() == [15, 25, 35]


def test_ingestion_undoes_a_killed_switch_first(refreshed):
    """The call sits in ingest_landing's connection: a refresh after a killed switch starts from the last publication."""
    import shutil

    from seg_assets.publish.bi import undo_unfinished_switch
    from seg_assets.refresh import run_refresh

    bi = refreshed / "bi"
    assert run_refresh(refreshed, rebase=True).success  # this copy's own views (they read the template's until then)
    folder = bi / "tables" / "analytics.user_segments"  # not empty: an empty table's folder keeps its newest file only
    stray = folder / "000000000001.parquet"  # sorts before every file: what a killed switch leaves
    shutil.copy(sorted(folder.glob("*.parquet"))[0], stray)  # another file (a killed run's own), not current's
    outcome = run_refresh(refreshed, rebase=True)
    assert outcome.success and undo_unfinished_switch(bi) == []
    assert not stray.exists()
