-- materialized: incremental
-- unique_key: user_id
-- description: Per-user review aggregates up to as-of: reviews, average stars, average text sentiment, negative reviews (all time and in the last 90 days). Sentiment is summed in DECIMAL (exact in any order: an incremental build equals a full one) and divided as DOUBLE (the same bits on DuckDB and Spark, whose avg of a DECIMAL rounds to 8 places).
WITH reviews AS (
    SELECT * FROM staging.stg_reviews WHERE review_ts <= getvariable('as_of')
)
SELECT
    user_id,
    count(*) AS reviews,
    avg(rating)::DOUBLE AS avg_rating,
    sum(sentiment::DECIMAL(18, 4))::DOUBLE / NULLIF(count(sentiment), 0) AS avg_sentiment,
    count(*) FILTER (WHERE label = 'negative') AS negative_reviews,
    count(*) FILTER (WHERE label IS NOT NULL) AS labelled_reviews,
    count(*) FILTER (WHERE label = 'negative' AND review_ts > getvariable('as_of') - INTERVAL 90 DAY) AS negative_reviews_90d
FROM reviews
GROUP BY user_id
