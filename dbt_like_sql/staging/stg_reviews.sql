-- materialized: view
-- event_time: review_ts
-- description: Reviews without their text (personal data stays in raw.reviews), with the sentiment of the text from analytics.review_sentiment (sentiment NULL when the language has no lexicon; the label then comes from the stars).
SELECT
    r.review_id,
    r.user_id,
    r.order_id,
    r.review_ts,
    r.rating,
    s.language,
    s.sentiment,
    s.label,
    s.label_from,
    r._file_id
FROM raw.reviews AS r
LEFT JOIN analytics.review_sentiment AS s ON s.review_id = r.review_id
