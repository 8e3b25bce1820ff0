"""Publish stage: record who moved between segments, then publish the analytics tables for BI."""

import errno

import dagster as dg
import polars as pl
from duckdb import IOException

from seg_assets.activation.assets import CAMPAIGN_LIFT, NEXT_BEST_ACTION, USER_GROUPS
from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.baskets.assets import BASKET_RULES, SEGMENT_BASKET_RULES
from seg_assets.churn.keys import CHURN_SCORES
from seg_assets.errors import disk_full, input_failure
from seg_assets.features.assets import FRESHNESS
from seg_assets.markdown import frame as md_frame
from seg_assets.publish.bi import publish_tables
from seg_assets.publish.columns import describe
from seg_assets.publish.history import record_history, segment_sizes_over_time
from seg_assets.publish.keys import BI_SEGMENTS, HISTORY_TABLE, SEGMENT_HISTORY, SEGMENT_TRANSITIONS, TRANSITIONS_TABLE
from seg_assets.publish.state import (
    commit_state,
    ledger_files,
    refuse_tables_of_failed_runs,
    settings_fingerprint,
    stage_published_state,
    state_path,
)
from seg_assets.recommend.assets import USER_RECOMMENDATIONS
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.reviews.assets import REVIEW_SENTIMENT
from seg_assets.segmentation.scoring import SEGMENT_PROFILES, SEGMENT_RULES, USER_SEGMENTS, segments_as_of
from seg_assets.spark.session import Engine

GROUP = "publish"
# What BI gets: these assets' tables (key analytics/x -> table analytics.x), copied after all of them.
PUBLISHED = (USER_SEGMENTS, SEGMENT_PROFILES, SEGMENT_RULES, SEGMENT_HISTORY, SEGMENT_TRANSITIONS, CHURN_SCORES,
             USER_GROUPS, BASKET_RULES, SEGMENT_BASKET_RULES, CAMPAIGN_LIFT, NEXT_BEST_ACTION,
             REVIEW_SENTIMENT, USER_RECOMMENDATIONS)
PUBLISHED_TABLES = tuple(".".join(key.path) for key in PUBLISHED)


