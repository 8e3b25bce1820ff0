-- materialized: incremental
-- unique_key: anonymous_id
-- description: Each device id of the clicks (raw.clicks.anonymous_id) and the user its anonymous clicks belong to: the user_id of the first click row, in order of arrival, that carries the device id and another user id (a login), else the device itself. Once linked a device stays with that user, so the map only grows and a re-run gives the same one (a shared laptop stays with its first customer; the others' logged-in clicks stay theirs). staging.stg_clicks reads it; a device that gets linked is recorded as a user its row no longer names (features/delta.py), so the per-user models drop its row in the same refresh (docs/identity.md).
SELECT
    anonymous_id,
    coalesce(arg_min(user_id, (_file_id, _row)) FILTER (WHERE user_id <> anonymous_id), anonymous_id) AS user_id
FROM raw.clicks
WHERE anonymous_id IS NOT NULL
GROUP BY anonymous_id
