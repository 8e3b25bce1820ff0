"""The global control group: deterministic by salted hash, stable across refits and re-deliveries, re-drawn
only by a new salt (recorded), and the actions file validated like any configuration."""

import shutil

import duckdb
import pytest

from seg_assets.activation.catalogue import ActionsConfigError, load_catalogue
from seg_assets.activation.groups import bucket, bucket_sql, control_cutoff
from seg_assets.refresh import run_refresh


def test_python_and_sql_buckets_agree_and_the_share_is_near_plan():
    con = duckdb.connect()
    ids = [f"user-{i}" for i in range(20_000)] + ["ü-€", "o'neil", ""]
    con.execute("CREATE TABLE t (u VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[i] for i in ids])
    sql = dict(con.sql(f"SELECT u, {bucket_sql('u', 'spring')} FROM t").fetchall())
    assert all(sql[i] == bucket(i, "spring") for i in ids)
    share = sum(b < control_cutoff(0.05) for b in sql.values()) / len(ids)
    assert 0.045 < share < 0.055
    other = dict(con.sql(f"SELECT u, {bucket_sql('u', 'autumn')} FROM t").fetchall())
    assert sum(sql[i] != other[i] for i in ids) > 0.99 * len(ids)  # a new salt re-draws


def test_the_actions_file_is_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    assert load_catalogue(tmp_path).control.share == 0.05 and not load_catalogue(tmp_path).actions
    (tmp_path / "actions.yaml").write_text("control: {share: 0.7}\n")
    with pytest.raises(ActionsConfigError, match="control.share"):
        load_catalogue(tmp_path)
    (tmp_path / "actions.yaml").write_text("actions:\n  a1: {chanel: email}\n")
    with pytest.raises(ActionsConfigError, match="chanel"):
        load_catalogue(tmp_path)


def groups(root):
    con = duckdb.connect(str(root / "bi" / "segments.duckdb"), read_only=True)
    try:
        return dict(con.sql("SELECT user_id, global_control FROM analytics.user_groups").fetchall()), \
            con.sql("SELECT DISTINCT salt_version FROM analytics.user_groups").fetchall()
    finally:
        con.close()


def test_the_control_group_survives_refits_and_redeliveries_and_a_new_salt_redraws_it(data_dir):
    assert run_refresh(data_dir).success
    before, [(version,)] = groups(data_dir)
    assert 0.03 < sum(before.values()) / len(before) < 0.07
    orders = sorted((data_dir / "landing" / "orders").iterdir())[0]
    shutil.copy(orders, orders.with_name("resent_" + orders.name))
    assert run_refresh(data_dir, refit=True).success
    after, [(same,)] = groups(data_dir)
    assert after == before and same == version
    (data_dir / "actions.yaml").write_text("control: {share: 0.05, salt: new-season}\n")
    assert run_refresh(data_dir, rebase=True).success
    redrawn, [(newer,)] = groups(data_dir)
    assert newer == version + 1 and redrawn != before and set(redrawn) == set(before)
