"""Column descriptions of the tables published to BI: the one place they are written. The BI views carry them as
column comments (publish/bi.py: what BI tools show beside a column), and a pipeline test fails on a published column
without one, so a new column is documented where it is published.

One sentence each, true to the code that computes the column (named next to each table). Times are naive UTC.
Money is in the currency of the delivered order amounts (the data contract converts none). ``segment_profiles``
has a ``mean_<f>`` and a ``median_<f>`` per feature the segment model used: those are derived from the feature
dictionary (features/dictionary.py), not written here.
"""

from __future__ import annotations

import re

from seg_assets.activation.groups import BUCKETS
from seg_assets.activation.lift import SRM_THRESHOLD
from seg_assets.baskets.rules import RuleSettings
from seg_assets.churn.keys import HORIZON_DAYS, RISK_HIGH, RISK_MEDIUM
from seg_assets.features.dictionary import BY_NAME, CATEGORY_SHARE_PREFIX, USER_ID_HASHED
from seg_assets.recommend.model import RecSettings
from seg_assets.reviews.sentiment import BESIDE_ENGLISH, CONFIDENT, LIKELY, PROBABLE
from seg_assets.segmentation.profiles import ORDER_RATE_WINDOW_DAYS
from seg_assets.segmentation.rule_based import RFM_BINS, LifecycleThresholds, ValueTiers

# Defaults are named as defaults, from their one definition: a run may set others (its rules_version, its run config)
_LIFE, _TIERS = LifecycleThresholds(), ValueTiers()

MAX_CHARS = 160
_USER_ID = f"User id from the landing files ({USER_ID_HASHED})."
_SEGMENT_ID = "Stable segment id (kept across refits while the segment matches an earlier one)."
_SEGMENT_NAME = "Segment name given by the segment model."
_AS_OF_FEATURES = "As-of time (UTC) of the user's features the row was computed from."
_FEATURES_BUILD = "Build of the user's features the row was computed from (ledger watermark and code digest)."
_CHURN = {  # churn/scoring.py, copied into user_segments
    "churn_probability": f"Calibrated probability (0-1) of no completed order in the next H days (horizon_days, default {HORIZON_DAYS}); "
                         "NULL without a churn model in service.",
    "churn_risk": f"high / medium / low: churn_probability >= {RISK_HIGH} / >= {RISK_MEDIUM} / below (configurable); NULL "
                  "without a churn model.",
    "expected_value_next_h": "Predicted spend (completed-order amounts, delivered currency) in the next H days, >= 0; "
                             "NULL without a churn model.",
}

