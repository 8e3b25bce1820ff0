"""What a refresh built, as rich tables for the terminal (``seg-assets refresh``, ``make demo``).

Thin data is normal (no clicks, no revenue, a short history): every value may be NULL, and what could not
be computed is listed with the reason (:func:`not_computed`) instead of failing after a successful run.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seg_assets.churn import registry as churn_registry
from seg_assets.features.user_features import USER_FEATURES_TABLE
from seg_assets.ingest import contract as C
from seg_assets.ingest.ledger import ROW_COUNTS
from seg_assets.recommend.assets import TABLE as RECOMMENDATIONS
from seg_assets.resources import Warehouse, WarehouseDamaged, WarehouseLocked
from seg_assets.reviews.sentiment import UNSUPPORTED
from seg_assets.settings import data_paths
from seg_assets.warehouse import has_column, row_count, sql_string, table_exists


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _cell(value) -> str:
    """A table cell as text (rich reads markup in cells: a product or file named ``[eu]`` lost it)."""
    if value is None:
        return ""
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else escape(str(value))


MIN_AUC_HINT = "set with --set churn_model.min_auc=..."


def not_computed(con) -> list[str]:
    """One line per thing the last refresh could not compute, and why (empty when everything was)."""
    lines = []
    last = churn_registry.latest_run(con)
    if last and last.in_service_version is None:
        hint = f" ({MIN_AUC_HINT})" if last.outcome == "below_floor" else ""
        lines.append(f"churn: not scored: {last.note}{hint}")
    elif last and last.outcome in ("below_floor", "not_fitted"):  # an older model keeps serving
        lines.append(f"churn: {last.note}")
    if table_exists(con, "meta.segment_models"):
        rows = con.sql("SELECT metrics, version FROM meta.segment_models WHERE in_service").fetchall()
        left_out = json.loads(rows[0][0]).get("left_out_features") or {} if rows and rows[0][0] else {}
        by_reason: dict[str, list[str]] = {}  # as FeatureAvailability.by_reason; not imported: it loads the stage
        for feature, why in left_out.items():
            by_reason.setdefault(why, []).append(feature)
        # said of the fit (the data may have come since: a re-fit waits, and the refresh says so; a tester read "no
        # click events" beside the clicks just taken in)
        lines += [f"segments: features without data when {rows[0][1]} was fitted, left out ({why}): {', '.join(fs)}"
                  for why, fs in by_reason.items()]
        single = json.loads(rows[0][0]).get("single_segment") if rows and rows[0][0] else None
        lines += [f"segments: {single}"] if single else []
    lines += _reviews_and_baskets(con)
    if table_exists(con, "meta.segment_classifiers") and table_exists(con, "analytics.user_segments"):
        rows = con.sql("SELECT any_value(assigned_by), count(*) FROM analytics.user_segments "
                       "WHERE assigned_by LIKE 'model%' AND NOT EXISTS "
                       "(SELECT 1 FROM meta.segment_classifiers WHERE in_service)").fetchall()
        if rows and rows[0][1]:
            lines.append(f"classifier: none in service, users assigned by the segment {rows[0][0]} itself")
    return lines


def _reviews_and_baskets(con) -> list[str]:
    """Reviews without a sentiment score, and empty basket rules or recommendations, with why."""
    lines = []
    if table_exists(con, "analytics.review_sentiment"):
        unsupported = f"sentiment IS NULL AND starts_with(note, {sql_string(UNSUPPORTED)})"
        total, unscored, languages = con.sql(
            f"SELECT count(*), count(*) FILTER (WHERE {unsupported}), string_agg(DISTINCT language, ', ' ORDER BY "
            f"language) FILTER (WHERE {unsupported}) FROM analytics.review_sentiment").fetchall()[0]
        if not total:
            lines.append(f"reviews: {_none_taken(con, 'reviews')}: review features left out of churn and the profiles")
        elif unscored:
            lines.append(f"reviews: {unscored:,} of {total:,} without a sentiment score, in a language without a lexicon "
                         f"({languages}): labelled from their stars; README, Review sentiment, says how to add one")
    lines_in = table_exists(con, "raw.order_items") and row_count(con, "raw.order_items") > 0
    if table_exists(con, "raw.order_items") and not lines_in:
        lines.append(f"basket rules and recommendations: {_none_taken(con, 'order_items', 'no order lines')}: nothing "
                     "to find bought together or to recommend from")
    # a refresh as of a date before the first order line (a backfill) has no basket for another reason than cancellations
    before = None
    if lines_in and table_exists(con, "analytics.user_segments"):
        from seg_assets.segmentation.scoring import segments_as_of

        until = segments_as_of(con)
        if until is not None and not con.sql("SELECT count(*) FROM raw.order_items WHERE order_ts <= ?",
                                             params=[until]).fetchall()[0][0]:
            before = f"no order line placed by the as-of, {until:%Y-%m-%d %H:%M}"
    if lines_in and table_exists(con, "analytics.basket_rules") and not row_count(con, "analytics.basket_rules"):
        baskets = con.sql("SELECT coalesce(max(baskets), 0) FROM meta.basket_scopes").fetchall()[0][0] \
            if table_exists(con, "meta.basket_scopes") else 0
        if baskets and not _baskets_with_a_pair(con):
            # no threshold finds a pair then: a Shopify export whose later lines lack the e-mail, rejected, left one
            # line per order (a tester's 36,229 baskets), and the line said to lower the thresholds
            rejected = con.sql(f"SELECT coalesce(sum(rejected), 0) FROM {C.LEDGER_TABLE} WHERE table_name = 'order_items'"
                               ).fetchall()[0][0] if table_exists(con, C.LEDGER_TABLE) else 0
            why = f"; {rejected:,} order lines were rejected (raw.rejects says why)" if rejected else ""
            lines.append(f"basket rules: none of the {baskets:,} baskets holds two products (one line per order){why}: "
                         "no threshold finds a pair")
        elif baskets:
            lines.append(f"basket rules: none passed the thresholds in {baskets:,} baskets; lower them with "
                         "--set basket_rules.min_support=... (README, Bought together)")
        elif before:
            lines.append(f"basket rules: {before}")
        else:
            lines.append("basket rules: no basket left: every order with lines was cancelled or a credit note")
    if lines_in and table_exists(con, RECOMMENDATIONS) and not row_count(con, RECOMMENDATIONS):
        lines.append(f"recommendations: none: {before}" if before else
                     "recommendations: none (no basket left once cancelled orders and credit notes are set aside, or "
                     "every candidate bought in the exclusion window)")
    return lines


def _baskets_with_a_pair(con) -> bool:
    """Whether an order has two distinct products on its completed lines (else no basket rule can exist)."""
    return bool(con.sql("SELECT count(*) FROM (SELECT order_id FROM raw.order_items WHERE status = 'completed' "
                        "GROUP BY order_id HAVING count(DISTINCT product_id) > 1 LIMIT 1)").fetchall()[0][0])


def _none_taken(con, table: str, what: str | None = None) -> str:
    """Why ``raw.<table>`` is empty: nothing delivered, or rows delivered and every one rejected or filtered."""
    what = what or f"no {table}"
    if not table_exists(con, C.LEDGER_TABLE):
        return f"{what} delivered (landing/{table}/)"
    delivered, rejected = con.sql(f"SELECT coalesce(sum(delivered), 0), coalesce(sum(rejected), 0) FROM {C.LEDGER_TABLE} "
                                  "WHERE table_name = ?", params=[table]).fetchall()[0]
    if not delivered:
        return f"{what} delivered (landing/{table}/)"
    return f"{what} taken in: {delivered:,} delivered, {rejected:,} rejected (raw.rejects says why), the rest filtered out"


def model_line(con) -> str | None:
    """Which segment model serves, and what became of the latest fit: promoted, or refused with the gate's reason."""
    if not table_exists(con, "meta.segment_models"):
        return None
    serving = con.sql("SELECT version, k, data_as_of FROM meta.segment_models WHERE in_service").fetchall()
    latest = con.sql("SELECT version, promoted, reason, fit_reason FROM meta.segment_models "
                     "ORDER BY fitted_at DESC, version DESC LIMIT 1").fetchall()
    if not serving or not latest:
        return None
    version, k, as_of = serving[0]
    line = f"Segment model {version} in service ({k} segment{'' if k == 1 else 's'}, fitted on data as of {as_of:%Y-%m-%d})"
    fit, promoted, reason, fit_reason = latest[0]
    why = f"fitted because {fit_reason}" if fit_reason else ""  # rows of earlier versions: both in reason
    if fit != version and not promoted:
        line += f"; the latest re-fit {fit}{f', {why},' if why else ''} was refused: {reason}"
    elif fit == version and reason:
        line += f": {why}; promoted: {reason}" if why else f": {reason}"
    return line


