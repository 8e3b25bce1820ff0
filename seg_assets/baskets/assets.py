"""``analytics/basket_rules`` and ``analytics/segment_basket_rules``: what is bought together, per segment.

Thin wiring: counts.py keeps exact basket counts per scope (whole shop and each current segment) up to
date, incrementally where the counts allow; rules.py derives the pair rules and each scope's strongest
ones. Runs after the segments or the orders change (eager, like the other analytics assets); without
new order lines or cancellations it reads the watermark and the rules' state and writes nothing (segment moves wait
for the next order lines or the daily rebase, counts.py).
"""


import hashlib

import dagster as dg
import polars as pl
from pydantic import Field

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.automation.limits import CheckedConfig
from seg_assets.baskets import counts as C
from seg_assets.baskets import rules as R
from seg_assets.features import incremental as inc
from seg_assets.ingest.assets import RAW_KEYS
from seg_assets.markdown import frame as md_frame
from seg_assets.markdown import table as md_table
from seg_assets.resources import Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation.scoring import SEGMENT_BASKET_RULES, USER_SEGMENTS, segments_as_of
from seg_assets.warehouse import create_table_from, table_exists, transaction

GROUP = "baskets"
BASKET_RULES = dg.AssetKey(["analytics", "basket_rules"])
BASKET_INPUTS = [RAW_KEYS["order_items"], RAW_KEYS["orders"]]  # lines, and order rows that cancel an order
NAMES = f"SELECT segment_id, any_value(segment_name) AS segment_name FROM {C.SEGMENTS} GROUP BY segment_id"


class BasketRulesConfig(CheckedConfig):
    min_support: float = Field(default=0.01, gt=0, le=1, description="A rule's itemset is in at least this share of its scope's baskets.")
    min_baskets: int = Field(default=5, ge=1, description="... and in at least this many baskets (guards small segments and small shops).")
    min_confidence: float = Field(default=0.2, ge=0, le=1, description="P(consequent | antecedent) at least this.")
    min_lift: float = Field(default=1.0, ge=0, description="Lift at least this (1: bought together more often than by chance).")
    max_basket_size: int = Field(default=C.MAX_BASKET_SIZE, ge=2,
                                 description="Orders with more distinct products are left out (wholesale, data errors).")
    top_rules: int = Field(default=R.RuleSettings.top_rules, ge=1, le=100,
                           description="Rules per segment in segment_basket_rules.top_rules and the UI.")
    track_margin: float = Field(default=C.CountSettings.track_margin, gt=0, le=1,
                                description="Pairs are kept for products above margin x threshold, "
                                "so most refreshes update counts instead of recounting.")

    def settings(self) -> R.RuleSettings:
        counts = C.CountSettings(self.min_support, self.min_baskets, self.max_basket_size, self.track_margin)
        return R.RuleSettings(counts, self.min_confidence, self.min_lift, self.top_rules)


def _empty(con, table: str, columns: dict[str, str]) -> None:
    con.sql(f"CREATE OR REPLACE TABLE {table} (" + ", ".join(f"{c} {t}" for c, t in columns.items()) + ")")


def _markdown(best: pl.DataFrame, names: dict) -> str:
    if best.height == 0:
        return "no rules above the thresholds"
    return md_table(["segment", "#", "rule"], [("whole shop" if sid is None else f"{sid}: {names.get(sid) or ''}", rank, rule)
                                               for sid, rank, rule in best.iter_rows()])


