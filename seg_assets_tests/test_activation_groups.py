"""The global control group: deterministic by salted hash, stable across refits, drifts and re-deliveries (end to
end through the command line, with campaigns and audience files), re-drawn only by a new salt (recorded), and
the actions file validated like any configuration."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from seg_assets.activation.audiences import audience_files, audiences, write_audiences
from seg_assets.activation.catalogue import ActionsConfigError, load_catalogue
from seg_assets.activation.groups import bucket, bucket_sql, control_cutoff
from seg_assets.cli import app
from seg_assets.demo.campaigns import CONTROL_SALT, CONTROL_SHARE
from seg_assets.demo.generate import DEFAULT_END, generate, generate_followup


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


@pytest.mark.parametrize("text, said", [
    ("control: {share: 0.7}\n", "control.share"),
    ("actions:\n  a1: {chanel: email}\n", "chanel"),
    # a tester's: two ids one file on a case-insensitive share, and YAML's `true` taken for a cost of 1.0
    ("actions:\n  Promo: {}\n  promo: {}\n", "'Promo' and 'promo' differ only in case"),
    ("actions:\n  promo: {cost_per_send: true}\n", "cost_per_send is a number, not true"),
])
def test_the_actions_file_is_checked(tmp_path, monkeypatch, text, said):
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    assert load_catalogue(tmp_path).control.share == 0.05 and not load_catalogue(tmp_path).actions
    (tmp_path / "actions.yaml").write_text(text)
    with pytest.raises(ActionsConfigError, match=said):
        load_catalogue(tmp_path)
    (tmp_path / "actions.yaml").write_text("actions:\n  promo: {cost_per_send: 2}\n")
    assert load_catalogue(tmp_path).actions["promo"].cost_per_send == 2.0


@pytest.mark.parametrize("action_id", ["/../../../../outside/pwn_action", "a/b", "..", ".hidden", "a\\nb", "x" * 65])
def test_an_action_id_is_a_file_name_never_a_path(tmp_path, monkeypatch, action_id):
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    (tmp_path / "actions.yaml").write_text(f'actions:\n  "{action_id}":\n    description: x\n')
    with pytest.raises(ActionsConfigError, match=r"action id .* must use letters, digits, '_', '-' and '.' \(not first\)") as err:
        load_catalogue(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "actions.yaml").write_text("actions:\n  winback_10.v2-b: {}\n")
    assert list(load_catalogue(tmp_path).actions) == ["winback_10.v2-b"]


@pytest.mark.parametrize("campaign", ["../../pwn-20261031", "a/b-20261031", "/tmp/pwn-20261031"])
def test_the_audience_writer_refuses_a_path_outside_its_folder(tmp_path, campaign):
    frame = pl.DataFrame({"campaign_id": ["ok-20261031", campaign], "user_id": ["u1", "u2"]})
    folder = tmp_path / "bi" / "audiences"
    with pytest.raises(ValueError, match="would write outside"):
        write_audiences(frame, folder)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def groups(root):
    con = duckdb.connect(str(root / "bi" / "segments.duckdb"), read_only=True)
    try:
        return dict(con.sql("SELECT user_id, global_control FROM analytics.user_groups").fetchall()), \
            con.sql("SELECT DISTINCT salt_version FROM analytics.user_groups").fetchall()
    finally:
        con.close()


# ------------------------------------------------------------------ end to end, through the command line


def published(root: Path) -> tuple[dict[str, bool], set[int], str]:
    """(user -> global_control, salt versions, as-of day) from the BI copy."""
    con = duckdb.connect(str(root / "bi" / "segments.duckdb"), read_only=True)
    try:
        groups = dict(con.sql("SELECT user_id, global_control FROM analytics.user_groups").fetchall())
        versions = {v for (v,) in con.sql("SELECT DISTINCT salt_version FROM analytics.user_groups").fetchall()}
        campaigns = {f"{a}-{t:%Y%m%d}" for a, t in con.sql(
            "SELECT DISTINCT n.action_id, (SELECT max(as_of) FROM analytics.user_segments) "
            "FROM analytics.next_best_action n").fetchall()}
    finally:
        con.close()
    return groups, versions, campaigns


def audience_users(root: Path) -> tuple[set[str], set[str]]:
    """(every user in any audience file, Parquet or CSV; the campaigns the folder holds)."""
    files = audience_files(root / "bi" / "audiences")
    users = set()
    for path in files:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, schema_overrides={"user_id": pl.Utf8})
        users |= set(frame["user_id"].to_list())
    return users, {p.stem for p in files}


@pytest.mark.slow
def test_the_control_group_is_the_same_users_after_a_refit_a_drift_and_a_redelivery(tmp_path, monkeypatch):
    root = tmp_path / "data"
    generate(root, users=1_200, days=60, seed=11, with_campaigns=True)
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    hashed = lambda users, salt: {u for u in users if bucket(u, salt) < control_cutoff(CONTROL_SHARE)}  # noqa: E731

    def refresh(*args: str, salt: str = CONTROL_SALT, version: int = 1):
        result = CliRunner().invoke(app, ["refresh", "--no-summary", *args])
        assert result.exit_code == 0, result.output
        groups, versions, campaigns = published(root)
        control = {u for u, c in groups.items() if c}
        assert control == hashed(groups, salt) and versions == {version}  # the salted hash of actions.yaml, nothing else
        in_files, file_campaigns = audience_users(root)
        assert in_files and not in_files & control  # no control user in any audience file, Parquet or CSV
        assert file_campaigns == campaigns  # only the current campaigns: older ones are removed
        return groups, campaigns

    before, first_campaigns = refresh()
    assert 0.03 < sum(before.values()) / len(before) < 0.08

    refit, _ = refresh("--refit", "--set", "analytics__user_segments.assign_with=model")  # a new model and other scoring rules
    assert refit == before

    # A drift: a new month in which a third of the users behave like another kind of shopper, and new users.
    generate_followup(root, users=1_200, days=30, seed=11, start=DEFAULT_END + timedelta(seconds=1),
                      changed_share=0.3, new_users=150, tag="drift")
    drifted, drift_campaigns = refresh()
    assert {u: drifted[u] for u in before} == before and len(drifted) > len(before)
    assert not drift_campaigns & first_campaigns  # a later as-of: new campaigns, the earlier files are gone

    # A re-delivery: every landing file again, under a new name.
    for path in [p for p in (root / "landing").rglob("*") if p.is_file()]:
        shutil.copy(path, path.with_name("again_" + path.name))
    again, _ = refresh("--rebase")
    assert again == drifted

    # A new salt re-draws the group (the same users), recorded as the next salt version once its audiences are
    # written: a run that drew it and stopped before them dates nothing (a tester's: sends from the audiences in place
    # were then judged by a group nobody had sent against, 10 of 10 called breaches).
    actions = root / "actions.yaml"
    actions.write_text(actions.read_text().replace(f'salt: "{CONTROL_SALT}"', 'salt: "new-season"'))
    import dagster as dg

    from seg_assets.activation.assets import user_groups
    from seg_assets.resources import build_resources

    assert dg.materialize([user_groups], resources=build_resources(root)).success  # the run stops here

    def salts():
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            return con.sql("SELECT salt_version, salt, since FROM meta.control_salts ORDER BY 1").fetchall()

    assert [v for v, *_ in salts()] == [1]
    started = datetime.now(UTC).replace(tzinfo=None)
    redrawn, _ = refresh("--rebase", salt="new-season", version=2)
    assert redrawn != again and set(redrawn) == set(again)
    (v1, _, since1), (v2, salt2, since2) = salts()
    assert (v1, v2, salt2) == (1, 2, "new-season") and since1 < started <= since2


def test_lifecycle_stages_and_campaign_shares_in_the_actions_file_are_checked(tmp_path, monkeypatch):
    """A misspelt stage made the action eligible for nobody, in silence (and emptied the audience folder)."""
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    (tmp_path / "actions.yaml").write_text("actions:\n  a1: {eligible_stages: [at_risk]}\n")
    with pytest.raises(ActionsConfigError, match=r"unknown lifecycle stage 'at_risk': use new, active, at risk, dormant"):
        load_catalogue(tmp_path)
    (tmp_path / "actions.yaml").write_text("actions:\n  a1: {eligible_stages: [At Risk, dormant]}\n"
                                           "holdout_share: 0\ncampaigns: {spring: {holdout_share: 0.5}}\n")
    catalogue = load_catalogue(tmp_path)
    assert (catalogue.holdout_of("spring"), catalogue.holdout_of("other")) == (0.5, 0.0)
    (tmp_path / "actions.yaml").write_text("campaigns: {spring: {holdout_share: 0.9}}\n")
    with pytest.raises(ActionsConfigError, match="campaigns.spring.holdout_share"):
        load_catalogue(tmp_path)


def test_a_failed_move_of_audience_files_leaves_the_folder_as_it_was(tmp_path):
    """The files were moved in one by one: a failure half way left yesterday's campaigns beside part of today's, which
    a CRM importing the folder would both send."""
    folder = tmp_path / "audiences"
    nba = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "action_id": ["a", "b", "c"], "propensity": 1.0, "policy_version": "p"})
    write_audiences(audiences(nba, datetime(2026, 11, 1), 0.1), folder)
    write_audiences(audiences(nba.head(2), datetime(2026, 11, 2), 0.1), folder)  # a and b again today; c no longer
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "c-20261103.csv").mkdir()  # the last file's place is taken: its move fails
    changed = nba.with_columns(pl.lit("q").alias("policy_version"))
    with pytest.raises(OSError):
        write_audiences(audiences(changed, datetime(2026, 11, 2), 0.1).vstack(
            audiences(changed.tail(1), datetime(2026, 11, 3), 0.1)), folder)
    (folder / "c-20261103.csv").rmdir()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_stale_audience_that_cannot_be_removed_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    """Removing yesterday's files came after today's were in place, without an undo: a file that could not be removed
    (immutable, another owner) left both days side by side. And a replace that failed left a hidden copy behind."""
    import os

    from seg_assets.activation import audiences as A

    folder = tmp_path / "audiences"
    nba = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "action_id": ["a", "b", "c"], "propensity": 1.0, "policy_version": "p"})
    write_audiences(audiences(nba, datetime(2026, 11, 1), 0.1), folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = os.replace

    def stuck(name: str, end: int):
        """os.replace failing where the file ``name`` is the source (end 0) or the target (end 1)."""
        def replace(src, dst):
            if Path((src, dst)[end]).name == name:
                raise PermissionError(1, "Operation not permitted", str((src, dst)[end]))
            return real(src, dst)
        return replace

    for name, end, frame, day, share in (("c-20261101.parquet", 0, nba.head(2), 2, 0.1),  # c is stale and stuck
                                         ("b-20261101.csv", 1, nba, 1, 0.2)):  # today again, b cannot be replaced
        monkeypatch.setattr(A.os, "replace", stuck(name, end))
        with pytest.raises(PermissionError):
            write_audiences(audiences(frame, datetime(2026, 11, day), share), folder)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no hidden copy left either


def test_a_key_yaml_reads_as_a_boolean_or_a_number_is_told_to_be_quoted(tmp_path, monkeypatch):
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    (tmp_path / "actions.yaml").write_text("actions:\n  yes: {}\n")  # was "actions.1.[key]: Input should be a valid string"
    with pytest.raises(ActionsConfigError, match=r"actions: a key must be text, and YAML read one as bool 'True' .*quote the key"):
        load_catalogue(tmp_path)


def test_campaign_keys_are_trimmed_and_flags_are_no_segments(tmp_path, monkeypatch):
    """Ingestion trims campaign ids, so a key " spring " matched nothing; ``eligible_segments: [on]`` was segment 1."""
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    (tmp_path / "actions.yaml").write_text('campaigns:\n  " spring ": {holdout_share: 0.5}\n')
    assert load_catalogue(tmp_path).holdout_of("spring") == 0.5
    (tmp_path / "actions.yaml").write_text("actions:\n  a: {eligible_segments: [on, 2]}\n")
    with pytest.raises(ActionsConfigError, match="a segment YAML read as True"):
        load_catalogue(tmp_path)
    (tmp_path / "actions.yaml").write_text("control:\n  on: 1\n")
    with pytest.raises(ActionsConfigError, match="control: a key must be text"):
        load_catalogue(tmp_path)


def test_the_audiences_date_the_salt_their_group_was_drawn_with_not_the_one_the_file_says_now(tmp_path):
    """actions.yaml edited between user_groups and the audiences (a refresh in flight, or the audiences materialized
    alone in the UI): the salt dated is the one the files' group was drawn with; dating the file's new salt judged
    sends to that group's users as sends to the control group (a reviewer's: 57 of 1,079)."""
    import dagster as dg

    from seg_assets.activation.assets import user_groups
    from seg_assets.activation.audience_asset import campaign_audiences
    from seg_assets.demo.campaigns import ACTIONS_YAML
    from seg_assets.resources import build_resources

    users = [f"u{i}" for i in range(400)]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.sql("CREATE SCHEMA analytics")
        con.execute("CREATE TABLE analytics.user_segments AS SELECT unnest(?::VARCHAR[]) AS user_id", [users])
        con.execute("""CREATE TABLE analytics.next_best_action AS SELECT unnest(?::VARCHAR[]) AS user_id,
                       'discount_10' AS action_id, 0.5 AS propensity, 'v1' AS policy_version""", [users])
    actions = tmp_path / "actions.yaml"
    resources = build_resources(tmp_path, as_of="2026-11-30")
    for salt in (CONTROL_SALT, "season-B"):  # the first salt, then a new one drawn and sent with
        actions.write_text(ACTIONS_YAML.replace(f'salt: "{CONTROL_SALT}"', f'salt: "{salt}"'))
        assert dg.materialize([user_groups, campaign_audiences], resources=resources).success
    actions.write_text(ACTIONS_YAML.replace(f'salt: "{CONTROL_SALT}"', 'salt: "season-C"'))  # edited: not drawn yet
    assert dg.materialize([campaign_audiences], resources=resources).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        salts = [s for (s,) in con.sql("SELECT salt FROM meta.control_salts ORDER BY salt_version").fetchall()]
    assert salts == [CONTROL_SALT, "season-B"]
    targeted = {u for p in audience_files(tmp_path / "bi" / "audiences") if p.suffix == ".parquet"
                for u in pl.read_parquet(p)["user_id"].to_list()}
    assert targeted and not {u for u in targeted if bucket(u, "season-B") < control_cutoff(CONTROL_SHARE)}
