"""The sample-ratio check counts each send in the segment it was sent to: a segment assigned after the send is
changed by the send (responders move to a more valuable segment), which breaks the split by itself. On a real
DuckDB file: sends, orders, segment history and current segments as the pipeline publishes them."""

from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest

from seg_assets.activation.lift import campaign_lift
from seg_assets.activation.outcomes import policy_context, send_outcomes

SENT = datetime(2026, 10, 1, 10, 0)
AS_OF = datetime(2026, 10, 31, 23, 59)
PLANNED = 0.15


def warehouse(tmp_path, *, scored_before_send: bool, control_share: float = PLANNED, n: int = 6000, seed: int = 0):
    """``n`` users sent one campaign (``control_share`` held out at random). A treated user responds with an order
    with probability 0.3, anyone orders with probability 0.05; the segment scored after the campaign is 1 for users
    who ordered, else 2. ``scored_before_send``: a refresh also ran before the send (every user in segment 2)."""
    rng = np.random.default_rng(seed)
    users = [f"u{i:05d}" for i in range(n)]
    control = rng.random(n) < control_share
    ordered = (~control & (rng.random(n) < 0.3)) | (rng.random(n) < 0.05)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    for schema in ("raw", "staging", "analytics"):
        con.execute(f"CREATE SCHEMA {schema}")
    sends = pl.DataFrame({"send_id": [f"s{i}" for i in range(n)], "campaign_id": "c1", "user_id": users,
                          "action_id": "a1", "sent_ts": SENT, "send_group": np.where(control, "control", "treatment"),
                          "propensity": 1.0, "_file_id": 1, "_row": np.arange(1, n + 1)})
    orders = pl.DataFrame({"order_id": [f"o{i}" for i in range(n)], "user_id": users,
                           "order_ts": SENT + timedelta(days=2), "amount": 30.0, "status": "completed"}).filter(pl.Series(ordered))
    after = SENT + timedelta(days=20)
    history = pl.DataFrame({"user_id": users, "segment_id": np.where(ordered, 1, 2), "valid_from": after,
                            "valid_to": None}, schema_overrides={"valid_to": pl.Datetime("us")})
    if scored_before_send:
        before = pl.DataFrame({"user_id": users, "segment_id": 2, "valid_from": SENT - timedelta(days=1), "valid_to": after})
        history = pl.concat([before, history], how="vertical_relaxed")
    for name, frame in (("raw.campaign_sends", sends), ("staging.stg_orders", orders),
                        ("analytics.segment_history", history),
                        ("analytics.user_segments", history.filter(pl.col("valid_to").is_null()).select("user_id", "segment_id"))):
        con.register("frame", frame.to_arrow())
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
    return con


def lift_of(con) -> pl.DataFrame:
    outcomes, _ = send_outcomes(con, AS_OF, 7)
    return campaign_lift(outcomes, planned_control_share=PLANNED)


@pytest.mark.parametrize("scored_before_send", [False, True])
def test_a_planned_split_passes_whether_or_not_segments_were_scored_before_the_send(tmp_path, scored_before_send):
    con = warehouse(tmp_path, scored_before_send=scored_before_send)
    lift = lift_of(con)
    assert not lift["srm_warning"].any(), lift.select("segment_id", "n_treated", "n_control", "srm_p_value")
    assert lift["segment_id"].to_list() == ([2] if scored_before_send else [None])  # the segment at send time
    assert lift["n_treated"].sum() + lift["n_control"].sum() == 6000
    # What the check used to do: count each send in the segment scored after it. The split breaks by itself.
    outcomes = policy_context(send_outcomes(con, AS_OF, 7)[0])  # the policy's context: current segment when unknown
    if not scored_before_send:
        post = campaign_lift(outcomes, planned_control_share=PLANNED)
        assert post.filter(pl.col("segment_id") == 1)["srm_warning"].all()
        assert (post.filter(pl.col("segment_id") == 1)["n_control"] / post.filter(pl.col("segment_id") == 1)["n_treated"]
                ).item() < 0.1  # responders are treated users
    assert outcomes["segment_id"].null_count() == 0
    con.close()