TABLES: dict[str, dict[str, str]] = {
    "analytics.user_segments": {  # segmentation/batch.py, rule_based.py, scoring.py
        "user_id": _USER_ID,
        "segment_id": _SEGMENT_ID,
        "segment_name": _SEGMENT_NAME,
        "confidence": "Probability (0-1) the assigner gave this segment when the user was last assigned (1 where a stage "
                      "has one segment).",
        "model_version": "Segment model in service when the row was written (v0001, v0002, ...).",
        "as_of": _AS_OF_FEATURES,
        "segment_stage": "The model's stage of the segment: new, lapsed or engaged (all for a flat model).",
        "r_score": f"Recency score 1..rfm_bins (default {RFM_BINS}): rank of recency_days (tenure if never ordered) among all users; the "
                   "top score is the most recent.",
        "f_score": f"Frequency score 1..rfm_bins (default {RFM_BINS}): rank of completed orders among buyers; 1 for users who "
                   "never ordered.",
        "m_score": f"Monetary score 1..rfm_bins (default {RFM_BINS}): rank of lifetime spend among buyers; 1 for users who never ordered.",
        "rfm_score": "r_score, f_score and m_score as one text, e.g. '545'.",
        "rfm_group": "RFM group from the R x F grid (Champions, Loyal, ..., Lost).",
        "lifecycle_stage": f"new (tenure <= {_LIFE.new_max_tenure_days:g} d), else by recency_days: active <= "
                           f"{_LIFE.active_max_recency_days:g} d, at risk <= {_LIFE.at_risk_max_recency_days:g} d, dormant <= "
                           f"{_LIFE.dormant_max_recency_days:g} d, else churned (defaults).",
        "value_tier": f"high / medium / low: lifetime spend at or above the {_TIERS.high_quantile:.0%} / "
                      f"{_TIERS.medium_quantile:.0%} quantile of buyers' (defaults; also by expected value), else low.",
        **_CHURN,
        "assigned_by": "What assigned the segment: 'classifier <version>' in service, else 'model <version>'.",
        "rules_version": "Hash of the settings of the rule-based columns (RFM bins, lifecycle and value thresholds).",
        "features_build": _FEATURES_BUILD,
    },
    "analytics.segment_profiles": {  # segmentation/profiles.py, scoring.py (mean_/median_: see describe)
        "segment_id": _SEGMENT_ID,
        "segment_name": _SEGMENT_NAME,
        "users": "Users currently in the segment.",
        "share": "Share (0-1) of all segmented users in this segment.",
        "revenue_share": "Share (0-1) of all users' lifetime spend (monetary) that is this segment's; NULL when nobody spent.",
        "description": "One line in plain words from the segment's statistics (never ordered, spend vs average, order "
                       "rhythm, last order, visits).",
        "top_features": "The 3 features whose segment mean differs most from the other users', as 'feature (difference "
                        "in standard deviations)'.",
        "buyer_share": "Share (0-1) of the segment's users with at least one completed order.",
        "order_interval_days": f"Days per completed order of the segment's buyers in the last {ORDER_RATE_WINDOW_DAYS} days "
                               "(each buyer counted from signup if later); NULL without such orders.",
        "buyer_discount_share": "Mean discount_share (0-1, share of the list price discounted) over the segment's buyers.",
        "buyer_recency_days": "Median days since the last completed order, over the segment's buyers (median_recency_days "
        "also counts users who never ordered, whose recency is their tenure).",
        "rules": "The segment's rules from segment_rules joined with OR; NULL when no rule predicts it.",
        "rules_precision": "Share (0-1) of sampled users matching one of the rules whom the segment model itself assigns to the segment.",
        "rules_coverage": "Estimated share of the segment's users matching one of its rules (summed over its rules, read on a sample: "
                          "can slightly exceed 1 on small segments).",
        "model_version": "Segment model version the profile describes.",
        "as_of": "Latest as-of (UTC) of the user_segments rows the profile was computed from.",
        "reviews": "Reviews up to as-of written by the segment's current users (0 when none).",
        "negative_review_share": "Share (0-1) of the segment's labelled reviews that are negative; NULL without a labelled review.",
        "avg_sentiment": "Mean text sentiment (VADER compound, -1..1) of the segment's reviews with a scored text; NULL "
                         "without one.",
        "avg_rating": "Mean stars (1-5) of the segment's rated reviews; NULL without one.",
        "reviews_note": "The segment's share of negative reviews next to the shop's, as a line, or why there is none.",
        "baskets": "Baskets (orders with completed lines) of the segment's users, as segment_basket_rules counts them; "
                   "NULL without order lines.",
        "basket_rules": "The segment's strongest basket rules as text (segment_basket_rules.top_rules); NULL without order lines.",
    },
    "analytics.segment_rules": {  # segmentation/rules.py: leaves of a shallow surrogate decision tree
        "segment_id": _SEGMENT_ID,
        "rule": "Conditions on features, in their own units, that describe the segment (the stage's rule first in the "
                "lifecycle model).",
        "precision": "Share (0-1) of sampled users matching the rule whom the segment model itself assigns to the segment "
                     "(not the published, sticky assignment), on the users the rules were read on: when the model was "
                     "fitted or last rebased (a tester's rule read 0.906 then and 0.52 on today's users).",
        "coverage": "Share (0-1) of the segment's users (as the segment model assigns them, on a sample) matching the "
                    "rule, when the rules were read (as precision).",
        "support": "Users matching the rule, estimated for all segmented users from the sample the rules were read on "
                   "(as precision).",
        "segment_name": _SEGMENT_NAME,
        "model_version": "Segment model version the rules describe.",
        "surrogate_fidelity": "Share (0-1) of held-out users whose segment the rules' trees predict right: how far to "
                              "trust the rules.",
    },
    "analytics.segment_history": {  # publish/history.py: one row per user and segment spell
        "user_id": _USER_ID,
        "segment_id": _SEGMENT_ID,
        "segment_name": "Segment name when the spell started.",
        "valid_from": "As-of (UTC) from which the user was in this segment.",
        "valid_to": "As-of (UTC) at which the user left this segment; NULL for the current one.",
        "model_version": "Segment model version of the assignment that started the spell.",
    },
    "analytics.segment_transitions": {  # publish/history.py
        "as_of": "As-of (UTC) at which these users entered or moved.",
        "from_segment": "Segment id the users left; NULL for users seen for the first time.",
        "to_segment": "Segment id the users moved to.",
        "from_name": "Name of the segment left; NULL for users seen for the first time.",
        "to_name": "Name of the segment moved to.",
        "users": "Users who made this move at this as-of.",
        "run_id": "Dagster run that recorded the move.",
        "recorded_at": "Wall-clock time (UTC) the move was recorded.",
    },
    "analytics.churn_scores": {  # churn/scoring.py
        "user_id": _USER_ID,
        **_CHURN,
        "churn_model_version": "Churn model that scored the row (churn-0001, ...); NULL without a model in service.",
        "as_of": _AS_OF_FEATURES,
        "features_build": _FEATURES_BUILD,
    },
    "analytics.user_groups": {  # activation/groups.py
        "user_id": _USER_ID,
        "global_control": f"True for the global control group (bucket below control share x {BUCKETS:,}), which never receives an action.",
        "bucket": f"Hash bucket 0-{BUCKETS - 1:,} of the user (md5 of salt and user_id): the same on every refresh.",
        "salt_version": "Version of the control group's salt and share that drew the group (meta.control_salts).",
    },
    "analytics.basket_rules": {  # baskets/rules.py: pair rules from exact basket counts
        "segment_id": "Segment whose users' baskets the rule was found in; NULL for the whole shop.",
        "segment_name": "Name of that segment; NULL for the whole shop.",
        "antecedent": "Product id bought (the rule's 'if').",
        "consequent": "Product id also bought (the rule's 'then').",
        "antecedent_description": "The antecedent's description most of its order lines carry (ties: the latest); NULL without one.",
        "consequent_description": "The consequent's description most of its order lines carry (ties: the latest); NULL without one.",
        "support": "Share (0-1) of the scope's baskets holding both products.",
        "confidence": "Share (0-1) of the baskets with the antecedent that also hold the consequent.",
        "lift": "confidence / share of baskets with the consequent: above 1, bought together more often than by chance.",
        "baskets": "Baskets holding both products.",
        "scope_baskets": "Baskets in the scope (the segment, or the whole shop).",
        "antecedent_baskets": "Baskets of the scope holding the antecedent.",
        "consequent_baskets": "Baskets of the scope holding the consequent.",
        "itemset_size": "Products in the rule: always 2 (pair rules).",
        "exact": "Always true: computed from exact basket counts, not a sample.",
    },
    "analytics.segment_basket_rules": {  # baskets/rules.py summary()
        "segment_id": "Segment id; NULL for the whole shop.",
        "segment_name": "Segment name; '(whole shop)' for the whole shop.",
        "baskets": "Baskets (orders with completed lines) of the scope's users.",
        "rules": "Basket rules found in the scope (both directions of a pair count).",
        "top_rules": f"The strongest rules (top_rules, default {RuleSettings.top_rules}) by lift then support, one direction per pair, "
                     "'; '-separated; '' when none.",
    },
    "analytics.campaign_lift": {  # activation/lift.py, outcomes.py: one row per campaign x action x segment
        "campaign_id": "Campaign id from the campaign sends.",
        "action_id": "Action sent (for held-out users: the one they would have received).",
        "segment_id": "The users' segment at send time; NULL for users without a segment then (a cell of their own).",
        "n_treated": "Treated users in the cell (sends whose attribution window has closed).",
        "n_control": "Held-out users in the cell.",
        "conversions_treated": "Treated users who completed an order within the attribution window after the send.",
        "conversions_control": "Held-out users who completed an order within the attribution window after the send.",
        "conv_rate_treated": "conversions_treated / n_treated (0-1); NULL without treated users.",
        "conv_rate_control": "conversions_control / n_control (0-1); NULL without held-out users.",
        "revenue_per_user_treated": "Completed-order revenue in the attribution window per treated user (non-buyers count 0; delivered "
                                    "currency); NULL without treated users.",
        "revenue_per_user_control": "Completed-order revenue in the attribution window per held-out user (non-buyers count 0; delivered "
                                    "currency); NULL without held-out users.",
        "abs_lift": "conv_rate_treated - conv_rate_control; NULL when a group is empty.",
        "abs_lift_ci_low": "Lower bound of the 95 % (Newcomb) interval of abs_lift.",
        "abs_lift_ci_high": "Upper bound of the 95 % (Newcomb) interval of abs_lift.",
        "rel_lift": "conv_rate_treated / conv_rate_control - 1; NULL when no held-out user converted.",
        "rel_lift_ci_low": "Lower bound of the 95 % interval of rel_lift; NULL when every user of a group converted.",
        "rel_lift_ci_high": "Upper bound of the 95 % interval of rel_lift; NULL when every user of a group converted.",
        "p_value": "Two-sided p-value of abs_lift (conversion_test: the two-proportion score test, or Fisher's exact test "
                   "in a cell with an expected count under 5); NULL when a group is empty.",
        "conversion_test": "'score' (score test, Newcomb interval) or 'exact' (a cell too small for them: Fisher's exact "
                           "test, Agresti-Caffo interval); NULL when a group is empty.",
        "revenue_abs_lift": "revenue_per_user_treated - revenue_per_user_control (delivered currency).",
        "revenue_abs_lift_ci_low": "Lower bound of the 95 % Welch interval of revenue_abs_lift; NULL with under 2 users in "
                                     "a group or without spread.",
        "revenue_abs_lift_ci_high": "Upper bound of the 95 % Welch interval of revenue_abs_lift; NULL with under 2 users in "
                                     "a group or without spread.",
        "revenue_rel_lift": "revenue_per_user_treated / revenue_per_user_control - 1; NULL unless both groups have 2+ users and both "
                            "means are above 0.",
        "revenue_rel_lift_ci_low": "Lower bound of the 95 % (delta-method) interval of revenue_rel_lift; NULL without spread.",
        "revenue_rel_lift_ci_high": "Upper bound of the 95 % (delta-method) interval of revenue_rel_lift; NULL without spread.",
        "revenue_p_value": "Two-sided Welch t-test p-value of revenue_abs_lift; NULL with under 2 users in a group or without spread.",
        "mde_abs": "Smallest absolute conversion lift detectable with these group sizes (alpha 0.05, power 0.8); NULL "
                   "when a group is empty.",
        "planned_control_share": "Share of users the campaign meant to hold out (holdout_share in actions.yaml).",
        "srm_p_value": "Chi-square p-value of the treated/control counts against the planned split (sample-ratio mismatch).",
        "srm_p_holm": "srm_p_value Holm-adjusted over all the cells of the table.",
        "srm_warning": f"True when srm_p_holm < {SRM_THRESHOLD}: the treated/control split looks broken; do not trust the cell's lift.",
    },
    "analytics.next_best_action": {  # activation/policy.py, contextual.py, assets.py
        "user_id": "User id (global-control users and users with no eligible action get no row).",
        "segment_id": "The user's current segment id.",
        "action_id": "Action chosen for the user from actions.yaml.",
        "expected_reward": "The policy's estimate of the chosen action's conversion probability (completed order within "
                           "the attribution window).",
        "explore": "True when the chosen action is not the one with the highest estimate among the user's eligible actions.",
        "propensity": "Probability (0-1) with which the policy chose this action, for off-policy evaluation.",
        "policy_version": "Policy that chose: 'ts-<hash>' per segment or 'lints-<hash>' contextual (meta.policies).",
    },
    "analytics.review_sentiment": {  # reviews/sentiment.py, reviews/assets.py
        "review_id": "Review id from the landing files.",
        "user_id": "Reviewer's user id.",
        "order_id": "Order reviewed; NULL when not given.",
        "review_ts": "Review time (UTC).",
        "rating": "Stars 1-5; NULL when not given.",
        "language": f"ISO 639-1 code of the text: English unless the identifier is {CONFIDENT:.0%} sure of another, "
                    f"{PROBABLE:.0%} sure and {BESIDE_ENGLISH:.0%} likely beside English, or {LIKELY:.0%} likely among "
                    "the languages with a lexicon; NULL without text.",
        "sentiment": "Text sentiment, VADER compound -1..1 averaged over clauses; NULL without text or a lexicon for its language.",
        "label": "positive / neutral / negative from the text, else from the stars (1-2 negative, 3 neutral, 4-5 positive); "
                 "NULL with neither.",
        "label_from": "Where the label came from: text or rating; NULL without a label.",
        "note": "Why the text did not give the label: no text, no sentiment words, language not supported: <code>; NULL if it did.",
        "scored_with": "Version of the scorer (code, VADER and lexicons) that scored the review.",
    },
    "analytics.user_recommendations": {  # recommend/model.py
        "user_id": _USER_ID,
        "rank": f"Position in the user's list, 1 = best (up to top_n, default {RecSettings.top_n}).",
        "product_id": "Recommended product id.",
        "score": "Score 0-1 of a logistic blend of popularity and the user's own signals fitted on the last horizon_days "
                 f"(default {RecSettings.horizon_days}); the segment's popularity share if too few purchases to fit.",
        "reason": "The signal adding most to the score: bought_before, also_bought, favourite_category, clicked; "
                  "else segment_popular.",
    },
    "meta.bi_tables": {  # publish/bi.py: the publication's manifest, a view in bi/segments.duckdb too
        "table_name": "Published table.",
        "rows": "Rows of the table in this publication.",
        "fingerprint": "Hash of the table's columns and rows: equal when the content did not change.",
        "written_at": "Time (UTC) the table's content was written; kept from an earlier publication when unchanged.",
    },
}