@dg.multi_asset(
    retry_policy=TRANSIENT_RETRY,
    specs=[
        dg.AssetSpec(SEGMENT_HISTORY, deps=[USER_SEGMENTS], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="One row per user and segment spell (valid_from, valid_to): a new row only when a user's "
                                 "segment changes."),
        dg.AssetSpec(SEGMENT_TRANSITIONS, deps=[USER_SEGMENTS], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="Per as-of: users who entered a segment or moved from one segment to another."),
    ],
    name="segment_history", pool="duckdb",
)
def segment_history(context: dg.AssetExecutionContext, duckdb: Warehouse):
    with duckdb.get_connection() as con:
        as_of = segments_as_of(con)
        update = record_history(con, as_of, context.run_id)
        moves = con.sql("SELECT coalesce(from_name, '(new)') AS from_segment, to_name AS to_segment, users "
                        f"FROM {TRANSITIONS_TABLE} WHERE as_of = ? AND run_id = ? ORDER BY users DESC",
                        params=[as_of, context.run_id]).pl()
        sizes = segment_sizes_over_time(con)
        spells = con.sql(f"SELECT count(*) FROM {HISTORY_TABLE}").fetchall()[0][0]
    if update.skipped:
        context.log.warning(f"segment history not recorded: {update.skipped}")
    else:
        context.log.info(f"history as of {as_of}: {update.new_users} new, {update.moved_users} moved, {update.unchanged_users} unchanged, "
                         f"{update.left_users} left")
    skipped = {"not_recorded": update.skipped} if update.skipped else {}
    yield dg.MaterializeResult(asset_key=SEGMENT_HISTORY, metadata={
        "as_of": str(as_of), **skipped, "new_users": update.new_users, "moved_users": update.moved_users,
        "unchanged_users": update.unchanged_users, "left_users": update.left_users, "dagster/row_count": dg.MetadataValue.int(int(spells)),
        # Numeric metadata per segment: the asset's Plots tab in the UI draws each as a line over refreshes.
        **{f"segment_{sid}_users": dg.MetadataValue.int(int(n))
           for sid, n in sizes.filter(pl.col("as_of") == pl.col("as_of").max()).select("segment_id", "users")
           .sort("segment_id").iter_rows()},
        "sizes_over_time": dg.MetadataValue.md(_sizes_table(sizes)) if sizes.height else "",
    })
    yield dg.MaterializeResult(asset_key=SEGMENT_TRANSITIONS, metadata={
        "as_of": str(as_of), **skipped,
        "moves": dg.MetadataValue.md(md_frame(moves)) if moves.height else "no moves",
    })


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=BI_SEGMENTS, deps=list(PUBLISHED),
    group_name=GROUP, pool="duckdb", kinds={"duckdb", "parquet"}, automation_condition=rescore_on_new_inputs(),
    # what BI reads: the tables upstream count a failed run's writes as fresh, so a publication failing every hour
    # kept every policy green (a tester's)
    freshness_policy=FRESHNESS,
    description="The analytics tables written as Parquet into a new version of SEG_DATA_DIR/bi/, switched in one "
    "rename (bi/current) and named in each table's folder (bi/tables/); bi/segments.duckdb holds views over their "
    "newest files: BI tools open it read-only, never block (or see half of) a refresh, and a held connection sees each "
    "new publication. Tables whose content did not change are "
    "linked, not written again (meta.bi_tables). Each column carries its description (publish/columns.py) as a comment.",
)
def bi_segments(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings, engine: Engine):
    refuse_tables_of_failed_runs(context, settings, PUBLISHED)
    with duckdb.get_connection() as con:
        run_settings = settings_fingerprint(context.run.run_config.get("ops", {}), settings.as_of, engine.kind)
        as_of = segments_as_of(con)
        try:  # the record of the publication, staged first: a state folder that cannot take it fails before the switch
            record = stage_published_state(settings.paths, ledger_files(con), as_of, run_settings)
        except OSError as exc:
            raise input_failure(f"cannot record the publication in {state_path(settings.paths).parent}: {exc.strerror}: "
                                f"{exc.filename}; give the refresh write access to it, then refresh again (BI was not "
                                "touched)") from exc
        try:
            publication = publish_tables(con, settings.paths.bi, list(PUBLISHED_TABLES), describe, context.run_id)
        except BaseException as exc:
            record.unlink(missing_ok=True)
            folder = isinstance(exc, IOException) or disk_full(exc) or isinstance(exc, OSError) and exc.errno in (
                errno.EACCES, errno.EPERM, errno.EROFS)
            if not folder:
                raise
            # the folder, not the data: one line and its fix (nothing was switched)
            what = (f"{exc.strerror}: {exc.filename2 or exc.filename}" if isinstance(exc, OSError)
                    else str(exc).splitlines()[0])  # DuckDB's Parquet writer: a full disk fails there first
            raise input_failure(f"cannot write the BI copy: {what}; give the refresh write access to {settings.paths.bi} "
                                "(and space), then refresh again") from exc
        try:
            commit_state(settings.paths, record)
        except OSError as exc:  # after the switch: BI shows this run's tables (its version records the run, which the
            # CLI, refresh_failure_log and the next run read); fail without a retry (each retry published again; a
            # tester's immutable state/published.json)
            raise input_failure(f"BI shows this run's segments (as of {as_of}), but the record of the publication could "
                                f"not be put in place: {exc.strerror}: {state_path(settings.paths)}; give the refresh "
                                "write access to it (the next refresh publishes again)") from exc
    return dg.MaterializeResult(metadata={
        "database": dg.MetadataValue.path(str(publication.database)),
        "rows": dg.MetadataValue.json(publication.rows),
        "written": dg.MetadataValue.md(", ".join(publication.written) or "nothing changed"),
        "unchanged (carried over)": dg.MetadataValue.md(
            ", ".join(t for t in publication.rows if t not in publication.written) or "none"),
        "connect": dg.MetadataValue.md(f"```\nduckdb -readonly {publication.database}\n```"),
        **{f"columns: {table}": dg.MetadataValue.table_schema(dg.TableSchema(columns=[  # what the views offer, for the UI
            dg.TableColumn(name, kind, description=text or None) for name, kind, text in columns]))
           for table, columns in publication.columns.items()},
    })


def _sizes_table(sizes) -> str:
    """Users per segment at the last 12 recorded as-ofs, one row per as-of."""
    wide = sizes.with_columns(segment=pl.format("{}: {}", "segment_id", "segment_name")).pivot(
        on="segment", index="as_of", values="users", aggregate_function="sum", sort_columns=True).sort("as_of").tail(12)
    return md_frame(wide)


assets = [segment_history, bi_segments]
asset_checks: list = []
