-- materialized: view
-- event_time: event_ts
-- description: Click events with empty product and category as NULL.
SELECT
    event_id,
    user_id,
    session_id,
    event_ts,
    event_type,
    NULLIF(TRIM(product_id), '') AS product_id,
    NULLIF(TRIM(category), '') AS category,
    _file_id
FROM raw.clicks