def identities_line(con) -> str | None:
    """How many click devices a login linked to a user (staging.identities, docs/identity.md); nothing without any."""
    if not table_exists(con, "staging.identities"):
        return None
    devices, linked = con.sql("SELECT count(*), count(*) FILTER (WHERE user_id <> anonymous_id) "
                              "FROM staging.identities").fetchall()[0]
    if not devices:
        return None
    return (f"Identities: {linked:,} of {devices:,} click devices linked to a user by a login (their anonymous clicks "
            "are that user's; the others are users of their own)")


def activation_lines(con) -> list[str]:
    """Campaigns measured and the next-best-action policy in service (nothing when no campaign was sent)."""
    lines = []
    if table_exists(con, "analytics.campaign_lift") and row_count(con, "analytics.campaign_lift"):
        exact = ("count(*) FILTER (WHERE conversion_test = 'exact')"
                 if has_column(con, "analytics.campaign_lift", "conversion_test") else "0")  # an older table: none
        campaigns, cells, no_control, small = con.sql(
            "SELECT count(DISTINCT campaign_id), count(*), count(*) FILTER (WHERE n_control = 0), "
            f"{exact} FROM analytics.campaign_lift").fetchall()[0]
        notes = [f"{no_control} without control users: no interval" if no_control else "",
                 f"{small} too small for the usual test: exact test, wide interval" if small else ""]
        lines.append(f"Campaign lift: {campaigns} campaign(s), {cells} campaign x action x segment cells"
                     + (f" ({'; '.join(n for n in notes if n)})" if any(notes) else ""))
    if table_exists(con, "meta.policies"):
        latest = con.sql("SELECT policy_version, promoted, reason FROM meta.policies ORDER BY fitted_at DESC LIMIT 1").fetchall()
        serving = con.sql("SELECT policy_version FROM meta.policies WHERE promoted ORDER BY fitted_at DESC LIMIT 1").fetchall()
        if latest:
            version, promoted, reason = latest[0]
            lines.append(f"Next best action: policy {version} promoted: {reason}" if promoted else
                         f"Next best action: policy {serving[0][0] if serving else 'none'} in service; the latest "
                         f"candidate {version} was refused: {reason}")
    return lines


