-- materialized: incremental
-- unique_key: order_id
-- description: Orders derived from order lines (raw.order_items) whose order id was not delivered as an order row (taken in, or left out by a source's where or rejected: raw.withheld_orders): amount = sum(quantity * unit_price) and items = sum(quantity) over its completed lines (over all lines when none is completed), the most common category (ties: the first by name), completed if any line is, else returned if any line is, else cancelled. A table for stg_orders, which every model reading orders queries: as part of that view the lines were aggregated again on every query (at 8M lines, about a second each, a dozen times in a cold refresh). Incremental: only the orders with new lines, or newly delivered as order rows (then dropped here), are recomputed.
WITH line_orders AS (
    SELECT
        order_id,
        min(user_id) AS user_id,
        min(order_ts) AS order_ts,
        -- an order with a completed line is what was kept: its completed lines (cancelled or returned lines of it are
        -- not spend); an order without one keeps the value of all its lines, as an order row would
        -- summed exactly in DECIMAL(34,4) (INTEGER x DECIMAL(14,4) is DECIMAL(18,4) in DuckDB: 1e6 units x 1e9 overflowed),
        -- stored as DOUBLE below (exact to the cent up to about 9e13)
        coalesce(sum(CAST(quantity AS DECIMAL(20, 0)) * unit_price) FILTER (WHERE status = 'completed'),
                 sum(CAST(quantity AS DECIMAL(20, 0)) * unit_price)) AS amount,
        coalesce(sum(quantity) FILTER (WHERE status = 'completed'), sum(quantity)) AS items,
        CASE
            WHEN bool_or(status = 'completed') THEN 'completed'
            WHEN bool_or(status = 'returned') THEN 'returned'
            ELSE 'cancelled'
        END AS status,
        max(_file_id) AS _file_id
    FROM raw.order_items
    WHERE {{ without_order_row('order_id') }}
    GROUP BY order_id
),
line_categories AS (
    -- The order's category: the one on most of its lines (ties: the first by name), deterministic in any row order;
    -- a line's category holding an e-mail address (ingest/contract.py EMAIL_LIKE) is none, and does not outvote the others.
    SELECT order_id, arg_max(category, (lines, -rank)) AS category
    FROM (
        SELECT order_id, category, count(*) AS lines, dense_rank() OVER (PARTITION BY order_id ORDER BY category) AS rank
        FROM raw.order_items
        WHERE NULLIF(TRIM(category), '') IS NOT NULL AND {{ without_order_row('order_id') }}
          AND NOT ({{ holds_email('category') }})
        GROUP BY order_id, category
    )
    GROUP BY order_id
)
SELECT
    o.order_id,
    o.user_id,
    o.order_ts,
    CAST(round(o.amount, 2) AS DOUBLE) AS amount,
    CAST(o.items AS BIGINT) AS items,
    NULLIF(TRIM(c.category), '') AS category,
    CAST(0 AS DOUBLE) AS discount,
    o.status,
    o._file_id
FROM line_orders AS o
LEFT JOIN line_categories AS c ON c.order_id = o.order_id
