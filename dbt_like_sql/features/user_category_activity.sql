-- materialized: incremental
-- incremental_strategy: additive
-- unique_key: user_id, category
-- description: Per-user, per-category activity (orders and click events with a category) up to as-of, in long form.
WITH activity AS (
    SELECT user_id, category FROM staging.stg_orders
    WHERE order_ts <= getvariable('as_of') AND category IS NOT NULL
    UNION ALL
    SELECT user_id, category FROM staging.stg_clicks
    WHERE event_ts <= getvariable('as_of') AND category IS NOT NULL
)
SELECT user_id, category, count(*) AS events
FROM activity
GROUP BY user_id, category
