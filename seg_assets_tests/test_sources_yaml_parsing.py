"""sources.yaml parsed and checked before anything is read: a mapping that could read or run anything else, or a
bad option, is refused in one line naming the problem; what a declared source replaces; a refused file ingests
nothing. (Refused CSV dialects: test_csv_dialect.py; refused `keep` values: test_sources_keep_latest.py.)"""

import duckdb
import pytest

from seg_assets.ingest.source_config import SourceConfigError, load_sources, parse_expression
from seg_assets_tests.sources_ingest import one_source, parse, write


@pytest.mark.parametrize("expression, words", [
    ("read_csv('/etc/passwd')", "reads files"),
    ("(SELECT max(user_id) FROM raw.orders)", "subquery"),
    ("user_id IN (SELECT user_id FROM raw.customers)", "subquery"),
    ("raw.orders.user_id", "another table"),
    ("warehouse.raw.orders.category", "another table"),  # the warehouse file's catalog (a tester's; it read nothing)
    ("read_text('/etc/passwd')", "table function"),
    ("query('SELECT 1')", "table function"),
    ("sum(amount)", "aggregate"),
    ("row_number() OVER ()", "window"),
    ("getvariable('as_of')", "reads state"),
    ("random()", "repeatable"),
    ("now()", "repeatable"),
    ("nextval('s')", "reads state"),
    ("no_such_function(x)", "not a DuckDB scalar function"),
    ("x; DROP TABLE raw.orders", "one expression"),
    ("$1", "parameter"),
    ("unnest([1, 2])", "set-returning"),
    # functions sqlglot parses into classes of its own, not Anonymous: checked by their SQL names too
    ("current_database()", "reads state"),
    ("version()", "reads state"),
    ("current_user", "reads state"),
    ("session_user", "reads state"),
    ("current_schema()", "reads state"),
    ("current_schemas(true)", "reads state"),
    ("current_catalog", "reads state"),
    ("localtimestamp", "repeatable"),
    ("current_localtimestamp()", "repeatable"),
    ("localtime", "repeatable"),
    ("upper(current_database() || version())", "reads state"),
    # from DuckDB's catalog: not CONSISTENT, or a macro with a subquery or calling such a function (these passed)
    ("coalesce(pg_get_viewdef(CAST(oid AS BIGINT)), '')", "reads state"), ("sleep_ms(5000)", "reads state"),
    ("pg_get_constraintdef(CAST(oid AS BIGINT))", "reads state"),  # one of its two overloads runs a subquery
    ("age(order_ts)", "reads state"),  # since now; age(a, b) is allowed
    # a re-test found these: SQL text planned against the warehouse, a clock DuckDB calls CONSISTENT, method calls
    # (x.age() is age(x); x is no column to sqlglot), COLUMNS picking the reader's own columns
    ("json_serialize_plan('SELECT * FROM raw.customers')", "reads state"), ("current_localtime()", "reads state"),
    ("CAST(order_ts.age() AS VARCHAR)", "method-call syntax"), ("status.upper()", "method-call syntax"),
    ("COLUMNS('c[01]')", "COLUMNS(...)"),
    ("pg_sleep(3600)", "reads state"), ("ago(INTERVAL 0 SECOND)", "reads state"), ("write_log('x')", "reads state"),
    ("current_transaction_id()", "reads state"), ("error('x')", "reads state"), ("get_block_size('memory')", "reads state"),
    # a tester's (session 23): statements and set-returning macros passed the check and failed the file at run time
    ("ATTACH DATABASE 'x.db'", "starts a SQL statement"), ("ATTACH x", "starts a SQL statement"),
    ("DETACH x", "starts a SQL statement"), ("PRAGMA x", "starts a SQL statement"), ("SET x = 1", "starts a SQL statement"),
    ("INSTALL 'httpfs'", "starts a SQL statement"), ("regexp_split_to_table(a, ',')", "set-returning"),
    ("generate_subscripts(a, 1)", "set-returning"),
    ("Total (USD)", 'written in double quotes: "Total (USD)"'),
    # a reviewer's: the hint quoted the whole expression, which then reads as one column named so
    ("Total (USD) * 1.2", 'written in double quotes: "Total (USD)" * 1.2)'),
    ("comment || ''", 'written in double quotes: "comment" || \'\')'),
    ("set || ''", 'written in double quotes: "set" || \'\')'),
    ("(" * 60 + "x" + ")" * 60, "nested too deeply"), (" OR ".join(f"x = {i}" for i in range(2000)), "characters, more than"),
])
def test_a_mapping_that_could_read_or_run_anything_else_is_refused(expression, words):
    with pytest.raises(SourceConfigError) as err:
        parse(one_source(f'      user_id: "{expression}"\n'))
    message = str(err.value)
    assert words in message and "'shop'" in message and "user_id" in message and "\n" not in message


