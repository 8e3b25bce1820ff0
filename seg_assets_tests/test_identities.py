"""Anonymous-then-identified visitors (clicks.anonymous_id, staging.identities), through real refreshes: a device's
clicks before login are its customer's once a login links them, in the refresh that brings the login, as a cold build
of the same files has them; the device leaves every per-user table and its history spell closes."""

import shutil

import duckdb
import polars as pl
from rich.console import Console

from seg_assets.demo.generate import generate
from seg_assets.report import print_summary
from seg_assets.settings import data_paths
from seg_assets_tests.bi_copy import read_bi
from seg_assets_tests.warehouse_read import read_warehouse as _read
from seg_assets_tests.warehouse_read import refresh_ok

AS_OF = "2026-11-01T00:00:00Z"
HEADER = "event_id,user_id,session_id,event_ts,event_type,product_id,category,anonymous_id\n"


def _refresh(root) -> None:
    refresh_ok(root, AS_OF)


def _device_clicks(devices: list[str]) -> str:
    """Four anonymous clicks per device (user_id is the device id), in one session each."""
    rows = [f"a-{d}-{k},{d},s-{d},2026-10-2{k}T10:00:0{k}Z,{'view' if k < 3 else 'add_to_cart'},p1{k},garden,{d}\n"
            for d in devices for k in range(4)]
    return HEADER + "".join(rows)


def _logins(pairs: list[tuple[str, str]], day: int) -> str:
    """One logged-in click per (customer, device): the row that links them."""
    return HEADER + "".join(f"l-{d}-{u}-{day},{u},s-{u}-{day},2026-10-{day}T12:00:00Z,view,p77,garden,{d}\n"
                            for u, d in pairs)


def test_a_login_gives_a_devices_clicks_to_its_customer_as_a_cold_build_does(tmp_path):
    """20 devices browse anonymously; a later delivery links 10 to customers (one device twice in the file, another
    again a file later: the first link wins). After that refresh the 10 are gone from features, segments, churn scores
    and BI, their spells closed (here, both refreshes at one as-of: removed, none left empty); the customers' click
    features equal a cold refresh's of the same files; the other 10 devices stay users of their own."""
    live, cold = tmp_path / "live", tmp_path / "cold"
    generate(live, users=300, days=60, seed=3, fmt="csv")
    clicks = data_paths(live).landing / "clicks"
    devices = [f"dev{k:02d}" for k in range(20)]
    customers = _read_customers(live)
    (clicks / "zz_1_devices.csv").write_text(_device_clicks(devices))
    _refresh(live)
    users = set(_read(live, "SELECT user_id FROM analytics.user_segments")["user_id"])
    assert set(devices) <= users

    linked = list(zip(customers[:10], devices[:10]))
    (clicks / "zz_2_logins.csv").write_text(_logins(linked + [(customers[10], devices[0])], 28))  # dev00: its 2nd login
    (clicks / "zz_3_logins.csv").write_text(_logins([(customers[11], devices[1])], 29))  # dev01 again, a file later
    shutil.copytree(live / "landing", cold / "landing")
    _refresh(live)
    _refresh(cold)

    modes = dict(_read(live, "SELECT model, mode FROM meta.model_builds").rows())
    assert {modes[t] for t in ("staging.identities", "features.user_click_stats", "features.user_features")} == {"incremental"}
    owners = dict(_read(live, "SELECT anonymous_id, user_id FROM staging.identities").rows())
    assert {d: owners[d] for d in devices[:10]} == {d: u for u, d in linked}
    assert {d: owners[d] for d in devices[10:]} == {d: d for d in devices[10:]}
    for table in ("features.user_click_stats", "features.user_features", "analytics.user_segments",
                  "analytics.churn_scores", "analytics.user_groups"):
        kept = set(_read(live, f"SELECT user_id FROM {table}")["user_id"])
        assert not kept & set(devices[:10]) and set(devices[10:]) <= kept, table
    published = set(read_bi(live, "SELECT user_id FROM analytics.user_segments")["user_id"])
    assert not published & set(devices[:10]) and set(devices[10:]) <= published
    for sql in ("SELECT * FROM features.user_click_stats ORDER BY user_id",
                "SELECT * FROM features.user_category_activity ORDER BY user_id, category",
                "SELECT * EXCLUDE (features_build) FROM features.user_features ORDER BY user_id"):
        a, b = _read(live, sql), _read(cold, sql)
        assert a.height and a.equals(b), sql
    # each linked customer has its device's four clicks and its own session of them
    stats = dict(_read(live, "SELECT user_id, sessions FROM features.user_click_stats").rows())
    before = dict(_read(cold, "SELECT user_id, count(DISTINCT session_id) FROM raw.clicks GROUP BY 1").rows())
    assert all(stats[u] == before[u] + 1 for u, _ in linked)  # raw counts the login's session: + the device's
    spells = _read(live, "SELECT user_id, valid_from, valid_to FROM analytics.segment_history WHERE user_id LIKE 'dev%'")
    assert set(spells.filter(pl.col("valid_to").is_null())["user_id"]) == set(devices[10:])  # the linked ones' closed
    # both refreshes ran at one as-of: the linked devices' spells opened at it went (no empty spell), and the
    # transitions at it count the users segmented, not the devices too (320 entered for 310, h2 of session 35)
    assert spells.filter(pl.col("valid_to") <= pl.col("valid_from")).is_empty()
    entered = _read(live, "SELECT sum(users) AS n FROM analytics.segment_transitions WHERE from_segment IS NULL")["n"][0]
    assert entered == _read(live, "SELECT count(*) AS n FROM analytics.user_segments")["n"][0]
    console = Console(record=True, width=200)
    print_summary(live, console)
    assert "Identities: 10 of 20 click devices linked to a user by a login" in console.export_text()


