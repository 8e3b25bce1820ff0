-- materialized: view
-- event_time: signup_ts
-- description: Customer records without personal data: the email never leaves raw.customers, and a country or channel holding an e-mail address is NULL (ingest/contract.py EMAIL_LIKE).
SELECT
    user_id,
    signup_ts,
    CASE WHEN {{ holds_email('country') }} THEN NULL ELSE NULLIF(UPPER(TRIM(country)), '') END AS country,
    CASE WHEN {{ holds_email('channel') }} THEN NULL ELSE NULLIF(LOWER(TRIM(channel)), '') END AS channel,
    _file_id
FROM raw.customers