@pytest.mark.parametrize("scored_before_send", [False, True])
def test_a_broken_split_still_warns(tmp_path, scored_before_send):
    con = warehouse(tmp_path, scored_before_send=scored_before_send, control_share=0.12)  # 12 % held out, 15 % planned
    lift = lift_of(con)
    assert lift["srm_warning"].all() and (lift["srm_p_value"] < 1e-3).all()
    con.close()


def test_many_sound_cells_do_not_warn_by_chance_and_a_broken_one_among_them_does():
    rng = np.random.default_rng(3)
    rows = []
    for cell in range(120):  # 120 cells of 400 users split as planned, plus one at 111 treated / 37 held out (p ~ 7e-4)
        n_c = rng.binomial(400, PLANNED)
        rows += [(f"c{cell}", "control")] * n_c + [(f"c{cell}", "treatment")] * (400 - n_c)
    rows += [("lucky", "control")] * 37 + [("lucky", "treatment")] * 111
    frame = pl.DataFrame(rows, schema=["campaign_id", "group"], orient="row").with_columns(
        pl.lit("a1").alias("action_id"), pl.lit(1).alias("segment_id"), pl.int_range(pl.len()).cast(pl.Utf8).alias("user_id"),
        pl.lit(False).alias("converted"), pl.lit(0.0).alias("revenue"))
    lift = campaign_lift(frame, planned_control_share=PLANNED)
    lucky = lift.filter(pl.col("campaign_id") == "lucky")
    assert lucky["srm_p_value"].item() < 1e-3 and lucky["srm_p_holm"].item() > 1e-3
    assert not lift["srm_warning"].any()
    broken = pl.DataFrame({"campaign_id": "broken", "group": ["control"] * 720 + ["treatment"] * 5280}).with_columns(
        pl.lit("a1").alias("action_id"), pl.lit(1).alias("segment_id"),
        pl.int_range(pl.len()).cast(pl.Utf8).alias("user_id"), pl.lit(False).alias("converted"), pl.lit(0.0).alias("revenue"))
    lift = campaign_lift(pl.concat([frame, broken]), planned_control_share=PLANNED)
    assert lift.filter(pl.col("srm_warning"))["campaign_id"].to_list() == ["broken"]


def test_every_send_is_accounted_for_and_global_control_users_are_left_out(tmp_path):
    """A send lift does not count says why: a user of the global control group (a treatment send to them breaks a
    promise), a user in both groups of a campaign, a repeat (the first delivered counts, whatever its id's spelling),
    an unknown user, a window still open."""
    con = warehouse(tmp_path, scored_before_send=True, n=100)
    in_control = draw_control(con, None, SENT - timedelta(days=30), ["u00000", "u00001"])
    late = AS_OF - timedelta(days=2)
    extra = pl.DataFrame({
        "send_id": ["zz-first", "aa-repeat", "x-both", "x-unknown", "x-open"], "campaign_id": ["c2", "c2", "c1", "c1", "c3"],
        "user_id": ["u00050", "u00050", "u00060", "nobody", "u00070"], "action_id": ["first", "second", "a1", "a1", "a1"],
        "sent_ts": [SENT, SENT, SENT, SENT, late], "send_group": ["treatment"] * 5,
        "propensity": 1.0, "_file_id": 2, "_row": [1, 2, 3, 4, 5]})
    both = con.sql("SELECT send_group FROM raw.campaign_sends WHERE user_id = 'u00060'").fetchall()[0][0]
    extra = extra.with_columns(pl.when(pl.col("send_id") == "x-both").then(pl.lit("treatment" if both == "control" else "control"))
                               .otherwise(pl.col("send_group")).alias("send_group"))
    con.register("extra", extra.to_arrow())
    con.execute("INSERT INTO raw.campaign_sends SELECT * FROM extra")
    con.execute(f"UPDATE raw.campaign_sends SET send_group = 'treatment' WHERE user_id = '{in_control[0]}'")  # an action sent
    outcomes, left_out = send_outcomes(con, AS_OF, 7)
    treated_control = con.sql("SELECT count(*) FILTER (WHERE send_group = 'treatment') FROM raw.campaign_sends "
                              f"WHERE user_id IN {tuple(in_control)}").fetchall()[0][0]
    assert left_out == {"window_open": 1, "both_groups": 2, "repeat": 1, "global_control": 2, "unknown_user": 1,
                        "treatment_to_global_control": treated_control}
    assert treated_control >= 1
    assert outcomes.height + sum(v for k, v in left_out.items() if k != "treatment_to_global_control") == 105
    assert outcomes.filter(pl.col("campaign_id") == "c2")["action_id"].to_list() == ["first"]  # first delivered
    assert not set(outcomes["user_id"]) & {*in_control, "u00060", "nobody"}
    # a treatment send to a control user whose window is still open is a broken promise now, not a week later
    con.execute(f"UPDATE raw.campaign_sends SET user_id = '{in_control[1]}' WHERE send_id = 'x-open'")
    assert send_outcomes(con, AS_OF, 7)[1]["treatment_to_global_control"] == treated_control + 1


