"""SQL models: dependencies come from the SQL itself; a new file is a new asset."""

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlglot

from seg_assets.features.incremental import sliding_windows
from seg_assets.features.sql_files import SqlModelError, discover_models, load_model, read_header, upstream_tables
from seg_assets.features.sql_models import build_sql_asset, build_version, incremental_windows, run_model, sql_assets


def test_upstream_tables_excludes_ctes_and_finds_joins():
    sql = """
    WITH recent AS (SELECT * FROM staging.stg_orders WHERE order_ts > getvariable('as_of') - INTERVAL 7 DAY)
    SELECT r.user_id FROM recent r JOIN raw.clicks c USING (user_id) LEFT JOIN features.user_order_stats s USING (user_id)
    """
    assert upstream_tables(sql) == (("features", "user_order_stats"), ("raw", "clicks"), ("staging", "stg_orders"))


def test_unqualified_table_is_a_clear_error():
    with pytest.raises(ValueError, match="must be schema-qualified"):
        upstream_tables("SELECT * FROM orders", source="x.sql")


@pytest.mark.parametrize("sql", ["SELECT 1 AS user_id FROM raw.orders LIMIT 1; COPY (SELECT 'x') TO 'pwned.csv'",
                                 "DELETE FROM raw.orders", "SELECT 1 FROM raw.orders; SELECT 2 FROM raw.clicks"])
def test_a_model_is_one_query(sql):
    """A second statement ran too (a COPY wrote a file), unseen by the reading of what the model reads."""
    with pytest.raises(ValueError, match="a model is one SELECT"):
        upstream_tables(sql, source="x.sql")


def test_header_is_read_until_the_first_sql_line():
    assert read_header("-- materialized: view\n-- description: d e f\nSELECT 1 -- owner: nobody") == {
        "materialized": "view", "description": "d e f"}


def test_a_misspelt_header_key_is_refused_naming_the_key_it_meant(tmp_path):
    """A misspelt key was ignored: '-- evnt_time:' left an incremental model's inputs undated, '-- descripton:' the UI
    without a description. Any key the loader does not read is refused in one line; the project's own models load."""
    (tmp_path / "f").mkdir()
    path = tmp_path / "f" / "agg.sql"
    for key, meant in (("evnt_time", "event_time"), ("descripton", "description"), ("unique_kye", "unique_key"),
                       ("owner", None)):
        path.write_text(f"-- materialized: table\n-- {key}: x\nSELECT 1 AS user_id")
        hint = f"did you mean '-- {meant}:'\\? " if meant else ""
        with pytest.raises(SqlModelError, match=rf"agg\.sql: unknown header '-- {key}:' \({hint}the header sets materialized"):
            load_model(path)
    assert len(discover_models()) >= 9


def test_project_models_form_a_graph_rooted_in_raw_tables():
    models = {m.table: m for m in discover_models()}
    assert {"staging.stg_orders", "staging.stg_clicks", "staging.stg_customers", "features.user_order_stats",
            "features.user_click_stats", "features.user_category_activity"} <= set(models)
    assert set(models["staging.stg_orders"].upstream) == {("raw", "orders"), ("staging", "line_orders")}
    assert set(models["staging.line_orders"].upstream) == {("raw", "orders"), ("raw", "order_items"), ("raw", "withheld_orders")}
    assert models["features.user_order_stats"].upstream == (("staging", "stg_orders"),)
    assert set(models["features.user_category_activity"].upstream) == {("staging", "stg_orders"), ("staging", "stg_clicks")}
    # Personal data stays in raw.customers.
    projection = sqlglot.parse_one(models["staging.stg_customers"].sql, dialect="duckdb").named_selects
    assert "email" not in projection and "*" not in projection and "user_id" in projection


def test_adding_a_file_adds_an_asset(tmp_path):
    (tmp_path / "marts").mkdir()
    (tmp_path / "marts" / "big_spenders.sql").write_text(
        "-- materialized: table\n-- description: users above 100\nSELECT user_id FROM features.user_order_stats WHERE monetary > 100\n")
    (model,) = discover_models(tmp_path)
    asset = build_sql_asset(model)
    assert asset.key == dg.AssetKey(["marts", "big_spenders"])
    assert dg.AssetKey(["features", "user_order_stats"]) in {d.asset_key for d in asset.specs_by_key[asset.key].deps}


