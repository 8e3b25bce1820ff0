-- materialized: view
-- event_time: signup_ts
-- description: Customer records without personal data: the email never leaves raw.customers, and a country or channel holding an e-mail address is NULL (ingest/contract.py EMAIL_LIKE).
SELECT
    user_id,
    signup_ts,
    CASE WHEN (contains(country, '@') OR contains(country, '%40')) AND regexp_matches(country, '("[^"]+"|[\p{L}\p{N}._%+-]+)(@|%40)(\[(IPv6:)?[0-9A-Fa-f.:]+\]|[\p{L}\p{N}-]+([.][\p{L}\p{N}-]+)*[.]\p{L}{2,})') THEN NULL ELSE NULLIF(UPPER(TRIM(country)), '') END AS country,
    CASE WHEN (contains(channel, '@') OR contains(channel, '%40')) AND regexp_matches(channel, '("[^"]+"|[\p{L}\p{N}._%+-]+)(@|%40)(\[(IPv6:)?[0-9A-Fa-f.:]+\]|[\p{L}\p{N}-]+([.][\p{L}\p{N}-]+)*[.]\p{L}{2,})') THEN NULL ELSE NULLIF(LOWER(TRIM(channel)), '') END AS channel,
    _file_id
FROM raw.customers
