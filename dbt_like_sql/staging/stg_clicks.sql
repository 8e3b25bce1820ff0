-- materialized: view
-- event_time: event_ts
-- description: Click events with their funnel stage (view, search, add_to_cart, checkout, purchase, other; from the event name at ingestion), empty product and category as NULL (a category holding an e-mail address too: ingest/contract.py EMAIL_LIKE). An anonymous click (its user_id is its device id) of a device a login has linked to a user is that user's (staging.identities).
SELECT
    event_id,
    coalesce(i.user_id, c.user_id) AS user_id,
    session_id,
    event_ts,
    event_type,
    CAST(funnel_stage AS VARCHAR) AS funnel_stage,
    NULLIF(TRIM(product_id), '') AS product_id,
    CASE WHEN {{ holds_email('category') }} THEN NULL ELSE NULLIF(TRIM(category), '') END AS category,
    c._file_id
FROM raw.clicks AS c
LEFT JOIN staging.identities AS i ON i.anonymous_id = c.anonymous_id AND c.user_id = c.anonymous_id
