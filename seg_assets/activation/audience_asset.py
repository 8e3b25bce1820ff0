"""``bi/audiences``: per campaign, the treated and held-out users as Parquet and CSV files a CRM or ESP imports
(audiences.py builds and writes them), made after the BI switch from the activation tables of a finished run."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from seg_assets.activation.assets import AUDIENCES, GROUP, NEXT_BEST_ACTION, USER_GROUPS, md_rows, settings_catalogue
from seg_assets.activation.audiences import RECOMMENDED_IN_AUDIENCE, audience_files, audiences, write_audiences
from seg_assets.activation.groups import drawn_with, record_salt
from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.errors import input_failure
from seg_assets.publish.keys import BI_SEGMENTS
from seg_assets.publish.state import refuse_tables_of_failed_runs
from seg_assets.recommend.assets import USER_RECOMMENDATIONS
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation.scoring import USER_SEGMENTS
from seg_assets.warehouse import table_exists

AUDIENCE_INPUTS = (NEXT_BEST_ACTION, USER_GROUPS, USER_RECOMMENDATIONS, USER_SEGMENTS)  # what the files are made of


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=AUDIENCES, deps=[*AUDIENCE_INPUTS, BI_SEGMENTS], group_name=GROUP, pool="duckdb",
    kinds={"parquet", "csv"},
    automation_condition=rescore_on_new_inputs(),
    check_specs=[dg.AssetCheckSpec("no_global_control", asset=AUDIENCES, blocking=True, description="Reads back every "
                                   "file under bi/audiences/: none holds a global-control user, none is of a campaign "
                                   "that is no longer current.")],
    description="Per campaign (one per action of the next-best-action run: <action_id>-<as_of yyyymmdd>), the users "
    "to target and the held-out users (per-campaign salted hash, the catalogue's holdout_share) as Parquet and CSV "
    "under bi/audiences/, each file replaced atomically: what a CRM or ESP imports. No global-control user.",
)
def campaign_audiences(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings) -> dg.MaterializeResult:
    # after the BI switch only (deps: bi/segments), and never from tables of a run that did not finish
    refuse_tables_of_failed_runs(context, settings, AUDIENCE_INPUTS)
    catalogue = settings_catalogue(settings)
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)  # the refresh's, as next_best_action's
        nba = con.sql("SELECT user_id, action_id, propensity, policy_version FROM analytics.next_best_action").pl()
        control = set(con.sql("SELECT user_id FROM analytics.user_groups WHERE global_control").pl()["user_id"].to_list())
        # one column per rank, joined in rank order (concat_ws skips a missing one): a quarter of the cost of an
        # ordered string_agg (0.24 vs 0.9 s at 1M users), which sorts every user's rows
        by_rank = ", ".join(f"max(product_id) FILTER (rank = {k})" for k in range(1, RECOMMENDED_IN_AUDIENCE + 1))
        recommended = con.sql(f"""SELECT user_id, concat_ws(',', {by_rank}) AS recommended_products
            FROM analytics.user_recommendations WHERE rank <= {RECOMMENDED_IN_AUDIENCE} GROUP BY user_id""").pl() \
            if table_exists(con, "analytics.user_recommendations") else None
    frame = audiences(nba, as_of, catalogue.holdout_of, control, recommended)
    folder = settings.paths.bi / "audiences"
    try:
        counts = write_audiences(frame, folder)
        with duckdb.get_connection() as con:  # the group these files were drawn against is in force from now on
            salt, share = drawn_with(con) or (catalogue.control.salt, catalogue.control.share)
            record_salt(con, salt, share, datetime.now(UTC).replace(tzinfo=None))
        from seg_assets.publish.state import finish_publication

        finish_publication(settings.paths)
    except OSError as exc:  # permissions, a read-only or immutable file: the folder is as it was; retrying cannot fix it
        name = f" ({Path(exc.filename).name})" if getattr(exc, "filename", None) else ""
        raise input_failure(f"bi/audiences: {exc.strerror or exc}{name}: the folder was left as it was (no audience "
                            "replaced or removed); fix the folder's permissions and refresh again") from None
    return dg.MaterializeResult(check_results=[_audience_check(folder, control, set(counts))], metadata={
        "folder": dg.MetadataValue.path(str(folder)), "campaigns": dg.MetadataValue.int(len(counts)),
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "audiences": dg.MetadataValue.md(md_rows(pl.DataFrame(
            [{"campaign_id": c, "treatment": g.get("treatment", 0), "control": g.get("control", 0)} for c, g in counts.items()],
            schema={"campaign_id": pl.Utf8, "treatment": pl.Int64, "control": pl.Int64}))),
    })


def _audience_check(folder, control: set[str], campaigns: set[str]) -> dg.AssetCheckResult:
    """What a CRM would import, read back from the files: no global-control user, only the current campaigns."""
    files = audience_files(folder)
    leaked: dict[str, int] = {}
    for path in files:
        users = (pl.read_parquet(path, columns=["user_id"]) if path.suffix == ".parquet"
                 else pl.read_csv(path, columns=["user_id"], schema_overrides={"user_id": pl.Utf8}))["user_id"]
        n = int(users.is_in(list(control)).sum()) if control else 0
        if n:
            leaked[path.name] = n
    stale = sorted(p.name for p in files if p.stem not in campaigns)
    return dg.AssetCheckResult(
        check_name="no_global_control", passed=not leaked and not stale, severity=dg.AssetCheckSeverity.ERROR,
        description=None if not leaked and not stale else
        f"global-control users in {leaked or 'no file'}; files of campaigns no longer current: {stale or 'none'}",
        metadata={"files": len(files), "global_control_users": len(control),
                  "control_users_in_files": sum(leaked.values()), "stale_files": len(stale)})
