"""Ingestion with ``--engine spark``: landing files -> raw Parquet, read and validated in Spark tasks.

The unit of parallel work is the landing file. Each new file is read, mapped, typed and validated in a Spark
task by the SAME function the DuckDB engine runs (``staging.stage_file``: the contract's rules as DuckDB SQL, on
an in-memory DuckDB inside the task), and its staged rows are written as Parquet. Why not transpile that SQL to
Spark: the rules parse text (timestamps, numbers), and the two engines' parsers disagree on real inputs
(``'2026/10/01 12:00:00'`` is a timestamp to DuckDB, NULL to Spark's ``try_cast``; ``' 2026-10-01 '`` the
reverse), so a transpiled rule would silently accept or reject other rows. Then Spark, over all the run's files
of a table at once, deduplicates by id (first delivery wins: the lowest (file_id, row); a row already in the table
wins) and appends the accepted rows to ``spark/raw/<table>/run_<run id>/``. The ledger and the rejects stay in
DuckDB, keyed by (source, sha256), with the same accounting: delivered = accepted + duplicate + rejected + filtered.

DuckDB reads the raw tables through views over that Parquet (so the contract checks, GE samples, the churn
snapshots and the baskets run unchanged). A table's rows and its files' ledger rows are committed table by table;
a run's folder in a table holding rows of a file without a ledger row (its table's commit never happened: a failed
or killed run, even one that committed other tables first) is removed before the next run, so a failure in between
leaves no orphan rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa

from seg_assets.ingest import contract as C
from seg_assets.ingest import ledger, loader, staging
from seg_assets.ingest.row_rules import LEFT_OUT
from seg_assets.ingest.sources import link_roots, opened_inside
from seg_assets.ingest.writing import STAGE, note_repeats, record_withheld
from seg_assets.settings import DataPaths, duckdb_memory_limit
from seg_assets.spark.tables import duckdb_view, parquet_rows, read_path
from seg_assets.warehouse import glob_escaped, object_type, sql_string

EMPTY = "empty.parquet"  # a table with no rows yet still has its schema, for Spark and for DuckDB's view
RUN_PREFIX = "run_"


def raw_folder(paths: DataPaths, spec: C.TableSpec) -> Path:
    return paths.spark_table(spec.qualified)


def raw_as_parquet_views(con, paths: DataPaths) -> None:
    """Make each raw table a DuckDB view over its Parquet folder. Rows a DuckDB-engine run ingested move into
    the folder first; rows Spark wrote whose ledger commit never happened go (:func:`_remove_uncommitted`). Each folder
    holds an empty file of the contract's columns as they are now, and the view reads its files by column name: files
    written before an optional column existed (``clicks.anonymous_id``) read it as NULL (by position DuckDB takes the
    first file's columns and drops the rest without a word)."""
    loader.ensure_tables(con)
    known = {r[0] for r in con.sql(f"SELECT file_id FROM {C.LEDGER_TABLE}").fetchall()}
    for spec in C.TABLES.values():
        folder = raw_folder(paths, spec)
        folder.mkdir(parents=True, exist_ok=True)
        for run_dir in folder.glob(f"{RUN_PREFIX}*"):
            _remove_uncommitted(run_dir, known)
        if object_type(con, spec.qualified) == "BASE TABLE":
            target = folder / "duckdb_engine" / "rows.parquet"
            if con.sql(f"SELECT count(*) FROM {spec.qualified}").fetchall()[0][0]:
                target.parent.mkdir(exist_ok=True)
                con.sql(f"COPY (SELECT * FROM {spec.qualified} ORDER BY _file_id, _row) TO {sql_string(str(target))} "
                        "(FORMAT parquet)")
        _write_empty(con, spec, folder / EMPTY)
        duckdb_view(con, spec.qualified, folder, by_name=True)


def _write_empty(con, spec: C.TableSpec, path: Path) -> None:
    """``path``: a Parquet file of no rows with the table's columns (the contract's and ``_file_id``, ``_row``), written
    when it is missing or has other columns (a column added to the contract since)."""
    columns = [(c.name, c.sql_type) for c in spec.columns] + [("_file_id", "BIGINT"), ("_row", "BIGINT")]
    if path.exists():
        found = [r[0] for r in con.sql(f"SELECT name FROM parquet_schema({sql_string(str(path))}) WHERE num_children IS NULL "
                                       "OR num_children = 0").fetchall()]
        if sorted(found) == sorted(name for name, _ in columns):
            return
    select = ", ".join(f"CAST(NULL AS {sql_type}) AS {name}" for name, sql_type in columns)
    con.sql(f"COPY (SELECT {select} LIMIT 0) TO {sql_string(str(path))} (FORMAT parquet)")


def _remove_uncommitted(run_dir: Path, known: set[int]) -> None:
    """A killed run's leftovers in one run folder: a Spark job's ``_temporary`` (part files without a footer: read, they
    failed every later refresh), and each part file holding rows of a file the ledger does not know. Judged part file
    by part file, as each comes from one write, committed with its ledger rows or not at all: a run writes its folder
    once per round of files (a failed file's first copy is read in a second round), and judged as a whole folder, a
    second round killed before its commit took the first round's committed rows with it (a reviewer's). Left in
    place, uncommitted rows were counted as duplicates when their files were read again (a tester's)."""
    for hidden in [p for p in run_dir.iterdir() if p.name.startswith(("_", "."))]:  # _temporary, _SUCCESS, .crc files
        shutil.rmtree(hidden) if hidden.is_dir() else hidden.unlink()
    parts = []
    if any(run_dir.glob("*.parquet")):  # (a data root named like a glob, shop[eu], read as written)
        source = sql_string(glob_escaped(run_dir) + "/*.parquet")
        with duckdb.connect() as files:
            parts = files.sql(f"""SELECT filename, list(DISTINCT _file_id)
                FROM read_parquet({source}, hive_partitioning=false, filename=true) GROUP BY 1""").fetchall()
    for name, file_ids in parts:
        if set(file_ids) - known:
            Path(name).unlink()
    if not any(run_dir.glob("*.parquet")):
        shutil.rmtree(run_dir)


def spark_ingested(con) -> bool:
    """Whether this warehouse's raw tables are views over Spark's Parquet (ingested with --engine spark)."""
    return any(object_type(con, spec.qualified) == "VIEW" for spec in C.TABLES.values())


def written_by_spark(paths: DataPaths) -> bool:
    """Whether Spark wrote this data root's raw tables (a raw folder holds Parquet): the command line's look before a
    run, without opening the warehouse (another process may hold it); ingestion's step asks the warehouse
    (:func:`spark_ingested`)."""
    return any(any(raw_folder(paths, spec).rglob("*.parquet")) for spec in C.TABLES.values())


def kept_engine_message(root: Path) -> str:
    """Why the DuckDB engine refuses a data root Spark ingested (the command line before a run, ingestion in its step)."""
    return (f"the raw tables of {root} are Parquet written by --engine spark: keep --engine spark for this data root, or "
            "ingest into a new one with --engine duckdb")


def _staged_columns(spec: C.TableSpec, present: set[str], file_id: int) -> str:
    """One schema for every staged file of a table (a rejected file stages only rule and reason)."""
    cols = [f"CAST({c.name if c.name in present else 'NULL'} AS {c.sql_type}) AS {c.name}" for c in spec.columns]
    return ", ".join([*cols, "CAST(_row AS BIGINT) AS _row", "rule", "reason", "raw_values", f"CAST({int(file_id)} AS BIGINT) AS _file_id"])


def _stage_task(item):
    """In a Spark task: one file through ``staging.stage_file`` on an in-memory DuckDB, staged rows to Parquet."""
    source, path, out, bounds, target, landing, roots, identity, memory_limit = item
    con = duckdb.connect(config={"memory_limit": memory_limit} if memory_limit else {})  # the warehouse's limit
    try:
        con.sql("SET TimeZone = 'UTC'")
        con.sql("SET python_enable_replacements = false")
        with opened_inside(Path(path), Path(landing), roots) as pinned:  # as the DuckDB loader: the file as opened, checked
            staging.unchanged(pinned, identity)
            insertable = staging.stage_file(con, source, pinned, out, bounds)
            staging.unchanged(pinned, identity)  # a writer that went on during the read: rows of no one content
        present = {r[0] for r in con.sql(f"DESCRIBE temp.{STAGE}").fetchall()}
        con.sql(f"COPY (SELECT {_staged_columns(source.spec, present, out.file_id)} FROM temp.{STAGE}) "
                f"TO {sql_string(target)} (FORMAT parquet)")
        return out, insertable
    except Exception as exc:  # noqa: BLE001 - one bad file never blocks the others (as in the DuckDB loader)
        if why := staging.still_written(out.file_format, Path(path), exc):
            out.note = why
            return out, None  # not read: left to the next run, as the DuckDB loader leaves it
        return ledger.failed_outcome(out, exc), False
    finally:
        con.close()


def spark_stager(spark, paths: DataPaths):
    """``stage_files`` for ``loader.ingest_landing``: the run's new files read in Spark tasks (see above)."""
    def stage_files(con, pending, bounds, run_id: str, now) -> list:
        staging = paths.spark / "_staging" / run_id
        staging.mkdir(parents=True, exist_ok=True)
        roots = link_roots(paths.landing)  # here: an executor's environment may not name them (nor the memory limit)
        limit = duckdb_memory_limit()
        items = [(source, str(path), out, bounds, str(staging / f"{out.file_id}.parquet"), str(paths.landing), roots,
                  identity, limit) for source, path, out, identity in pending]
        try:
            results = spark.sparkContext.parallelize(items, len(items)).map(_stage_task).collect()
            insertable, unfinished = set(), []
            for (_, _, out, _), (done, ok) in zip(pending, results, strict=True):
                out.__dict__.update(done.__dict__)  # the task's copy of the outcome: delivered, filtered, status...
                if ok is None:
                    unfinished.append(out)
                elif ok:
                    insertable.add(out.file_id)
            by_table: dict[str, list] = {}
            for source, _, out, _ in pending:
                if all(out is not u for u in unfinished):
                    by_table.setdefault(source.table, []).append(out)
            for table, outs in by_table.items():
                _load_table(spark, con, paths, C.TABLES[table], outs, insertable, staging, run_id, now)
            return unfinished
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    return stage_files


def _repeats_with_other_values(spark, staged, spec: C.TableSpec, folder: Path, written: Path,
                               insertable: set[int]) -> dict[int, int]:
    """Per file, its good rows not taken in whose id is stored with other values (writing.repeats_with_other_values'
    count, on Spark): the rows not in this run's Parquet, joined by id to the table's one row of that id."""
    from pyspark.sql import functions as F

    key = spec.id_column
    good = staged.where(F.col("rule").isNull() & F.col("_file_id").isin(sorted(insertable)))
    taken = spark.read.parquet(read_path(written)).select("_file_id", "_row") if any(written.glob("*.parquet")) else None
    not_taken = good.join(taken, on=["_file_id", "_row"], how="left_anti") if taken is not None else good
    stored = spark.read.option("recursiveFileLookup", "true").parquet(read_path(folder)).select(
        *[F.col(c).alias(f"_stored_{c}") for c in spec.column_names])
    differs = None
    for c in spec.column_names:
        cond = ~F.col(c).eqNullSafe(F.col(f"_stored_{c}"))
        differs = cond if differs is None else differs | cond
    rows = (not_taken.join(stored, F.col(key) == F.col(f"_stored_{key}")).where(differs)
            .groupBy("_file_id").count().collect())
    return {int(r["_file_id"]): int(r["count"]) for r in rows}


def _load_table(spark, con, paths: DataPaths, spec: C.TableSpec, outs, insertable: set[int], staging: Path,
                run_id: str, now) -> None:
    """Dedupe and append one table's staged rows on Spark; rejects and ledger rows to DuckDB in one transaction."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    read = [o for o in outs if o.status != C.STATUS_FAILED]
    folder = raw_folder(paths, spec)
    counts: dict[int, int] = {}
    rejects = withheld = None
    if read:
        staged = spark.read.parquet(*[read_path(staging / f"{o.file_id}.parquet") for o in read])
        key = spec.id_column
        first = Window.partitionBy(key).orderBy("_file_id", "_row")
        good = (staged.where(F.col("rule").isNull() & F.col("_file_id").isin(sorted(insertable)))
                .withColumn("_seq", F.row_number().over(first)).where("_seq = 1"))
        existing = spark.read.option("recursiveFileLookup", "true").parquet(read_path(folder)).select(key)
        accepted = good.join(existing, on=key, how="left_anti").select(*spec.column_names, "_file_id", "_row")
        written = folder / f"{RUN_PREFIX}{run_id}"
        accepted.write.mode("append").parquet(str(written))
        counts = parquet_rows(written, by="_file_id")
        rejects = (staged.where(F.col("rule").isNotNull() & (F.col("rule") != LEFT_OUT))
                   .select("_file_id", "_row", "rule", "reason", "raw_values").orderBy("_file_id", "_row").toArrow())
        if spec.name == C.WITHHELD_FROM:  # the ids of rows left out or rejected, as the DuckDB loader keeps them
            withheld = (staged.where(F.col("rule").isNotNull() & F.col(key).isNotNull()
                                     & F.col("_file_id").isin(sorted(insertable)))
                        .select(key, "rule", "_file_id", "_row").toArrow())
    names = {o.file_id: o.file_name for o in outs}
    con.execute("BEGIN TRANSACTION")
    try:
        if rejects is not None and rejects.num_rows:
            con.register("_seg_spark_rejects", rejects)
            con.register("_seg_spark_files", pa.table({"file_id": list(names), "file_name": list(names.values())}))
            con.execute(f"""INSERT INTO {C.REJECTS_TABLE} SELECT ?, r._file_id, f.file_name, r._row, r.rule, r.reason,
                r.raw_values, ?, ? FROM _seg_spark_rejects r JOIN _seg_spark_files f ON f.file_id = r._file_id
                ORDER BY r._file_id, r._row""", [spec.name, run_id, now])
            con.unregister("_seg_spark_rejects")
            con.unregister("_seg_spark_files")
        if withheld is not None and withheld.num_rows:
            con.register("_seg_spark_withheld", withheld)
            record_withheld(con, "SELECT * FROM _seg_spark_withheld")
            con.unregister("_seg_spark_withheld")
        rejected = {}
        if rejects is not None:
            for file_id in rejects.column("_file_id").to_pylist():
                rejected[file_id] = rejected.get(file_id, 0) + 1
        for out in outs:
            if out.status != C.STATUS_FAILED:
                out.rejected = rejected.get(out.file_id, 0)
                out.accepted = counts.get(out.file_id, 0)
                out.count_duplicates()
        repeats = _repeats_with_other_values(spark, staged, spec, folder, written, insertable) \
            if read and any(o.duplicate for o in read) else {}
        for out in outs:
            note_repeats(out, spec, repeats.get(out.file_id, 0))
            ledger.write_ledger(con, out, run_id, now)
        con.execute("COMMIT")
    except BaseException:
        ledger.rollback(con)
        raise
