-- materialized: view
-- event_time: event_ts
-- description: Click events with their funnel stage (view, search, add_to_cart, checkout, purchase, other; from the event name at ingestion), empty product and category as NULL.
SELECT
    event_id,
    user_id,
    session_id,
    event_ts,
    event_type,
    CAST(funnel_stage AS VARCHAR) AS funnel_stage,
    NULLIF(TRIM(product_id), '') AS product_id,
    NULLIF(TRIM(category), '') AS category,
    _file_id
FROM raw.clicks
