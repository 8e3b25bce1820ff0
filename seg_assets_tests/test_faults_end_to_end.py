"""The foundation's acceptance, end to end: faults injected at a few percent, every row accounted for."""

import duckdb
import polars as pl
import pytest

from seg_assets.demo.generate import generate
from seg_assets.refresh import run_refresh
from seg_assets.settings import data_paths

IDS = {"orders": "order_id", "clicks": "event_id", "customers": "user_id"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_exactly_the_valid_unique_ids_and_every_reject_explained(tmp_path, fmt):
    generate(tmp_path, users=2_500, days=45, seed=13, fmt=fmt, fault_rate=0.03)
    outcome = run_refresh(tmp_path)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    with duckdb.connect(str(data_paths(tmp_path).warehouse), read_only=True) as con:
        for table, id_col in IDS.items():
            expected = set(pl.read_parquet(tmp_path / "truth" / f"valid_ids_{table}.parquet")[id_col].to_list())
            actual = [r[0] for r in con.sql(f"SELECT {id_col} FROM raw.{table}").fetchall()]
            assert len(actual) == len(set(actual)), f"duplicates in raw.{table}"
            assert set(actual) == expected, (table, len(set(actual) - expected), len(expected - set(actual)))
        ledger = con.sql("SELECT sum(delivered), sum(accepted), sum(duplicate), sum(rejected) FROM meta.ingest_ledger").fetchall()[0]
        assert ledger[0] == ledger[1] + ledger[2] + ledger[3] and ledger[3] > 0
        rejects = con.sql("SELECT count(*), count(*) FILTER (WHERE coalesce(reason, '') = '') FROM raw.rejects").fetchall()[0]
        assert rejects == (ledger[3], 0)
        assert con.sql("SELECT count(*) FROM meta.ingest_ledger WHERE status = 'rejected_file' "
                       "AND message LIKE '%amount%'").fetchall()[0][0] == 1  # the file without `amount`
        tables = [f"{s}.{t}" for s, t in con.sql("SELECT table_schema, table_name FROM information_schema.tables").fetchall()]
        for table in tables:
            if table != "raw.customers":
                assert "@example.com" not in str(con.sql(f"SELECT * FROM {table}").fetchall()), table