@dg.multi_asset(
    retry_policy=TRANSIENT_RETRY,
    specs=[
        dg.AssetSpec(BASKET_RULES, deps=[USER_SEGMENTS, *BASKET_INPUTS], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="Product pair rules (antecedent -> consequent) with support, confidence, lift and baskets, "
                     "for the whole shop (segment_id NULL) and each segment (baskets of its current users). Exact counts."),
        dg.AssetSpec(SEGMENT_BASKET_RULES, deps=[USER_SEGMENTS, *BASKET_INPUTS], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="Per segment (and the whole shop): baskets, number of rules and the strongest rules "
                     "(by lift, with support) as text, for the segment profile."),
    ],
    name="basket_rules", pool="duckdb",
)
def basket_rules(context: dg.AssetExecutionContext, config: BasketRulesConfig, duckdb: Warehouse):
    cfg = config.settings()
    with duckdb.get_connection() as con:
        lines = table_exists(con, "raw.order_items") and con.sql("SELECT count(*) > 0 FROM raw.order_items").fetchall()[0][0]
        if not lines or not table_exists(con, C.SEGMENTS):
            reason = "no order lines (raw.order_items is empty): no baskets to learn from" if not lines else "no segments yet"
            _empty(con, "analytics.basket_rules", R.RULE_COLUMNS)
            _empty(con, "analytics.segment_basket_rules", R.SUMMARY_COLUMNS)
            context.log.info(f"basket rules skipped: {reason}")
            yield dg.MaterializeResult(asset_key=BASKET_RULES, metadata={"skipped": reason, "dagster/row_count": 0})
            yield dg.MaterializeResult(asset_key=SEGMENT_BASKET_RULES, metadata={"skipped": reason, "dagster/row_count": 0})
            return
        with transaction(con):
            update = C.update_counts(con, cfg.counts, full=inc.rebase_requested(context.run.tags), as_of=segments_as_of(con))
            rule_key = _rule_key(con, config)
            current = (update.mode == "unchanged" and table_exists(con, "analytics.segment_basket_rules")
                       and con.sql("SELECT rule_key FROM meta.basket_rules_state").fetchall() == [(rule_key,)])
            if not current:
                R.derive_rules(con, cfg, NAMES)
                rules = con.sql("SELECT * FROM _rules").pl()
                con.sql("CREATE OR REPLACE TABLE analytics.basket_rules AS SELECT * FROM _rules "
                        "ORDER BY segment_id NULLS FIRST, lift DESC, support DESC, antecedent, consequent")
                con.sql("DROP TABLE _rules")
                per_segment = R.summary(con, rules, cfg.top_rules, NAMES)
                create_table_from(con, "analytics.segment_basket_rules", per_segment)
                con.sql(f"CREATE OR REPLACE TABLE meta.basket_rules_state AS SELECT '{rule_key}' AS rule_key")
            else:
                rules = con.sql("SELECT * FROM analytics.basket_rules").pl()
                per_segment = con.sql("SELECT * FROM analytics.segment_basket_rules").pl()
    names = dict(zip(per_segment["segment_id"].to_list(), per_segment["segment_name"].to_list()))
    best = R.top_rules(rules, cfg.top_rules)
    shop = rules.filter(pl.col("segment_id").is_null())
    context.log.info(f"basket rules: counts {update.mode} ({update.reason}); {rules.height} rules, {shop.height} whole-shop")
    yield dg.MaterializeResult(asset_key=BASKET_RULES, metadata={
        "dagster/row_count": dg.MetadataValue.int(rules.height), "dagster/table_name": "analytics.basket_rules",
        "counts": f"{update.mode}: {update.reason}", "dirty_users": dg.MetadataValue.int(update.dirty_users),
        "recounted_scopes": ", ".join(map(str, update.recounted)) or "none",
        "whole_shop_rules": dg.MetadataValue.int(shop.height),
        "rule_settings": dg.MetadataValue.json({"min_support": config.min_support, "min_baskets": config.min_baskets,
                                                "min_confidence": config.min_confidence, "min_lift": config.min_lift,
                                                "max_basket_size": config.max_basket_size,
                                                "top_rules": config.top_rules}),
        "top_rules": dg.MetadataValue.md(_markdown(best, names)),
    })
    yield dg.MaterializeResult(asset_key=SEGMENT_BASKET_RULES, metadata={
        "dagster/row_count": dg.MetadataValue.int(per_segment.height), "dagster/table_name": "analytics.segment_basket_rules",
        "segments": dg.MetadataValue.md(md_frame(per_segment.select("segment_id", "segment_name", "baskets", "rules"))),
    })


def _rule_key(con, config: BasketRulesConfig) -> str:
    """What the rules derived from unchanged counts depend on: the rule-only settings and the segment names."""
    names = con.sql(f"SELECT list((segment_id, segment_name) ORDER BY segment_id)::VARCHAR FROM ({NAMES})").fetchall()[0][0]
    settings = (config.min_confidence, config.min_lift, config.top_rules, names)
    return hashlib.sha1(repr(settings).encode()).hexdigest()[:12]


assets = [basket_rules]
asset_checks: list = []
