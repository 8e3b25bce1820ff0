"""Association rules from the exact basket counts (counts.py): support, confidence and lift.

For a scope of ``n`` baskets, products A and B in ``n_A``, ``n_B`` baskets and together in ``n_AB``:
support = n_AB / n, confidence(A -> B) = n_AB / n_A, lift = confidence / (n_B / n). A pair gives two rules
(A -> B and B -> A) with the same support and lift. Everything is read from the stored counts, so deriving
the rules is cheap and exact; the thresholds of :class:`RuleSettings` apply per scope.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from seg_assets.baskets.counts import SHOP, CountSettings, threshold_sql

RULE_COLUMNS = {
    "segment_id": "INTEGER", "segment_name": "VARCHAR", "antecedent": "VARCHAR", "consequent": "VARCHAR",
    "antecedent_description": "VARCHAR", "consequent_description": "VARCHAR", "support": "DOUBLE",
    "confidence": "DOUBLE", "lift": "DOUBLE", "baskets": "BIGINT", "scope_baskets": "BIGINT",
    "antecedent_baskets": "BIGINT", "consequent_baskets": "BIGINT", "itemset_size": "INTEGER", "exact": "BOOLEAN",
}
SUMMARY_COLUMNS = {"segment_id": "INTEGER", "segment_name": "VARCHAR", "baskets": "BIGINT", "rules": "BIGINT",
                   "top_rules": "VARCHAR"}


@dataclass(frozen=True)
class RuleSettings:
    counts: CountSettings
    min_confidence: float
    min_lift: float
    top_rules: int = 5


def pair_rules_sql(cfg: RuleSettings) -> str:
    """Both directions of every pair at or above its scope's threshold, with confidence and lift filters."""
    return f"""
        WITH s AS (SELECT scope, baskets AS n, {threshold_sql('baskets', cfg.counts)} AS thr FROM meta.basket_scopes),
        p AS (SELECT p.scope, p.a, p.b, p.baskets AS ab, s.n, ia.baskets AS na, ib.baskets AS nb
              FROM meta.basket_pairs p JOIN s USING (scope)
              JOIN meta.basket_items ia ON ia.scope = p.scope AND ia.product_id = p.a
              JOIN meta.basket_items ib ON ib.scope = p.scope AND ib.product_id = p.b
              WHERE p.baskets >= s.thr),
        d AS (SELECT scope, a AS antecedent, b AS consequent, ab, n, na AS n_ante, nb AS n_cons FROM p
              UNION ALL SELECT scope, b, a, ab, n, nb, na FROM p)
        SELECT nullif(scope, {SHOP})::INTEGER AS segment_id, antecedent, consequent,
               ab / n AS support, ab / n_ante AS confidence, (ab * n) / (n_ante * n_cons) AS lift,
               ab AS baskets, n AS scope_baskets, n_ante AS antecedent_baskets, n_cons AS consequent_baskets
        FROM d
        WHERE ab / n_ante >= {cfg.min_confidence!r} AND (ab * n) / (n_ante * n_cons) >= {cfg.min_lift!r}"""


