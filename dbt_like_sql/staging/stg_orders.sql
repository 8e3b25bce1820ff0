-- materialized: view
-- event_time: order_ts
-- description: Orders as the models see them, from both grains: order rows (raw.orders) and the orders derived from order lines (staging.line_orders). An order id delivered at both grains is taken from raw.orders. Money as DOUBLE, empty category (or one holding an e-mail address: ingest/contract.py EMAIL_LIKE) as NULL, discount defaulted to 0.
SELECT
    order_id,
    user_id,
    order_ts,
    CAST(amount AS DOUBLE) AS amount,
    items,
    CASE WHEN {{ holds_email('category') }} THEN NULL ELSE NULLIF(TRIM(category), '') END AS category,
    CAST(COALESCE(discount, 0) AS DOUBLE) AS discount,
    status,
    _file_id
FROM raw.orders
UNION ALL
SELECT order_id, user_id, order_ts, amount, items, category, discount, status, _file_id
FROM staging.line_orders