def draw_control(con, salt: str | None, since: datetime, users: list[str]) -> list[str]:
    """Record ``salt`` (share 0.05; None: one that puts none of the users of the sends in the global control group) as
    in force from ``since``; ``users`` are renamed (in every table) to ids it puts in the group, which are returned."""
    from seg_assets.activation.groups import SALTS_DDL, bucket, bucket_sql, control_cutoff

    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(SALTS_DDL)
    ids = [u for (u,) in con.sql("SELECT DISTINCT user_id FROM raw.campaign_sends").fetchall()]
    salt = salt or next(f"s{k}" for k in range(1000) if all(bucket(u, f"s{k}") >= control_cutoff(0.05) for u in ids))
    version = con.sql("SELECT coalesce(max(salt_version), 0) + 1 FROM meta.control_salts").fetchall()[0][0]
    con.execute("INSERT INTO meta.control_salts VALUES (?, ?, 0.05, ?)", [version, salt, since])
    picked = [f"c{i}" for i in range(10_000) if bucket(f"c{i}", salt) < control_cutoff(0.05)][:len(users)]
    for old, new in zip(users, picked, strict=True):
        for table in ("raw.campaign_sends", "staging.stg_orders", "analytics.segment_history", "analytics.user_segments"):
            con.execute(f"UPDATE {table} SET user_id = ? WHERE user_id = ?", [new, old])
    con.execute(f"""CREATE OR REPLACE TABLE analytics.user_groups AS SELECT user_id,  -- today's group, as user_groups draws it
                    {bucket_sql('user_id', salt)} < {control_cutoff(0.05)} AS global_control FROM analytics.user_segments""")
    return picked


def test_a_send_is_judged_by_the_control_group_in_force_when_it_was_made(tmp_path):
    """A new salt re-draws the global control group from its use on: judged by today's group, a salt change dropped
    past sends from lift and called treatment sends to users then outside the group broken promises."""
    con = warehouse(tmp_path, scored_before_send=True, n=400)
    draw_control(con, "s1", SENT - timedelta(days=30), [])
    judged = send_outcomes(con, AS_OF, 7)
    assert judged[1]["global_control"] > 0
    draw_control(con, "s2", SENT + timedelta(days=1), [])  # drawn after the send: the send keeps its group
    assert send_outcomes(con, AS_OF, 7)[0].equals(judged[0]) and send_outcomes(con, AS_OF, 7)[1] == judged[1]
    con.execute("UPDATE meta.control_salts SET since = ? WHERE salt = 's2'", [SENT - timedelta(days=1)])
    redrawn = send_outcomes(con, AS_OF, 7)  # in force before the send: the send is judged by it
    assert set(redrawn[0]["user_id"]) != set(judged[0]["user_id"])
    # by time, not by version: a later version dated earlier (a clock set back) does not win over one in force since
    con.execute("UPDATE meta.control_salts SET since = ? WHERE salt = 's2'", [SENT - timedelta(days=40)])
    assert send_outcomes(con, AS_OF, 7)[1] == judged[1]