def test_a_models_macros_expand_to_the_contracts_rule_and_a_bad_one_is_one_line(tmp_path):
    """`{{ holds_email('c') }}` is ingest/contract.py's test, in every model that asks for it (five staging columns
    wrote the pattern out); a macro that does not exist is refused at load, naming the file."""
    from seg_assets.ingest.contract import holds_email_sql

    (tmp_path / "marts").mkdir()
    good = tmp_path / "marts" / "x.sql"
    good.write_text("-- materialized: view\nSELECT CASE WHEN {{ holds_email('c') }} THEN NULL ELSE c END AS c FROM raw.t\n")
    assert f"CASE WHEN {holds_email_sql('c')} THEN" in load_model(good).sql
    bad = tmp_path / "marts" / "y.sql"
    bad.write_text("-- materialized: view\nSELECT {{ hides_email('c') }} FROM raw.t\n")
    with pytest.raises(SqlModelError, match=r"y\.sql: line 2: Jinja other than a call of a macro .*\(macros: holds_email, "
                       r"without_order_row, exact_money;"):
        load_model(bad)


def test_line_orders_reads_the_contracts_rule_of_an_order_row():
    """Which order ids have an order row (taken in or withheld) is contract.without_order_row_sql, in both of
    staging.line_orders' reads of the lines (and in the ingest warning about orders of several users)."""
    from seg_assets.ingest.contract import without_order_row_sql
    from seg_assets.settings import DEFAULT_SQL_DIR

    rule = without_order_row_sql("order_id")
    assert load_model(DEFAULT_SQL_DIR / "staging" / "line_orders.sql").sql.count(rule) == 2


def test_money_is_summed_by_one_rule_in_sql_and_python():
    """The type money is summed in is contract.exact_money_sql: the order features' two sums (the Jinja macro), and the
    churn labels and campaign outcomes (Python), each wrote DECIMAL(38, 2) out."""
    import inspect

    from seg_assets.activation import outcomes
    from seg_assets.churn import snapshots
    from seg_assets.ingest.contract import exact_money_sql
    from seg_assets.settings import DEFAULT_SQL_DIR

    sql = load_model(DEFAULT_SQL_DIR / "features" / "user_order_stats.sql").sql
    assert sql.count(f"sum({exact_money_sql('amount')})") == 1 and sql.count(f"sum({exact_money_sql('discount')})") == 1
    for module in (outcomes, snapshots):
        assert "exact_money_sql(" in inspect.getsource(module) and "DECIMAL(38" not in inspect.getsource(module)


def test_duckdb_braces_in_a_model_are_refused_not_changed_and_raw_keeps_them(tmp_path):
    """DuckDB writes a literal brace in format() as '{{': Jinja read `format('{{{}}}', user_id)` as its own and the
    model gave 'u1' instead of '{u1}' without a word (a reviewer's). Only macro calls are expanded; other Jinja is one
    line naming the file and line, and {% raw %} keeps DuckDB's braces as written."""
    import duckdb

    (tmp_path / "marts").mkdir()
    changed = tmp_path / "marts" / "tagged.sql"
    changed.write_text("-- materialized: view\nSELECT format('{{{}}}', user_id) AS tag FROM raw.t\n")
    with pytest.raises(SqlModelError, match=r"tagged\.sql: line 2: .*\{% raw %\}"):
        load_model(changed)
    kept = tmp_path / "marts" / "kept.sql"
    kept.write_text("-- materialized: view\nSELECT format('{% raw %}{{{}}}{% endraw %}', user_id) AS tag FROM raw.t\n")
    sql = load_model(kept).sql
    assert duckdb.sql(sql.replace("raw.t", "(SELECT 'u1' AS user_id)")).fetchall() == [("{u1}",)]
    wrong = tmp_path / "marts" / "args.sql"
    wrong.write_text("-- materialized: view\nSELECT {{ holds_email('a', 'b') }} FROM raw.t\n")
    with pytest.raises(SqlModelError, match=r"args\.sql: .*TypeError"):
        load_model(wrong)
    comment = tmp_path / "marts" / "comment.sql"  # Jinja drops a {# ... #} without a word (a reviewer's)
    comment.write_text("-- materialized: view\nSELECT {{ holds_email('c') }} AS e,\n  '{#' || c || '#}' AS tag FROM raw.t\n")
    with pytest.raises(SqlModelError, match=r"comment\.sql: line 3: a Jinja comment"):
        load_model(comment)


def test_a_new_schema_folder_materializes(tmp_path, monkeypatch):
    """The warehouse creates a schema per SQL folder: a new folder needs no list kept in sync."""
    sql = tmp_path / "sql"
    (sql / "marts").mkdir(parents=True)
    (sql / "marts" / "x.sql").write_text("-- materialized: table\nSELECT 42 AS answer\n")
    assert _built(sql, tmp_path, monkeypatch, "SELECT answer FROM marts.x") == [(42,)]


def _built(sql, tmp_path, monkeypatch, query: str) -> list:
    """Materialize the models of the folder ``sql`` into a warehouse under ``tmp_path``; ``query``'s rows."""
    from seg_assets.resources import build_resources

    monkeypatch.setenv("SEG_SQL_DIR", str(sql))
    result = dg.materialize(sql_assets(sql), resources=build_resources(tmp_path / "data", "2026-01-01T00:00:00Z"))
    assert result.success
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(query).fetchall()


