"""Asset keys and vocabulary of the churn stage (a module of its own so other stages can depend on them cheaply)."""

import dagster as dg

CHURN_MODEL = dg.AssetKey("churn_model")
CHURN_SCORES = dg.AssetKey(["analytics", "churn_scores"])
RISK_LEVELS = ("high", "medium", "low")  # analytics.churn_scores.churn_risk
HORIZON_DAYS = 90  # default churn horizon H (ChurnConfig.horizon_days)
RISK_HIGH, RISK_MEDIUM = 0.7, 0.4  # default churn_probability thresholds of "high" and "medium" (ChurnConfig)