_STATISTIC = {"mean_": "Mean", "median_": "Median"}


def _short(text: str, room: int) -> str:
    """``text`` in ``room`` characters: without its asides in parentheses, then cut at a clause, when too long."""
    if len(text) > room:
        text = re.sub(r"\s*\([^)]*\)", "", text)
    if len(text) > room:
        text = re.split(r"[;:]\s", text)[0].rstrip(".") + "."
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def feature_description(feature: str) -> str | None:
    """A feature of ``features.user_features`` in words (the dictionary's, or a ``cat_share_<category>`` column's)."""
    if feature in BY_NAME:  # numeric ones only: a segment has no mean of an id, a text or a time
        return BY_NAME[feature].description if BY_NAME[feature].dtype in ("int", "float") else None
    if feature.startswith(CATEGORY_SHARE_PREFIX):
        category = feature.removeprefix(CATEGORY_SHARE_PREFIX)
        if category == "other":
            return "Share (0-1) of the user's orders and clicks in categories without a column of their own."
        return f"Share (0-1) of the user's orders and clicks in category '{category}'."
    return None


def describe(table: str, column: str) -> str | None:
    """The description of ``table.column`` (``table`` as ``schema.name``), None when there is none.

    ``segment_profiles``' ``mean_<f>`` / ``median_<f>`` come from the feature dictionary.
    """
    columns = TABLES.get(table if "." in table else f"analytics.{table}", {})
    if column in columns:
        return columns[column]
    if table.endswith("segment_profiles"):
        for prefix, statistic in _STATISTIC.items():
            words = feature_description(column.removeprefix(prefix)) if column.startswith(prefix) else None
            if words is not None:
                lead = f"{statistic} over the segment's users of: "
                return lead + _short(words, MAX_CHARS - len(lead))
    return None
