-- materialized: view
-- event_time: order_ts
-- description: Orders as the models see them: money as DOUBLE, empty category as NULL, discount defaulted to 0.
SELECT
    order_id,
    user_id,
    order_ts,
    CAST(amount AS DOUBLE) AS amount,
    items,
    NULLIF(TRIM(category), '') AS category,
    CAST(COALESCE(discount, 0) AS DOUBLE) AS discount,
    status,
    _file_id
FROM raw.orders
