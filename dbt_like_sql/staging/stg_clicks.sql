-- materialized: view
-- event_time: event_ts
-- description: Click events with their funnel stage (view, search, add_to_cart, checkout, purchase, other; from the event name at ingestion), empty product and category as NULL (a category holding an e-mail address too: ingest/contract.py EMAIL_LIKE).
SELECT
    event_id,
    user_id,
    session_id,
    event_ts,
    event_type,
    CAST(funnel_stage AS VARCHAR) AS funnel_stage,
    NULLIF(TRIM(product_id), '') AS product_id,
    CASE WHEN (contains(category, '@') OR contains(category, '%40')) AND regexp_matches(category, '("[^"]+"|[\p{L}\p{N}._%+-]+)(@|%40)(\[(IPv6:)?[0-9A-Fa-f.:]+\]|[\p{L}\p{N}-]+([.][\p{L}\p{N}-]+)*[.]\p{L}{2,})') THEN NULL ELSE NULLIF(TRIM(category), '') END AS category,
    _file_id
FROM raw.clicks