def test_views_are_made_in_the_order_they_read_each_other_and_a_folder_or_file_name_must_be_an_sql_name(tmp_path,
                                                                                                     monkeypatch):
    """A view in a new folder reading another view failed every refresh: views were made in path order (a tester's
    mart over a staging view). A folder or file name that is no plain SQL name (data-marts/) failed with a traceback."""

    sql = tmp_path / "sql"
    for folder in ("a_marts", "z_staging"):
        (sql / folder).mkdir(parents=True)
    (sql / "z_staging" / "base.sql").write_text("-- materialized: view\nSELECT 42 AS answer\n")
    (sql / "a_marts" / "over.sql").write_text("-- materialized: view\nSELECT answer + 1 AS answer FROM z_staging.base\n")
    (sql / "a_marts" / "a_first.sql").write_text("-- materialized: view\nSELECT answer * 2 AS answer FROM a_marts.over\n")
    assert _built(sql, tmp_path, monkeypatch, "SELECT answer FROM a_marts.a_first") == [(86,)]
    for bad in ("data-marts/x.sql", "marts/big-spenders.sql", "1st/x.sql"):
        path = tmp_path / "bad" / bad
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("-- materialized: table\nSELECT 1 AS one\n")
        with pytest.raises(SqlModelError, match=r"must be a plain SQL name"):
            load_model(path)


@pytest.mark.parametrize("body", ["SELECT CAST('x' AS INTEGER) AS answer", "SELECT nope FROM (SELECT 1 AS answer)",
                                  "SELECT 9223372036854775807::BIGINT * 2 AS answer"])
