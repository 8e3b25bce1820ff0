"""Activation stage assets: the global control group (and, as the stage grows, lift and the policy).

``analytics/user_groups`` gives every scored user their hash bucket and whether they are in the global
control group (groups.py), with the salt version that drew it; its materialization shows the action
catalogue (actions.yaml) so a person sees in the UI what can be sent to whom.
"""

from datetime import UTC, datetime

import dagster as dg

from seg_assets.activation.catalogue import ActionsConfigError, Catalogue, load_catalogue
from seg_assets.activation.groups import BUCKETS, SALTS_TABLE, bucket_sql, control_cutoff, salt_version
from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.errors import input_failure
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.segmentation.scoring import USER_SEGMENTS
from seg_assets.warehouse import transaction

GROUP = "activation"
USER_GROUPS = dg.AssetKey(["analytics", "user_groups"])
TABLE = "analytics.user_groups"


def catalogue_markdown(catalogue: Catalogue) -> str:
    if not catalogue.actions:
        return "No actions declared (actions.yaml under the data root)."
    rows = ["| action | channel | cost per send | segments | lifecycle stages | description |", "|---|---|---:|---|---|---|"]
    for name, a in catalogue.actions.items():
        rows.append(f"| {name} | {a.channel} | {a.cost_per_send:g} | {', '.join(map(str, a.eligible_segments)) or 'all'} "
                    f"| {', '.join(a.eligible_stages) or 'all'} | {a.description} |")
    return "\n".join(rows)


@dg.asset(
    key=USER_GROUPS, deps=[USER_SEGMENTS], group_name=GROUP, pool="duckdb", kinds={"duckdb"},
    automation_condition=rescore_on_new_inputs(),
    description="Every scored user's hash bucket (md5 of salt and user_id, 0-9,999) and whether they are in the "
    "global control group, which never receives an action: the same users on every refresh, refit and engine.",
)
def user_groups(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings) -> dg.MaterializeResult:
    try:
        catalogue = load_catalogue(settings.paths.root)
    except ActionsConfigError as exc:
        raise input_failure(str(exc)) from None
    control = catalogue.control
    with duckdb.get_connection() as con, transaction(con):
        version = salt_version(con, control.salt, control.share, datetime.now(UTC).replace(tzinfo=None))
        con.execute(f"""CREATE OR REPLACE TABLE {TABLE} AS
            SELECT user_id, bucket < {control_cutoff(control.share)} AS global_control, bucket,
                   {version}::INTEGER AS salt_version
            FROM (SELECT user_id, {bucket_sql('user_id', control.salt)} AS bucket FROM analytics.user_segments)""")
        users, in_control = con.sql(f"SELECT count(*), count(*) FILTER (WHERE global_control) FROM {TABLE}").fetchall()[0]
        salts = con.sql(f"SELECT salt_version, salt, share, since FROM {SALTS_TABLE} ORDER BY 1").fetchall()
    history = "\n".join(["| version | salt | share | since |", "|---|---|---:|---|"]
                        + [f"| {v} | {s} | {sh:g} | {since:%Y-%m-%d %H:%M} |" for v, s, sh, since in salts])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(users)),
        "global_control_users": dg.MetadataValue.int(int(in_control)),
        "global_control_share": dg.MetadataValue.float(in_control / users if users else 0.0),
        "planned_share": dg.MetadataValue.float(control.share),
        "buckets": BUCKETS, "salt_version": version,
        "salt_history": dg.MetadataValue.md(history),
        "actions": dg.MetadataValue.md(catalogue_markdown(catalogue)),
    })


assets = [user_groups]
asset_checks: list = []