def _table(title: str, columns: list[str], rows: list[tuple]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        left = ("file", "source", "table", "status", "segment", "description", "reason", "rule", "example")
        table.add_column(col, justify="right" if col not in left else "left")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    return table


def print_summary(data_dir: str | Path | None = None, console: Console | None = None) -> None:
    console = console or Console()
    paths = data_paths(data_dir)
    if not paths.warehouse.exists():
        console.print("[yellow]No warehouse yet.[/yellow]")
        return
    try:
        with Warehouse(database=str(paths.warehouse), other_process_wait_seconds=0).get_connection() as con:
            _print_tables(con, console)
    except (WarehouseLocked, WarehouseDamaged):  # the refresh failed on it, and said so
        pass


def _print_tables(con, console: Console) -> None:
    if table_exists(con, "meta.ingest_ledger"):
        rows = con.sql(
            "SELECT source, table_name, count(*)::INT, " + ", ".join(f"sum({k})::BIGINT" for k in ROW_COUNTS)
            + " FROM meta.ingest_ledger GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        console.print(_table("Ingested (all files so far)", ["source", "table", "files", *ROW_COUNTS],
                             [tuple(int(v) if isinstance(v, int) else v for v in r) for r in rows]))
        reasons = con.sql("SELECT table_name, rule, count(*)::BIGINT, any_value(reason) FROM raw.rejects "
                          "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5").fetchall()
        if reasons:
            console.print(_table("Most common reject reasons (all rows in raw.rejects)",
                                 ["table", "rule", "rows", "example"], [tuple(r) for r in reasons]))
    raw_tables = [f"raw.{t}" for t in C.TABLES] + ["raw.rejects"]
    counts = [(t, row_count(con, t)) for t in (*raw_tables, USER_FEATURES_TABLE) if table_exists(con, t)]
    console.print(_table("Tables", ["table", "rows"], counts))
    if table_exists(con, "analytics.segment_profiles"):
        rows = con.sql(
            "SELECT segment_id, segment_name, users, share, revenue_share, description "
            "FROM analytics.segment_profiles ORDER BY segment_id"
        ).fetchall()
        console.print(_table("Segments", ["id", "segment", "users", "share", "revenue share", "description"],
                             [(sid, name, int(u or 0), _pct(s), _pct(r), d or "") for sid, name, u, s, r, d in rows]))
        for line in [model_line(con), identities_line(con), *activation_lines(con)]:
            if line:
                console.print(escape(line), highlight=False)
    if table_exists(con, "analytics.segment_profiles") and "reviews_note" in con.table("analytics.segment_profiles").columns:
        rows = con.sql("SELECT segment_id, segment_name, reviews, reviews_note, basket_rules FROM analytics.segment_profiles "
                       "WHERE reviews > 0 OR basket_rules <> '' ORDER BY segment_id").fetchall()
        if rows:
            console.print(_table("Reviews and basket rules by segment", ["id", "segment", "reviews", "description", "rule"],
                                 [(sid, name, int(n or 0), note or "", (rules or "").split("; ")[0])
                                  for sid, name, n, note, rules in rows]))
    notes = not_computed(con)
    if notes:
        console.print("[yellow]Not computed[/yellow]")
        for line in notes:
            console.print(f"  [yellow]-[/yellow] {escape(line)}", highlight=False)