def test_a_broken_model_of_your_own_folder_is_one_line_not_retried(tmp_path, monkeypatch, body):
    """A model in SEG_SQL_DIR that DuckDB cannot run was "unexpected: please report it" with a traceback, retried twice."""
    from seg_assets.resources import build_resources

    sql = tmp_path / "sql"
    (sql / "marts").mkdir(parents=True)
    (sql / "marts" / "x.sql").write_text(f"-- materialized: table\n{body}\n")
    monkeypatch.setenv("SEG_SQL_DIR", str(sql))
    result = dg.materialize(sql_assets(sql), resources=build_resources(tmp_path / "data", "2026-01-01T00:00:00Z"),
                            raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.user_failure_data
    assert error is not None and error.description.startswith(f"SQL model {sql / 'marts' / 'x.sql'}: ")
    assert "fix the model" in error.description and "\n" not in error.description


def _one_model(tmp_path, raw_values: str, sql: str):
    """A warehouse with ``raw.t`` (one column from ``raw_values``) and the model ``s.m`` of ``sql``: (con, model)."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.sql("CREATE SCHEMA raw; CREATE SCHEMA s")
    con.sql(f"CREATE TABLE raw.t AS SELECT * FROM (VALUES {raw_values}) v(x)")
    path = tmp_path / "s" / "m.sql"
    path.parent.mkdir()
    path.write_text(sql)
    return con, load_model(path)


def test_run_model_uses_the_as_of_variable(tmp_path):
    con, model = _one_model(tmp_path, "(TIMESTAMP '2026-01-01'), (TIMESTAMP '2026-02-01')",
                            "SELECT count(*) AS n FROM raw.t WHERE x <= getvariable('as_of')")
    assert model.materialized == "table"
    assert run_model(con, model, datetime(2026, 1, 15))[0] == 1
    assert con.sql("SELECT n FROM s.m").fetchall() == [(1,)]
    run_model(con, model, datetime(2026, 3, 1))  # re-running replaces, never appends
    assert con.sql("SELECT n FROM s.m").fetchall() == [(2,)]


def test_a_view_model_is_created_not_run(tmp_path):
    """Counting a view's rows would run it (every order line aggregated into orders, on every refresh)."""
    con, model = _one_model(tmp_path, "('1'), ('x')", "-- materialized: view\nSELECT CAST(x AS INTEGER) AS n FROM raw.t")
    assert run_model(con, model, datetime(2026, 1, 15)) == (None, None)  # not run: 'x' would fail here
    with pytest.raises(duckdb.ConversionException):  # the view exists; reading it is what runs it
        con.sql("SELECT * FROM s.m").fetchall()


def test_an_incremental_model_that_reads_as_of_must_read_dated_sql_models(tmp_path):
    """Which rows come inside as-of is told by the input's event time; a model that does not read as-of changes only
    with new files (staging.line_orders reads raw.withheld_orders, which has no event time)."""
    (tmp_path / "staging").mkdir()
    (tmp_path / "features").mkdir()
    (tmp_path / "staging" / "undated.sql").write_text(
        "-- materialized: view\nSELECT user_id, event_ts, _file_id FROM raw.clicks")
    agg = "-- materialized: incremental\n-- unique_key: user_id\nSELECT user_id, count(*) AS n FROM staging.undated {} GROUP BY 1"
    (tmp_path / "features" / "agg.sql").write_text(agg.format("WHERE event_ts <= getvariable('as_of')"))
    with pytest.raises(ValueError, match="event_time"):
        sql_assets(tmp_path)
    (tmp_path / "features" / "agg.sql").write_text(agg.format(""))
    assert len(sql_assets(tmp_path)) == 2
    (tmp_path / "features" / "agg.sql").write_text(agg.format("WHERE event_ts <= getvariable('as_of')"))
    (tmp_path / "staging" / "undated.sql").write_text(
        "-- materialized: view\n-- event_time: event_ts\nSELECT user_id, event_ts, _file_id FROM raw.clicks")
    assert len(sql_assets(tmp_path)) == 2


def test_windows_are_derived_from_the_sql(tmp_path):
    """The sliding windows are read from the SQL's event-time comparisons with as-of; a header would be a second
    copy of that rule, and a use of as-of whose rows cannot be found is an error naming the model and expression."""
    models = {m.table: m for m in discover_models()}
    assert incremental_windows(models["features.user_order_stats"], models) == ("30 days", "90 days")
    assert "windows" not in read_header(models["features.user_order_stats"].sql)

    def windows(condition):
        return sliding_windows(f"SELECT count(*) FILTER (WHERE {condition}) AS n FROM s.t", {"order_ts"}, "m.sql")

    as_of = "getvariable('as_of')"
    assert windows(f"o.order_ts > {as_of} - INTERVAL 7 DAY AND order_ts <= {as_of}") == ("7 days",)
    assert windows(f"order_ts >= ({as_of} - INTERVAL '90 days') OR {as_of}::TIMESTAMP - to_hours(6) < order_ts") == (
        "6 hours", "90 days")
    assert windows(f"order_ts BETWEEN {as_of} - CAST('1 month' AS INTERVAL) AND {as_of}") == ("1 month",)
    assert windows(f"order_ts < {as_of}") == ("0 days",)  # strict: a row at the last as-of comes in now
    for unbounded in (f"date_diff('day', order_ts, {as_of}) < 30", f"signup_ts > {as_of} - INTERVAL 3 DAY",
                      f"order_ts > {as_of} - INTERVAL (n) DAY", f"order_ts = {as_of}",
                      f"order_ts >= {as_of}::DATE - INTERVAL 7 DAY"):  # a day-aligned edge moves at midnight (a tester's)
        with pytest.raises(ValueError, match=r"m\.sql: cannot tell which rows `.*(DATE_DIFF|signup_ts|\(n\)|=|DATE)"):
            windows(unbounded)
    assert windows(f"order_ts >= {as_of}::TIMESTAMP - INTERVAL 7 DAY") == ("7 days",)
    with pytest.raises(ValueError, match="AS stamped"):
        sliding_windows(f"SELECT user_id, {as_of} AS stamped FROM s.t", {"order_ts"})

    (tmp_path / "f").mkdir()
    path = tmp_path / "f" / "agg.sql"
    path.write_text("-- materialized: incremental\n-- unique_key: user_id\n-- windows: 30 days\nSELECT 1 AS user_id")
    with pytest.raises(ValueError, match="windows are derived from the SQL; remove the '-- windows:' header"):
        load_model(path)

    # a window inside a view the model reads: rows leave the view as as-of moves, unseen by an incremental build (a
    # tester's: 382 users counted with orders that had left a 7-day view)
    sql = tmp_path / "sql"
    (sql / "marts").mkdir(parents=True)
    (sql / "marts" / "recent.sql").write_text("-- materialized: view\n-- event_time: order_ts\nSELECT * FROM raw.orders "
                                              "WHERE order_ts > getvariable('as_of') - INTERVAL 7 DAY\n")
    (sql / "marts" / "per_user.sql").write_text("-- materialized: incremental\n-- unique_key: user_id\n"
                                                "SELECT user_id, count(*) AS n FROM marts.recent GROUP BY user_id\n")
    with pytest.raises(SqlModelError, match=r"per_user\.sql: incremental model reads marts\.recent, a view that uses"):
        sql_assets(sql)


def _deliver(con, tmp_path, k: int, files: dict[str, str]) -> None:
    """Land ``files`` (path under landing/ -> CSV text) and ingest them as run ``r<k>``."""
    from seg_assets.ingest.loader import ingest_landing

    for name, text in files.items():
        (tmp_path / "landing" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "landing" / name).write_text(text)
    ingest_landing(con, tmp_path / "landing", run_id=f"r{k}", now=datetime(2026, 2, 1),
                   clock_skew=timedelta(hours=1), min_ts=datetime(2000, 1, 1))


def test_orders_from_lines_are_updated_for_the_orders_that_changed(tmp_path):
    """staging.line_orders is incremental by order id over the raw tables (dated by the contract's order_ts): a
    line added to an order, a new order, and an order later delivered as an order row (dropped here) give
    exactly a full rebuild's rows, the other orders untouched."""
    models = {m.table: m for m in discover_models()}
    model = models["staging.line_orders"]
    lines = "order_id,user_id,order_ts,product_id,quantity,unit_price,category,description,status\n"
    orders = "order_id,user_id,order_ts,amount,items,category,discount,status\n"
    deliveries = [
        {"order_items/l1.csv": lines + "L1,u1,2026-01-02T10:00:00Z,p1,1,5.0,a,x,completed\n"
                                       "L1,u1,2026-01-02T10:00:00Z,p2,2,1.5,b,y,completed\n"
                                       "L2,u2,2026-01-03T10:00:00Z,p1,1,5.0,a,x,cancelled\n"
                                       + "".join(f"K{i},u{i},2026-01-04T10:00:00Z,p1,1,5.0,a,x,completed\n" for i in range(6)),
         "orders/o1.csv": orders + "O1,u3,2026-01-02T09:00:00Z,12.50,1,a,0,completed\n"},
        {"order_items/l2.csv": lines + "L1,u1,2026-01-02T10:00:00Z,p3,3,2.0,b,z,completed\n"
                                       "L1,u1,2026-01-02T10:00:00Z,p4,1,30.0,b,w,cancelled\n"  # not spend: L1 stays 14.0
                                       "L3,u4,2026-01-05T10:00:00Z,p2,1,1.5,b,y,returned\n",
         "orders/o2.csv": orders + "L2,u2,2026-01-03T10:00:00Z,5.00,1,a,0,cancelled\n"},
    ]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    builds = []
    for k, files in enumerate(deliveries):
        _deliver(con, tmp_path, k, files)
        builds.append(run_model(con, model, datetime(2026, 1, 31), models=models)[1].mode)
    assert builds == ["full", "incremental"]
    assert con.sql("SELECT changed_keys FROM meta.model_builds WHERE model = 'staging.line_orders'").fetchall() == [(3,)]
    body = model.sql.strip().rstrip(";")
    assert con.sql("SELECT * FROM staging.line_orders ORDER BY ALL").fetchall() == con.sql(f"{body} ORDER BY ALL").fetchall()
    rows = {r[0]: r for r in con.sql("SELECT order_id, amount, items, category, status FROM staging.line_orders").fetchall()}
    assert rows["L1"] == ("L1", 14.0, 6, "b", "completed") and rows["L3"] == ("L3", 1.5, 1, "b", "returned")
    assert "L2" not in rows and len(rows) == 8  # L2 came as an order row: stg_orders takes it from raw.orders


def test_a_model_built_before_its_rewritten_input_catches_up_later(tmp_path):
    """A subset run may build features.user_order_stats while staging.line_orders has not yet taken in a
    delivery's lines. The stats then record line_orders' watermark, not the ledger's, so the order rewritten by
    line_orders' next build is still new to them: both stay exactly what a full rebuild gives."""
    models = {m.table: m for m in discover_models()}
    lines = "order_id,user_id,order_ts,product_id,quantity,unit_price,category,description,status\n"
    deliveries = [
        {"order_items/l1.csv": lines + "L1,u1,2026-01-02T10:00:00Z,p1,1,5.0,a,x,completed\n"
                                       "L2,u2,2026-01-03T10:00:00Z,p1,2,5.0,a,x,completed\n"},
        {"order_items/l2.csv": lines + "L1,u1,2026-01-02T10:00:00Z,p2,3,2.0,b,y,completed\n"},
    ]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    as_of = datetime(2026, 1, 31)

    def build(*tables):
        return [run_model(con, models[t], as_of, models=models)[1] for t in tables]

    _deliver(con, tmp_path, 0, deliveries[0])
    build("staging.line_orders", "staging.stg_orders", "features.user_order_stats")
    _deliver(con, tmp_path, 1, deliveries[1])
    [stats] = build("features.user_order_stats")  # line_orders is behind: nothing new for the stats yet
    assert stats.incremental and stats.changed == 0
    [orders, stats] = build("staging.line_orders", "features.user_order_stats")
    assert orders.changed == 1 and stats.changed == 1
    stats_sql = models["features.user_order_stats"].sql.strip().rstrip(";")
    assert con.sql("SELECT * FROM features.user_order_stats ORDER BY ALL").fetchall() == \
        con.sql(f"{stats_sql} ORDER BY ALL").fetchall()
    assert con.sql("SELECT monetary FROM features.user_order_stats WHERE user_id = 'u1'").fetchall() == [(11.0,)]


def test_orders_rewritten_by_line_orders_are_counted_once_per_category(tmp_path):
    """An order that gets another line, and one whose order row arrives after its lines, are rewritten in
    staging.line_orders; user_category_activity (delete+insert per changed user) still counts each order once."""
    models = {m.table: m for m in discover_models()}
    lines = "order_id,user_id,order_ts,product_id,quantity,unit_price,category,description,status\n"
    orders = "order_id,user_id,order_ts,amount,items,category,discount,status\n"
    deliveries = [
        {"order_items/l1.csv": lines + "A,u1,2026-01-02T10:00:00Z,p1,1,5.0,a,x,completed\n"
                                       "B,u2,2026-01-03T10:00:00Z,p1,1,5.0,a,x,completed\n"
                                       + "".join(f"K{i},k{i},2026-01-04T10:00:00Z,p1,1,5.0,b,x,completed\n" for i in range(3))},
        {"order_items/l2.csv": lines + "A,u1,2026-01-02T10:00:00Z,p2,1,2.0,a,y,completed\n",
         "orders/o1.csv": orders + "B,u2,2026-01-03T10:00:00Z,5.00,1,a,0,completed\n"},
    ]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    chain = ("staging.line_orders", "staging.stg_orders", "staging.identities", "staging.stg_clicks",
             "features.user_category_activity")
    for k, files in enumerate(deliveries):
        _deliver(con, tmp_path, k, files)
        plans = [run_model(con, models[t], datetime(2026, 1, 31), models=models)[1] for t in chain]
    assert plans[-1].incremental and plans[-1].changed == 2
    activity = con.sql("SELECT * FROM features.user_category_activity ORDER BY ALL").fetchall()
    assert activity == [("k0", "b", 1), ("k1", "b", 1), ("k2", "b", 1), ("u1", "a", 1), ("u2", "a", 1)]
    body = models["features.user_category_activity"].sql.strip().rstrip(";")
    assert activity == con.sql(f"{body} ORDER BY ALL").fetchall()


def test_a_changed_view_rebuilds_the_incremental_models_above_it_in_full(tmp_path):
    """An incremental model keeps the rows of users without new input rows: after a change of a staging view it read
    through (a reviewer's case: categories holding an address read as NULL from an upgrade on), those rows kept the old
    view's values until the daily rebase. The build version includes the views' SQL: a full rebuild, exact."""
    import dataclasses

    models = {m.table: m for m in discover_models()}
    orders = "order_id,user_id,order_ts,amount,items,category,discount,status\n"
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _deliver(con, tmp_path, 0, {
        "orders/o1.csv": orders + "".join(f"O{i},u{i},2026-01-02T10:00:00Z,5.00,1,books,0,completed\n" for i in range(4))})
    chain = ("staging.line_orders", "staging.stg_orders", "staging.identities", "staging.stg_clicks",
             "features.user_category_activity")
    for t in chain:
        run_model(con, models[t], datetime(2026, 1, 31), models=models)
    view = models["staging.stg_orders"]
    changed = {**models, view.table: dataclasses.replace(view, sql=view.sql.replace("ELSE NULLIF(TRIM(category), '') END",
                                                                                    "ELSE upper(TRIM(category)) END", 1))}
    assert changed[view.table].sql != view.sql
    plans = [run_model(con, changed[t], datetime(2026, 1, 31), models=changed)[1] for t in chain]
    assert plans[-1].mode == "full" and plans[-1].reason == "code changed", plans[-1]
    assert con.sql("SELECT DISTINCT category FROM features.user_category_activity").fetchall() == [("BOOKS",)]
    # a table model read through a view counts too: line_orders rebuilt with other SQL rewrites old orders' rows
    lines = models["staging.line_orders"]
    other = {**models, lines.table: dataclasses.replace(lines, sql=lines.sql + "\n-- changed")}
    activity = models["features.user_category_activity"]
    assert build_version(activity, other) != build_version(activity, models)


def test_line_orders_stay_incremental_for_order_rows_and_as_of_moves(tmp_path):
    """staging.line_orders never reads as-of, and new order rows are keys it does not hold: a delivery of many
    order rows and one new line order, or an as-of moved back, is not a reason to aggregate every line again."""
    models = {m.table: m for m in discover_models()}
    model = models["staging.line_orders"]
    lines = "order_id,user_id,order_ts,product_id,quantity,unit_price,category,description,status\n"
    orders = "order_id,user_id,order_ts,amount,items,category,discount,status\n"
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _deliver(con, tmp_path, 0, {"order_items/l1.csv": lines + "".join(
        f"L{i},u{i},2026-01-0{1 + i % 9}T10:00:00Z,p1,1,5.0,a,x,completed\n" for i in range(20))})
    assert run_model(con, model, datetime(2026, 1, 31), models=models)[1].mode == "full"
    _deliver(con, tmp_path, 1, {"orders/o1.csv": orders + "".join(
        f"O{i},v{i},2026-01-20T10:00:00Z,9.00,1,b,0,completed\n" for i in range(15)),
        "order_items/l2.csv": lines + "N1,w1,2026-01-21T10:00:00Z,p2,2,1.5,b,y,completed\n"})
    plan = run_model(con, model, datetime(2026, 1, 10), models=models)[1]  # as-of moved back: line_orders does not care
    assert plan.mode == "incremental" and plan.changed == 16, plan.reason
    body = model.sql.strip().rstrip(";")
    assert con.sql("SELECT * FROM staging.line_orders ORDER BY ALL").fetchall() == con.sql(f"{body} ORDER BY ALL").fetchall()
    assert con.sql("SELECT count(*) FROM staging.line_orders").fetchall() == [(21,)]


def _refresh_with_sql(tmp_path, edit) -> tuple[Path, str]:
    """(the SQL folder, what `seg-assets refresh` printed) after ``edit(folder)`` on a copy of the project's models, in
    a process of its own (the models are read once per process, when the stages load); exit 2 and no traceback."""
    import os
    import shutil
    import subprocess
    import sys

    from seg_assets.settings import DEFAULT_SQL_DIR

    sql = tmp_path / "sql"
    shutil.copytree(DEFAULT_SQL_DIR, sql)
    edit(sql)
    (tmp_path / "data" / "landing" / "orders").mkdir(parents=True)
    env = {**os.environ, "SEG_SQL_DIR": str(sql), "SEG_DATA_DIR": str(tmp_path / "data")}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run([sys.executable, "-m", "seg_assets.cli", "refresh"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return sql, " ".join(done.stderr.split())


def test_a_model_file_that_is_no_sql_is_one_line_and_exit_2(tmp_path):
    """sqlglot's ParseError, and every other "this cannot be a model" (headers, two statements), was a traceback of
    the command line: the models are read when the stages load."""
    sql, said = _refresh_with_sql(tmp_path, lambda sql: (sql / "features" / "zz_mine.sql").write_text(
        "-- materialized: table\nSELECT FROM WHERE\n"))
    assert f"{sql / 'features' / 'zz_mine.sql'}: not SQL DuckDB reads" in said


@pytest.mark.parametrize("folder, name, said", [
    ("analytics", "user_segments", "analytics.user_segments is a table the project's own Python writes"),
    # a reviewer's: DuckDB's names are case-blind (it replaced the segments), a table Python writes that is no asset,
    # the model registry (every later refresh failed), a folder named like a reserved word (a traceback)
    ("analytics", "User_Segments", "analytics.user_segments is a table the project's own Python writes"),
    ("analytics", "user_recommendations_next", "is a table the project's own Python writes"),
    ("meta", "segment_models", "the schema 'meta' is the project's own"),
    ("order", "buyers", "the folder (the schema) 'order' is a reserved word of SQL"),
    ("left", "buyers", "the folder (the schema) 'left' is a reserved word of SQL"),
    # DuckDB's catalogs: a traceback from the second connection on (a reviewer's)
    ("temp", "buyers", "the folder 'temp' is also the name of one of DuckDB's catalogs"),
    ("warehouse", "buyers", "the folder 'warehouse' is also the name of one of DuckDB's catalogs"),
])
def test_a_model_named_like_a_table_the_python_stages_write_is_refused_naming_its_file(tmp_path, folder, name, said):
    """analytics/user_segments.sql failed with Dagster's "Duplicate asset key" traceback (a tester's)."""
    import os
    import shutil
    import subprocess
    import sys

    sql = tmp_path / "sql"
    shutil.copytree(os.path.join(os.path.dirname(__file__), os.pardir, "dbt_like_sql"), sql)
    (sql / folder).mkdir(exist_ok=True)
    (sql / folder / f"{name}.sql").write_text("-- materialized: table\nSELECT 1 AS user_id\n")
    done = subprocess.run([sys.executable, "-c", "import seg_assets.definitions"], capture_output=True, text=True,
                          env={**os.environ, "SEG_SQL_DIR": str(sql), "SEG_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode != 0
    assert f"{name}.sql: " in done.stderr and said in done.stderr, done.stderr


def test_the_views_behind_user_features_are_read_from_the_sql_not_listed(tmp_path):
    """A new feature source (a view of campaign sends, a model counting them per user) left off a hand-kept list: an
    incremental refresh after a sends-only delivery left 2,778 users' features stale until the rebase (a reviewer's).
    The views are found from what the models read; one without its `event_time` header is refused in one line."""
    import shutil

    from seg_assets.features.assets import sources
    from seg_assets.features.sql_files import SqlModelError, discover_models
    from seg_assets.features.sql_models import first_views

    sql = tmp_path / "sql"
    shutil.copytree(Path(__file__).parents[1] / "dbt_like_sql", sql)
    (sql / "staging" / "stg_sends.sql").write_text("-- materialized: view\n-- event_time: sent_ts\n"
                                                    "SELECT user_id, sent_ts, _file_id FROM raw.campaign_sends\n")
    (sql / "features" / "user_send_stats.sql").write_text("-- materialized: table\n"
                                                          "SELECT user_id, count(*) AS sends FROM staging.stg_sends GROUP BY 1\n")
    models = {m.table: m for m in discover_models(sql)}
    assert first_views(["features.user_send_stats", "features.user_order_stats"], models) == (
        "staging.stg_orders", "staging.stg_sends")
    shipped = {s.table: s.event_time for s in sources(models)}
    assert shipped == {"staging.stg_clicks": "event_ts", "staging.stg_customers": "signup_ts",
                       "staging.stg_orders": "order_ts", "staging.stg_reviews": "review_ts"}
    (sql / "staging" / "stg_orders.sql").write_text(
        (sql / "staging" / "stg_orders.sql").read_text().replace("-- event_time: order_ts\n", ""))
    with pytest.raises(SqlModelError, match="stg_orders.sql: a view that user features read needs an `-- event_time"):
        sources({m.table: m for m in discover_models(sql)})


def test_a_view_behind_user_features_without_its_event_time_is_refused_before_a_run(tmp_path):
    """It failed the features step with Dagster's traceback, "unexpected: please report it", retried twice (a
    reviewer's): it is refused when the definitions load, in one line naming the file, exit 2."""
    def undated(sql):
        view = sql / "staging" / "stg_customers.sql"
        view.write_text(view.read_text().replace("-- event_time: signup_ts\n", ""))

    sql, said = _refresh_with_sql(tmp_path, undated)
    assert f"{sql / 'staging' / 'stg_customers.sql'}: a view that user features read needs an `-- event_time" in said


def test_a_column_added_to_a_feature_model_and_not_to_user_features_is_a_warning(tmp_path, monkeypatch):
    """`max_order_amount` added to user_order_stats.sql reached that table and stopped there without a word (a
    reviewer's): a column becomes a feature through user_features' schema and the dictionary, which the warning names
    (the CLI prints a step's warnings)."""
    import shutil

    from seg_assets.demo.generate import generate
    from seg_assets.features.assets import user_features
    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources
    from seg_assets.reviews.assets import review_sentiment

    sql = tmp_path / "sql"
    shutil.copytree(Path(__file__).parents[1] / "dbt_like_sql", sql)
    model = sql / "features" / "user_order_stats.sql"
    model.write_text(model.read_text().replace("    min(order_ts) AS first_order_ts\n",
                                               "    min(order_ts) AS first_order_ts,\n    max(amount) AS max_order_amount\n"))
    monkeypatch.setenv("SEG_SQL_DIR", str(sql))
    generate(tmp_path / "data", users=200, days=30, seed=1, with_clicks=False, with_customers=False)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ingest_landing, review_sentiment, *sql_assets(sql), user_features],
                            resources=build_resources(tmp_path / "data"), instance=instance)
    assert result.success
    said = [r.user_message for r in instance.all_logs(result.run_id) if not r.is_dagster_event]
    assert any("features.user_order_stats has column(s) user_features does not read: max_order_amount" in m
               and "features/dictionary.py" in m for m in said), said


def test_a_column_user_features_reads_missing_from_its_model_is_one_line_not_zeros(tmp_path, monkeypatch):
    """A feature model of your own without a column user_features reads (``views`` left out of user_click_stats.sql):
    the column was filled with nulls, then 0, so views and view_to_cart were 0 for every user without a word (a
    dictionary entry no input delivers is an error since 01c9d4d; this is the same rule for the input schemas)."""
    import shutil

    from seg_assets.demo.generate import generate
    from seg_assets.features.assets import user_features
    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources
    from seg_assets.reviews.assets import review_sentiment

    sql = tmp_path / "sql"
    shutil.copytree(Path(__file__).parents[1] / "dbt_like_sql", sql)
    model = sql / "features" / "user_click_stats.sql"
    text = model.read_text()
    assert "    sum(views)::BIGINT AS views,\n" in text
    model.write_text(text.replace("    sum(views)::BIGINT AS views,\n", ""))
    monkeypatch.setenv("SEG_SQL_DIR", str(sql))
    generate(tmp_path / "data", users=200, days=30, seed=1, with_customers=False)
    result = dg.materialize([ingest_landing, review_sentiment, *sql_assets(sql), user_features],
                            resources=build_resources(tmp_path / "data"), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "features__user_features")
    message = failure.step_failure_data.error.message
    assert "features.user_click_stats has no column(s) views, which user_features reads" in message, message
