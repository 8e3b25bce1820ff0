"""Personal data in a real export stays in the raw tables: what the product shows about files, rows, events and
products (ledger, rejects, asset metadata, published labels) does not repeat it. Found by a sweep that planted names,
phones and addresses in every input and searched every output for them."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from seg_assets.baskets import counts as BC
from seg_assets.baskets import rules as R
from seg_assets.ingest import contract as C
from seg_assets.ingest.assets import _events_table
from seg_assets.ingest.loader import ingest_landing

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PERSONAL = ("Peter Parker", "+1 212 555 0123", "jane.roe@example.com", "Jane Roe")


def _ingest(root: Path):
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    report = ingest_landing(con, root / "landing", run_id="r1", now=NOW, clock_skew=timedelta(minutes=60),
                            min_ts=datetime(1990, 1, 1))
    return con, report


def _land(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / "landing" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "landing" / name).write_text(text)


def _shown(con, report) -> str:
    """Everything the ledger, the rejects and the CLI's file lines say."""
    rows = con.sql("SELECT * FROM meta.ingest_ledger").fetchall() + con.sql("SELECT * FROM raw.rejects").fetchall()
    return json.dumps([rows, [(f.message, f.extra_columns) for f in report.files]], default=str)


def test_a_file_without_its_header_row_is_not_repeated_in_messages(tmp_path):
    """Its first line is data (one field of which happens to be a column name, 'email'): the fields are neither
    listed as extra columns nor copied into the rejects. A Parquet file's column names are a schema: listed."""
    folder = tmp_path / "landing" / "customers"
    folder.mkdir(parents=True)
    (folder / "crm.csv").write_text("u5,2025-01-01,DE,email,Peter Parker,+1 212 555 0123\n"
                                    "u6,2025-01-02,DE,ads,Mary Jane,+1 212 555 0124\n")
    pl.DataFrame({"client": ["u7"], "Billing Name": ["x"]}).write_parquet(folder / "other.parquet")
    con, report = _ingest(tmp_path)
    messages = {f.file_name: f.message for f in report.files}
    assert "the other 5 field(s) of its first line are not repeated here" in messages["customers/crm.csv"], messages
    assert "extra column(s) ignored: client, Billing Name" in messages["customers/other.parquet"], messages
    assert not any(p.lower() in _shown(con, report).lower() for p in PERSONAL)
    assert con.sql("SELECT file_name, extra_columns FROM meta.ingest_ledger ORDER BY 1").fetchall() == [
        ("customers/crm.csv", []), ("customers/other.parquet", ["client", "Billing Name"])]


def test_a_personal_column_is_hashed_in_the_rejects_of_a_file_rejected_whole(tmp_path):
    """A review export lacking a mapped column: its review text (mapped to the personal column `text`) is hashed."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  yotpo:\n    table: reviews\n    columns: {review_id: id, user_id: customer, review_ts: created, "
        "rating: score, text: content}\n")
    folder = tmp_path / "landing" / "yotpo"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("id,customer,created,content\nr1,u1,2026-03-01T10:00:00Z,Broken. Peter Parker here\n")
    con, report = _ingest(tmp_path)
    assert [f.status for f in report.files] == ["rejected_file"]
    (raw,) = [json.loads(v) for (v,) in con.sql("SELECT raw_values FROM raw.rejects").fetchall()]
    assert raw["content"] == con.sql("SELECT sha256('Broken. Peter Parker here')").fetchall()[0][0]
    assert "Peter Parker" not in _shown(con, report)


def test_a_reason_naming_the_values_an_expression_read_hashes_a_personal_column(tmp_path):
    """A reject's reason names the values its expression read (``stars = 'n/a'``); a review payload mapped into the
    personal column `text` is shown by its hash there too, as in raw_values (a reviewer saw a name and address)."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  revs:\n    table: reviews\n    columns:\n      text: \"json_extract_string(payload, '$.body')\"\n"
        "      rating: \"CAST(json_extract_string(payload, '$.stars') AS INTEGER)\"\n")
    body = '{""stars"": ""n/a"", ""body"": ""Peter Parker, +1 212 555 0123""}'
    _land(tmp_path, {"revs/a.csv": f'review_id,user_id,review_ts,payload\nr1,u1,2026-03-01T10:00:00Z,"{body}"\n'})
    con, report = _ingest(tmp_path)
    [(reason,)] = con.sql("SELECT reason FROM raw.rejects").fetchall()
    digest = con.sql("SELECT sha256(payload) FROM (SELECT '{\"stars\": \"n/a\", \"body\": \"Peter Parker, +1 212 555 0123\"}' "
                     "AS payload)").fetchall()[0][0]
    assert f"payload = sha256:{digest[:16]}" in reason, reason
    assert not any(p.lower() in _shown(con, report).lower() for p in PERSONAL)


