-- Row-level reconciliation of page-view events: every event, every field. event_time is an ISO
-- string in the stream's NDJSON and a timestamp in the batch Parquet: the cast makes them one type.
SELECT event_id, dt, user_id, session_id, event_type, page, CAST(event_time AS TIMESTAMP) AS event_time
FROM events
WHERE dt BETWEEN $start_date AND $run_date
