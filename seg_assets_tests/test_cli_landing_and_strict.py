"""`seg-assets refresh` and the landing folder, through typer's runner on real files: when the segments are current,
--strict's exit 3 while a landing file is not taken in (by this refresh or an earlier one), an empty data root or
files no source reads, files written slowly or paused mid-line read only whole, a landed file rewritten under its
name named."""

import os
import shutil
import time
from pathlib import Path

from seg_assets.cli import app
from seg_assets.publish import state as published_state
from seg_assets.settings import data_paths
from seg_assets_tests.cli_runner import runner


def test_a_change_of_code_or_as_of_makes_the_segments_not_current(tmp_path, monkeypatch):
    import duckdb

    from seg_assets.publish.bi import publish_tables

    paths = data_paths(tmp_path).ensure()
    with duckdb.connect(str(paths.warehouse)) as con:  # a publication of no table: the views file and bi/current
        publish_tables(con, paths.bi, [])
    settings = published_state.settings_fingerprint({}, None)

    def record(files, audiences=True):  # as bi_segments records a publication: staged, then put in place; current once
        published_state.commit_state(paths, published_state.stage_published_state(paths, files, "2026-10-31", settings))
        if audiences:  # campaign_audiences has written its files
            published_state.finish_publication(paths)

    record([], audiences=False)
    assert published_state.nothing_new(paths, settings) is None  # killed before the audiences: not current
    record([])
    assert published_state.nothing_new(paths, settings)
    assert published_state.nothing_new(paths, published_state.settings_fingerprint({}, "2026-10-01")) is None
    paths.warehouse.rename(paths.root / "aside.duckdb")  # moved aside to be rebuilt (a damaged file's advice)
    assert published_state.nothing_new(paths, settings) is None
    (paths.root / "aside.duckdb").rename(paths.warehouse)
    # a configuration file is input too: a new or changed sources.yaml or actions.yaml refreshes
    (paths.root / "actions.yaml").write_text("actions: {}\n")
    assert published_state.nothing_new(paths, settings) is None
    record([])
    assert published_state.nothing_new(paths, settings)
    # a file that failed is read again when it changes, not on every refresh (it would fail the same way)
    (paths.landing / "orders").mkdir(parents=True)
    (paths.landing / "orders" / "a.csv").write_text("x\n")
    assert published_state.nothing_new(paths, settings) is None
    record([["orders/a.csv", 2, True]])
    assert "1 file(s) not taken in (orders/a.csv) are read again" in published_state.nothing_new(paths, settings)
    # fixed without a change of size (chmod of an unreadable file, a rewrite at the same size): read again
    time.sleep(0.05)  # past the file system's timestamp tick
    os.chmod(paths.landing / "orders" / "a.csv", 0o600)
    assert published_state.nothing_new(paths, settings) is None
    record([["orders/a.csv", 2, True]])
    assert published_state.nothing_new(paths, settings)
    (paths.landing / "orders" / "a.csv").write_text("x,y\n")
    assert published_state.nothing_new(paths, settings) is None
    monkeypatch.setattr(published_state, "code_fingerprint", lambda: "other code")
    assert published_state.nothing_new(paths, settings) is None


def test_the_code_fingerprint_covers_every_module_of_the_package():
    """When the module moved into publish/, the fingerprint covered its 7 neighbours only: an upgrade of any other
    module said "Segments are current" and never ran (a reviewer's)."""
    import seg_assets
    from seg_assets.publish.state import code_files

    covered = {path for label, _, path in code_files() if label == "py"}
    package = Path(seg_assets.__file__).resolve().parent
    assert covered == set(package.rglob("*.py")) and package / "recommend" / "model.py" in covered
    assert any(label == "lexicon" for label, _, _ in code_files())