def test_an_address_in_a_where_or_an_event_name_is_redacted_where_the_product_shows_it(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  web:\n    table: clicks\n    where: \"user_id <> 'jane.roe@example.com'\"\n")
    folder = tmp_path / "landing" / "web"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(
        "event_id,user_id,session_id,event_ts,event_type\n"
        "e1,u1,s1,2026-03-01T10:00:00Z,page_view\n"
        "e2,u1,s1,2026-03-01T10:01:00Z,signup jane.roe@example.com\n"
        "e3,u2,s2,2026-03-01T10:02:00Z,signup john.doe@example.org\n"
        "e4,jane.roe@example.com,s3,2026-03-01T10:03:00Z,page_view\n")
    con, report = _ingest(tmp_path)
    assert [(f.accepted, f.filtered) for f in report.files] == [(3, 1)]
    assert "<redacted e-mail>" in report.files[0].message and "@" not in _shown(con, report)
    events = _events_table(con, report, [])[0]["events_by_name"]
    shown = {(r.data["event_type"], r.data["rows"]) for r in events.value.records}
    assert shown == {("page_view", 1), ("signup <redacted e-mail>", 2)}


def test_a_product_label_is_the_name_most_lines_carry_not_one_customers_line(tmp_path):
    con = duckdb.connect()
    for schema in ("raw", "meta", "analytics"):
        con.sql(f"CREATE SCHEMA {schema}")
    con.sql(C.TABLES["orders"].ddl())
    lines = [(f"o{i}", f"u{i}", p, d, datetime(2026, 1, 1 + i)) for i in range(8) for p, d in
             (("MUG", "Mug engraved 'For Jane Roe'" if i == 7 else "Enamel mug"), ("SPOON", "Tea spoon"))]
    con.register("frame", pl.DataFrame(lines, schema=["order_id", "user_id", "product_id", "description", "order_ts"],
                                       orient="row"))
    con.sql("CREATE TABLE raw.order_items AS SELECT *, 'completed' AS status, 1::BIGINT AS _file_id FROM frame")
    con.sql("CREATE TABLE analytics.user_segments AS SELECT DISTINCT user_id, 1 AS segment_id FROM raw.order_items")
    cfg = R.RuleSettings(BC.CountSettings(min_support=0.1, min_baskets=2), 0.0, 0.0)
    BC.update_counts(con, cfg.counts)
    R.derive_rules(con, cfg, "SELECT 1 AS segment_id, 'a' AS segment_name")
    labels = set(con.sql("SELECT antecedent_description FROM _rules UNION SELECT consequent_description FROM _rules")
                 .fetchall())
    assert labels == {("Enamel mug",), ("Tea spoon",)}



def test_a_file_rejected_whole_keeps_the_columns_read_under_their_contract_names(tmp_path):
    """A source maps one column (order_id from Name) and reads the rest under the contract's names: a file lacking
    Name is rejected whole, and its rejects keep the contract-named columns (not 'not read'), not the phone beside."""
    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    columns: {order_id: Name}\n")
    folder = tmp_path / "landing" / "shop"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("user_id,order_ts,amount,items,status,Phone\n"
                                  "u1,2026-03-01T10:00:00Z,10,1,completed,+1 212 555 0123\n")
    con, report = _ingest(tmp_path)
    assert [f.status for f in report.files] == ["rejected_file"]
    (raw,) = [json.loads(v) for (v,) in con.sql("SELECT raw_values FROM raw.rejects").fetchall()]
    assert raw == {"user_id": "u1", "order_ts": "2026-03-01T10:00:00Z", "amount": "10", "items": "1", "status": "completed"}
    assert "the other 1 field(s) of its first line are not repeated here" in report.files[0].message


def test_the_address_pattern_takes_international_quoted_and_ip_addresses_and_keeps_other_at_signs():
    """Addresses a tester found kept in clear (a non-ASCII domain, a quoted local part, an IP literal), and values with
    an @ that are no address."""
    addresses = ["jürgen@exämple.de", '"john doe"@example.com', "user@[192.168.0.1]", "user@[IPv6:2001:db8::1]",
                 "ｆｕｌｌ@ｗｉｄｅ.ｊｐ", "ref=anna%40example.org", "Ünal.Öz@mail.com.tr", "a@example.com"]
    kept = ["@home", "home", "50 % @ shop", "ok@host", "a@b.c", "email@", "@handle.", "x @ y.com", "promo@home.?!",
            # a referrer with a social handle holds no address (a reviewer's: NULLed for a session)
            "https://www.instagram.com/@shop.official", "https://www.tiktok.com/@brand.de/video/7301",
            "https://www.youtube.com/@shopchannel/videos?utm_source=news.letter", "https://medium.com/@jane/ten-tips.html"]
    addresses += ["https://shop.example/?email=jane%40example.com", "mailto:jane@example.com?subject=hi",
                  "https://x.example/u/jane@example.com"]
    values = duckdb.sql(f"SELECT {C.without_email_sql('v')} FROM unnest($v) t(v)", params={"v": addresses + kept}).fetchall()
    assert [v for (v,) in values] == [None] * len(addresses) + kept