def derive_rules(con, cfg: RuleSettings, segment_names: str) -> None:
    """``_rules``: pair rules with segment names and product descriptions: per product, the one most of its lines
    carry (ties: the latest). Not simply the latest: a line's name can be one customer's (Shopify's line-item name of
    an engraved mug, "For Jane Roe"), and the label is published to BI. (Counting lines, not distinct buyers: the
    same label at a third of the cost, 8M lines.)"""
    con.sql(f"CREATE OR REPLACE TEMP TABLE _pairs AS {pair_rules_sql(cfg)}")
    con.sql("""CREATE OR REPLACE TEMP TABLE _desc AS
               SELECT product_id, description FROM (
                   SELECT product_id, trim(description) AS description, count(*) AS lines,
                          max(order_ts) AS last_ts FROM raw.order_items
                   WHERE nullif(trim(description), '') IS NOT NULL
                   AND product_id IN (SELECT antecedent FROM _pairs UNION SELECT consequent FROM _pairs)
                   GROUP BY ALL)
               QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY lines DESC, last_ts DESC, description) = 1""")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _rules AS
        SELECT r.segment_id, n.segment_name, r.antecedent, r.consequent, da.description AS antecedent_description,
               dc.description AS consequent_description, r.support, r.confidence, r.lift, r.baskets, r.scope_baskets,
               r.antecedent_baskets, r.consequent_baskets, 2 AS itemset_size, true AS exact
        FROM _pairs r LEFT JOIN ({segment_names}) n ON n.segment_id = r.segment_id
        LEFT JOIN _desc da ON da.product_id = r.antecedent LEFT JOIN _desc dc ON dc.product_id = r.consequent""")
    con.sql("DROP TABLE _pairs; DROP TABLE _desc")


def rule_text(antecedent: str, consequent: str, a_desc: str | None, c_desc: str | None, lift: float, support: float) -> str:
    a = f"{antecedent} {a_desc}" if a_desc else antecedent
    c = f"{consequent} {c_desc}" if c_desc else consequent
    return f"{a} -> {c} (lift {lift:.1f}, support {100 * support:.1f} %)"


def top_rules(rules: pl.DataFrame, n: int) -> pl.DataFrame:
    """Per scope (segment_id, NULL = whole shop) the ``n`` strongest rules: by lift, then support; one
    direction per pair (the one with the higher confidence), as a readable line each."""
    if rules.height == 0:
        return pl.DataFrame(schema={"segment_id": pl.Int32, "rank": pl.UInt32, "rule": pl.String})
    pair = pl.min_horizontal("antecedent", "consequent") + "|" + pl.max_horizontal("antecedent", "consequent")
    best = (rules.with_columns(_pair=pair)
            .sort(["segment_id", "lift", "support", "confidence", "antecedent", "consequent"],
                  descending=[False, True, True, True, False, False], nulls_last=False)
            .unique(["segment_id", "_pair"], keep="first", maintain_order=True))
    best = best.with_columns(rank=pl.int_range(1, pl.len() + 1).over("segment_id")).filter(pl.col("rank") <= n)
    text = [rule_text(*r) for r in best.select("antecedent", "consequent", "antecedent_description",
                                                 "consequent_description", "lift", "support").iter_rows()]
    return best.select("segment_id", pl.col("rank").cast(pl.UInt32)).with_columns(rule=pl.Series(text, dtype=pl.String))


def summary(con, rules: pl.DataFrame, n: int, segment_names: str) -> pl.DataFrame:
    """One row per scope: baskets, number of rules and the top rules as text (``; ``-separated)."""
    best = top_rules(rules, n).group_by("segment_id", maintain_order=True).agg(top_rules=pl.col("rule").str.join("; "))
    counts = rules.group_by("segment_id").agg(rules=pl.len())
    con.register("_best", best)
    con.register("_counts", counts)
    out = con.sql(f"""
        SELECT nullif(s.scope, {SHOP})::INTEGER AS segment_id, coalesce(n.segment_name, CASE WHEN s.scope = {SHOP}
               THEN '(whole shop)' END) AS segment_name, s.baskets, coalesce(c.rules, 0)::BIGINT AS rules,
               coalesce(b.top_rules, '') AS top_rules
        FROM meta.basket_scopes s LEFT JOIN ({segment_names}) n ON n.segment_id = s.scope
        LEFT JOIN _counts c ON c.segment_id IS NOT DISTINCT FROM nullif(s.scope, {SHOP})
        LEFT JOIN _best b ON b.segment_id IS NOT DISTINCT FROM nullif(s.scope, {SHOP})
        ORDER BY s.scope""").pl()
    con.unregister("_best")
    con.unregister("_counts")
    return out