def test_strict_exits_3_while_a_landing_file_is_not_taken_in(tmp_path, monkeypatch):
    """A good delivery and one unconverted file: published, exit 0 by default (the file named), 3 with --strict, also
    when nothing changed since (the file still waits for a fix); cron and CI can tell."""
    from seg_assets.demo.generate import generate

    root = tmp_path / "data"
    generate(root, users=60, days=60, seed=3)
    (root / "landing" / "orders" / "export.csv").write_text("customer,date,qty,amount\n1,19970101,1,29.33\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    strict = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert strict.exit_code == 3, strict.output
    assert "Refresh done" in strict.output and "orders/export.csv: rejected file" in strict.output
    again = runner.invoke(app, ["refresh", "--no-summary"])
    assert again.exit_code == 0 and "Segments are current" in again.output and "(orders/export.csv)" in again.output
    assert runner.invoke(app, ["refresh", "--no-summary", "--strict"]).exit_code == 3
    # a file no source reads counts too (a link out of landing/), named, also when the segments are current
    (root / "landing" / "orders" / "export.csv").unlink()
    (root / "landing" / "orders" / "passwd.csv").symlink_to("/etc/passwd")
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    linked = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert linked.exit_code == 3 and "not read landing/orders/passwd.csv: a link out of the landing folder" in linked.output
    # a refresh that runs names it in its closing line too, with the files not taken in (it was only in a warning)
    shutil.copy(next((root / "landing" / "orders").glob("*.parquet")), root / "landing" / "orders" / "again.parquet")
    ran = runner.invoke(app, ["refresh", "--no-summary"])
    [closing] = [line for line in ran.output.splitlines() if line.startswith("Refresh done")]
    assert "orders/passwd.csv: a link out of the landing folder" in closing, ran.output
    # a file read but every row of it rejected is not taken in either, on the next runs too (it was forgotten there)
    (root / "landing" / "orders" / "passwd.csv").unlink()
    (root / "landing" / "orders" / "bad_rows.csv").write_text(
        "order_id,user_id,order_ts,amount,items,category,discount,status\n"
        "x1,u1,2026-01-01T10:00:00Z,-5.00,1,books,,completed\nx2,u1,2026-01-01T11:00:00Z,-1.00,1,books,,completed\n")
    assert runner.invoke(app, ["refresh", "--no-summary", "--strict"]).exit_code == 3
    again = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert again.exit_code == 3 and "Segments are current" in again.output and "(orders/bad_rows.csv)" in again.output
    (root / "landing" / "orders" / "sheet.xlsx").write_bytes(b"PK")  # named beside the failed file (it was not)
    again = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert again.exit_code == 3 and "not read landing/orders/sheet.xlsx" in again.output, again.output


def test_strict_counts_a_file_an_earlier_refresh_could_not_take_in(tmp_path, monkeypatch):
    """A rejected file, then a good delivery: the refresh that took the good one in exited 0 under --strict, the one
    before and after (segments current) 3, for the same landing folder."""
    from seg_assets.demo.generate import generate

    root = tmp_path / "data"
    generate(root, users=60, days=60, seed=3, with_reviews=False, with_lines=False)
    (root / "landing" / "orders" / "export.csv").write_text("customer,date,qty,amount\n1,19970101,1,29.33\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    good = (root / "landing" / "orders" / "late.csv")
    good.write_text("order_id,user_id,order_ts,amount,items,status\nlate1,u000001,2026-10-30T10:00:00Z,10,1,completed\n")
    strict = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert strict.exit_code == 3 and "not taken in landing/orders/export.csv" in strict.output, strict.output
    assert runner.invoke(app, ["refresh", "--no-summary", "--strict"]).exit_code == 3  # current: as before
    # without --strict, a refresh that publishes other files names it in its closing line too (a tester's: only a
    # refresh that found nothing new, or --strict, named it)
    (root / "landing" / "orders" / "later.csv").write_text(good.read_text().replace("late1", "late2"))
    ran = runner.invoke(app, ["refresh", "--no-summary"])
    [closing] = [line for line in ran.output.splitlines() if line.startswith("Refresh done")]
    assert ran.exit_code == 0 and "1 file(s) failed or rejected by an earlier refresh" in closing, ran.output
    assert "landing/orders/export.csv" in closing and "later.csv" not in closing, closing


def test_an_empty_data_root_has_nothing_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "Nothing to do: no landing files under" in said and "does not exist" in said
    assert f"seg-assets generate {tmp_path / 'data'}" in said  # the command to run, whole
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()


def test_a_landing_folder_of_files_no_source_reads_is_not_empty(tmp_path, monkeypatch):
    """A tab-separated export named .tsv and a folder no source reads: "Nothing to do: no landing files", exit 0 even
    with --strict. Each file is named; --strict exits 3; no warehouse is made."""
    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "export.tsv").write_text("order_id\tuser_id\no1\tu1\n")
    (root / "landing" / "ordres").mkdir()
    (root / "landing" / "ordres" / "a.csv").write_text("order_id,user_id\no1,u1\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    plain = runner.invoke(app, ["refresh"])
    assert plain.exit_code == 0 and "Nothing read: 2 file(s)" in plain.output and "Nothing to do" not in plain.output
    assert "not read landing/orders/export.tsv" in plain.output and "not read landing/ordres/a.csv" in plain.output
    assert runner.invoke(app, ["refresh", "--strict"]).exit_code == 3
    assert not (root / "warehouse.duckdb").exists()


def test_a_file_written_slowly_during_a_refresh_is_not_read_half_written(tmp_path, monkeypatch):
    """The landing rule in the CLI's run: a file still growing is waited for (size and mtime quiet for
    SEG_SETTLE_SECONDS), then read whole; nothing of it is read while it is being written."""
    import threading
    import time

    import duckdb

    root = tmp_path / "data"
    assert runner.invoke(app, ["generate", str(root), "--users", "300", "--days", "20", "--seed", "4",
                               "--format", "csv", "--no-clicks"]).exit_code == 0
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.setenv("SEG_SETTLE_SECONDS", "1.5")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    slow = root / "landing" / "orders" / "slow.csv"
    rows = [f"slow{i},u{i % 50},2026-10-30T10:00:00Z,12.50,1,books,,completed" for i in range(40)]

    def writer():
        with open(slow, "w") as handle:
            handle.write("order_id,user_id,order_ts,amount,items,category,discount,status\n")
            for i in range(0, 40, 5):
                handle.write("\n".join(rows[i:i + 5]) + "\n")
                handle.flush()
                time.sleep(0.4)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    result = runner.invoke(app, ["refresh"])
    thread.join()
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    ledger = con.sql("SELECT delivered, accepted FROM meta.ingest_ledger WHERE file_name = 'orders/slow.csv'").fetchall()
    con.close()
    assert ledger == [(40, 40)]


def test_a_file_whose_writer_pauses_mid_line_is_not_read_until_it_is_whole(tmp_path, monkeypatch):
    """A writer paused longer than the settle time in the middle of a line (a value cut short: '131.52' would be
    read as '13'), or at a line end with the file still open (a tester's: 788 of 2,365 rows read): not read; read
    whole once finished."""
    import duckdb

    root = tmp_path / "data"
    assert runner.invoke(app, ["generate", str(root), "--users", "300", "--days", "20", "--seed", "4",
                               "--format", "csv", "--no-clicks", "--no-reviews"]).exit_code == 0
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.setenv("SEG_SETTLE_SECONDS", "1")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    slow = root / "landing" / "orders" / "slow.csv"
    text = "order_id,user_id,order_ts,status,items,category,discount,amount\n" + "".join(
        f"slow{i},u{i % 50},2026-10-30T10:00:00Z,completed,1,books,,131.52\n" for i in range(40))
    cut = text.index("131.52", len(text) // 2) + 2
    slow.write_text(text[:cut])  # ... ,13 and the writer pauses for the whole refresh
    paused = root / "landing" / "orders" / "paused.csv"
    lines = text.replace("slow", "paused")
    half = lines.index("\n", len(lines) // 2) + 1
    writer = paused.open("w")  # whole lines so far, and the writer still at it
    writer.write(lines[:half])
    writer.flush()
    first = runner.invoke(app, ["refresh", "--strict"])  # published without them; named, and not taken in for --strict
    [closing] = [line for line in first.output.splitlines() if line.startswith("Refresh done")]
    assert first.exit_code == 3 and "orders/slow.csv: left to the next run: its last line has no end yet" in closing, first.output
    assert "orders/paused.csv: left to the next run: open for writing by process" in closing, first.output
    writer.write(lines[half:])
    writer.close()
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM meta.ingest_ledger WHERE file_name = 'orders/slow.csv'").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM raw.orders WHERE order_id LIKE 'slow%'").fetchall() == [(0,)]
    slow.write_text(text)
    second = runner.invoke(app, ["refresh"])
    assert second.exit_code == 0, second.output
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT delivered, accepted FROM meta.ingest_ledger WHERE file_name IN ('orders/slow.csv', "
                       "'orders/paused.csv')").fetchall() == [(40, 40)] * 2
        amounts = con.sql("SELECT min(amount)::DOUBLE, max(amount)::DOUBLE FROM raw.orders WHERE order_id LIKE 'slow%'")
        assert amounts.fetchall() == [(131.52, 131.52)]


def test_a_landed_file_rewritten_under_its_name_is_named(tmp_path, monkeypatch):
    """Read again with its known ids kept as first taken in: the only trace was the ledger's message."""
    root = tmp_path / "data"
    assert runner.invoke(app, ["generate", str(root), "--users", "60", "--days", "30", "--seed", "5", "--format", "csv",
                               "--no-reviews", "--no-lines"]).exit_code == 0
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    orders = sorted((root / "landing" / "orders").glob("*.csv"))[0]
    orders.write_text("".join(orders.read_text().splitlines(keepends=True)[:5]))  # cut: other content, other size
    again = runner.invoke(app, ["refresh", "--no-summary"])
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and f"orders/{orders.name}: was taken in before with other content" in said, again.output


def test_a_publication_of_a_forced_fit_is_current_for_the_plain_refresh_after_it():
    """The fit mode says when to fit, not what a publication reflects: after `refresh --refit` (segment_model.fit =
    always) the next plain refresh with nothing new ran the whole job again (17.5 s on a 400-user shop) instead of
    saying the segments are current; the hourly schedule did the same. A refresh that asks for a fit still runs."""
    from seg_assets.automation.run_config import forces_a_fit, parse_assignment, refresh_run_config

    refit = published_state.settings_fingerprint(refresh_run_config(refit=True)["ops"], None)
    assert refit == published_state.settings_fingerprint({}, None)
    churn = parse_assignment("churn_model.fit=always")
    assert published_state.settings_fingerprint(churn["ops"], None) == published_state.settings_fingerprint({}, None)
    assert published_state.settings_fingerprint(parse_assignment("churn_model.min_auc=0.6")["ops"], None) != refit
    assert forces_a_fit(churn) and forces_a_fit(parse_assignment("segment_model.fit=always"))
    assert not forces_a_fit(parse_assignment("segment_model.fit=when_needed")) and not forces_a_fit({"ops": {}})