@pytest.mark.parametrize("line", ["      user_id: '\"CustomerID'\n", "      status: \"CASE WHEN x LIKE 'C% THEN 1 END\"\n"])
def test_an_unterminated_quote_is_refused_in_one_line(line):
    """sqlglot's TokenError (not a ParseError) went up as a traceback (a tester's `'"CustomerID'`)."""
    with pytest.raises(SourceConfigError) as err:
        parse(one_source(line))
    message = str(err.value)
    assert "'shop'" in message and "not a column name or a SQL expression" in message and "\n" not in message


def test_columns_named_like_state_functions_are_columns():
    assert parse(one_source("      category: \"version || '/' || upper(user)\"\n"))


def test_where_is_checked_like_a_column():
    with pytest.raises(SourceConfigError, match="where: function LOCALTIMESTAMP reads state"):
        parse(one_source("      user_id: uid\n", extra="    where: \"order_ts::TIMESTAMP < localtimestamp\"\n"))
    with pytest.raises(SourceConfigError, match="where: a subquery"):
        parse(one_source("      user_id: uid\n", extra="    where: \"uid IN (SELECT 1)\"\n"))
    # a column name with a space is written bare in `columns`, but in a condition it must be quoted: say how
    with pytest.raises(SourceConfigError, match='where: not a SQL condition .*double quotes: "Customer ID" IS NOT NULL'):
        parse(one_source("      user_id: Customer ID\n", extra="    where: Customer ID IS NOT NULL\n"))
    assert parse(one_source("      user_id: Customer ID\n", extra="    where: '\"Customer ID\" IS NOT NULL'\n"))


