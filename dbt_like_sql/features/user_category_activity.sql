-- materialized: incremental
-- incremental_strategy: delete+insert
-- unique_key: user_id
-- description: Per-user, per-category activity (orders and click events with a category) up to as-of, in long form: one row per user and category. Rebuilt per changed user (delete+insert), not added up from new rows: staging.stg_orders reads staging.line_orders, whose rows are rewritten when an order gets more lines or arrives as an order row, and an added-up count would count such an order twice.
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
