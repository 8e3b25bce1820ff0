-- materialized: incremental
-- unique_key: user_id
-- description: Per-user order aggregates up to the run's as-of time (nothing after it is read).
WITH orders AS (
    SELECT * FROM staging.stg_orders WHERE order_ts <= getvariable('as_of')
)
SELECT
    user_id,
    count(*) FILTER (WHERE status = 'completed') AS completed_orders,
    count(*) AS all_orders,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled_orders,
    count(*) FILTER (WHERE status = 'returned') AS returned_orders,
    -- Money is summed exactly (ingest/contract.py exact_money_sql: in any order, an incremental build equals a full one), then DOUBLE.
    coalesce(sum({{ exact_money('amount') }}) FILTER (WHERE status = 'completed'), 0)::DOUBLE AS monetary,
    coalesce(sum({{ exact_money('discount') }}) FILTER (WHERE status = 'completed'), 0)::DOUBLE AS discount_total,
    count(*) FILTER (WHERE status = 'completed' AND order_ts > getvariable('as_of') - INTERVAL 30 DAY) AS orders_30d,
    count(*) FILTER (WHERE status = 'completed' AND order_ts > getvariable('as_of') - INTERVAL 90 DAY) AS orders_90d,
    max(order_ts) FILTER (WHERE status = 'completed') AS last_order_ts,
    min(order_ts) AS first_order_ts
FROM orders
GROUP BY user_id
