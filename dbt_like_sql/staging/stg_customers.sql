-- materialized: view
-- event_time: signup_ts
-- description: Customer records without personal data: the email never leaves raw.customers.
SELECT
    user_id,
    signup_ts,
    NULLIF(UPPER(TRIM(country)), '') AS country,
    NULLIF(LOWER(TRIM(channel)), '') AS channel,
    _file_id
FROM raw.customers