def test_an_id_no_delivery_names_is_an_unknown_user_whatever_its_hash(tmp_path):
    """Judged by the hash alone, about 5 % of unknown ids were called global control (and their treatment sends
    broken promises)."""
    from seg_assets.activation.groups import bucket, control_cutoff

    con = warehouse(tmp_path, scored_before_send=True, n=50)
    draw_control(con, None, SENT - timedelta(days=30), [])
    (salt,) = con.sql("SELECT salt FROM meta.control_salts").fetchall()[0]
    ghost = next(f"x{i}" for i in range(10_000) if bucket(f"x{i}", salt) < control_cutoff(0.05))
    con.execute("INSERT INTO raw.campaign_sends VALUES ('ghost', 'c1', ?, 'a1', ?, 'treatment', 1.0, 3, 1)", [ghost, SENT])
    left_out = send_outcomes(con, AS_OF, 7)[1]
    assert left_out["unknown_user"] == 1 and left_out["global_control"] == 0 and left_out["treatment_to_global_control"] == 0


def test_a_campaign_without_its_holdout_warns_as_a_whole_when_no_cell_can():
    """A campaign sent with no control row, spread over 60 small cells at a 5 % planned holdout: each cell misses
    1-2 held-out users, which no cell's test can tell from chance; the campaign's 100 missing users can."""
    from seg_assets.activation.lift import campaign_sample_ratio

    rng = np.random.default_rng(3)
    cells = [(f"a{a}", s) for a in range(4) for s in range(15)]
    rows = [{"campaign_id": "no-holdout", "action_id": a, "segment_id": s, "user_id": f"{a}-{s}-{i}", "group": "treatment",
             "converted": bool(rng.random() < 0.1), "revenue": 0.0} for a, s in cells for i in range(33)]
    sound = [{"campaign_id": "sound", "action_id": "a0", "segment_id": 0, "user_id": f"s{i}",
              "group": "control" if i % 20 == 0 else "treatment", "converted": False, "revenue": 0.0} for i in range(2000)]
    lift = campaign_lift(pl.DataFrame(rows + sound), planned_control_share=0.05)
    assert not lift["srm_warning"].any()  # what the cells alone said
    per_campaign = campaign_sample_ratio(lift)
    assert per_campaign.rows() == [("no-holdout", 1980, 0, 0.05, pytest.approx(0.0, abs=1e-20),
                                    pytest.approx(0.0, abs=1e-20), True),
                                   ("sound", 1900, 100, 0.05, pytest.approx(1.0), pytest.approx(1.0), False)]


def test_a_sends_revenue_is_summed_exactly_in_any_order():
    """A send's revenue summed its orders' amounts as DOUBLE: 0.1 + 0.2 + 0.3 is 0.6000000000000001 in that order and
    0.6 in another (the rows' order on a Spark root's Parquet files, or DuckDB's threads), where features, churn labels
    and the policy's context sum money in DECIMAL (exact in any order)."""
    con = duckdb.connect()
    for schema in ("raw", "staging", "analytics"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute("""CREATE TABLE raw.campaign_sends AS SELECT 's1' AS send_id, 'c1' AS campaign_id, 'u1' AS user_id,
                   'a1' AS action_id, TIMESTAMP '2026-10-01 10:00' AS sent_ts, 'treatment' AS send_group,
                   1.0 AS propensity, 1 AS _file_id, 1 AS _row""")
    con.execute("CREATE TABLE analytics.user_segments AS SELECT 'u1' AS user_id, 1 AS segment_id")
    for amounts in ((0.1, 0.2, 0.3), (0.3, 0.2, 0.1)):
        con.execute("CREATE OR REPLACE TABLE staging.stg_orders (order_id VARCHAR, user_id VARCHAR, order_ts TIMESTAMP, "
                    "amount DOUBLE, status VARCHAR)")
        for i, amount in enumerate(amounts):
            con.execute("INSERT INTO staging.stg_orders VALUES (?, 'u1', TIMESTAMP '2026-10-02', ?, 'completed')",
                        [f"o{i}", amount])
        outcomes, _ = send_outcomes(con, AS_OF, 7)
        assert outcomes["revenue"].to_list() == [0.6], (amounts, outcomes["revenue"].to_list())
