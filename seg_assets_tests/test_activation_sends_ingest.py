"""A campaign_sends delivery with bad rows, ingested by the real ingest multi-asset (dg.materialize, a real DuckDB
file): every delivered row is accepted, a duplicate, rejected with a reason, or filtered by a source's where, like
the other tables; the contract check passes on what was accepted."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb

from seg_assets.ingest import asset_checks, assets
from seg_assets.ingest.assets import LEDGER_KEY, RAW_KEYS, REJECTS_KEY
from seg_assets.resources import build_resources

HEADER = "send_id,campaign_id,user_id,action_id,sent_ts,group,propensity"
TS = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the future rule uses the wall clock
BAD_ROWS = {  # send_id -> (line, rule of its reject)
    "s3": (f"s3,c1,u3,a1,{TS},holdout,0.5", "unknown:send_group"),
    "s4": (f"s4,c1,u4,a1,{TS},treatment,0", "below_min:propensity"),
    "s5": (f"s5,c1,u5,a1,{TS},treatment,1.5", "above_max:propensity"),
    "s6": (f"s6,c1,u6,a1,{TS},treatment,-0.2", "below_min:propensity"),
    "s7": (f"s7,c1,,a1,{TS},treatment,0.25", "missing:user_id"),
    "s8": ("s8,c1,u8,a1,yesterday at ten,treatment,0.25", "unparseable:sent_ts"),
    "s9": ("s9,c1,u9,a1,,control,", "missing:sent_ts"),
    "s10": (f"s10,c1,u10,a1,{TS},treatment,a quarter", "unparseable:propensity"),
    "s11": (f"s11,c1,u11,a1,{TS},treatment,NaN", "unparseable:propensity"),  # it read "propensity > 1: 'NaN'"
}


def test_campaign_sends_with_bad_rows_are_accounted_like_the_other_tables(tmp_path):
    root = tmp_path / "data"
    folder = root / "landing" / "campaign_sends"
    folder.mkdir(parents=True)
    good = [f"s1,c1,u1,a1,{TS},treatment,0.25", f"s2,c1,u2,a1,{TS},control,"]
    lines = [*good, *(line for line, _ in BAD_ROWS.values()), good[0]]  # s1 again: a duplicate
    (folder / "sends_1.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    # A second source of the same table whose where leaves out the test sends: filtered, not rejected.
    (root / "landing" / "esp_log").mkdir(parents=True)
    (root / "landing" / "esp_log" / "log.csv").write_text(
        "id,camp,uid,act,ts,grp,p,is_test\n"
        f"e1,c2,u1,a2,{TS},treatment,0.5,false\ne2,c2,u2,a2,{TS},treatment,0.5,true\ne3,c2,u3,a2,{TS},nope,0.5,false\n")
    (root / "sources.yaml").write_text(
        "sources:\n  esp:\n    table: campaign_sends\n    folder: esp_log\n    where: \"NOT is_test\"\n    columns:\n"
        "      send_id: id\n      campaign_id: camp\n      user_id: uid\n      action_id: act\n      sent_ts: ts\n"
        "      send_group: grp\n      propensity: p\n")

    result = dg.materialize([*assets, *asset_checks], resources=build_resources(root), raise_on_error=False)
    assert result.success
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        ledger = con.sql("SELECT file_name, status, delivered, accepted, duplicate, rejected, filtered "
                         "FROM meta.ingest_ledger WHERE table_name = 'campaign_sends' ORDER BY file_name").fetchall()
        rejects = con.sql("SELECT file_name, raw_values, rule FROM raw.rejects WHERE table_name = 'campaign_sends'").fetchall()
        reasons = [r for (r,) in con.sql("SELECT reason FROM raw.rejects WHERE rule LIKE '%send_group'").fetchall()]
        nan = con.sql("SELECT reason FROM raw.rejects WHERE raw_values LIKE '%NaN%'").fetchall()
        raw = con.sql("SELECT send_id, user_id, send_group, propensity FROM raw.campaign_sends ORDER BY send_id").fetchall()
    finally:
        con.close()
    for _, _, delivered, *parts in ledger:
        assert delivered == sum(parts)  # every delivered row accounted for
    assert ledger == [("campaign_sends/sends_1.csv", "ingested", 12, 2, 1, 9, 0),
                      ("esp_log/log.csv", "ingested", 3, 1, 0, 1, 1)]
    by_send = {json.loads(values)["send_id"]: rule for file, values, rule in rejects if file == "campaign_sends/sends_1.csv"}
    assert by_send == {send: rule for send, (_, rule) in BAD_ROWS.items()}
    assert sorted(rule for file, _, rule in rejects if file == "esp_log/log.csv") == ["unknown:send_group"]
    assert reasons and all("send_group" not in r and "group" in r for r in reasons)  # the file's name for the column
    assert nan == [("propensity is not a number: 'NaN'",)]
    assert raw == [("e1", "u1", "treatment", 0.5), ("s1", "u1", "treatment", 0.25), ("s2", "u2", "control", None)]

    sends = {k: v.value for k, v in next(m for m in result.asset_materializations_for_node("ingest_landing")
                                         if m.asset_key == RAW_KEYS["campaign_sends"]).metadata.items()}
    assert (sends["rows_accepted"], sends["rows_duplicate"], sends["rows_rejected"]) == (3, 1, 10)
    assert sends["dagster/row_count"] == 3
    rejected = next(m for m in result.asset_materializations_for_node("ingest_landing") if m.asset_key == REJECTS_KEY)
    assert rejected.metadata["dagster/row_count"].value == 10
    assert any(m.asset_key == LEDGER_KEY for m in result.asset_materializations_for_node("ingest_landing"))
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["raw_campaign_sends_contract"].passed  # bad rows never reach the raw table


def test_a_sends_file_without_a_required_column_is_rejected_whole(tmp_path):
    root = tmp_path / "data"
    folder = root / "landing" / "campaign_sends"
    folder.mkdir(parents=True)
    (folder / "no_group.csv").write_text("send_id,campaign_id,user_id,action_id,sent_ts\n"
                                         f"s1,c1,u1,a1,{TS}\ns2,c1,u2,a1,{TS}\n")
    result = dg.materialize([*assets, *asset_checks], resources=build_resources(root), raise_on_error=False)
    assert result.success
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        [(status, delivered, accepted, rejected, message)] = con.sql(
            "SELECT status, delivered, accepted, rejected, message FROM meta.ingest_ledger").fetchall()
    finally:
        con.close()
    assert (status, delivered, accepted, rejected) == ("rejected_file", 2, 0, 2)
    # the file's column is `group` (data contract); the table's name for it is internal
    assert "missing required column 'group'" in message and "send_group" not in message