@pytest.mark.parametrize("text, words", [
    ("sources:\n  s:\n    table: invoices\n", "not a contract table"),
    ("sources:\n  s:\n    table: orders\n    colums: {}\n", "colums"),
    ("sources:\n  s:\n    table: orders\n    columns: {amount_total: x}\n", "not a column of orders"),
    ("sources:\n  s:\n    table: orders\n    timezone: Mars/Olympus\n", "unknown timezone"),
    # Python knows them, DuckDB (which reads the files) does not: each file failed, the run went on
    ("sources:\n  s:\n    table: orders\n    timezone: posixrules\n", "unknown timezone"),
    ("sources:\n  s:\n    table: orders\n    columns: {amount: yes}\n", "as a boolean"),  # it became the amount 1
    ("sources:\n  s:\n    table: orders\n    timestamp_format: '%Q%'\n", "not strptime %-codes that DuckDB reads"),
    ("sources:\n  s:\n    table: orders\n    csv: {encoding: idna}\n", "does not read ASCII text as itself"),
    ("sources:\n  s:\n    table: orders\n    csv: {encoding: raw_unicode_escape}\n", "does not read ASCII text as itself"),
    ("sources:\n  s:\n    table: orders\n    folder: ../../etc\n", "folder"),
    ("sources:\n  s:\n    table: orders\n    folder: /etc\n", "folder"),
    ("sources:\n  s:\n    table: orders\n    folder: .\n", "folder"),  # landing/ itself: it read nothing (a tester's)
    ("sources:\n  s:\n    table: orders\n    event_types: {x: view}\n", "clicks sources only"),
    ("sources:\n  s:\n    table: clicks\n    event_types: {wishlist_add: basket}\n", "not a funnel stage"),
    ("sources: [1, 2\n", "not valid YAML"),
])
def test_configuration_errors_are_one_line_naming_the_problem(text, words):
    with pytest.raises(SourceConfigError) as err:
        parse(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_declared_sources_replace_the_implicit_one_of_their_folder_only():
    sources = parse("sources:\n  shop_orders:\n    table: orders\n    folder: orders\n    columns: {amount: 0, items: 1}\n")
    by_name = {s.name: s for s in sources}
    assert "orders" not in by_name and by_name["shop_orders"].folder == "orders"
    assert {"clicks", "customers", "order_items", "reviews", "campaign_sends"} <= set(by_name)
    assert by_name["shop_orders"].columns["amount"].text == "0"  # YAML numbers are literals


def test_no_sources_file_means_the_contract_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("SEG_SOURCES_FILE", raising=False)
    assert sorted(s.folder for s in load_sources(tmp_path)) == [
        "campaign_sends", "clicks", "customers", "order_items", "orders", "reviews"]
    monkeypatch.setenv("SEG_SOURCES_FILE", str(tmp_path / "elsewhere.yaml"))
    with pytest.raises(SourceConfigError, match="does not exist"):
        load_sources(tmp_path)


@pytest.mark.parametrize("text, used_as_text", [
    ("InvoiceNo LIKE 'C%'", {"invoiceno"}), ("CustomerID <> ''", {"customerid"}), ("prefix(InvoiceNo, 'C')", {"invoiceno"}),
    ("strptime(D, '%Y%m%d')", {"d"}), ("S[1:1] = 'C'", {"s"}), ("Country = 'DE' AND Quantity > 0", {"country"}),
    ("CAST(P AS DOUBLE)", set()), ("P::DOUBLE * 2", set()), ("TRY_CAST(total AS DOUBLE)", set()), ("abs(Quantity)", set()),
])
def test_the_columns_an_expression_uses_as_text(text, used_as_text):
    assert set(parse_expression(text, "x").text_columns) == used_as_text


@pytest.mark.parametrize("content, words", [
    (b"sources:\n  shop:\n    table: orders\n    folder: orders\n    columns: {user_id: \"(SELECT 'x')\"}\n",
     "subquery is not allowed"),
    (b"sources:\n  shop:\n    table: orders\n    where: \"\xff\"\n", "not UTF-8 text"),  # was a traceback, retried twice
])
def test_a_refused_sources_file_ingests_nothing(tmp_path, content, words):
    from seg_assets.refresh import run_refresh

    write(tmp_path, "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\no1,u1,2026-03-01T00:00:00Z,1,1,completed\n")
    (tmp_path / "sources.yaml").write_bytes(content)
    outcome = run_refresh(tmp_path)
    assert not outcome.success
    messages = [m for s in outcome.stages for m in s.failures]
    assert any(words in m for m in messages), messages
    assert not any(p.traceback for p in outcome.problems)
    warehouse = tmp_path / "warehouse.duckdb"
    if warehouse.exists():
        con = duckdb.connect(str(warehouse), read_only=True)
        tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        assert "ingest_ledger" not in tables or con.sql("SELECT count(*) FROM meta.ingest_ledger").fetchall()[0][0] == 0
        con.close()


def test_a_source_whose_folder_is_missing_is_named_beside_the_files_no_source_reads(tmp_path):
    """`folder: erp_belegee` (a typo) said only "no source reads folder 'erp_belege'", though a source was declared
    (a tester's): the declared source and the folder it reads are named."""
    from seg_assets.ingest.sources import discover_files

    (tmp_path / "sources.yaml").write_text("sources:\n  erp_belege:\n    table: orders\n    folder: erp_belegee\n")
    write(tmp_path, "erp_belege/a.csv", "order_id,user_id,order_ts,amount,items,status\n")
    _, ignored = discover_files(tmp_path / "landing", load_sources(tmp_path))
    assert "source 'erp_belege' reads landing/erp_belegee/, which does not exist" in ignored["erp_belege/a.csv"]
