-- materialized: incremental
-- unique_key: user_id
-- description: Per-user click aggregates (sessions and funnel events) up to the run's as-of time.
WITH clicks AS (
    SELECT * FROM staging.stg_clicks WHERE event_ts <= getvariable('as_of')
)
SELECT
    user_id,
    count(DISTINCT session_id) AS sessions,
    count(*) FILTER (WHERE event_type = 'view') AS views,
    count(*) FILTER (WHERE event_type = 'search') AS searches,
    count(*) FILTER (WHERE event_type = 'add_to_cart') AS add_to_carts,
    count(*) FILTER (WHERE event_type = 'checkout') AS checkouts,
    min(event_ts) AS first_click_ts,
    max(event_ts) AS last_click_ts
FROM clicks
GROUP BY user_id