def _read_customers(root) -> list[str]:
    with duckdb.connect() as con:
        return [r[0] for r in con.sql(f"SELECT DISTINCT user_id FROM read_csv('{data_paths(root).landing}/orders/*.csv') "
                                      "ORDER BY user_id LIMIT 12").fetchall()]


def test_a_source_maps_the_device_id_and_one_holding_an_at_sign_is_hashed_like_a_user_id(tmp_path):
    """A Segment-style export mapped with a sources file (`user_id: coalesce(userId, anonymousId)`, `anonymous_id:
    anonymousId`): the device id is taken in as a user id is (an '@' hashed alike), so the login links it."""
    root = tmp_path / "shop"
    land = data_paths(root).landing / "segment"
    land.mkdir(parents=True)
    (root / "sources.yaml").write_text(
        "sources:\n  segment:\n    table: clicks\n    columns:\n      event_id: messageId\n"
        "      user_id: coalesce(userId, anonymousId)\n      anonymous_id: anonymousId\n      session_id: anonymousId\n"
        "      event_ts: timestamp\n      event_type: event\n")
    (land / "day1.csv").write_text(
        "messageId,userId,anonymousId,timestamp,event\n"
        "m1,,jo@laptop,2026-10-20T10:00:00Z,Product Viewed\n"
        "m2,,jo@laptop,2026-10-20T10:01:00Z,Product Added\n"
        "m3,c-17,jo@laptop,2026-10-21T10:00:00Z,Signed In\n"
        "m4,,other-device,2026-10-21T11:00:00Z,Product Viewed\n")
    _refresh(root)
    first = dict(_read(root, "SELECT user_id, first_click_ts::VARCHAR FROM features.user_click_stats").rows())
    assert first == {"c-17": "2026-10-20 10:00:00", "other-device": "2026-10-21 11:00:00"}
    stored = _read(root, "SELECT DISTINCT anonymous_id FROM raw.clicks")["anonymous_id"].to_list()
    assert not any("@" in str(a) for a in stored)


def test_a_linked_devices_recommendations_go_in_the_refresh_that_links_it_without_new_order_lines(tmp_path):
    """A delivery of logins only (no order lines: the recommendations are not re-ranked) still drops the linked devices'
    lists from analytics.user_recommendations and its BI copy, as segments drop them; the other devices keep theirs.
    They stayed until the next delivery with order lines (session 35's h1: 10 of 10 linked devices)."""
    root = tmp_path / "shop"
    generate(root, users=300, days=60, seed=3, fmt="csv", with_lines=True)
    clicks = data_paths(root).landing / "clicks"
    devices = [f"dev{k:02d}" for k in range(20)]
    (clicks / "zz_1_devices.csv").write_text(_device_clicks(devices))
    _refresh(root)
    listed = "SELECT DISTINCT user_id FROM analytics.user_recommendations WHERE user_id LIKE 'dev%'"
    assert set(_read(root, listed)["user_id"]) == set(devices)
    (clicks / "zz_2_logins.csv").write_text(_logins(list(zip(_read_customers(root)[:10], devices[:10])), 28))
    _refresh(root)
    assert set(_read(root, listed)["user_id"]) == set(devices[10:])
    assert set(read_bi(root, listed)["user_id"]) == set(devices[10:])
    rows, users = _read(root, "SELECT count(*), count(DISTINCT user_id) FROM analytics.user_recommendations").row(0)
    summary = _read(root, "SELECT summary FROM meta.rec_state")["summary"][0]
    assert f'"rows": {rows}' in summary and f'"users": {users}' in summary