def test_an_address_delivered_as_a_category_country_or_channel_reaches_no_feature_segment_or_bi_table(tmp_path):
    """A tester's delivery: a referrer address as a customer's channel, an address as a category of an order, an order
    line and a click. Staging reads such a value as unknown (NULL; ingest/contract.py EMAIL_LIKE): no table outside the
    raw ones, and no published file, holds it, and the users' orders still count. The staging SQL reads the
    contract's one test through its macro (`{{ holds_email('category') }}`), not a copy of the pattern."""
    import re

    from seg_assets.features.sql_files import discover_models
    from seg_assets.refresh import run_refresh
    from seg_assets.warehouse import sql_model_files

    assert not any("regexp_matches" in p.read_text() for p in sql_model_files(None))
    rendered = {m.table: m.sql for m in discover_models()}
    for table, column in [("staging.stg_orders", "category"), ("staging.stg_clicks", "category"), ("staging.line_orders",
                          "category"), ("staging.stg_customers", "country"), ("staging.stg_customers", "channel")]:
        assert C.holds_email_sql(column) in rendered[table], table
    t = "2026-03-0{}T10:00:00Z"
    files = {
        "customers/c.csv": "user_id,signup_ts,country,channel,email\n"
                           f"u1,{t.format(1)},DE,ref:alice@example.com,a@example.com\nu2,{t.format(1)},bob@example.org,?ref=frank%40example.com,\n",
        "orders/o.csv": "order_id,user_id,order_ts,amount,items,category,discount,status\n"
                        f"o1,u1,{t.format(2)},20,1,promo-carol@example.org,0,completed\no2,u2,{t.format(3)},30,1,shoes,0,completed\n",
        "order_items/l.csv": "line_id,order_id,user_id,order_ts,product_id,quantity,unit_price,category,description,status\n"
                             f"l1,o3,u2,{t.format(4)},p1,1,15,dave@example.net,Mug,completed\n"
                             f"l2,o3,u2,{t.format(4)},p2,1,15,dave@example.net,Cup,completed\n"
                             f"l3,o3,u2,{t.format(4)},p3,1,15,kitchen,Pan,completed\n",
        "clicks/k.csv": "event_id,user_id,session_id,event_ts,event_type,funnel_stage,product_id,category\n"
                        f"e1,u1,s1,{t.format(2)},view,,p1,x eve@example.com\n",
    }
    _land(tmp_path, files)
    assert run_refresh(tmp_path, as_of="2026-03-09T00:00:00Z").success
    found = []
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT user_id, frequency FROM features.user_features ORDER BY 1").fetchall() == [("u1", 1), ("u2", 2)]
        # the order's category is its lines' most common one: an address on two of three lines does not outvote 'kitchen'
        assert con.sql("SELECT category FROM staging.line_orders WHERE order_id = 'o3'").fetchall() == [("kitchen",)]
        for schema, table in con.sql("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
            if schema != "raw" and re.search("(@|%40)example[.]", str(con.sql(f'SELECT * FROM "{schema}"."{table}"').fetchall())):
                found.append(f"{schema}.{table}")
        assert con.sql("SELECT count(*) FROM raw.orders WHERE category LIKE '%@example.%'").fetchall() == [(1,)]  # as delivered
    for path in (tmp_path / "bi").rglob("*.parquet"):
        if re.search("(@|%40)example[.]", str(duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall())):
            found.append(str(path.relative_to(tmp_path)))
    assert not found, found


def test_a_user_id_that_is_an_address_is_taken_in_as_its_sha256_in_every_table(tmp_path):
    """A shop keyed by e-mail (a tester's `jane.doe@corp.example`): the id reached the features, segments, BI copy and
    Parquet files in clear. It is taken in as its sha256 in every raw table (so orders, lines and clicks still join,
    and a rejected row's hash matches), and no table or published file holds the address."""
    import hashlib
    import re

    from seg_assets.refresh import run_refresh

    address, t = "jane.doe@corp.example", "2026-03-0{}T10:00:00Z"
    files = {
        "orders/o.csv": "order_id,user_id,order_ts,amount,items,status\n"
                        f"o1,{address},{t.format(2)},20,1,completed\no2,u2,{t.format(3)},30,1,completed\n"
                        f"o3,{address},{t.format(4)},-5,1,completed\n"  # rejected: its raw values hash the id alike
                        f"o5, {address} ,{t.format(4)},-5,1,completed\n"  # spaces around: the same id, the same hash
                        f"o6,{address.replace('@', '%40')},{t.format(4)},-5,1,completed\n"  # URL-encoded: hashed too
                        f"o7,team@shop,{t.format(4)},20,1,completed\no8,team@shop,{t.format(4)},-5,1,completed\n",
        "order_items/l.csv": "order_id,user_id,order_ts,product_id,quantity,unit_price,status\n"
                             f"o4,{address},{t.format(5)},p1,1,15,completed\n",
        "clicks/k.csv": "event_id,user_id,session_id,event_ts,event_type\n"
                        f"e1,{address},s1,{t.format(2)},view\ne2,u2,s2,{t.format(2)},view\n",
    }
    _land(tmp_path, files)
    assert run_refresh(tmp_path, as_of="2026-03-09T00:00:00Z").success
    hashed, team = (hashlib.sha256(a.encode()).hexdigest() for a in (address, "team@shop"))
    found = []
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        for table in ("raw.orders", "raw.order_items", "raw.clicks"):
            assert {u for (u,) in con.sql(f"SELECT DISTINCT user_id FROM {table}").fetchall()} <= {hashed, team, "u2"}, table
        assert sorted(con.sql("SELECT user_id, frequency, sessions FROM features.user_features").fetchall()) == sorted([
            (hashed, 2, 1), ("u2", 1, 1), (team, 1, 0)])  # its order and its line's order, and its click: one user
        rejected = [json.loads(v)["user_id"] for (v,) in con.sql("SELECT raw_values FROM raw.rejects ORDER BY row_number").fetchall()]
        assert rejected[:2] == [hashed, hashed] and rejected[2] == hashlib.sha256(address.replace("@", "%40").encode()).hexdigest()
        assert rejected[3] == team  # an id with an '@' but no address (team@shop): hashed alike in the table and the reject
        for schema, table in con.sql("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
            if re.search("jane.doe(@|%40)|team@shop", str(con.sql(f'SELECT * FROM "{schema}"."{table}"').fetchall())):
                found.append(f"{schema}.{table}")
    for path in (tmp_path / "bi").rglob("*.parquet"):
        if re.search(re.escape(address), str(duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall())):
            found.append(str(path.relative_to(tmp_path)))
    assert not found, found


def test_a_warehouse_holding_address_ids_from_before_is_refused_with_its_fix(tmp_path):
    """A warehouse that took address ids in clear (before session 21) would count those users twice from the next file
    on (a reviewer's: o1 under the address, o2 under its hash): ingestion stops, in one line, with the rebuild."""
    from seg_assets.refresh import run_refresh

    (tmp_path / "landing" / "orders").mkdir(parents=True)
    (tmp_path / "landing" / "orders" / "o.csv").write_text(
        "order_id,user_id,order_ts,amount,items,status\no1,u1,2026-03-02T10:00:00Z,20,1,completed\n")
    assert run_refresh(tmp_path, as_of="2026-03-09T00:00:00Z").success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:  # as an older version left it
        con.sql("UPDATE features.user_features SET user_id = 'jane.doe@corp.example'")
    (tmp_path / "landing" / "orders" / "o2.csv").write_text(
        "order_id,user_id,order_ts,amount,items,status\no2,u1,2026-03-03T10:00:00Z,20,1,completed\n")
    outcome = run_refresh(tmp_path, as_of="2026-03-09T00:00:00Z")
    assert not outcome.success
    line = next(m for s in outcome.stages for m in s.failures if "e-mail addresses" in m)
    assert "1 user id(s) in features.user_features" in line and "move warehouse.duckdb and bi/ aside" in line, line
    assert not any(p.traceback for p in outcome.problems)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM raw.orders").fetchall() == [(1,)]  # nothing taken in


def test_a_reason_hashes_an_address_in_its_url_encoded_form_too():
    """A reason quotes the value it rejects: 'heidi%40mail.example' was quoted in clear (only '@' was looked for)."""
    from seg_assets.ingest.row_rules import shown_sql

    shown = [v for (v,) in duckdb.sql(f"SELECT {shown_sql('v')} FROM (VALUES ('heidi%40mail.example'), "
                                      "('heidi@mail.example'), ('shoes')) t(v)").fetchall()]
    assert shown[0].startswith("'sha256:") and shown[1].startswith("'sha256:") and shown[2] == "'shoes'"


def test_a_message_redacts_an_address_in_its_url_encoded_form_too():
    """DuckDB's error quotes the value a mapped expression failed on: 'heidi%40mail.example' reached the ledger."""
    from seg_assets.ingest.ledger import redact

    assert redact("Could not convert string 'heidi%40mail.example' to INT32; also team@shop") == \
        "Could not convert string '<redacted e-mail>' to INT32; also <redacted e-mail>"
